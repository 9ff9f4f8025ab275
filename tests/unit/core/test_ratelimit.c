/* ratelimit.c: peek creates nothing, charges go into debt and are paid
 * back, failures count per (who, address) and per address (IPv6 per /64),
 * and a full probe window recycles its fullest bucket, never one that is
 * limiting somebody while another is not. */
#include "../../../broker/core/ratelimit.c"

#include "test.h"

/* n keys of space whose buckets start at the same slot (found by trying). */
static void same_window(const char *space, char keys[][32], int n)
{
	uint8_t k[16];
	size_t want = (size_t)-1, slot;
	int found = 0;
	for (unsigned i = 0; found < n && i < 10000000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "w%u", i);
		bucket_key(space, key, k, &slot);
		if (want == (size_t)-1)
			want = slot;
		if (slot == want)
			snprintf(keys[found++], 32, "%s", key);
	}
	CHECK(found == n);
}

static void test_peek_take_charge(void)
{
	int ra = 0;
	CHECK(ratelimit_peek("t1", "a", 1.0, 3.0, &ra) == 1); /* unknown: full */
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take("t1", "a", 1.0, 3.0, &ra) == 1);
	CHECK(ratelimit_take("t1", "a", 1.0, 3.0, &ra) == 0);
	CHECK(ra >= 1 && ra <= 2);
	CHECK(ratelimit_peek("t1", "a", 1.0, 3.0, &ra) == 0);
	CHECK(ratelimit_peek("t1", "b", 1.0, 3.0, &ra) == 1); /* other keys untouched */
	CHECK(ratelimit_peek("t2", "a", 1.0, 3.0, &ra) == 1); /* other spaces too */

	/* Charges go into debt, floored at -burst: 10 charges on a burst of 2
	 * leave -2, i.e. 3 tokens (at 1 per 10 s) before the next one. */
	for (int i = 0; i < 10; i++)
		ratelimit_charge("t3", "x", 0.1, 2.0);
	CHECK(ratelimit_peek("t3", "x", 0.1, 2.0, &ra) == 0);
	CHECK(ra >= 29 && ra <= 30);
}

static void test_failure_buckets(void)
{
	int ra = 0;
	for (int i = 0; i < 5; i++) {
		CHECK(ratelimit_failures_ok("client-a", "198.51.100.7", 5, 8, &ra) == 1);
		ratelimit_failure("client-a", "198.51.100.7", 5, 8);
	}
	CHECK(ratelimit_failures_ok("client-a", "198.51.100.7", 5, 8, &ra) == 0);
	CHECK(ra >= 11 && ra <= 12);                                              /* 5/min: one per 12 s */
	CHECK(ratelimit_failures_ok("client-a", "198.51.100.8", 5, 8, &ra) == 1); /* another address */
	CHECK(ratelimit_failures_ok("client-b", "198.51.100.7", 5, 8, &ra) == 1); /* another client */
	for (int i = 0; i < 3; i++)
		ratelimit_failure("client-b", "198.51.100.7", 5, 8);
	/* 8 failures from the address in all: every client id is refused there. */
	CHECK(ratelimit_failures_ok("client-c", "198.51.100.7", 5, 8, &ra) == 0);
	CHECK(ratelimit_failures_ok("client-c", "198.51.100.7", 5, 0, &ra) == 1); /* per-address off */
	CHECK(ratelimit_failures_ok("client-a", "198.51.100.7", 0, 0, &ra) == 1); /* both off */

	/* IPv6 counts per /64; an IPv4-mapped address is the IPv4 one. */
	for (int i = 0; i < 4; i++) {
		char a[64];
		snprintf(a, sizeof(a), "2001:db8:1:2::%x", i + 1);
		ratelimit_failure("c6", a, 4, 100);
	}
	CHECK(ratelimit_failures_ok("c6", "2001:db8:1:2:ffff::9", 4, 100, &ra) == 0);
	CHECK(ratelimit_failures_ok("c6", "2001:db8:1:3::1", 4, 100, &ra) == 1);
	for (int i = 0; i < 4; i++)
		ratelimit_failure("c4", "::ffff:192.0.2.1", 4, 100);
	CHECK(ratelimit_failures_ok("c4", "192.0.2.1", 4, 100, &ra) == 0);
	/* Long client ids are hashed whole, never cut: two that differ only at
	 * the end are two buckets. */
	char l1[2000], l2[2000];
	memset(l1, 'x', sizeof(l1) - 1);
	l1[sizeof(l1) - 1] = '\0';
	memcpy(l2, l1, sizeof(l2));
	l2[sizeof(l2) - 2] = 'y';
	for (int i = 0; i < 4; i++)
		ratelimit_failure(l1, "192.0.2.9", 4, 100);
	CHECK(ratelimit_failures_ok(l1, "192.0.2.9", 4, 100, &ra) == 0);
	CHECK(ratelimit_failures_ok(l2, "192.0.2.9", 4, 100, &ra) == 1);
}

