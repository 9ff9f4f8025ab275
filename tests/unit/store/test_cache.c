/* cache.c: the token, upstream and session tables of one node, driven the
 * way the node drives them: off until notify says the node listens, every
 * revocation notify delivers evicts what it covers (and only that), an
 * upstream refresh evicts its grant, deafness turns the cache off and
 * empty, and a put that raced an eviction is dropped; clients likewise,
 * evicted only by a selector naming them. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../../broker/store/cache.c"
#include "test.h"

#define G1 "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b"
#define G2 "7d1e2f3a-4b5c-4d6e-8f70-819a2b3c4d5e"
#define H1 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define H2 "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
#define H3 "fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13"

static struct token_info info(const char *grant_id, const char *client_id, const char *subject, const char *upstream,
			      long long exp)
{
	struct token_info ti;
	memset(&ti, 0, sizeof(ti));
	snprintf(ti.grant_id, sizeof(ti.grant_id), "%s", grant_id);
	snprintf(ti.client_id, sizeof(ti.client_id), "%s", client_id);
	snprintf(ti.subject, sizeof(ti.subject), "%s", subject);
	snprintf(ti.upstream, sizeof(ti.upstream), "%s", upstream);
	snprintf(ti.scope, sizeof(ti.scope), "read");
	ti.exp = exp;
	return ti;
}

static int has(const char *hash)
{
	struct token_info out;
	return cache_get(hash, &out);
}

/* Fills the table: H1, H2 of grant G1 (client a, subject s1, upstream gh),
 * H3 of grant G2 (client b, subject s2, upstream gl); G1's upstream token. */
static void fill(void)
{
	long long exp = (long long)time(NULL) + 3600;
	struct token_info a1 = info(G1, "a", "s1", "gh", exp), b = info(G2, "b", "s2", "gl", exp);
	cache_put(H1, &a1, cache_generation());
	cache_put(H2, &a1, cache_generation());
	cache_put(H3, &b, cache_generation());
	cache_upstream_put(G1, "k1", "\\x0102", 0, cache_generation());
}

static int upstream_cached(const char *grant_id)
{
	char kid[65], *sealed = NULL;
	long long exp = 0;
	int hit = cache_upstream_get(grant_id, kid, &sealed, &exp);
	free(sealed);
	return hit;
}

/* A key of the 64 lower-case hex digits that fills the slot i of a table
 * (slot_of reads the first 8 digits). */
static void key_for_slot(size_t i, unsigned tag, char key[65])
{
	snprintf(key, 65, "%08zx%056x", i, tag);
}

/* Negative entries: kept, evicted by a binding (announced or local), a put
 * racing a binding dropped, aged out, and the tables never grow. */
static void negative(void)
{
	char k[65];
	CHECK(!cache_session_unbound(H1) && !cache_token_invalid(H1));
	cache_session_put_unbound(H1, cache_neg_generation());
	cache_token_put_invalid(H2);
	CHECK(cache_session_unbound(H1) && !cache_session_unbound(H2));
	CHECK(cache_token_invalid(H2) && !cache_token_invalid(H1));

	/* Bound on another node: the NOTIFY evicts it here; a revocation does not. */
	notify_deliver("g:" G1);
	CHECK(cache_session_unbound(H1) && cache_token_invalid(H2));
	notify_deliver("s:" H1);
	CHECK(!cache_session_unbound(H1) && cache_token_invalid(H2));
	/* Bound here. */
	cache_session_put_unbound(H3, cache_neg_generation());
	cache_session_bound(H3);
	CHECK(!cache_session_unbound(H3));
	/* A lookup that raced a binding (of any key) is not remembered. */
	unsigned long gen = cache_neg_generation();
	notify_deliver("s:" H2);
	cache_session_put_unbound(H1, gen);
	CHECK(!cache_session_unbound(H1));
	/* A malformed "s:" counts as everything: all negative entries go too. */
	cache_session_put_unbound(H1, cache_neg_generation());
	notify_deliver("s:XYZ");
	CHECK(!cache_session_unbound(H1) && !cache_token_invalid(H2));
	cache_session_put_unbound("short", cache_neg_generation());
	CHECK(!cache_session_unbound("short"));

	/* TTL: an entry past CACHE_NEG_TTL_S is a miss. */
	cache_session_put_unbound(H1, cache_neg_generation());
	cache_token_put_invalid(H2);
	neg_sess[slot_of(H1) & (CACHE_NEG_SLOTS - 1)].until = time(NULL) - 1;
	neg_tok[slot_of(H2) & (CACHE_NEG_SLOTS - 1)].until = time(NULL) - 1;
	CHECK(!cache_session_unbound(H1) && !cache_token_invalid(H2));
	cache_session_put_unbound(H1, cache_neg_generation());
	CHECK(neg_sess[slot_of(H1) & (CACHE_NEG_SLOTS - 1)].until <= time(NULL) + CACHE_NEG_TTL_S);

	/* Bounded: four times as many ids as slots fit in the same table, the
	 * latest in each slot winning; the first round is gone. */
	for (unsigned round = 0; round < 4; round++)
		for (size_t i = 0; i < CACHE_NEG_SLOTS; i++) {
			key_for_slot(i, round, k);
			cache_session_put_unbound(k, cache_neg_generation());
			cache_token_put_invalid(k);
		}
	size_t live = 0, first = 0;
	for (size_t i = 0; i < CACHE_NEG_SLOTS; i++) {
		key_for_slot(i, 3, k);
		live += cache_session_unbound(k) && cache_token_invalid(k);
		key_for_slot(i, 0, k);
		first += cache_session_unbound(k) || cache_token_invalid(k);
	}
	CHECK(live == CACHE_NEG_SLOTS && first == 0);

	/* Deaf: off and emptied. */
	on_state(NOTIFY_DEAF, NULL);
	cache_token_put_invalid(H3);
	on_state(NOTIFY_LISTENING, NULL);
	key_for_slot(7, 3, k);
	CHECK(!cache_session_unbound(k) && !cache_token_invalid(k) && !cache_token_invalid(H3));
}

