#include "cache.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <openssl/crypto.h>

#include "buf.h"
#include "grant.h"
#include "log.h"
#include "metrics.h"
#include "revoke.h"

#define LISTEN_HEARTBEAT_MS 500  /* the listener asks PostgreSQL this often */
#define LISTEN_SILENCE_MS   3000 /* without an answer this long, the node is deaf */

/* Cache keys are SHA-256 hex of bearer tokens (64 digits; slots hold 65
 * bytes, "" when empty): compared in constant time like any value derived
 * from a secret. */
static int key_eq(const char *slot, const char *hash)
{
	return slot[0] && strnlen(hash, 65) == 64 && CRYPTO_memcmp(slot, hash, 64) == 0;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define CACHE_SLOTS 16384 /* power of two */
#define CACHE_PROBE 8
#define CACHE_RESYNC_BYTES (8 * 1024 * 1024) /* ids of live transfers asked about after deafness */

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
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int enabled; /* only while LISTEN is active */
static pthread_t listener;
static int running, stopping;
static struct app *the_app;
static unsigned long generation; /* bumped by every eviction, under the write lock */

static struct {
	cache_revoke_fn fn;
	void *arg;
} revoke_subs[CACHE_SUBSCRIBERS];
static size_t n_revoke_subs;
static struct {
	cache_live_fn fn;
	void *arg;
} live_subs[CACHE_SUBSCRIBERS];
static size_t n_live_subs;

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

void cache_upstream_put(const char *grant_id, const char *key_id, const char *sealed, long long exp,
			unsigned long gen)
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

void cache_evict_token(const char *hash)
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

void cache_flush(void)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	up_evict(NULL);
	/* Only used slots are written: untouched ones stay out of memory. */
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (slots[i].hash[0])
			slots[i].hash[0] = '\0';
	pthread_rwlock_unlock(&lock);
}

static void disable(void)
{
	__atomic_store_n(&enabled, 0, __ATOMIC_RELEASE);
	cache_flush();
}

/* ---- revocations ---------------------------------------------------------- */

int cache_on_revoke(cache_revoke_fn fn, void *arg)
{
	if (n_revoke_subs == CACHE_SUBSCRIBERS)
		return -1;
	revoke_subs[n_revoke_subs].fn = fn;
	revoke_subs[n_revoke_subs++].arg = arg;
	return 0;
}

int cache_on_resync(cache_live_fn fn, void *arg)
{
	if (n_live_subs == CACHE_SUBSCRIBERS)
		return -1;
	live_subs[n_live_subs].fn = fn;
	live_subs[n_live_subs++].arg = arg;
	return 0;
}

static int field_covers(const char *want, const char *have)
{
	return !want || strcmp(want, have) == 0;
}

/* Evicts the token entries a selector covers; upstream tokens (keyed by
 * grant alone) all go. */
static void evict_covered(const struct cache_revocation *rv)
{
	if (!slots)
		return;
	pthread_rwlock_wrlock(&lock);
	generation++;
	up_evict(NULL);
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		const struct entry *e = &slots[i];
		if (e->hash[0] && field_covers(rv->grant_id, e->info.grant_id) && field_covers(rv->token_hash, e->hash) &&
		    field_covers(rv->client_id, e->info.client_id) && field_covers(rv->subject, e->info.subject) &&
		    field_covers(rv->upstream, e->info.upstream))
			slots[i].hash[0] = '\0';
	}
	pthread_rwlock_unlock(&lock);
}

void cache_revoked(const struct cache_revocation *rv)
{
	int selector = rv->client_id || rv->subject || rv->upstream;
	if (!selector && rv->grant_id && !rv->token_hash)
		cache_evict_grant(rv->grant_id);
	else if (!selector && rv->token_hash && !rv->grant_id)
		cache_evict_token(rv->token_hash);
	else if (!selector && !rv->grant_id && !rv->token_hash)
		cache_flush();
	else
		evict_covered(rv);
	for (size_t i = 0; i < n_revoke_subs; i++)
		revoke_subs[i].fn(rv, revoke_subs[i].arg);
}

static int is_uuid(const char *s)
{
	return strlen(s) == 36 && strspn(s, "0123456789abcdef-") == 36;
}

