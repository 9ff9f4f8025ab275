/* Connected accounts: the upstream sessions a grant holds beside its
 * sign-in session, one per (grant, connect upstream), sealed in
 * grant_connections. A stale token is refreshed under the connection's row
 * lock (one upstream refresh for any number of concurrent requests on any
 * number of nodes); the upstream's definitive refusal disconnects the
 * account (the grant itself lives on: its user connects again in band). */
#ifndef MCPB_CONNECTION_H
#define MCPB_CONNECTION_H
#include "app.h"
#include "db.h"
#include "upstream.h"
#include "upstream_token.h"

/* The access token of grant_id's connection to upstream into *token
 * (caller wipes and frees): UT_OK, UT_NOT_CONNECTED (none, or the upstream
 * has just refused its refresh token: the row is gone), or the failures of
 * upstream_token_get (UT_UNAVAILABLE, UT_TIMEOUT, UT_BAD_GATEWAY), which
 * keep the connection. retry_after as there. */
enum upstream_token_rc connection_token_get(struct app *app, struct db_conn *c, const char *grant_id,
					    const char *upstream, const char *request_id, char **token,
					    long *retry_after) WUR;

/* Attaches (or replaces) grant_id's connection to upstream: tok sealed,
 * the account's identity kept, an audit record, committed. 0 or -1. */
int connection_attach(struct app *app, struct db_conn *c, const char *grant_id, const char *upstream,
		      const struct upstream_tokens *tok, const struct upstream_identity *id,
		      const char *request_id) WUR;

/* The same for the grant's sign-in upstream, into the grant's own session
 * (grants.up_*): an ID-JAG grant's first upstream session. Every node
 * drops what it cached of the grant. 0 or -1. */
int connection_attach_signin(struct app *app, struct db_conn *c, const char *grant_id, const char *upstream,
			     const struct upstream_tokens *tok, const char *request_id) WUR;

/* Disconnects grant_id's connection to upstream inside the caller's
 * transaction: the row (its sealed tokens) moves to connection_revocations,
 * where the revoker revokes it at the upstream, and an audit record says
 * who (actor) and why. 1 disconnected, 0 there was none, -1 on failure
 * (roll back). */
int connection_disconnect(struct db_conn *c, const char *grant_id, const char *upstream, const char *actor,
			  const char *reason, const char *request_id) WUR;

/* Seconds a connect ticket (and each leg of its flow) lives. */
#define CONNECT_TICKET_TTL_S 600
#define CONNECT_TICKET_PREFIX "mcpb_ct_"
#define CONNECT_TICKET_MAX 64 /* prefix + 43 characters, with room */

/* A new one-time ticket for grant_id's user to connect upstream: stored as
 * its SHA-256; ticket receives it, elicitation_id a fresh UUID naming the
 * elicitation. 0 or -1. */
int connect_ticket_new(struct db_conn *c, const char *grant_id, const char *upstream, char ticket[CONNECT_TICKET_MAX],
		       char elicitation_id[37]) WUR;

#endif
