/* Revocation announcements between nodes. A revocation is published on
 * NOTIFY_CHANNEL inside the revoking transaction and told at once to this
 * node's subscribers; a dedicated PostgreSQL connection LISTENs and tells
 * them every node's (this one's again) when the NOTIFY arrives. The
 * listener sends a heartbeat every NOTIFY_HEARTBEAT_MS; after
 * NOTIFY_SILENCE_MS without an answer, or when the connection is lost, the
 * node is deaf: subscribers are told (the cache turns off) and every live
 * transfer is ended (fail closed). When it listens again it asks the
 * database which of the transfers still live were revoked meanwhile.
 *
 * Payloads (at most NOTIFY_PAYLOAD_MAX bytes):
 *   g:<grant id>            one grant was revoked
 *   t:\x<64 hex>            one access token (its SHA-256) was revoked
 *   r:{"client_id"?, "subject"?, "upstream"?, "grant_id"?}
 *                           every grant matching all the fields given (the
 *                           operator API's selectors: one notification per
 *                           bulk revocation, however many grants it took)
 *   *                       everything was revoked
 *   u:<grant id>            the grant's upstream token changed (no revocation)
 *   s:<64 hex>              an MCP session binding key was bound (no
 *                           revocation: negative cache entries for it go)
 * A payload a node cannot read counts as "*". */
#ifndef MCPB_NOTIFY_H
#define MCPB_NOTIFY_H
#include <jansson.h>
#include "app.h"
#include "db.h"

#define NOTIFY_CHANNEL "mcpb_revoke"
/* Events that are no revocation, on a channel of their own (a node that
 * does not know a payload there ignores it, where on NOTIFY_CHANNEL it
 * would fail closed):
 *   e:<grant id>:<elicitation id>   a URL elicitation of the grant completed */
#define NOTIFY_EVENTS_CHANNEL "mcpb_events"
#define NOTIFY_PAYLOAD_MAX 7999               /* PostgreSQL refuses payloads of 8000 bytes */
#define NOTIFY_HEARTBEAT_MS 500               /* the listener asks PostgreSQL this often */
#define NOTIFY_SILENCE_MS 3000                /* without an answer this long, the node is deaf */
#define NOTIFY_RESYNC_BYTES (8 * 1024 * 1024) /* ids of live transfers asked about after deafness */
#define NOTIFY_SUBSCRIBERS 4

/* A revocation as the node learns of it: every field that is set must match
 * (NULL: any); with none set, everything was revoked. */
struct revocation {
	const char *grant_id;   /* one grant */
	const char *token_hash; /* one access token: SHA-256, 64 lower-case hex digits */
	const char *client_id;  /* the operator API's selectors, as in struct token_info */
	const char *subject;
	const char *upstream;
};

/* ---- subscribers ----------------------------------------------------------
 * Registration happens before notify_start (the lists are not locked); -1
 * when NOTIFY_SUBSCRIBERS are taken. Subscribers are called in the order
 * they registered, on the caller's thread (a request's or the listener's),
 * and must not block. */

/* Told of every revocation the node learns of: its own as they are made
 * (before their transaction commits: a failed commit costs a needless end),
 * every node's (its own again) when the NOTIFY arrives, those found after
 * deafness, and "everything" when the node becomes deaf. */
typedef void (*notify_revoke_fn)(const struct revocation *rv, void *arg);
int notify_on_revoke(notify_revoke_fn fn, void *arg) WUR;

/* Told that a grant's upstream token changed ("u:"). */
typedef void (*notify_refresh_fn)(const char *grant_id, void *arg);
int notify_on_refresh(notify_refresh_fn fn, void *arg) WUR;

/* Told that an MCP session binding key (64 lower-case hex) was bound ("s:"). */
typedef void (*notify_bound_fn)(const char *key, void *arg);
int notify_on_bound(notify_bound_fn fn, void *arg) WUR;

/* Told that a URL elicitation of a grant completed (its account is
 * connected), on whichever node: from the listener only. */
typedef void (*notify_elicited_fn)(const char *grant_id, const char *elicitation_id, void *arg);
int notify_on_elicited(notify_elicited_fn fn, void *arg) WUR;

/* Told when the node starts listening (after any resync) and when it stops
 * hearing revocations (deaf, connection lost, stopping). */
enum notify_state { NOTIFY_DEAF, NOTIFY_LISTENING };
typedef void (*notify_state_fn)(enum notify_state st, void *arg);
int notify_on_state(notify_state_fn fn, void *arg) WUR;

/* Lists what the node is serving: emit(grant_id, token_hash, ctx) once per
 * live transfer; must not block. Used after the listener was deaf, to ask
 * the database which of them were revoked meanwhile. */
typedef void (*notify_emit_fn)(const char *grant_id, const char *token_hash, void *ctx);
typedef void (*notify_live_fn)(notify_emit_fn emit, void *ctx, void *arg);
int notify_on_resync(notify_live_fn fn, void *arg) WUR;

/* ---- publishing ---------------------------------------------------------- */

/* Announces a revocation made in the caller's transaction: NOTIFY (every
 * node learns of it when it commits), then this node's subscribers are told
 * at once. A selector whose payload would not fit is announced as "*".
 * -1 on a database error or out of memory (nobody was told). */
int notify_publish(struct db_conn *c, const struct revocation *rv) WUR;

/* Announces that the session binding key (64 lower-case hex) was bound by
 * the caller's statement: NOTIFY (every node hears it when it commits),
 * then this node's subscribers are told at once. -1 on a database error or
 * a malformed key (nobody was told). */
int notify_publish_bound(struct db_conn *c, const char *key) WUR;

/* Announces that grant_id's elicitation elicitation_id (both UUIDs)
 * completed, to every node once the caller's statement commits (this one's
 * listener too). -1 on a database error or malformed ids. */
int notify_publish_elicited(struct db_conn *c, const char *grant_id, const char *elicitation_id) WUR;

/* ---- the listener ---------------------------------------------------------- */

int notify_start(struct app *app) WUR;
void notify_stop(void);

/* ---- the payload grammar (exposed for tests and fuzzing) ------------------ */

enum notify_kind { NOTIFY_REVOKED, NOTIFY_REFRESHED, NOTIFY_BOUND };
struct notify_msg {
	enum notify_kind kind;
	struct revocation rv; /* NOTIFY_REVOKED; points into the payload or sel */
	const char *grant_id; /* NOTIFY_REFRESHED; points into the payload */
	const char *key;      /* NOTIFY_BOUND; points into the payload */
	json_t *sel;          /* owned: the parsed "r:" selector */
};

/* Parses one payload. 0 with *m filled (free it with notify_msg_free, which
 * the payload must outlive); -1 when the payload does not follow the
 * grammar (*m then says "everything", which is what a node makes of it). */
int notify_parse(const char *payload, struct notify_msg *m) WUR;
void notify_msg_free(struct notify_msg *m);

/* The payload announcing rv, malloc'd; NULL when out of memory. */
char *notify_payload(const struct revocation *rv) WUR;

/* Acts on one payload as the listener does: tells the subscribers. */
void notify_deliver(const char *payload);
/* The same for NOTIFY_EVENTS_CHANNEL; notify_parse_event reads one
 * ("e:<uuid>:<uuid>" into grant_id and elicitation_id): 0 or -1. */
void notify_deliver_event(const char *payload);
int notify_parse_event(const char *payload, char grant_id[37], char elicitation_id[37]) WUR;

#endif
