#include "cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "metrics.h"
#include "notify.h"

/* Cache keys are SHA-256 hex of bearer tokens (64 digits; slots hold 65
 * bytes, "" when empty): compared in constant time like any value derived
 * from a secret. */
static int key_eq(const char *slot, const char *hash)
{
	return slot[0] && strnlen(hash, 65) == 64 && CRYPTO_memcmp(slot, hash, 64) == 0;
}

#define CACHE_SLOTS 16384 /* power of two */
#define CACHE_PROBE 8

struct entry {
	char hash[65]; /* "" = empty */
	time_t until;
	struct token_info info;
};

static struct entry *slots;

#define UP_SLOTS 4096 /* power of two */

struct up_entry {
	char grant_id[37]; /* "" = empty */
	char key_id[65];
	char *sealed;
	long long exp;
	time_t until;
};

static struct up_entry *up_slots;

struct sess_entry {
	char key[65];
	char user_id[37];
	time_t until;
};
static struct sess_entry *sess_slots;

/* A negative entry: the key (SHA-256 hex) and until when it holds. */
struct neg_entry {
	char key[65]; /* "" = empty */
	time_t until;
};
static struct neg_entry *neg_sess, *neg_tok;
static unsigned long neg_generation; /* bumped by every binding heard and every flush */
/* A client as its lookup found it (clients_lookup: configured and
 * registered clients; CIMD clients have their own cache), by client_id. */
#define CLIENT_SLOTS 1024 /* power of two, direct-mapped */
struct client_entry {
	time_t until; /* 0 = empty */
	struct client cl;
};
static struct client_entry *client_slots;
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int enabled; /* only while the node hears revocations (notify.h) */
static int subscribed;
static unsigned long generation; /* bumped by every eviction, under the write lock */