/* A client named id (one redirect URI, a name, a secret hash). */
static struct client a_client(const char *id, int disabled)
{
	struct client cl;
	memset(&cl, 0, sizeof(cl));
	snprintf(cl.client_id, sizeof(cl.client_id), "%s", id);
	snprintf(cl.kind, sizeof(cl.kind), "dynamic");
	cl.name = strdup("App");
	const char *uris[] = { "https://app.example/cb" };
	CHECK(cl.name && client_set_uris(&cl, uris, 1) == 0);
	cl.confidential = 1;
	memset(cl.secret_hash, 0x5a, sizeof(cl.secret_hash));
	cl.disabled = disabled;
	return cl;
}

static int client_cached(const char *id)
{
	struct client out;
	int hit = cache_client_get(id, &out);
	client_free(&out);
	return hit;
}

/* Clients: a hit is a deep copy; only a selector naming the client (what
 * disabling announces), a flush or deafness evicts it; a put that raced
 * an eviction is dropped; a colliding id overwrites its slot. */
static void clients(void)
{
	struct client a = a_client("app-a", 0), b = a_client("app-b", 1), out;
	cache_client_put(&a, cache_generation());
	cache_client_put(&b, cache_generation());
	memset(&out, 0, sizeof(out));
	CHECK(cache_client_get("app-a", &out) == 1);
	CHECK_STR(out.client_id, "app-a");
	CHECK(out.name != a.name && strcmp(out.name, "App") == 0);
	CHECK(out.n_redirect_uris == 1 && out.redirect_uris[0] != a.redirect_uris[0]);
	CHECK(out.confidential && memcmp(out.secret_hash, a.secret_hash, sizeof(a.secret_hash)) == 0);
	client_free(&out);
	CHECK(cache_client_get("app-b", &out) == 1 && out.disabled);
	client_free(&out);
	CHECK(!client_cached("app-c") && !client_cached("") && !client_cached("a\tb"));

	/* Revocations that name no client leave both. */
	notify_deliver("g:" G1);
	notify_deliver("t:\\x" H1);
	notify_deliver("r:{\"subject\":\"s1\"}");
	CHECK(client_cached("app-a") && client_cached("app-b"));
	/* Disabling app-a: announced with its selector. */
	notify_deliver("r:{\"client_id\":\"app-a\"}");
	CHECK(!client_cached("app-a") && client_cached("app-b"));

	/* A lookup that raced an eviction is not kept. */
	unsigned long gen = cache_generation();
	notify_deliver("r:{\"client_id\":\"app-b\"}");
	cache_client_put(&a, gen);
	CHECK(!client_cached("app-a") && !client_cached("app-b"));

	/* Expired entries miss. */
	cache_client_put(&a, cache_generation());
	client_slots[client_slot_of("app-a")].until = time(NULL) - 1;
	CHECK(!client_cached("app-a"));

	/* A flush takes all; so does deafness, and nothing is kept while deaf. */
	cache_client_put(&a, cache_generation());
	notify_deliver("*");
	CHECK(!client_cached("app-a"));
	cache_client_put(&a, cache_generation());
	on_state(NOTIFY_DEAF, NULL);
	cache_client_put(&b, cache_generation());
	on_state(NOTIFY_LISTENING, NULL);
	CHECK(!client_cached("app-a") && !client_cached("app-b"));

	/* Two ids of one slot: the later put wins, the other misses. */
	char other[16];
	for (unsigned i = 0;; i++) {
		snprintf(other, sizeof(other), "app-%u", i);
		if (strcmp(other, "app-a") != 0 && client_slot_of(other) == client_slot_of("app-a"))
			break;
	}
	struct client o = a_client(other, 0);
	cache_client_put(&a, cache_generation());
	cache_client_put(&o, cache_generation());
	CHECK(!client_cached("app-a") && client_cached(other));
	client_free(&o);
	client_free(&a);
	client_free(&b);
}

