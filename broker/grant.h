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

/* NOTIFY channel of revocations: payload "g:<grant id>", "t:<token hash
 * hex>" or "*" (everything). Every node evicts what it cached. */
#define GRANT_NOTIFY_CHANNEL "mcpb_revoke"

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

#endif
