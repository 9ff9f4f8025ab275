/* notify.c: the payload grammar of NOTIFY_CHANNEL. Every form parses to
 * what it says; whatever does not follow the grammar is refused and read as
 * "everything" (never as nothing); what the encoder writes parses back to
 * the revocation it announced; deliveries reach the right subscriber list. */
#include <stdlib.h>
#include <string.h>

#include "lim.h"
#include "notify.h"
#include "test.h"

#define GID "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b"
#define HASH "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static struct {
	int calls, refreshes;
	char grant_id[80], token_hash[80], client_id[9000], subject[400], upstream[80], refreshed[80];
	int has[5];
} seen;

static void keep(char *dst, size_t n, int *has, const char *src)
{
	*has = src != NULL;
	snprintf(dst, n, "%s", src ? src : "");
}

static void on_revoke(const struct revocation *rv, void *arg)
{
	(void)arg;
	seen.calls++;
	keep(seen.grant_id, sizeof(seen.grant_id), &seen.has[0], rv->grant_id);
	keep(seen.token_hash, sizeof(seen.token_hash), &seen.has[1], rv->token_hash);
	keep(seen.client_id, sizeof(seen.client_id), &seen.has[2], rv->client_id);
	keep(seen.subject, sizeof(seen.subject), &seen.has[3], rv->subject);
	keep(seen.upstream, sizeof(seen.upstream), &seen.has[4], rv->upstream);
}

static void on_refresh(const char *grant_id, void *arg)
{
	(void)arg;
	seen.refreshes++;
	snprintf(seen.refreshed, sizeof(seen.refreshed), "%s", grant_id);
}

static int says_everything(const struct notify_msg *m)
{
	return m->kind == NOTIFY_REVOKED && !m->rv.grant_id && !m->rv.token_hash && !m->rv.client_id &&
	       !m->rv.subject && !m->rv.upstream && !m->sel;
}

/* 1 when payload is refused and read as everything. */
static int refused(const char *payload)
{
	struct notify_msg m;
	int rc = notify_parse(payload, &m);
	int ok = rc == -1 && says_everything(&m);
	notify_msg_free(&m);
	return ok;
}

