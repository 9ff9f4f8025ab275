/* The upstream access token of a grant, refreshed when stale. A refresh
 * runs under the grant's row lock, so that any number of concurrent
 * requests on any number of nodes cause exactly one upstream refresh; the
 * others wait (bounded) and use its result. */
#ifndef MCPB_UPSTREAM_TOKEN_H
#define MCPB_UPSTREAM_TOKEN_H
#include "app.h"
#include "db.h"

enum upstream_token_rc {
	UT_OK = 0,
	UT_REVOKED = 1,     /* the grant is dead (now or before): the client must re-authorise */
	UT_UNAVAILABLE = 2, /* upstream 5xx/429/garbage, database trouble: try again */
	UT_TIMEOUT = 3,
};

/* *token receives the plaintext access token (caller wipes and frees).
 * force: refresh even if not stale (the downstream rejected the token). */
enum upstream_token_rc upstream_token_get(struct app *app, struct db_conn *c, const char *grant_id,
					  int force, const char *request_id, char **token);

/* The same from this node's cache only (no database): UT_OK, or
 * UT_UNAVAILABLE when the cache has no fresh entry. */
enum upstream_token_rc upstream_token_cached(struct app *app, const char *grant_id, char **token);

#endif