static void test_recycling(void)
{
	char keys[RL_PROBE + 2][32];
	int ra = 0;
	memset(table, 0, sizeof(table)); /* nothing of the other tests in the window */
	same_window("rc", keys, RL_PROBE + 2);
	/* A window of RL_PROBE buckets: RL_PROBE - 1 exhausted, one only
	 * touched (nearly full). */
	for (int i = 0; i < RL_PROBE - 1; i++) {
		ratelimit_charge("rc", keys[i], 0.01, 2.0);
		ratelimit_charge("rc", keys[i], 0.01, 2.0);
	}
	CHECK(ratelimit_take("rc", keys[RL_PROBE - 1], 0.01, 2.0, &ra) == 1);
	/* A newcomer recycles the nearly full one, not an exhausted one. */
	ratelimit_charge("rc", keys[RL_PROBE], 0.01, 2.0);
	for (int i = 0; i < RL_PROBE - 1; i++)
		CHECK(ratelimit_peek("rc", keys[i], 0.01, 2.0, &ra) == 0);
	CHECK(ratelimit_peek("rc", keys[RL_PROBE - 1], 0.01, 2.0, &ra) == 1); /* recycled: full again */
	/* Flooding one exhausted key does not reset it. */
	for (int i = 0; i < 100; i++)
		ratelimit_charge("rc", keys[0], 0.01, 2.0);
	CHECK(ratelimit_peek("rc", keys[0], 0.01, 2.0, &ra) == 0);
	/* Every bucket exhausted: a newcomer still gets a bucket (recycling is
	 * never a refusal), and it is counted from full. */
	ratelimit_charge("rc", keys[RL_PROBE], 0.01, 2.0);
	CHECK(ratelimit_take("rc", keys[RL_PROBE + 1], 0.01, 2.0, &ra) == 1);
}

/* The bucket of (space, key), or NULL; with the lock, as ratelimit.c does. */
static struct bucket *bucket_of(const char *space, const char *key)
{
	uint8_t k[16];
	size_t slot;
	bucket_key(space, key, k, &slot);
	pthread_mutex_lock(&lock);
	struct bucket *b = find(k, slot, 0, 0, 0, now_s());
	pthread_mutex_unlock(&lock);
	return b;
}

static void test_refill_and_burst(void)
{
	int ra = 0;
	/* Spent, then 2 s pass at 1 token/s: two tokens, no more. */
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 1);
	CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 0);
	struct bucket *b = bucket_of("rf", "a");
	CHECK(b != NULL);
	if (!b)
		return;
	b->last -= 2.0;
	CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 1);
	CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 1);
	CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 0);
	/* A long idle time refills to burst, never past it. */
	b->last -= 1e6;
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 1);
	CHECK(ratelimit_take("rf", "a", 1.0, 3.0, &ra) == 0);
	/* A debt is paid back at the rate: -2 tokens at 1/s need 3 s for one. */
	for (int i = 0; i < 5; i++)
		ratelimit_charge("rf", "debt", 1.0, 2.0);
	CHECK(ratelimit_peek("rf", "debt", 1.0, 2.0, &ra) == 0 && ra == 3);
	b = bucket_of("rf", "debt");
	CHECK(b != NULL);
	if (!b)
		return;
	b->last -= 3.0;
	CHECK(ratelimit_peek("rf", "debt", 1.0, 2.0, &ra) == 1);
	/* The rate and burst of the latest call apply to a known bucket. */
	CHECK(ratelimit_take("rf", "debt", 1.0, 2.0, &ra) == 1);
	CHECK(b->burst == 2.0);
	CHECK(ratelimit_peek("rf", "debt", 5.0, 10.0, &ra) == 0 && b->burst == 10.0 && b->rate == 5.0);
}

static void test_retry_after(void)
{
	/* The wait for one whole token, in whole seconds, 1 to RL_RETRY_MAX_S. */
	CHECK(retry_after(0.0, 1.0) == 1);
	CHECK(retry_after(0.0, 0.25) == 4);
	CHECK(retry_after(0.5, 0.1) == 5);
	CHECK(retry_after(-2.0, 1.0) == 3);
	CHECK(retry_after(0.99, 1000.0) == 1);
	CHECK(retry_after(0.0, 0.3) == 4); /* 3.33 s rounds up */
	CHECK(retry_after(0.0, 1e-9) == RL_RETRY_MAX_S);
	CHECK(retry_after(-1e12, 1.0) == RL_RETRY_MAX_S);
}

static void test_eviction_order(void)
{
	char keys[RL_PROBE + 1][32];
	memset(table, 0, sizeof(table));
	same_window("ev", keys, RL_PROBE + 1);
	/* Empty slots are taken first: RL_PROBE keys of one window all keep
	 * their buckets. */
	for (int i = 0; i < RL_PROBE; i++)
		ratelimit_charge("ev", keys[i], 0.0, 2.0);
	for (int i = 0; i < RL_PROBE; i++)
		CHECK(bucket_of("ev", keys[i]) != NULL);
	/* All equally full (rate 0: no refill): the oldest is recycled. */
	struct bucket *old = bucket_of("ev", keys[3]);
	CHECK(old != NULL);
	if (!old)
		return;
	old->last -= 100.0;
	ratelimit_charge("ev", keys[RL_PROBE], 0.0, 2.0);
	CHECK(bucket_of("ev", keys[3]) == NULL);
	CHECK(bucket_of("ev", keys[RL_PROBE]) == old);
	for (int i = 0; i < RL_PROBE; i++)
		if (i != 3)
			CHECK(bucket_of("ev", keys[i]) != NULL);
	/* A peek finds no bucket for a recycled key and creates none: it reads
	 * as full. */
	int ra = 0;
	CHECK(ratelimit_peek("ev", keys[3], 0.0, 2.0, &ra) == 1 && bucket_of("ev", keys[3]) == NULL);
}

int main(void)
{
	test_refill_and_burst();
	test_retry_after();
	test_eviction_order();
	test_peek_take_charge();
	test_failure_buckets();
	test_recycling();
	TEST_DONE();
}
