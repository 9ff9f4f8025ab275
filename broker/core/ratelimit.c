#include "ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "netaddr.h"

/* The bound on recycling (the table is per node, like the limits).
 *
 * Keys are hashed under a random per-process key, so a new key lands in a
 * window nobody outside can predict. A full window recycles its fullest
 * bucket (refilled level / burst, the oldest on a tie); an exhausted bucket
 * is recycled only when every bucket of its window is exhausted as well.
 * Failure buckets refill completely within one to two minutes, so to reset
 * somebody's exhausted failure bucket an attacker must hold most of the
 * table exhausted at once: with a fraction f of the RL_SLOTS buckets
 * exhausted, a given window is all exhausted with probability about
 * f^(RL_PROBE - 1) (f = 0.9: under one in two). Every bucket an outsider
 * can exhaust costs at least limits.token_failures_per_client_address_per_minute
 * failures (the other spaces need valid credentials), so ~7000 of them take
 * ~7000 x that many failures within a minute, which
 * limits.token_failures_per_address_per_minute spreads over ~1750 addresses
 * at the defaults (IPv6 counted per /64); an attacker who holds that many
 * addresses already has that many fresh budgets, and a recycled bucket gives
 * one of them a single minute's worth more. Flooding
 * one bucket never resets it: failures are charged into debt (down to
 * -burst), and a request turned away at the gate creates nothing.
 * Recycling never refuses a key: it can only be generous, never lock
 * anybody out. */
#define RL_SLOTS 8192 /* power of two */
#define RL_PROBE 8
#define RL_SPACE_MAX 32
#define RL_RETRY_MAX_S 86400

struct bucket {
	uint8_t key[16]; /* leading bytes of the keyed hash of (space, key) */
	int used;
	double rate, burst;
	double tokens;
	double last;
};

static struct bucket table[RL_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t secret_once = PTHREAD_ONCE_INIT;
static uint8_t secret[CRYPTO_KEY_LEN];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void secret_init(void)
{
	if (crypto_random(secret, sizeof(secret)) == 0)
		return;
	/* No randomness: a key only this process is likely to hold. Predictable
	 * windows make recycling easier to aim, never a lock-out. */
	struct {
		struct timespec mono, real;
		pid_t pid;
		const void *where;
	} seed;
	memset(&seed, 0, sizeof(seed));
	clock_gettime(CLOCK_MONOTONIC, &seed.mono);
	clock_gettime(CLOCK_REALTIME, &seed.real);
	seed.pid = getpid();
	seed.where = &seed;
	crypto_sha256(&seed, sizeof(seed), secret);
}

/* The bucket key: SHA-256(secret | space | 0 | SHA-256(key)), so keys of
 * any length are hashed whole and no (space, key) pair aliases another. */
static void bucket_key(const char *space, const char *key, uint8_t out[16], size_t *slot)
{
	uint8_t msg[CRYPTO_KEY_LEN + RL_SPACE_MAX + 1 + CRYPTO_SHA256_LEN], d[CRYPTO_SHA256_LEN];
	size_t sl = strnlen(space, RL_SPACE_MAX), n = 0;
	pthread_once(&secret_once, secret_init);
	memcpy(msg, secret, sizeof(secret));
	n += sizeof(secret);
	memcpy(msg + n, space, sl);
	n += sl;
	msg[n++] = 0;
	crypto_sha256(key, strlen(key), msg + n);
	n += CRYPTO_SHA256_LEN;
	crypto_sha256(msg, n, d);
	memcpy(out, d, 16);
	*slot = ((size_t)d[16] << 16 | (size_t)d[17] << 8 | d[18]) & (RL_SLOTS - 1);
	crypto_wipe(msg, sizeof(msg));
}

static double level(const struct bucket *b, double now)
{
	double t = b->tokens + (now - b->last) * b->rate;
	return t > b->burst ? b->burst : t;
}

static int retry_after(double tokens, double rate)
{
	double wait = (1.0 - tokens) / rate;
	if (wait < 1.0)
		return 1;
	if (wait > RL_RETRY_MAX_S)
		return RL_RETRY_MAX_S;
	return (int)(wait + 0.999);
}

/* The bucket of k in its window, or NULL; with create, a recycled slot set
 * up full. Called with lock held. */
static struct bucket *find(const uint8_t k[16], size_t slot, int create, double rate, double burst, double now)
{
	struct bucket *victim = NULL;
	double victim_fill = 0;
	for (int i = 0; i < RL_PROBE; i++) {
		struct bucket *e = &table[(slot + (size_t)i) & (RL_SLOTS - 1)];
		if (e->used && memcmp(e->key, k, 16) == 0) {
			e->rate = rate;
			e->burst = burst;
			return e;
		}
		double fill = !e->used ? 2.0 : e->burst > 0 ? level(e, now) / e->burst : 1.0; /* empty slots first */
		if (!victim || fill > victim_fill || (fill == victim_fill && e->last < victim->last)) {
			victim = e;
			victim_fill = fill;
		}
	}
	if (!create)
		return NULL;
	memcpy(victim->key, k, 16);
	victim->used = 1;
	victim->rate = rate;
	victim->burst = burst;
	victim->tokens = burst;
	victim->last = now;
	return victim;
}

int ratelimit_take(const char *space, const char *key, double rate, double burst, int *retry_after_s)
{
	uint8_t k[16];
	size_t slot;
	int allowed;
	bucket_key(space, key, k, &slot);
	double now = now_s();
	pthread_mutex_lock(&lock);
	struct bucket *b = find(k, slot, 1, rate, burst, now);
	b->tokens = level(b, now);
	b->last = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		allowed = 1;
	} else {
		*retry_after_s = retry_after(b->tokens, rate);
		allowed = 0;
	}
	pthread_mutex_unlock(&lock);
	return allowed;
}

