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

#endif
