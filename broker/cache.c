#include "cache.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grant.h"
#include "log.h"
#include "metrics.h"
#include "revoke.h"

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
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int enabled; /* only while LISTEN is active */
static pthread_t listener;
static int running, stopping;
static struct app *the_app;
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
		if (e->until > now && strcmp(e->hash, hash) == 0) {
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
		if (!victim || e->until < victim->until || strcmp(e->hash, hash) == 0)
			victim = e;
		if (strcmp(e->hash, hash) == 0)
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
		if (strcmp(e->hash, hash) == 0)
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

static void handle(const char *payload)
{
	if (strncmp(payload, "u:", 2) == 0) {
		cache_evict_grant(payload + 2); /* its upstream token was refreshed */
	} else if (strncmp(payload, "g:", 2) == 0) {
		cache_evict_grant(payload + 2);
		revoke_wake(); /* the grant is committed revoked: revoke upstream */
	} else if (strncmp(payload, "t:", 2) == 0 && strlen(payload) >= 2 + 2 + 64) {
		/* "t:\x<64 hex>" */
		cache_evict_token(payload + 4);
	} else {
		cache_flush();
		revoke_wake();
	}
}

static void *listen_loop(void *arg)
{
	(void)arg;
	PGconn *pg = NULL;
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
			/* Anything revoked while we were deaf is gone from memory. */
			cache_flush();
			__atomic_store_n(&enabled, 1, __ATOMIC_RELEASE);
			log_msg(LOG_INFO, "cache.listening", NULL, "token cache on: listening for revocations");
		}
		struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };
		int n = poll(&pfd, 1, 500);
		if (n < 0)
			continue;
		if (n > 0 && !PQconsumeInput(pg)) {
			log_msg(LOG_WARN, "cache.listen_lost", NULL, "revocation listener lost: token cache off");
			disable();
			PQfinish(pg);
			pg = NULL;
			continue;
		}
		PGnotify *nt;
		while ((nt = PQnotifies(pg)) != NULL) {
			handle(nt->extra ? nt->extra : "*");
			PQfreemem(nt);
		}
		if (PQstatus(pg) != CONNECTION_OK) {
			disable();
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