unsigned long cache_generation(void)
{
	return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

int cache_enabled(void)
{
	return __atomic_load_n(&enabled, __ATOMIC_ACQUIRE);
}

static size_t slot_of(const char *hash)
{
	/* The hash is uniformly random hex: its first 8 digits index well. */
	size_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v * 16 + (size_t)(hash[i] <= '9' ? hash[i] - '0' : hash[i] - 'a' + 10);
	return v & (CACHE_SLOTS - 1);
}

int cache_get(const char *hash, struct token_info *info)
{
	if (!cache_enabled() || !slots)
		return 0;
	int hit = 0;
	time_t now = time(NULL);
	pthread_rwlock_rdlock(&lock);
	size_t s = slot_of(hash);
	for (int i = 0; i < CACHE_PROBE && !hit; i++) {
		struct entry *e = &slots[(s + (size_t)i) & (CACHE_SLOTS - 1)];
		if (e->until > now && key_eq(e->hash, hash)) {
			*info = e->info;
			hit = 1;
		}
	}
	pthread_rwlock_unlock(&lock);
	/* Re-check after the read: a flush racing this lookup wins. */
	if (hit && !cache_enabled())
		hit = 0;
	metrics_count("token_cache_total", hit ? "hit" : "miss", 1);
	return hit;
}

void cache_put(const char *hash, const struct token_info *info, unsigned long gen)
{
	if (!cache_enabled() || !slots)
		return;
	time_t now = time(NULL), until = now + CACHE_TTL_S;
	if ((time_t)info->exp < until)
		until = (time_t)info->exp;
	if (until <= now)
		return;
	pthread_rwlock_wrlock(&lock);
	if (gen != generation) {
		pthread_rwlock_unlock(&lock);
		return;
	}
	size_t s = slot_of(hash);
	struct entry *victim = NULL;
	for (int i = 0; i < CACHE_PROBE; i++) {
		struct entry *e = &slots[(s + (size_t)i) & (CACHE_SLOTS - 1)];
		if (!victim || e->until < victim->until || key_eq(e->hash, hash))
			victim = e;
		if (key_eq(e->hash, hash))
			break;
	}
	memcpy(victim->hash, hash, 65);
	victim->until = until;
	victim->info = *info;
	pthread_rwlock_unlock(&lock);
}

static size_t up_slot_of(const char *grant_id)
{
	/* A random UUID: its first hex digits index well. */
	size_t v = 0;
	for (int i = 0; i < 8 && grant_id[i]; i++)
		v = v * 16 + (size_t)(grant_id[i] <= '9' ? grant_id[i] - '0' : (grant_id[i] | 0x20) - 'a' + 10);
	return v & (UP_SLOTS - 1);
}

int cache_session_get(const char *key, char user_id[37])
{
	if (!cache_enabled() || !sess_slots || strlen(key) != 64)
		return 0;
	int hit = 0;
	pthread_rwlock_rdlock(&lock);
	struct sess_entry *e = &sess_slots[slot_of(key) & (UP_SLOTS - 1)];
	if (e->until > time(NULL) && strcmp(e->key, key) == 0) {
		memcpy(user_id, e->user_id, 37);
		hit = 1;
	}
	pthread_rwlock_unlock(&lock);
	return hit;
}

void cache_session_put(const char *key, const char *user_id)
{
	if (!cache_enabled() || !sess_slots || strlen(key) != 64 || strlen(user_id) != 36)
		return;
	pthread_rwlock_wrlock(&lock);
	struct sess_entry *e = &sess_slots[slot_of(key) & (UP_SLOTS - 1)];
	memcpy(e->key, key, 65);
	memcpy(e->user_id, user_id, 37);
	e->until = time(NULL) + CACHE_TTL_S;
	pthread_rwlock_unlock(&lock);
}

/* ---- negative entries ------------------------------------------------------ */

unsigned long cache_neg_generation(void)
{
	return __atomic_load_n(&neg_generation, __ATOMIC_ACQUIRE);
}

static int neg_get(struct neg_entry *table, const char *key)
{
	if (!cache_enabled() || !table || strnlen(key, 65) != 64)
		return 0;
	pthread_rwlock_rdlock(&lock);
	const struct neg_entry *e = &table[slot_of(key) & (CACHE_NEG_SLOTS - 1)];
	int hit = e->until > time(NULL) && key_eq(e->key, key);
	pthread_rwlock_unlock(&lock);
	return hit && cache_enabled();
}

/* gen: the neg_generation read before the lookup, or 0 for none to check
 * (tokens: nothing evicts their entries). */
static void neg_put(struct neg_entry *table, const char *key, int check, unsigned long gen)
{
	if (!cache_enabled() || !table || strnlen(key, 65) != 64)
		return;
	pthread_rwlock_wrlock(&lock);
	if (!check || gen == neg_generation) {
		struct neg_entry *e = &table[slot_of(key) & (CACHE_NEG_SLOTS - 1)];
		memcpy(e->key, key, 65);
		e->until = time(NULL) + CACHE_NEG_TTL_S;
	}
	pthread_rwlock_unlock(&lock);
}

/* Under the write lock. */
static void neg_flush(struct neg_entry *table)
{
	for (size_t i = 0; table && i < CACHE_NEG_SLOTS; i++)
		if (table[i].key[0])
			table[i].key[0] = '\0';
}

int cache_session_unbound(const char *key)
{
	int hit = neg_get(neg_sess, key);
	metrics_count("session_negative_cache_total", hit ? "hit" : "miss", 1);
	return hit;
}

void cache_session_put_unbound(const char *key, unsigned long gen)
{
	neg_put(neg_sess, key, 1, gen);
}

void cache_session_bound(const char *key)
{
	if (!neg_sess || strnlen(key, 65) != 64)
		return;
	pthread_rwlock_wrlock(&lock);
	neg_generation++;
	struct neg_entry *e = &neg_sess[slot_of(key) & (CACHE_NEG_SLOTS - 1)];
	if (key_eq(e->key, key))
		e->key[0] = '\0';
	pthread_rwlock_unlock(&lock);
}

int cache_token_invalid(const char *hash)
{
	int hit = neg_get(neg_tok, hash);
	metrics_count("token_negative_cache_total", hit ? "hit" : "miss", 1);
	return hit;
}

void cache_token_put_invalid(const char *hash)
{
	neg_put(neg_tok, hash, 0, 0);
}

int cache_upstream_get(const char *grant_id, char key_id[65], char **sealed, long long *exp)
{
	if (!cache_enabled() || !up_slots)
		return 0;
	int hit = 0;
	pthread_rwlock_rdlock(&lock);
	struct up_entry *e = &up_slots[up_slot_of(grant_id)];
	if (e->grant_id[0] && e->until > time(NULL) && strcmp(e->grant_id, grant_id) == 0 && e->sealed) {
		*sealed = strdup(e->sealed);
		memcpy(key_id, e->key_id, 65);
		*exp = e->exp;
		hit = *sealed != NULL;
	}
	pthread_rwlock_unlock(&lock);
	if (hit && !cache_enabled()) {
		free(*sealed);
		*sealed = NULL;
		hit = 0;
	}
	return hit;
}

void cache_upstream_put(const char *grant_id, const char *key_id, const char *sealed, long long exp, unsigned long gen)
{
	if (!cache_enabled() || !up_slots || strlen(grant_id) != 36 || strlen(key_id) > 64)
		return;
	char *copy = strdup(sealed);
	if (!copy)
		return;
	pthread_rwlock_wrlock(&lock);
	if (gen != generation) {
		pthread_rwlock_unlock(&lock);
		free(copy);
		return;
	}
	struct up_entry *e = &up_slots[up_slot_of(grant_id)];
	free(e->sealed);
	memcpy(e->grant_id, grant_id, 37);
	snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
	e->sealed = copy;
	e->exp = exp;
	e->until = time(NULL) + CACHE_TTL_S;
	pthread_rwlock_unlock(&lock);
}

/* ---- clients ------------------------------------------------------------- */

/* FNV-1a of the id. Dynamic ids are random and the server's; static ones
 * the operator's. Direct-mapped: a colliding id only overwrites its slot,
 * costing the other a database round trip (lookups compare the whole id). */
static size_t client_slot_of(const char *client_id)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)client_id; *p; p++)
		h = (h ^ *p) * 16777619u;
	return (size_t)h & (CLIENT_SLOTS - 1);
}

