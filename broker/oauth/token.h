/* POST /token (authorization_code with PKCE S256, rotating refresh_token
 * with reuse detection and an idempotent grace window); proxied resources
 * validate the access tokens in proxy/bearer. */
#ifndef MCPB_TOKEN_H
#define MCPB_TOKEN_H
#include "app.h"
#include "db.h"
#include "grant.h"
#include "http.h"
#include "lim.h"

void token_endpoint(struct http_req *r);

#endif