static int is_hex64(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* "r:" payloads: {"grant_id"?, "client_id"?, "subject"?, "upstream"?}, all
 * strings; rv points into sel. */
static int selector_parse(json_t *sel, struct cache_revocation *rv)
{
	const char *k;
	json_t *v;
	if (!json_is_object(sel))
		return -1;
	json_object_foreach(sel, k, v) {
		const char *s = json_string_value(v);
		if (!s)
			return -1;
		if (strcmp(k, "grant_id") == 0)
			rv->grant_id = s;
		else if (strcmp(k, "client_id") == 0)
			rv->client_id = s;
		else if (strcmp(k, "subject") == 0)
			rv->subject = s;
		else if (strcmp(k, "upstream") == 0)
			rv->upstream = s;
		else
			return -1;
	}
	return 0;
}

void cache_handle_notify(const char *payload)
{
	struct cache_revocation rv;
	json_t *sel = NULL;
	memset(&rv, 0, sizeof(rv));
	if (strncmp(payload, "u:", 2) == 0) {
		cache_evict_grant(payload + 2); /* its upstream token was refreshed: no revocation */
		goto out;
	}
	if (strncmp(payload, "g:", 2) == 0 && is_uuid(payload + 2)) {
		rv.grant_id = payload + 2;
	} else if (strncmp(payload, "t:\\x", 4) == 0 && is_hex64(payload + 4)) {
		rv.token_hash = payload + 4;
	} else if (strncmp(payload, "r:", 2) == 0 &&
		   (sel = json_loads(payload + 2, JSON_REJECT_DUPLICATES, NULL)) != NULL &&
		   selector_parse(sel, &rv) == 0) {
		/* a selector of the operator API */
	} else {
		/* "*", or what this node cannot read: everything (fail closed). */
		memset(&rv, 0, sizeof(rv));
	}
	cache_revoked(&rv);
	if (!rv.token_hash)
		revoke_wake(); /* grants are committed revoked: revoke them upstream */
out:
	json_decref(sel);
}

/* Revocations made while the listener was deaf were never announced to this
 * node: ask the database about every grant and token it is serving. */
struct live_list {
	struct buf grants, tokens;
	int failed;
};

static void live_emit(const char *grant_id, const char *token_hash, void *ctx)
{
	struct live_list *l = ctx;
	if (!l->failed && grant_id && is_uuid(grant_id) &&
	    buf_printf(&l->grants, "%s%s", l->grants.len ? "," : "{", grant_id) < 0)
		l->failed = 1;
	if (!l->failed && token_hash && is_hex64(token_hash) &&
	    buf_printf(&l->tokens, "%s%s", l->tokens.len ? "," : "{", token_hash) < 0)
		l->failed = 1;
}

/* 0 done; -1 the database failed (the caller reconnects and tries again). */
static int resync(PGconn *pg)
{
	static const char *q =
		"SELECT 'g', id::text FROM grants WHERE id = ANY($1::uuid[]) AND status = 'revoked' "
		"UNION ALL SELECT 't', encode(token_hash, 'hex') FROM tokens "
		"WHERE token_hash = ANY(ARRAY(SELECT decode(h, 'hex') FROM unnest($2::text[]) h)) "
		"AND revoked_at IS NOT NULL";
	struct live_list l;
	PGresult *res = NULL;
	int rc = -1;
	memset(&l, 0, sizeof(l));
	buf_init(&l.grants, CACHE_RESYNC_BYTES);
	buf_init(&l.tokens, CACHE_RESYNC_BYTES);
	for (size_t i = 0; i < n_live_subs; i++)
		live_subs[i].fn(live_emit, &l, live_subs[i].arg);
	if (l.failed || buf_adds(&l.grants, l.grants.len ? "}" : "{}") < 0 ||
	    buf_adds(&l.tokens, l.tokens.len ? "}" : "{}") < 0) {
		/* Too much to ask about: everything it serves may be revoked. */
		struct cache_revocation all;
		memset(&all, 0, sizeof(all));
		log_msg(LOG_WARN, "cache.resync_overflow", NULL, "too many live transfers to check: ending them all");
		cache_revoked(&all);
		rc = 0;
		goto out;
	}
	if (strcmp(l.grants.ptr, "{}") == 0 && strcmp(l.tokens.ptr, "{}") == 0) {
		rc = 0;
		goto out;
	}
	const char *p[] = { l.grants.ptr, l.tokens.ptr };
	res = PQexecParams(pg, q, 2, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_msg(LOG_WARN, "cache.resync_failed", NULL, "could not check live transfers for revocations");
		goto out;
	}
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		struct cache_revocation rv;
		memset(&rv, 0, sizeof(rv));
		if (PQgetvalue(res, i, 0)[0] == 'g')
			rv.grant_id = PQgetvalue(res, i, 1);
		else
			rv.token_hash = PQgetvalue(res, i, 1);
		cache_revoked(&rv);
	}
	if (n)
		log_msg(LOG_INFO, "cache.resync", NULL, "%d revocations made while deaf ended live transfers", n);
	rc = 0;
out:
	PQclear(res);
	buf_free(&l.grants);
	buf_free(&l.tokens);
	return rc;
}