/* Under the write lock: the named client, or every one (NULL). */
static void client_evict(const char *client_id)
{
	if (!client_slots)
		return;
	for (size_t i = 0; i < CLIENT_SLOTS; i++) {
		struct client_entry *e = &client_slots[client_id ? client_slot_of(client_id) : i];
		if (e->until && (!client_id || strcmp(e->cl.client_id, client_id) == 0)) {
			client_free(&e->cl);
			e->until = 0;
		}
		if (client_id)
			break;
	}
}

void cache_client_evict(const char *client_id)
{
	if (!client_slots || !client_id)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	client_evict(client_id);
	pthread_rwlock_unlock(&lock);
}

int cache_client_get(const char *client_id, struct client *out)
{
	memset(out, 0, sizeof(*out));
	if (!cache_enabled() || !client_slots || !client_id_ok(client_id))
		return 0;
	int hit = 0;
	pthread_rwlock_rdlock(&lock);
	const struct client_entry *e = &client_slots[client_slot_of(client_id)];
	if (e->until > time(NULL) && strcmp(e->cl.client_id, client_id) == 0)
		hit = client_copy(out, &e->cl) == 0;
	pthread_rwlock_unlock(&lock);
	if (hit && !cache_enabled()) {
		client_free(out);
		hit = 0;
	}
	metrics_count("client_cache_total", hit ? "hit" : "miss", 1);
	return hit;
}

void cache_client_put(const struct client *cl, unsigned long gen)
{
	struct client copy;
	if (!cache_enabled() || !client_slots || !client_id_ok(cl->client_id) || client_copy(&copy, cl) < 0)
		return;
	pthread_rwlock_wrlock(&lock);
	if (gen == generation) {
		struct client_entry *e = &client_slots[client_slot_of(cl->client_id)];
		client_free(&e->cl);
		e->cl = copy;
		e->until = time(NULL) + CACHE_TTL_S;
		memset(&copy, 0, sizeof(copy));
	}
	pthread_rwlock_unlock(&lock);
	client_free(&copy);
}

/* Under the write lock. */
static void up_evict(const char *grant_id)
{
	if (!up_slots)
		return;
	if (!grant_id) {
		for (size_t i = 0; i < UP_SLOTS; i++)
			if (up_slots[i].grant_id[0]) {
				up_slots[i].grant_id[0] = '\0';
				free(up_slots[i].sealed);
				up_slots[i].sealed = NULL;
			}
		return;
	}
	struct up_entry *e = &up_slots[up_slot_of(grant_id)];
	if (strcmp(e->grant_id, grant_id) == 0) {
		e->grant_id[0] = '\0';
		free(e->sealed);
		e->sealed = NULL;
	}
}

void cache_evict_grant(const char *grant_id)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	up_evict(grant_id);
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (slots[i].hash[0] && strcmp(slots[i].info.grant_id, grant_id) == 0)
			slots[i].hash[0] = '\0';
	pthread_rwlock_unlock(&lock);
}

static void evict_token(const char *hash)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	size_t s = slot_of(hash);
	for (int i = 0; i < CACHE_PROBE; i++) {
		struct entry *e = &slots[(s + (size_t)i) & (CACHE_SLOTS - 1)];
		if (key_eq(e->hash, hash))
			e->hash[0] = '\0';
	}
	pthread_rwlock_unlock(&lock);
}

static void flush(void)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	neg_generation++;
	up_evict(NULL);
	client_evict(NULL);
	neg_flush(neg_sess);
	neg_flush(neg_tok);
	/* Only used slots are written: untouched ones stay out of memory. */
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (slots[i].hash[0])
			slots[i].hash[0] = '\0';
	pthread_rwlock_unlock(&lock);
}

static int field_covers(const char *want, const char *have)
{
	return !want || strcmp(want, have) == 0;
}