static void grammar(void)
{
	struct notify_msg m;

	CHECK(notify_parse("*", &m) == 0 && says_everything(&m));
	notify_msg_free(&m);

	CHECK(notify_parse("g:" GID, &m) == 0 && m.kind == NOTIFY_REVOKED);
	CHECK_STR(m.rv.grant_id, GID);
	CHECK(!m.rv.token_hash && !m.rv.client_id && !m.rv.subject && !m.rv.upstream);
	notify_msg_free(&m);

	CHECK(notify_parse("t:\\x" HASH, &m) == 0 && m.kind == NOTIFY_REVOKED);
	CHECK_STR(m.rv.token_hash, HASH);
	CHECK(!m.rv.grant_id && !m.rv.client_id);
	notify_msg_free(&m);

	CHECK(notify_parse("u:" GID, &m) == 0 && m.kind == NOTIFY_REFRESHED);
	CHECK_STR(m.grant_id, GID);
	notify_msg_free(&m);

	/* A session binding: only 64 lower-case hex digits; anything else is "*". */
	CHECK(notify_parse("s:" HASH, &m) == 0 && m.kind == NOTIFY_BOUND);
	CHECK_STR(m.key, HASH);
	CHECK(!m.rv.grant_id && !m.rv.token_hash);
	notify_msg_free(&m);
	CHECK(notify_parse("s:" GID, &m) == -1 && m.kind == NOTIFY_REVOKED && !m.key && !m.rv.grant_id);
	CHECK(notify_parse("s:\\x" HASH, &m) == -1 && m.kind == NOTIFY_REVOKED);

	CHECK(notify_parse("r:{\"client_id\":\"https://app.example/cimd.json\"}", &m) == 0);
	CHECK_STR(m.rv.client_id, "https://app.example/cimd.json");
	CHECK(!m.rv.grant_id && !m.rv.subject && !m.rv.upstream && !m.rv.token_hash);
	notify_msg_free(&m);

	CHECK(notify_parse("r:{\"grant_id\":\"" GID "\",\"subject\":\"1001\",\"upstream\":\"gh\"}", &m) == 0);
	CHECK_STR(m.rv.grant_id, GID);
	CHECK_STR(m.rv.subject, "1001");
	CHECK_STR(m.rv.upstream, "gh");
	CHECK(!m.rv.client_id);
	notify_msg_free(&m);
	CHECK(m.sel == NULL);

	/* What a node cannot read is refused, and ends everything. */
	CHECK(refused(""));
	CHECK(refused("**"));
	CHECK(refused("g:"));
	CHECK(refused("g:not-a-grant"));
	CHECK(refused("g:0B6F1C2E-8D4A-4F3B-9A51-2C7E6D5F4A3B"));
	CHECK(refused("g:" GID "x"));
	CHECK(refused("u:not-a-grant"));
	CHECK(refused("u:"));
	CHECK(refused("t:\\x9f86"));
	CHECK(refused("t:" HASH));
	CHECK(refused("t:\\x" HASH "0"));
	CHECK(refused("t:\\x9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"));
	CHECK(refused("r:"));
	CHECK(refused("r:{}x"));
	CHECK(refused("r:{\"client_id\":1}"));
	CHECK(refused("r:{\"client_id\":null}"));
	CHECK(refused("r:{\"client_id\":[\"a\"]}"));
	CHECK(refused("r:{\"evil\":\"x\"}"));
	CHECK(refused("r:{\"token_hash\":\"" HASH "\"}"));
	CHECK(refused("r:{\"client_id\":\"a\",\"client_id\":\"b\"}"));
	CHECK(refused("r:[\"client_id\"]"));
	CHECK(refused("r:\"client_id\""));
	CHECK(refused("r:{\"client_id\":\"a\"} trailing"));
	CHECK(refused("x:whatever"));

	/* Nesting deeper than LIM_JSON_DEPTH, and a payload longer than
	 * PostgreSQL would carry (the longest that fits is read). */
	char deep[256];
	size_t n = (size_t)snprintf(deep, sizeof(deep), "r:{\"client_id\":\"a\",\"x\":");
	for (int i = 0; i < LIM_JSON_DEPTH + 1; i++)
		deep[n++] = '[';
	for (int i = 0; i < LIM_JSON_DEPTH + 1; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = '\0';
	CHECK(refused(deep));
	char *big = malloc(NOTIFY_PAYLOAD_MAX + 2);
	CHECK(big != NULL);
	if (big) {
		/* r:{"client_id":"aaa..."}: NOTIFY_PAYLOAD_MAX + 1 bytes. */
		size_t h = (size_t)snprintf(big, 32, "r:{\"client_id\":\"");
		memset(big + h, 'a', NOTIFY_PAYLOAD_MAX + 1 - h - 2);
		memcpy(big + NOTIFY_PAYLOAD_MAX - 1, "\"}", 3);
		CHECK(strlen(big) == NOTIFY_PAYLOAD_MAX + 1);
		CHECK(refused(big));
		big[NOTIFY_PAYLOAD_MAX - 2] = '"'; /* one byte shorter: fits */
		big[NOTIFY_PAYLOAD_MAX - 1] = '}';
		big[NOTIFY_PAYLOAD_MAX] = '\0';
		CHECK(notify_parse(big, &m) == 0 && m.rv.client_id &&
		      strlen(m.rv.client_id) == NOTIFY_PAYLOAD_MAX - 18);
		notify_msg_free(&m);
		free(big);
	}
}

static void roundtrip(const struct revocation *rv, const char *want_prefix)
{
	char *p = notify_payload(rv);
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(strlen(p) <= NOTIFY_PAYLOAD_MAX);
	CHECK(strncmp(p, want_prefix, strlen(want_prefix)) == 0);
	int before = seen.calls;
	notify_deliver(p);
	CHECK(seen.calls == before + 1);
	CHECK(seen.has[0] == (rv->grant_id != NULL) && seen.has[1] == (rv->token_hash != NULL) &&
	      seen.has[2] == (rv->client_id != NULL) && seen.has[3] == (rv->subject != NULL) &&
	      seen.has[4] == (rv->upstream != NULL));
	if (rv->grant_id)
		CHECK_STR(seen.grant_id, rv->grant_id);
	if (rv->token_hash)
		CHECK_STR(seen.token_hash, rv->token_hash);
	if (rv->client_id)
		CHECK_STR(seen.client_id, rv->client_id);
	if (rv->subject)
		CHECK_STR(seen.subject, rv->subject);
	if (rv->upstream)
		CHECK_STR(seen.upstream, rv->upstream);
	free(p);
}

static void encoder(void)
{
	roundtrip(&(struct revocation){ .grant_id = GID }, "g:");
	roundtrip(&(struct revocation){ .token_hash = HASH }, "t:\\x");
	roundtrip(&(struct revocation){ .client_id = "c\"l\\i\nent\x01\xc3\xa9" }, "r:{");
	roundtrip(&(struct revocation){ .subject = "carol", .upstream = "sentry" }, "r:{");
	roundtrip(&(struct revocation){ .grant_id = GID, .upstream = "gh" }, "r:{");
	roundtrip(&(struct revocation){ 0 }, "*");

	/* A selector too long for a NOTIFY widens to everything, never to nothing. */
	char *huge = malloc(LIM_CLIENT_ID * 20);
	CHECK(huge != NULL);
	if (huge) {
		memset(huge, '\x01', LIM_CLIENT_ID * 20 - 1); /* each escapes to \u0001 */
		huge[LIM_CLIENT_ID * 20 - 1] = '\0';
		char *p = notify_payload(&(struct revocation){ .client_id = huge });
		CHECK_STR(p, "*");
		free(p);
		free(huge);
	}
	/* The longest selectors the operator API accepts do fit. */
	char client[LIM_CLIENT_ID + 1], subject[301];
	memset(client, '\x01', LIM_CLIENT_ID);
	client[LIM_CLIENT_ID] = '\0';
	memset(subject, '"', 300);
	subject[300] = '\0';
	char *p = notify_payload(&(struct revocation){ .client_id = client, .subject = subject, .upstream = "u" });
	CHECK(p && strncmp(p, "r:{", 3) == 0 && strlen(p) <= NOTIFY_PAYLOAD_MAX);
	free(p);
	/* Text that is not UTF-8 cannot be said in JSON: refused, not widened. */
	CHECK(notify_payload(&(struct revocation){ .client_id = "\xff" }) == NULL);
}

static int elicited_calls;
static char elicited_gid[37], elicited_eid[37];
static void on_elicited(const char *gid, const char *eid, void *arg)
{
	(void)arg;
	elicited_calls++;
	snprintf(elicited_gid, sizeof(elicited_gid), "%s", gid);
	snprintf(elicited_eid, sizeof(elicited_eid), "%s", eid);
}

/* The events channel: "e:<grant>:<elicitation>", and nothing else; what it
 * cannot read is dropped, never taken for a revocation. */
static void events(void)
{
	char g[37], e[37];
	static const char eid[] = "0123abcd-0000-4000-8000-00000000000e";
	CHECK(notify_parse_event("e:" GID ":0123abcd-0000-4000-8000-00000000000e", g, e) == 0);
	CHECK_STR(g, GID);
	CHECK_STR(e, eid);
	static const char *const bad[] = { "",
					   "e:",
					   "e:" GID,
					   "e:" GID ":",
					   "g:" GID ":0123abcd-0000-4000-8000-00000000000e",
					   "e:" GID ";0123abcd-0000-4000-8000-00000000000e",
					   "e:" GID ":0123abcd-0000-4000-8000-00000000000E",
					   "e:" GID ":0123abcd-0000-4000-8000-00000000000e ",
					   "*" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(notify_parse_event(bad[i], g, e) == -1);
	int revocations = seen.calls;
	notify_deliver_event("e:" GID ":0123abcd-0000-4000-8000-00000000000e");
	CHECK(elicited_calls == 1 && seen.calls == revocations);
	CHECK_STR(elicited_eid, eid);
	notify_deliver_event("*");
	notify_deliver_event("nonsense");
	CHECK(elicited_calls == 1 && seen.calls == revocations);
}

int main(void)
{
	CHECK(notify_on_revoke(on_revoke, NULL) == 0);
	CHECK(notify_on_elicited(on_elicited, NULL) == 0);
	CHECK(notify_on_refresh(on_refresh, NULL) == 0);

	grammar();

	/* Deliveries: a revocation to the revocation subscribers, an upstream
	 * refresh to the refresh subscribers only. */
	notify_deliver("g:" GID);
	CHECK(seen.calls == 1 && seen.refreshes == 0 && seen.has[0] && !seen.has[1]);
	CHECK_STR(seen.grant_id, GID);
	notify_deliver("u:" GID);
	CHECK(seen.calls == 1 && seen.refreshes == 1);
	CHECK_STR(seen.refreshed, GID);
	notify_deliver("u:nonsense");
	CHECK(seen.calls == 2 && seen.refreshes == 1 && !seen.has[0] && !seen.has[1] && !seen.has[2]);

	encoder();
	events();

	/* Subscribers are bounded. */
	int full = 0;
	for (int i = 0; i < NOTIFY_SUBSCRIBERS; i++)
		full += notify_on_revoke(on_revoke, NULL) < 0;
	CHECK(full == 1);
	TEST_DONE();
}
