/* POST /token (authorization_code with PKCE S256, rotating refresh_token
 * with reuse detection and an idempotent grace window); proxied resources
 * validate the access tokens in proxy/bearer. */
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

#endif
