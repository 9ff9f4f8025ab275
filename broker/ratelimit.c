#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "crypto.h"

#define RL_SLOTS 8192 /* power of two */
#define RL_PROBE 8

struct bucket {
	char key[33]; /* hex of 16 bytes of SHA-256(space "|" key) */
	double tokens;
	double last;
};

static struct bucket table[RL_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int ratelimit_take(const char *space, const char *key, double rate, double burst, int *retry_after_s)
{
	char full[700], hex[65], k[33];
	snprintf(full, sizeof(full), "%s|%s", space, key);
	crypto_sha256_hex(full, strlen(full), hex);
	memcpy(k, hex, 32);
	k[32] = '\0';
	size_t slot = 0;
	for (int i = 0; i < 6; i++)
		slot = slot * 16 + (size_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
	double now = now_s();
	int allowed;
	pthread_mutex_lock(&lock);
	struct bucket *b = NULL, *oldest = NULL;
	for (int i = 0; i < RL_PROBE && !b; i++) {
		struct bucket *e = &table[(slot + (size_t)i) & (RL_SLOTS - 1)];
		if (strcmp(e->key, k) == 0)
			b = e;
		else if (!oldest || e->last < oldest->last)
			oldest = e;
	}
	if (!b) {
		b = oldest;
		memcpy(b->key, k, sizeof(k));
		b->tokens = burst;
		b->last = now;
	}
	b->tokens += (now - b->last) * rate;
	if (b->tokens > burst)
		b->tokens = burst;
	b->last = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		allowed = 1;
	} else {
		double wait = (1.0 - b->tokens) / rate;
		*retry_after_s = wait < 1.0 ? 1 : (int)(wait + 0.999);
		allowed = 0;
	}
	pthread_mutex_unlock(&lock);
	return allowed;
}