/* Evicts the token entries a selector covers; upstream tokens (keyed by
 * grant alone) all go. */
static void evict_covered(const struct revocation *rv)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	up_evict(NULL);
	/* A client's selector is what disabling it announces (ops/admin.c). */
	if (rv->client_id)
		client_evict(rv->client_id);
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		const struct entry *e = &slots[i];
		if (e->hash[0] && field_covers(rv->grant_id, e->info.grant_id) &&
		    field_covers(rv->token_hash, e->hash) && field_covers(rv->client_id, e->info.client_id) &&
		    field_covers(rv->subject, e->info.subject) && field_covers(rv->upstream, e->info.upstream))
			slots[i].hash[0] = '\0';
	}
	pthread_rwlock_unlock(&lock);
}

/* ---- what notify tells the cache ------------------------------------------ */

static void on_revoked(const struct revocation *rv, void *arg)
{
	(void)arg;
	int selector = rv->client_id || rv->subject || rv->upstream;
	if (!selector && rv->grant_id && !rv->token_hash)
		cache_evict_grant(rv->grant_id);
	else if (!selector && rv->token_hash && !rv->grant_id)
		evict_token(rv->token_hash);
	else if (!selector && !rv->grant_id && !rv->token_hash)
		flush();
	else
		evict_covered(rv);
}

/* Its upstream token was refreshed: no revocation, but the sealed copy and
 * the grant's entries are stale. */
static void on_refreshed(const char *grant_id, void *arg)
{
	(void)arg;
	cache_evict_grant(grant_id);
}

static void on_bound(const char *key, void *arg)
{
	(void)arg;
	cache_session_bound(key);
}

/* Off (and empty) while the node may miss a revocation; emptied again as it
 * listens, so that nothing cached while it was deaf survives. */
static void on_state(enum notify_state st, void *arg)
{
	(void)arg;
	if (st == NOTIFY_DEAF)
		__atomic_store_n(&enabled, 0, __ATOMIC_RELEASE);
	flush();
	if (st == NOTIFY_LISTENING)
		__atomic_store_n(&enabled, 1, __ATOMIC_RELEASE);
}

int cache_start(void)
{
	if (!subscribed && (notify_on_revoke(on_revoked, NULL) < 0 || notify_on_refresh(on_refreshed, NULL) < 0 ||
			    notify_on_state(on_state, NULL) < 0 || notify_on_bound(on_bound, NULL) < 0))
		return -1;
	subscribed = 1;
	/* Writers first: a crowd of lookups (a client's copy takes a few
	 * mallocs under the read lock) must not hold off an eviction, and so
	 * a revocation. No lock is taken twice by one thread. */
	static int lock_kind_set;
	pthread_rwlockattr_t attr;
	int bad = 0;
	if (!lock_kind_set && pthread_rwlockattr_init(&attr) == 0) {
		lock_kind_set = 1;
		bad = pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) == 0 &&
		      pthread_rwlock_destroy(&lock) == 0 && pthread_rwlock_init(&lock, &attr) != 0;
		pthread_rwlockattr_destroy(&attr);
	}
	if (bad)
		return -1;
	slots = calloc(CACHE_SLOTS, sizeof(*slots));
	up_slots = calloc(UP_SLOTS, sizeof(*up_slots));
	sess_slots = calloc(UP_SLOTS, sizeof(*sess_slots));
	neg_sess = calloc(CACHE_NEG_SLOTS, sizeof(*neg_sess));
	neg_tok = calloc(CACHE_NEG_SLOTS, sizeof(*neg_tok));
	client_slots = calloc(CLIENT_SLOTS, sizeof(*client_slots));
	if (!slots || !up_slots || !sess_slots || !neg_sess || !neg_tok || !client_slots) {
		free(slots);
		free(up_slots);
		free(sess_slots);
		free(neg_sess);
		free(neg_tok);
		free(client_slots);
		client_slots = NULL;
		neg_sess = NULL;
		neg_tok = NULL;
		sess_slots = NULL;
		slots = NULL;
		up_slots = NULL;
		return -1;
	}
	return 0;
}

void cache_stop(void)
{
	__atomic_store_n(&enabled, 0, __ATOMIC_RELEASE);
	pthread_rwlock_wrlock(&lock);
	up_evict(NULL);
	free(up_slots);
	up_slots = NULL;
	client_evict(NULL);
	free(client_slots);
	client_slots = NULL;
	free(sess_slots);
	sess_slots = NULL;
	free(neg_sess);
	neg_sess = NULL;
	free(neg_tok);
	neg_tok = NULL;
	free(slots);
	slots = NULL;
	pthread_rwlock_unlock(&lock);
}
