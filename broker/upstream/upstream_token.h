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
	UT_REVOKED = 1,       /* the grant is dead (now or before): the client must re-authorise */
	UT_UNAVAILABLE = 2,   /* 503: upstream 5xx/429/403 or unreachable, database trouble: try again */
	UT_TIMEOUT = 3,       /* 504: the upstream did not answer in time */
	UT_BAD_GATEWAY = 4,   /* 502: the upstream refused the broker's own credentials, or answered
			       something unusable; the grant is kept */
	UT_NOT_CONNECTED = 5, /* no (live) session of that upstream: a connect upstream's (connection.h),
				 or the sign-in upstream's of a grant made from an ID-JAG */
};

/* *token receives the plaintext access token (caller wipes and frees).
 * force: the downstream refused the injected token: refresh it even if it
 * is not stale, or, when the grant has no refresh token, ask the upstream
 * (userinfo) whether the token is still good. Only a definitive answer of
 * the upstream (invalid_grant, bad_refresh_token, 401 at userinfo) revokes
 * the grant (UT_REVOKED); every other failure keeps it unchanged.
 * retry_after (may be NULL) receives the seconds the upstream asked to
 * wait, 0 when it did not. */
enum upstream_token_rc upstream_token_get(struct app *app, struct db_conn *c, const char *grant_id, int force,
					  const char *request_id, char **token, long *retry_after) WUR;

/* The HTTP status to answer a client for rc: 200, 401, 502, 503 or 504. */
int upstream_token_http_status(enum upstream_token_rc rc);

/* The same from this node's cache only (no database): UT_OK, or
 * UT_UNAVAILABLE when the cache has no fresh entry. */
enum upstream_token_rc upstream_token_cached(struct app *app, const char *grant_id, char **token) WUR;

#endif
