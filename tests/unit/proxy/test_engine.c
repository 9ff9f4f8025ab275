/* Which transfers a revocation ends (engine_end_matching), and which late
 * starters it still ends (requests validated before the revocation reached
 * the node, whose transfer registers after it): transfers are built by hand
 * and registered with engine_begin's enlist(), without the engine. */
#include <stdlib.h>
#include <string.h>

#include "../../../broker/proxy/engine.c"
#include "test.h"

static struct engine_xfer *fake(const char *grant, const char *token, const char *client, const char *subject,
				const char *upstream, uint64_t start_ns)
{
	struct engine_xfer *x = calloc(1, sizeof(*x));
	if (!x)
		abort();
	pthread_mutex_init(&x->lock, NULL);
	x->refs = 1;
	buf_init(&x->out, 1024);
	snprintf(x->grant_id, sizeof(x->grant_id), "%s", grant);
	snprintf(x->token_hash, sizeof(x->token_hash), "%s", token);
	snprintf(x->client_id, sizeof(x->client_id), "%s", client);
	snprintf(x->subject, sizeof(x->subject), "%s", subject);
	snprintf(x->upstream, sizeof(x->upstream), "%s", upstream);
	x->start_ns = start_ns;
	x->done = 1; /* no engine: nothing to wake */
	return x;
}

static void reset(struct engine_xfer **xs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		xs[i]->revoked = 0;
}

static void count_live(const char *grant_id, const char *token_hash, void *ctx)
{
	(void)grant_id;
	(void)token_hash;
	(*(int *)ctx)++;
}

int main(void)
{
	uint64_t t0 = http_now_ns();
	struct engine_xfer *a = fake("g1", "t1", "c1", "s1", "sentry", t0);
	struct engine_xfer *b = fake("g2", "t2", "c1", "s2", "sentry", t0);
	struct engine_xfer *c = fake("g3", "t3", "c2", "s1", "gh", t0);
	struct engine_xfer *d = fake("g1", "t4", "c1", "s1", "sentry", t0); /* a's grant, its next token */
	struct engine_xfer *all[] = { a, b, c, d };
	for (int i = 0; i < 4; i++)
		CHECK(enlist(all[i]) == 0);

	/* Buffered answer bytes are dropped with the transfer. */
	CHECK(buf_adds(&a->out, "data: x\n\n") == 0);

	engine_end_matching(&(struct engine_match){ .grant_id = "g1" });
	CHECK(a->revoked && d->revoked && !b->revoked && !c->revoked);
	CHECK(a->out.len == 0);
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ .token_hash = "t4" });
	CHECK(d->revoked && !a->revoked && !b->revoked && !c->revoked);
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ .client_id = "c1" });
	CHECK(a->revoked && b->revoked && d->revoked && !c->revoked);
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ .subject = "s1", .upstream = "sentry" });
	CHECK(a->revoked && d->revoked && !b->revoked && !c->revoked);
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ .upstream = "gh" });
	CHECK(c->revoked && !a->revoked && !b->revoked && !d->revoked);
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ .subject = "s1" });
	CHECK(a->revoked && c->revoked && d->revoked && !b->revoked);
	CHECK(engine_revoked(a) && !engine_revoked(b));
	int n = 0;
	engine_each_live(count_live, &n);
	CHECK(n == 1); /* ended ones are not listed for a resync */
	reset(all, 4);

	engine_end_matching(&(struct engine_match){ 0 });
	CHECK(a->revoked && b->revoked && c->revoked && d->revoked);
	reset(all, 4);

	/* A value must match exactly: no prefix, no empty wildcard. */
	engine_end_matching(&(struct engine_match){ .client_id = "c" });
	engine_end_matching(&(struct engine_match){ .client_id = "" });
	engine_end_matching(&(struct engine_match){ .grant_id = "g1x" });
	CHECK(!a->revoked && !b->revoked && !c->revoked && !d->revoked);

	/* Late starters: a request that began before a revocation covering it is
	 * ended as it registers; one that began after it is not (its validation
	 * saw the revocation), nor one the revocation does not cover. */
	uint64_t before = t0;                                           /* began before every revocation above */
	CHECK(enlist(fake("g1", "t9", "c9", "s9", "x", before)) == 1);  /* grant g1 */
	CHECK(enlist(fake("g8", "t4", "c9", "s9", "x", before)) == 1);  /* token t4 */
	CHECK(enlist(fake("g8", "t8", "c1", "s9", "x", before)) == 1);  /* client c1 */
	CHECK(enlist(fake("g8", "t8", "c8", "s1", "gh", before)) == 1); /* subject s1 */
	uint64_t later = http_now_ns() + 1;
	CHECK(enlist(fake("g1", "t1", "c1", "s1", "sentry", later)) == 0);
	/* The "everything" revocation covered any request of its time, so step
	 * past it to check one covered by nothing. */
	engine_end_matching(&(struct engine_match){ .grant_id = "g5" });
	for (unsigned i = 1; i < ENGINE_RECENT; i++)
		engine_end_matching(&(struct engine_match){ .grant_id = "g5" });
	uint64_t mid = reg.ring[(reg.head - ENGINE_RECENT) & (ENGINE_RECENT - 1)].at_ns;
	/* The ring now holds only g5 revocations; a request older than all of
	 * them might have been covered by a forgotten one: it is ended. */
	CHECK(enlist(fake("g6", "t6", "c6", "s6", "x", before)) == 1);
	/* One newer than the oldest remembered is judged by what is remembered. */
	CHECK(enlist(fake("g6", "t6", "c6", "s6", "x", mid + 1)) == 0);
	CHECK(enlist(fake("g5", "t6", "c6", "s6", "x", mid + 1)) == 1);

	/* Unregistering unlinks from anywhere in the list. */
	unregister(b);
	unregister(a);
	n = 0;
	for (struct engine_xfer *x = reg.live; x; x = x->live_next)
		n += x == a || x == b;
	CHECK(n == 0);
	for (int i = 0; i < 2; i++) {
		struct engine_xfer *x = i ? a : b;
		buf_free(&x->out);
		pthread_mutex_destroy(&x->lock);
		free(x);
	}
	TEST_DONE();
}
