/* client.c: the client model: client_id syntax, redirect URI lists and
 * matching, the registration policy on redirect URI kinds, freeing. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "test.h"

static void test_id(void)
{
	char id[LIM_CLIENT_ID + 2];
	CHECK(client_id_ok("ops-cli"));
	CHECK(client_id_ok("https://client.example.com/m"));
	CHECK(client_id_ok(" ~!"));
	CHECK(!client_id_ok(NULL));
	CHECK(!client_id_ok(""));
	CHECK(!client_id_ok("a\tb"));
	CHECK(!client_id_ok("a\x7f"));
	CHECK(!client_id_ok("caf\xc3\xa9"));
	memset(id, 'a', LIM_CLIENT_ID);
	id[LIM_CLIENT_ID] = '\0';
	CHECK(client_id_ok(id));
	id[LIM_CLIENT_ID] = 'a';
	id[LIM_CLIENT_ID + 1] = '\0';
	CHECK(!client_id_ok(id));
}

static void test_uris(void)
{
	struct client cl;
	memset(&cl, 0, sizeof(cl));
	const char *list[] = { "https://app.example.com/cb", "http://127.0.0.1/cb" };
	CHECK(client_set_uris(&cl, list, 2) == 0);
	CHECK(cl.n_redirect_uris == 2 && cl.redirect_uris[0] != list[0]);
	CHECK_STR(cl.redirect_uris[1], "http://127.0.0.1/cb");
	CHECK(client_redirect_ok(&cl, "https://app.example.com/cb"));
	CHECK(client_redirect_ok(&cl, "http://127.0.0.1:53219/cb")); /* RFC 8252 7.3: any loopback port */
	CHECK(!client_redirect_ok(&cl, "https://app.example.com/cb/x"));
	CHECK(!client_redirect_ok(&cl, "https://evil.example.com/cb"));
	/* Replacing a list frees the old one (ASan/valgrind would see a leak). */
	CHECK(client_set_uris(&cl, list, 1) == 0);
	CHECK(cl.n_redirect_uris == 1);
	CHECK(!client_redirect_ok(&cl, "http://127.0.0.1/cb"));

	json_t *a = json_loads("[\"https://a.example/cb\",\"cursor://cb\"]", 0, NULL);
	CHECK(client_set_uris_json(&cl, a) == 0);
	CHECK(cl.n_redirect_uris == 2);
	CHECK_STR(cl.redirect_uris[1], "cursor://cb");
	json_decref(a);
	static const char *const bad[] = {
		"[]",
		"{}",
		"\"https://a.example/cb\"",
		"[\"https://a.example/cb\", 1]",
		"[null]",
		"[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		a = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		CHECK(a != NULL);
		CHECK(client_set_uris_json(&cl, a) < 0);
		json_decref(a);
	}
	CHECK(client_set_uris_json(&cl, NULL) < 0);
	a = json_loads("[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\"]", 0, NULL);
	CHECK(client_set_uris_json(&cl, a) == 0 && cl.n_redirect_uris == LIM_REDIRECT_URIS);
	json_decref(a);
	client_free(&cl);
}

static void test_free(void)
{
	struct client cl;
	memset(&cl, 0, sizeof(cl));
	client_free(&cl); /* an empty client */
	cl.name = strdup("App");
	memset(cl.secret_hash, 0xab, sizeof(cl.secret_hash));
	cl.confidential = 1;
	const char *one[] = { "https://a.example/cb" };
	CHECK(client_set_uris(&cl, one, 1) == 0);
	client_free(&cl);
	static const struct client zero;
	CHECK(memcmp(&cl, &zero, sizeof(cl)) == 0); /* secret hash wiped, pointers cleared */
	client_free(&cl);                           /* again */
}

/* A copy owns its own strings: freeing the original leaves it whole. */
static void test_copy(void)
{
	struct client cl, cp;
	memset(&cl, 0, sizeof(cl));
	snprintf(cl.client_id, sizeof(cl.client_id), "app");
	cl.name = strdup("App");
	const char *uris[] = { "https://a.example/cb", "http://127.0.0.1/cb" };
	CHECK(cl.name && client_set_uris(&cl, uris, 2) == 0);
	CHECK(client_set_keys(&cl, "{\"keys\":[]}", NULL) == 0);
	cl.grant_types_known = 1;
	cl.grant_types = CLIENT_GT_REFRESH;
	memset(cl.secret_hash, 0x11, sizeof(cl.secret_hash));
	CHECK(client_copy(&cp, &cl) == 0);
	client_free(&cl);
	CHECK_STR(cp.client_id, "app");
	CHECK_STR(cp.name, "App");
	CHECK(cp.n_redirect_uris == 2);
	CHECK_STR(cp.redirect_uris[1], "http://127.0.0.1/cb");
	CHECK(cp.private_key_jwt && cp.jwks && !cp.jwks_uri);
	CHECK_STR(cp.jwks, "{\"keys\":[]}");
	CHECK(cp.grant_types_known && cp.grant_types == CLIENT_GT_REFRESH && cp.secret_hash[31] == 0x11);
	CHECK(client_redirect_ok(&cp, "https://a.example/cb"));
	client_free(&cp);
	/* No name, no keys, no URIs: copied as such. */
	memset(&cl, 0, sizeof(cl));
	CHECK(client_copy(&cp, &cl) == 0);
	CHECK(!cp.name && !cp.jwks && cp.n_redirect_uris == 0 && !cp.private_key_jwt);
	client_free(&cp);
}

static void test_policy(void)
{
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	CHECK(client_redirect_policy_ok(&cfg, "https://a.example/cb"));
	CHECK(client_redirect_policy_ok(&cfg, "HTTPS://a.example/cb"));
	CHECK(!client_redirect_policy_ok(&cfg, "http://127.0.0.1/cb"));
	CHECK(!client_redirect_policy_ok(&cfg, "cursor://cb"));
	cfg.registration.allow_loopback_redirects = 1;
	CHECK(client_redirect_policy_ok(&cfg, "HTTP://127.0.0.1/cb"));
	CHECK(!client_redirect_policy_ok(&cfg, "cursor://cb"));
	cfg.registration.allow_private_schemes = 1;
	CHECK(client_redirect_policy_ok(&cfg, "cursor://cb"));
	cfg.registration.allow_loopback_redirects = 0;
	CHECK(!client_redirect_policy_ok(&cfg, "http://127.0.0.1/cb"));
}

int main(void)
{
	test_id();
	test_uris();
	test_free();
	test_copy();
	test_policy();
	TEST_DONE();
}
