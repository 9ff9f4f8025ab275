/* Client authentication at the endpoints that take client credentials
 * (/token, /revoke; RFC 6749 section 2.3) and the failure accounting of the
 * endpoints that check a credential (/token, /revoke, /introspect,
 * /register's initial access token). */
#ifndef MCPB_CLIENT_AUTH_H
#define MCPB_CLIENT_AUTH_H
#include <jansson.h>
#include "client.h"
#include "db.h"
#include "http.h"
#include "lim.h"

enum client_auth {
	CA_OK = 0,
	CA_INVALID_REQUEST = -1, /* two methods at once, malformed header */
	CA_INVALID_CLIENT = -2,  /* unknown, disabled, wrong secret, missing secret */
	CA_ERROR = -3,           /* database */
};

/* Authenticates the client of a token/revoke request by HTTP Basic,
 * client_secret_post, private_key_jwt (client_assertion; a client with keys
 * has no other way), or client_id alone for public clients; *out is the
 * client on CA_OK and all zero otherwise. */
enum client_auth client_auth_verify(struct http_req *r, struct db_conn *c, const json_t *form, struct client *out) WUR;
/* Answers a failed authentication with the RFC 6749 error. */
void client_auth_error(struct http_req *r, enum client_auth rc);

/* Failures are counted per (client id named, client address) and per
 * address (limits.token_failures_*; ratelimit.h), never in a bucket that
 * valid requests use, so nobody can exhaust a limit for somebody else.
 * client_auth_named_id: the client id the request names, read as
 * client_auth_verify reads it (HTTP Basic user, else the form's client_id,
 * else a client_assertion's iss; form may be NULL), "" when none; never
 * authenticated.
 * client_auth_failures_check: before anything is evaluated; 0 go on, -1
 * when that pair or address is over its limit and r was answered 429
 * slow_down with Retry-After. client_auth_failures_count: after r was
 * answered; counts it when the answer refused the request (4xx other than
 * 429). */
void client_auth_named_id(struct http_req *r, const json_t *form, char out[LIM_CLIENT_ID + 1]);
int client_auth_failures_check(struct http_req *r, const char *who) WUR;
void client_auth_failures_count(struct http_req *r, const char *who);

#endif
