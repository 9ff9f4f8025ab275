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
void cache_evict_token(const char *hash);
void cache_flush(void);
int cache_enabled(void);

#endif
