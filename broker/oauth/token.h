/* POST /token (authorization_code with PKCE S256, rotating refresh_token
 * with reuse detection and an idempotent grace window) and validation of
 * the broker's access tokens for protected resources. */
#ifndef MCPB_TOKEN_H
#define MCPB_TOKEN_H
#include "app.h"
#include "db.h"
#include "grant.h"
#include "http.h"
#include "lim.h"

void token_endpoint(struct http_req *r);

/* 1 valid (info filled), 0 unknown/expired/revoked, -1 database error. */
int token_validate(struct app *app, struct db_conn *c, const char *token, struct token_info *info) WUR;

#endif