int main(void)
{
	CHECK(cache_start() == 0);
	long long exp = (long long)time(NULL) + 3600;
	struct token_info a1 = info(G1, "a", "s1", "gh", exp), out;

	/* Off until the node listens: nothing is kept. */
	CHECK(!cache_enabled());
	cache_put(H1, &a1, cache_generation());
	on_state(NOTIFY_LISTENING, NULL);
	CHECK(cache_enabled());
	CHECK(!has(H1));

	/* A hit returns what was put. */
	cache_put(H1, &a1, cache_generation());
	memset(&out, 0, sizeof(out));
	CHECK(cache_get(H1, &out) == 1);
	CHECK_STR(out.grant_id, G1);
	CHECK_STR(out.client_id, "a");
	CHECK(out.exp == exp);
	CHECK(!has(H2));

	/* A validation that raced an eviction is not cached. */
	unsigned long gen = cache_generation();
	notify_deliver("g:" G2);
	CHECK(cache_generation() != gen);
	cache_put(H2, &a1, gen);
	CHECK(!has(H2));

	/* An expired token is not cached. */
	struct token_info old = info(G1, "a", "s1", "gh", (long long)time(NULL) - 1);
	cache_put(H2, &old, cache_generation());
	CHECK(!has(H2));

	/* One grant: its tokens and its upstream token go, the other grant's stay. */
	fill();
	CHECK(has(H1) && has(H2) && has(H3) && upstream_cached(G1));
	notify_deliver("g:" G1);
	CHECK(!has(H1) && !has(H2) && has(H3) && !upstream_cached(G1));

	/* One token. */
	fill();
	notify_deliver("t:\\x" H2);
	CHECK(has(H1) && !has(H2) && has(H3));

	/* Selectors: only the entries matching every field given. */
	fill();
	notify_deliver("r:{\"client_id\":\"b\"}");
	CHECK(has(H1) && has(H2) && !has(H3));
	fill();
	notify_deliver("r:{\"subject\":\"s1\",\"upstream\":\"gl\"}");
	CHECK(has(H1) && has(H2) && has(H3));
	notify_deliver("r:{\"subject\":\"s1\",\"upstream\":\"gh\"}");
	CHECK(!has(H1) && !has(H2) && has(H3));

	/* An upstream refresh evicts its grant; an unreadable payload everything. */
	fill();
	notify_deliver("u:" G1);
	CHECK(!has(H1) && !has(H2) && has(H3) && !upstream_cached(G1));
	fill();
	notify_deliver("g:garbage");
	CHECK(!has(H1) && !has(H2) && !has(H3));

	/* Sessions age out only; bad keys are not kept. */
	char user[37] = "";
	cache_session_put(H1, "11111111-2222-4333-8444-555555555555");
	CHECK(cache_session_get(H1, user) == 1);
	CHECK_STR(user, "11111111-2222-4333-8444-555555555555");
	cache_session_put("short", "11111111-2222-4333-8444-555555555555");
	CHECK(cache_session_get("short", user) == 0);

	negative();
	clients();

	/* Deaf: off and empty, and still empty once the node listens again. */
	fill();
	on_state(NOTIFY_DEAF, NULL);
	CHECK(!cache_enabled() && !has(H1) && !upstream_cached(G1));
	on_state(NOTIFY_LISTENING, NULL);
	CHECK(cache_enabled() && !has(H1) && !has(H3) && !upstream_cached(G1));

	cache_stop();
	CHECK(!cache_enabled() && !has(H3));
	TEST_DONE();
}
