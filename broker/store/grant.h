/* Grants and the broker's own tokens: issuing access/refresh pairs and
 * authorization codes (only their SHA-256 is stored), revoking a grant with
 * everything it issued. All functions work inside the caller's transaction. */
#ifndef MCPB_GRANT_H
#define MCPB_GRANT_H
#include <jansson.h>
#include "app.h"
#include "audit.h"
#include "db.h"
#include "lim.h"

#define TOKEN_PREFIX_ACCESS "mcpb_at_"
#define TOKEN_PREFIX_REFRESH "mcpb_rt_"
#define TOKEN_PREFIX_CODE "mcpb_ac_"
#define TOKEN_TEXT_MAX 64

/* What a valid access token stands for (proxy/bearer, the token cache). */
struct token_info {
	char grant_id[37];
	char client_id[LIM_CLIENT_ID + 1];
	char resource[2048];
	char scope[LIM_SCOPE + 1];
	char user_id[37];
	char subject[300];
	char upstream[65]; /* the grant's sign-in upstream */
	char user_ns[65];  /* the user's namespace in X-MCP-User: an upstream name */
	long long exp;     /* expiry, seconds since the epoch */
	char jkt[44];      /* DPoP key thumbprint the token is bound to; "" for a Bearer token */
};

struct issued {
	char access[TOKEN_TEXT_MAX];
	char refresh[TOKEN_TEXT_MAX];
	long expires_in;
	char scope[1100];
	char jkt[44]; /* the access token is DPoP-bound to this key ("": Bearer) */
};

/* How the tokens of one issuance are bound (RFC 9449): jkt is the DPoP
 * key thumbprint of the request's proof (NULL or "": none); the access
 * token is bound to it, and the refresh token too when refresh_bound (a
 * public client's: nothing else ties it to its holder). */
struct grant_binding {
	const char *jkt;
	int refresh_bound;
};

/* Issues a fresh pair for the grant with the given space-separated scope;
 * b may be NULL (Bearer tokens). */
int grant_issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
		const char *scope, const struct grant_binding *b, struct issued *out) WUR;
/* An access token only (client_credentials: no refresh token, RFC 6749
 * section 4.4.3); out->refresh stays empty. */
int grant_issue_access(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id,
		       const char *resource, const char *scope, const struct grant_binding *b, struct issued *out) WUR;
/* A refresh-token rotation in one round trip. grant_mint fills out with a
 * fresh pair (no database); grant_rotate_commit then inserts it, marks the
 * presented refresh token (used_hash, whose row the caller's transaction
 * holds locked) used with its sealed successor, inserts the audit record a
 * (detail borrowed, may be NULL; its log line is written once committed),
 * and commits. -1 on failure: the caller rolls back, and wipes out. */
int grant_mint(struct app *app, const char *scope, const struct grant_binding *b, struct issued *out) WUR;
int grant_rotate_commit(struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
			long refresh_ttl, const struct grant_binding *b, const struct issued *out,
			const char *used_hash, const char *successor, const struct audit *a, json_t *detail) WUR;
/* The RFC 6749 token response for out (refresh_token only when out has
 * one; token_type DPoP when out->jkt is set); NULL when out of memory. */
json_t *grant_token_response(const struct issued *out) WUR;
void issued_wipe(struct issued *out);

enum grant_revoke_rc {
	GRANT_REVOKE_FAILED = -1, /* database error or out of memory: roll back */
	GRANT_UNCHANGED = 0,      /* already revoked, or unknown */
	GRANT_REVOKED = 1,
};
/* Marks the grant revoked with all its tokens, queues its upstream
 * revocation, records the audit event and announces it (notify_publish). */
enum grant_revoke_rc grant_revoke(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
				  const char *actor, const char *request_id) WUR;
/* The same for one grant of a bulk revocation: the caller announces the
 * whole selection once with notify_publish(). */
enum grant_revoke_rc grant_revoke_quiet(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
					const char *actor, const char *request_id) WUR;

#endif