/* Sleep until the next thing the listener must do: send the heartbeat, or
 * declare the node deaf; at most 250 ms, so a stop is noticed. */
static int listen_wait_ms(long long heard, long long sent)
{
	long long due = sent ? sent + LISTEN_SILENCE_MS + 1 : heard + LISTEN_HEARTBEAT_MS + 1;
	long long wait = due - mono_ms();
	return wait < 0 ? 0 : wait > 250 ? 250 : (int)wait;
}

static void *listen_loop(void *arg)
{
	(void)arg;
	PGconn *pg = NULL;
	int deaf = 1; /* no revocation from other nodes reached this one */
	long long heard = 0, sent = 0; /* last answer to a heartbeat; heartbeat in flight since */
	while (!__atomic_load_n(&stopping, __ATOMIC_ACQUIRE)) {
		if (!pg) {
			pg = db_connect_one(the_app->cfg, "mcp-broker-listen");
			PGresult *r = pg ? PQexec(pg, "LISTEN " GRANT_NOTIFY_CHANNEL) : NULL;
			int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
			PQclear(r);
			if (!ok) {
				if (pg)
					PQfinish(pg);
				pg = NULL;
				disable();
				sleep(1);
				continue;
			}
			/* Anything revoked while we were deaf is gone from memory,
			 * and ends what it still serves. */
			cache_flush();
			if (deaf && resync(pg) < 0) {
				PQfinish(pg);
				pg = NULL;
				sleep(1);
				continue;
			}
			deaf = 0;
			heard = mono_ms();
			sent = 0;
			__atomic_store_n(&enabled, 1, __ATOMIC_RELEASE);
			log_msg(LOG_INFO, "cache.listening", NULL, "token cache on: listening for revocations");
		}
		struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };
		int n = poll(&pfd, 1, listen_wait_ms(heard, sent));
		if (n < 0)
			continue;
		/* A partition leaves the connection open and silent: a node that
		 * cannot hear revocations must not serve from its cache nor keep
		 * streams of grants that may be dead. After LISTEN_SILENCE_MS
		 * without an answer to the heartbeat it is deaf: cache off, live
		 * transfers ended (fail closed), reconnect. */
		if (sent && mono_ms() - sent > LISTEN_SILENCE_MS) {
			struct cache_revocation all;
			memset(&all, 0, sizeof(all));
			log_msg(LOG_WARN, "cache.listen_silent", NULL, "revocation listener silent: token cache off, live transfers ended");
			disable();
			cache_revoked(&all);
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
			continue;
		}
		if (!sent && mono_ms() - heard > LISTEN_HEARTBEAT_MS) {
			if (PQsendQuery(pg, "SELECT 1"))
				sent = mono_ms();
		}
		if (n > 0 && !PQconsumeInput(pg)) {
			log_msg(LOG_WARN, "cache.listen_lost", NULL, "revocation listener lost: token cache off");
			disable();
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
			continue;
		}
		while (sent && !PQisBusy(pg)) {
			PGresult *hr = PQgetResult(pg);
			if (!hr) {
				sent = 0;
				heard = mono_ms();
				break;
			}
			PQclear(hr);
		}
		PGnotify *nt;
		while ((nt = PQnotifies(pg)) != NULL) {
			cache_handle_notify(nt->extra ? nt->extra : "*");
			PQfreemem(nt);
		}
		if (PQstatus(pg) != CONNECTION_OK) {
			disable();
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
		}
	}
	disable();
	if (pg)
		PQfinish(pg);
	return NULL;
}

int cache_start(struct app *app)
{
	slots = calloc(CACHE_SLOTS, sizeof(*slots));
	up_slots = calloc(UP_SLOTS, sizeof(*up_slots));
	sess_slots = calloc(UP_SLOTS, sizeof(*sess_slots));
	if (!slots || !up_slots || !sess_slots) {
		free(slots);
		free(up_slots);
		free(sess_slots);
		sess_slots = NULL;
		slots = NULL;
		up_slots = NULL;
		return -1;
	}
	the_app = app;
	if (pthread_create(&listener, NULL, listen_loop, NULL) != 0) {
		free(slots);
		slots = NULL;
		return -1;
	}
	running = 1;
	return 0;
}

void cache_stop(void)
{
	if (!running)
		return;
	__atomic_store_n(&stopping, 1, __ATOMIC_RELEASE);
	pthread_join(listener, NULL);
	running = 0;
	pthread_rwlock_wrlock(&lock);
	up_evict(NULL);
	free(up_slots);
	up_slots = NULL;
	free(sess_slots);
	sess_slots = NULL;
	free(slots);
	slots = NULL;
	pthread_rwlock_unlock(&lock);
}
