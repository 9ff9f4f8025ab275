/* Grants and the broker's own tokens: issuing access/refresh pairs and
 * authorization codes (only their SHA-256 is stored), revoking a grant with
 * everything it issued. All functions work inside the caller's transaction. */
#ifndef MCPB_GRANT_H
#define MCPB_GRANT_H
#include <jansson.h>
#include "app.h"
#include "db.h"

#define TOKEN_PREFIX_ACCESS  "mcpb_at_"
#define TOKEN_PREFIX_REFRESH "mcpb_rt_"
#define TOKEN_PREFIX_CODE    "mcpb_ac_"
#define TOKEN_TEXT_MAX 64

/* NOTIFY channel of revocations. Payloads (at most GRANT_NOTIFY_MAX bytes):
 *   g:<grant id>            one grant was revoked
 *   t:\x<64 hex>            one access token (its SHA-256) was revoked
 *   r:{"client_id"?, "subject"?, "upstream"?, "grant_id"?}
 *                           every grant matching all the fields given (the
 *                           operator API's selectors: one notification per
 *                           bulk revocation, however many grants it took)
 *   *                       everything was revoked
 *   u:<grant id>            the grant's upstream token changed (no revocation)
 * Every node evicts what it cached and ends the transfers the revocation
 * covers; a payload a node cannot read counts as "*". */
#define GRANT_NOTIFY_CHANNEL "mcpb_revoke"
#define GRANT_NOTIFY_MAX 7999 /* PostgreSQL refuses payloads of 8000 bytes */

struct cache_revocation;

struct issued {
	char access[TOKEN_TEXT_MAX];
	char refresh[TOKEN_TEXT_MAX];
	long expires_in;
	char scope[1100];
};

/* Issues a fresh pair for the grant with the given space-separated scope. */
int grant_issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id,
		const char *resource, const char *scope, struct issued *out) WUR;
/* The RFC 6749 token response for out. */
json_t *grant_token_response(const struct issued *out);
void issued_wipe(struct issued *out);

/* Marks the grant revoked with all its tokens, records the audit event and
 * notifies every node. 1 revoked, 0 already revoked or unknown, -1 error. */
int grant_revoke(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
		 const char *actor, const char *request_id) WUR;
/* The same for one grant of a bulk revocation: the caller announces the
 * whole selection once with grant_announce(). */
int grant_revoke_quiet(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
		       const char *actor, const char *request_id) WUR;
/* Announces a revocation made in the caller's transaction: this node evicts
 * and ends its transfers now, every node (this one again) when it commits
 * (NOTIFY), and the upstream revocation worker is woken. A selector whose
 * payload would not fit is announced as "*". -1 on a database error. */
int grant_announce(struct db_conn *c, const struct cache_revocation *rv) WUR;

#endif
