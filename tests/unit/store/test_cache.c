/* Revocation announcements: what grant.c puts on GRANT_NOTIFY_CHANNEL and
 * what a node's cache makes of it (the revocation its subscribers, the
 * proxy among them, are told of). grant.c is included to reach the payload
 * encoder; a payload a node cannot read must count as "everything". */
#include <stdlib.h>
#include <string.h>

#include "../../../broker/store/grant.c"
#include "cache.h"
#include "test.h"

static struct {
	int calls;
	char grant_id[80], token_hash[80], client_id[9000], subject[400], upstream[80];
	int has[5];
} seen;

static void keep(char *dst, size_t n, int *has, const char *src)
{
	*has = src != NULL;
	snprintf(dst, n, "%s", src ? src : "");
}

static void on_revoke(const struct cache_revocation *rv, void *arg)
{
	(void)arg;
	seen.calls++;
	keep(seen.grant_id, sizeof(seen.grant_id), &seen.has[0], rv->grant_id);
	keep(seen.token_hash, sizeof(seen.token_hash), &seen.has[1], rv->token_hash);
	keep(seen.client_id, sizeof(seen.client_id), &seen.has[2], rv->client_id);
	keep(seen.subject, sizeof(seen.subject), &seen.has[3], rv->subject);
	keep(seen.upstream, sizeof(seen.upstream), &seen.has[4], rv->upstream);
}

/* Delivers payload; 1 when the subscriber was told of exactly everything. */
static int everything(const char *payload)
{
	int before = seen.calls;
	cache_handle_notify(payload);
	return seen.calls == before + 1 && !seen.has[0] && !seen.has[1] && !seen.has[2] && !seen.has[3] &&
	       !seen.has[4];
}

static void roundtrip(const struct cache_revocation *rv, const char *want_prefix)
{
	char *p = notify_payload(rv);
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(strlen(p) <= GRANT_NOTIFY_MAX);
	CHECK(strncmp(p, want_prefix, strlen(want_prefix)) == 0);
	int before = seen.calls;
	cache_handle_notify(p);
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

int main(void)
{
	const char *gid = "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b";
	const char *hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
	CHECK(cache_on_revoke(on_revoke, NULL) == 0);

	/* One grant, one token. */
	cache_handle_notify("g:0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b");
	CHECK(seen.calls == 1 && seen.has[0] && !seen.has[1] && !seen.has[2]);
	CHECK_STR(seen.grant_id, gid);
	cache_handle_notify("t:\\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
	CHECK(seen.calls == 2 && !seen.has[0] && seen.has[1]);
	CHECK_STR(seen.token_hash, hash);

	/* An upstream token refresh is no revocation. */
	cache_handle_notify("u:0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b");
	CHECK(seen.calls == 2);

	/* Selectors. */
	cache_handle_notify("r:{\"client_id\":\"https://app.example/cimd.json\"}");
	CHECK(seen.calls == 3 && seen.has[2] && !seen.has[0] && !seen.has[3] && !seen.has[4]);
	CHECK_STR(seen.client_id, "https://app.example/cimd.json");
	cache_handle_notify("r:{\"subject\":\"1001\",\"upstream\":\"gh\"}");
	CHECK(seen.calls == 4 && seen.has[3] && seen.has[4] && !seen.has[2]);
	CHECK_STR(seen.subject, "1001");
	CHECK_STR(seen.upstream, "gh");

	/* What a node cannot read ends everything: never nothing. */
	CHECK(everything("*"));
	CHECK(everything(""));
	CHECK(everything("g:not-a-grant"));
	CHECK(everything("g:0B6F1C2E-8D4A-4F3B-9A51-2C7E6D5F4A3B"));
	CHECK(everything("t:\\x9f86"));
	CHECK(everything("t:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
	CHECK(everything("r:"));
	CHECK(everything("r:{\"client_id\":1}"));
	CHECK(everything("r:{\"client_id\":null}"));
	CHECK(everything("r:{\"evil\":\"x\"}"));
	CHECK(everything("r:{\"client_id\":\"a\",\"client_id\":\"b\"}"));
	CHECK(everything("r:[\"client_id\"]"));
	CHECK(everything("r:{\"client_id\":\"a\"} trailing"));
	CHECK(everything("x:whatever"));

	/* The encoder's payloads read back as what was revoked. */
	roundtrip(&(struct cache_revocation){ .grant_id = gid }, "g:");
	roundtrip(&(struct cache_revocation){ .token_hash = hash }, "t:\\x");
	roundtrip(&(struct cache_revocation){ .client_id = "c\"l\\i\nent\x01\xc3\xa9" }, "r:{");
	roundtrip(&(struct cache_revocation){ .subject = "carol", .upstream = "sentry" }, "r:{");
	roundtrip(&(struct cache_revocation){ .upstream = "gh" }, "r:{");
	roundtrip(&(struct cache_revocation){ 0 }, "*");

	/* A selector too long for a NOTIFY widens to everything, never to nothing. */
	char *huge = malloc(LIM_CLIENT_ID * 20);
	CHECK(huge != NULL);
	if (huge) {
		memset(huge, '\x01', LIM_CLIENT_ID * 20 - 1); /* each escapes to \u0001 */
		huge[LIM_CLIENT_ID * 20 - 1] = '\0';
		char *p = notify_payload(&(struct cache_revocation){ .client_id = huge });
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
	char *p = notify_payload(&(struct cache_revocation){ .client_id = client, .subject = subject, .upstream = "u" });
	CHECK(p && strncmp(p, "r:{", 3) == 0 && strlen(p) <= GRANT_NOTIFY_MAX);
	free(p);

	/* Subscribers are bounded. */
	int refused = 0;
	for (int i = 0; i < CACHE_SUBSCRIBERS + 1; i++)
		refused += cache_on_revoke(on_revoke, NULL) < 0;
	CHECK(refused == 2);
	TEST_DONE();
}
