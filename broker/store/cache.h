/* The validated-token cache of one node. Entries live at most
 * CACHE_TTL_S and never past the token's expiry; a dedicated PostgreSQL
 * connection LISTENs for revocations and evicts at once. While that
 * connection is down the cache is off (every lookup misses), and it is
 * flushed when the node listens again, so a revocation is never missed. */
#ifndef MCPB_CACHE_H
#define MCPB_CACHE_H
#include <time.h>
#include "app.h"
#include "token.h"

#define CACHE_TTL_S 30

int cache_start(struct app *app) WUR;
void cache_stop(void);

/* 1 hit (info filled), 0 miss. hash is the token's SHA-256 hex. */
int cache_get(const char *hash, struct token_info *info);
/* Generation: read it before validating in the database and pass it to
 * cache_put, which drops the entry if any eviction happened in between (a
 * revocation racing the validation must win). */
unsigned long cache_generation(void);
void cache_put(const char *hash, const struct token_info *info, unsigned long generation);
void cache_evict_grant(const char *grant_id);

/* The sealed upstream access token of a grant (still AES-GCM ciphertext:
 * nothing in memory is readable without the key), with its expiry (0:
 * none), so that a proxied request needs no database round trip. Evicted
 * with the grant (revocation, upstream refresh). *sealed is malloc'd. */
/* MCP session bindings (key: SHA-256 hex of session id and resource ->
 * the user id that opened it). A binding never changes, so entries only
 * age out. 1 hit. */
int cache_session_get(const char *key, char user_id[37]);
void cache_session_put(const char *key, const char *user_id);

int cache_upstream_get(const char *grant_id, char key_id[65], char **sealed, long long *exp);
void cache_upstream_put(const char *grant_id, const char *key_id, const char *sealed, long long exp,
			unsigned long generation);
void cache_evict_token(const char *hash);
void cache_flush(void);
int cache_enabled(void);

/* ---- revocations ----------------------------------------------------------
 * A revocation as the node learns of it: every field that is set must match
 * (NULL: any); with none set, everything was revoked. */
struct cache_revocation {
	const char *grant_id;   /* one grant */
	const char *token_hash; /* one access token: SHA-256, 64 lower-case hex digits */
	const char *client_id;  /* the operator API's selectors, as in struct token_info */
	const char *subject;
	const char *upstream;
};

#define CACHE_SUBSCRIBERS 4

/* Told of every revocation the node learns of: its own as they are made
 * (before their transaction commits: a failed commit costs a needless end),
 * and every node's, its own again, when the NOTIFY arrives. Runs on the
 * caller's thread (a request's or the listener's) and must not block. */
typedef void (*cache_revoke_fn)(const struct cache_revocation *rv, void *arg);
/* Lists what the node is serving: emit(grant_id, token_hash, ctx) once per
 * live transfer; must not block. Used after the listener was deaf, to ask
 * the database which of them were revoked meanwhile. */
typedef void (*cache_emit_fn)(const char *grant_id, const char *token_hash, void *ctx);
typedef void (*cache_live_fn)(cache_emit_fn emit, void *ctx, void *arg);

/* Registration happens before cache_start (the lists are not locked).
 * -1 when CACHE_SUBSCRIBERS are taken. */
int cache_on_revoke(cache_revoke_fn fn, void *arg) WUR;
int cache_on_resync(cache_live_fn fn, void *arg) WUR;
/* Evicts what rv covers and tells the subscribers. */
void cache_revoked(const struct cache_revocation *rv);
/* Parses one payload of GRANT_NOTIFY_CHANNEL (grammar in grant.h) and acts
 * on it as the listener does: evicts, tells the subscribers, wakes the
 * upstream revocation worker. Exposed for tests. */
void cache_handle_notify(const char *payload);

#endif