int ratelimit_peek(const char *space, const char *key, double rate, double burst, int *retry_after_s)
{
	uint8_t k[16];
	size_t slot;
	int allowed = 1;
	bucket_key(space, key, k, &slot);
	double now = now_s();
	pthread_mutex_lock(&lock);
	struct bucket *b = find(k, slot, 0, rate, burst, now);
	double t = b ? level(b, now) : burst;
	if (t < 1.0) {
		*retry_after_s = retry_after(t, rate);
		allowed = 0;
	}
	pthread_mutex_unlock(&lock);
	return allowed;
}

void ratelimit_charge(const char *space, const char *key, double rate, double burst)
{
	uint8_t k[16];
	size_t slot;
	bucket_key(space, key, k, &slot);
	double now = now_s();
	pthread_mutex_lock(&lock);
	struct bucket *b = find(k, slot, 1, rate, burst, now);
	b->tokens = level(b, now) - 1.0;
	if (b->tokens < -burst)
		b->tokens = -burst;
	b->last = now;
	pthread_mutex_unlock(&lock);
}

/* ---- failures per (client, address) and per address ------------------- */

/* The address a failure is counted against: IPv4 as is, IPv6 by its /64
 * (one subscriber's allocation), text that is no address as it is. */
static void addr_key(const char *addr, char out[64])
{
	int fam;
	uint8_t a[16];
	if (ip_parse(addr, &fam, a) < 0 || fam != AF_INET6) {
		snprintf(out, 64, "%s", addr);
		return;
	}
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
		snprintf(out, 64, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
		return;
	}
	snprintf(out, 64, "%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
}

/* (who, address) joined without ambiguity and without cutting a long who:
 * the address key, a newline (never in it), the hex SHA-256 of who. */
static void pair_key(const char *who, const char *ak, char out[64 + 1 + 65])
{
	char h[65];
	crypto_sha256_hex(who, strlen(who), h);
	snprintf(out, 64 + 1 + 65, "%s\n%s", ak, h);
}

int ratelimit_failures_ok(const char *who, const char *addr, long per_who_addr_min, long per_addr_min,
			  int *retry_after_s)
{
	char ak[64], pk[64 + 1 + 65];
	int ok = 1, ra = 0;
	addr_key(addr, ak);
	if (per_who_addr_min > 0) {
		pair_key(who, ak, pk);
		ok = ratelimit_peek("fail", pk, (double)per_who_addr_min / 60.0, (double)per_who_addr_min, &ra);
	}
	if (ok && per_addr_min > 0)
		ok = ratelimit_peek("fail-addr", ak, (double)per_addr_min / 60.0, (double)per_addr_min, &ra);
	if (!ok)
		*retry_after_s = ra;
	return ok;
}

void ratelimit_failure(const char *who, const char *addr, long per_who_addr_min, long per_addr_min)
{
	char ak[64], pk[64 + 1 + 65];
	addr_key(addr, ak);
	if (per_who_addr_min > 0) {
		pair_key(who, ak, pk);
		ratelimit_charge("fail", pk, (double)per_who_addr_min / 60.0, (double)per_who_addr_min);
	}
	if (per_addr_min > 0)
		ratelimit_charge("fail-addr", ak, (double)per_addr_min / 60.0, (double)per_addr_min);
}
