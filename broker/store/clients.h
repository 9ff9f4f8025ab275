/* OAuth clients: pre-registered (config), dynamically registered (RFC 7591)
 * and their authentication at the token endpoint. */
#ifndef MCPB_CLIENTS_H
#define MCPB_CLIENTS_H
#include <jansson.h>
#include "app.h"
#include "db.h"
#include "crypto.h"
#include "http.h"
#include "lim.h"

struct client {
	char client_id[LIM_CLIENT_ID + 1];
	char kind[8];            /* static, dynamic, cimd */
	char *name;              /* may be NULL */
	char **redirect_uris;
	size_t n_redirect_uris;
	int confidential;
	uint8_t secret_hash[CRYPTO_SHA256_LEN];
	int disabled;
};

/* 1 found (and enabled or not: check ->disabled), 0 unknown, -1 database error. */
int clients_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out) WUR;
void client_free(struct client *cl);

/* Why the last clients_lookup on this thread found no usable client (a
 * fixed text for CIMD refusals), or NULL. */
const char *clients_last_error(void);
/* The registration policy on redirect URI kinds (https always; loopback
 * http and private-use schemes as configured). */
int clients_redirect_policy_ok(const struct config *cfg, const char *uri);

/* 1 when uri is one of the client's redirect URIs (RFC 8252 loopback ports). */
int client_redirect_ok(const struct client *cl, const char *uri);

enum client_auth {
	CA_OK = 0,
	CA_INVALID_REQUEST = -1, /* two methods at once, malformed header */
	CA_INVALID_CLIENT = -2,  /* unknown, disabled, wrong secret, missing secret */
	CA_ERROR = -3,           /* database */
};
/* Authenticates the client of a token/revoke request by HTTP Basic,
 * client_secret_post, or client_id alone for public clients. */
enum client_auth clients_authenticate(struct http_req *r, struct db_conn *c, const json_t *form,
				      struct client *out);
/* Answers a failed authentication with the RFC 6749 error. */
void clients_auth_error(struct http_req *r, enum client_auth rc);

/* Failure accounting of the endpoints that authenticate a client or a
 * credential (/token, /revoke, /introspect, /register's initial access
 * token): failures are counted per (client id named, client address) and
 * per address (limits.token_failures_*; ratelimit.h), never in a bucket
 * that valid requests use, so nobody can exhaust a limit for somebody else.
 * clients_named_id: the client id the request names, read as
 * clients_authenticate reads it (HTTP Basic user, else the form's
 * client_id; form may be NULL), "" when none; never authenticated.
 * clients_failures_check: before anything is evaluated; 0 go on, -1 when
 * that pair or address is over its limit and r was answered 429 slow_down
 * with Retry-After. clients_failures_count: after r was answered; counts it
 * when the answer refused the request (4xx other than 429). */
void clients_named_id(struct http_req *r, const json_t *form, char out[LIM_CLIENT_ID + 1]);
int clients_failures_check(struct http_req *r, const char *who) WUR;
void clients_failures_count(struct http_req *r, const char *who);

/* Upserts the configured clients (kind static) so the database knows them. */
int clients_sync_static(struct app *app) WUR;

/* POST /register (RFC 7591). */
void clients_register(struct http_req *r);

#endif
