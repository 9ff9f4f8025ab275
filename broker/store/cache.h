/* The validated-token cache of one node. Entries live at most
 * CACHE_TTL_S and never past the token's expiry; every revocation the node
 * learns of (notify.h) evicts at once. While the node cannot hear
 * revocations the cache is off (every lookup misses), and it is flushed
 * when the node listens again, so a revocation is never missed. */
#ifndef MCPB_CACHE_H
#define MCPB_CACHE_H
#include <time.h>
#include "app.h"
#include "client.h"
#include "grant.h"

#define CACHE_TTL_S 30

/* Allocates the tables and subscribes to notify (before notify_start; the
 * cache stays off until the node listens). -1 out of memory or no
 * subscriber slot left. cache_stop after notify_stop. */
int cache_start(void) WUR;
void cache_stop(void);

/* 1 hit (info filled), 0 miss. hash is the token's SHA-256 hex. */
int cache_get(const char *hash, struct token_info *info);
/* Generation: read it before validating in the database and pass it to
 * cache_put, which drops the entry if any eviction happened in between (a
 * revocation racing the validation must win). */
unsigned long cache_generation(void);
void cache_put(const char *hash, const struct token_info *info, unsigned long generation);
void cache_evict_grant(const char *grant_id);

/* Clients as clients_lookup found them (enabled or disabled), so that a
 * token request costs no round trip for its client. A client changes only
 * when an operator disables it, which is announced with its client_id
 * selector (every node evicts it); registration adds new ids, and nothing
 * negative is kept. cache_client_get fills *out with a copy (free it with
 * client_free), 1 hit (a miss leaves it all zero); cache_client_put keeps a copy of cl unless an
 * eviction happened since generation (cache_generation) was read. */
int cache_client_get(const char *client_id, struct client *out);
void cache_client_put(const struct client *cl, unsigned long generation);
/* This node's copy of the client goes (after the commit that disabled it). */
void cache_client_evict(const char *client_id);

/* MCP session bindings (key: SHA-256 hex of session id and resource ->
 * the user id that opened it). A binding never changes, so entries only
 * age out. 1 hit. */
int cache_session_get(const char *key, char user_id[37]);
void cache_session_put(const char *key, const char *user_id);

/* Negative entries (what the database said is not there), so that a request
 * repeating an unknown session id or access token costs no round trip. Each
 * table is fixed (CACHE_NEG_SLOTS, direct-mapped: a new entry overwrites its
 * slot), so ids sprayed at random cost no memory; an entry lives at most
 * CACHE_NEG_TTL_S, is off with the rest of the cache while the node is
 * deaf, and is flushed when it listens again.
 *
 * Sessions: a key becomes bound later (session_record), so every binding
 * is announced (notify_publish_bound) and evicts the key on every node.
 * Read cache_neg_generation before asking the database and pass it to
 * cache_session_put_unbound, which drops the entry if a binding was heard
 * in between (a binding racing the lookup must win). 1: known unbound. */
#define CACHE_NEG_SLOTS 4096 /* power of two */
#define CACHE_NEG_TTL_S 30
int cache_session_unbound(const char *key);
unsigned long cache_neg_generation(void);
void cache_session_put_unbound(const char *key, unsigned long generation);
/* The key was bound (here or on another node): its negative entry goes. */
void cache_session_bound(const char *key);

/* Access tokens the database does not know, or knows as revoked, expired
 * or of an inactive grant (hash: SHA-256 hex). None of these ever becomes
 * valid: a grant leaves 'active' for good, and a token is valid from the
 * commit that issues it, before its holder has it, so no node can have
 * looked it up in vain before; only a guess of a 256-bit random token
 * could. 1: known invalid. */
int cache_token_invalid(const char *hash);
void cache_token_put_invalid(const char *hash);

/* The sealed upstream access token of a grant (still AES-GCM ciphertext:
 * nothing in memory is readable without the key), with its expiry (0:
 * none), so that a proxied request needs no database round trip. Evicted
 * with the grant (revocation, upstream refresh). *sealed is malloc'd;
 * 1 hit, 0 miss (out of memory is a miss). */
int cache_upstream_get(const char *grant_id, char key_id[65], char **sealed, long long *exp);
void cache_upstream_put(const char *grant_id, const char *key_id, const char *sealed, long long exp,
			unsigned long generation);
/* 1 while the node hears revocations (lookups may hit). */
int cache_enabled(void);

#endif
