/* POST /token (authorization_code with PKCE S256, rotating refresh_token
 * with reuse detection and an idempotent grace window) and validation of
 * the broker's access tokens for protected resources. */
#ifndef MCPB_TOKEN_H
#define MCPB_TOKEN_H
#include "app.h"
#include "db.h"
#include "http.h"
#include "lim.h"

void token_endpoint(struct http_req *r);

struct token_info {
	char grant_id[37];
	char client_id[LIM_CLIENT_ID + 1];
	char resource[2048];
	char scope[LIM_SCOPE + 1];
	char user_id[37];
	char subject[300];
	char upstream[65];
	long long exp; /* expiry, seconds since the epoch */
};

/* 1 valid (info filled), 0 unknown/expired/revoked, -1 database error. */
int token_validate(struct app *app, struct db_conn *c, const char *token, struct token_info *info) WUR;

#endif
