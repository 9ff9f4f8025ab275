/* cimd.c: the pure checks of a Client ID Metadata Document lookup: the
 * client_id URL, Cache-Control and the document itself. */
#include <jansson.h>
#include <string.h>

#include "cimd.h"
#include "test.h"

static struct config cfg;

static int url_ok(const char *url)
{
	return cimd_check_url(&cfg, url) == NULL;
}

static void test_url(void)
{
	CHECK(url_ok("https://client.example.com/oauth/metadata.json"));
	CHECK(url_ok("HTTPS://client.example.com/m"));
	CHECK(!url_ok("http://client.example.com/m"));
	CHECK(!url_ok("https://client.example.com/"));
	CHECK(!url_ok("https://client.example.com/m?x=1"));
	CHECK(!url_ok("https://client.example.com/m#f"));
	CHECK(!url_ok("https://u@client.example.com/m"));
	CHECK(!url_ok("https://127.0.0.1/m"));
	CHECK(!url_ok("https://[::ffff:10.0.0.1]/m"));
	/* Exactly https://host: curl reads these as the same document URL, so
	 * they were other client ids for it (found by fuzz_cimd). */
	CHECK(!url_ok("https:/client.example.com/m"));
	CHECK(!url_ok("https:///client.example.com/m"));
	CHECK(!url_ok("https:client.example.com/m"));
}

static void test_max_age(void)
{
	CHECK(cimd_max_age(NULL) == -1);
	CHECK(cimd_max_age(" public, max-age=300\r\n") == 300);
	CHECK(cimd_max_age("no-store") == 0);
	CHECK(cimd_max_age("max-age=-5") == -1);
	CHECK(cimd_max_age("max-age=") == -1);
	CHECK(cimd_max_age("max-age=0") == 0);
	CHECK(cimd_max_age("private, max-age=86400, must-revalidate") == 86400);
	/* delta-seconds is 1*DIGIT: no sign, no space, no hex. */
	CHECK(cimd_max_age("max-age=+5") == -1);
	CHECK(cimd_max_age("max-age= 5") == -1);
	CHECK(cimd_max_age("max-age=0x10") == 0);
	/* Too large to hold: 2^31 (RFC 9111 section 1.2.2), clamped later. */
	CHECK(cimd_max_age("max-age=2147483647") == 2147483647L);
	CHECK(cimd_max_age("max-age=2147483648") == 2147483648L);
	CHECK(cimd_max_age("max-age=9999999999") == 2147483648L);
	CHECK(cimd_max_age("max-age=99999999999999999999999") == 2147483648L);
}

static const char *doc(const char *client_id, const char *text)
{
	struct client out;
	json_t *uris = NULL;
	memset(&out, 0, sizeof(out));
	const char *why = cimd_check_document(&cfg, client_id, text, strlen(text), &out, &uris);
	if (!why)
		CHECK(json_array_size(uris) >= 1 && strcmp(out.client_id, client_id) == 0);
	json_decref(uris);
	client_free(&out);
	return why;
}

static void test_document(void)
{
#define ID "\"client_id\":\"https://client.example.com/m\""
	const char *id = "https://client.example.com/m";
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"https://client.example.com/cb\"]}") == NULL);
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"http://127.0.0.1/cb\"],"
		      "\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\"]}") == NULL);
	CHECK(doc(id, "{\"client_id\":\"https://other.example.com/m\","
		      "\"redirect_uris\":[\"https://x/cb\"]}") != NULL);
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[]}") != NULL);
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"javascript:x\"]}") != NULL);
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"https://x/cb\"],"
		      "\"token_endpoint_auth_method\":\"client_secret_basic\"}") != NULL);
	CHECK(doc(id, "{\"client_id\":\"x\"," ID ",\"redirect_uris\":[\"https://x/cb\"]}") != NULL); /* duplicate */
	/* Outside JSON goes through jparse: a raw NUL after the object and
	 * nesting beyond LIM_JSON_DEPTH are refused. */
	{
		static const char nul[] = "{" ID ",\"redirect_uris\":[\"https://x/cb\"]}\0";
		struct client out;
		json_t *uris = NULL;
		memset(&out, 0, sizeof(out));
		CHECK(cimd_check_document(&cfg, id, nul, sizeof(nul) - 1, &out, &uris) != NULL);
		CHECK(uris == NULL);
		client_free(&out);
	}
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"https://x/cb\"],\"x\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}") != NULL);
	CHECK(doc(id, "{" ID ",\"redirect_uris\":[\"https://x/cb\"],\"x\":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}") == NULL);
#undef ID
	CHECK(doc(id, "") != NULL);
}

/* token_endpoint_auth_method private_key_jwt: exactly one of jwks (an
 * object with keys) and jwks_uri (an https URL the fetch policy allows),
 * which the client then carries; keys without the method are refused. */
static const char *keyed(const char *members, struct client *out)
{
	char t[1024];
	json_t *uris = NULL;
	snprintf(t, sizeof(t),
		 "{\"client_id\":\"https://client.example.com/m\",\"redirect_uris\":[\"https://x/cb\"],%s}", members);
	memset(out, 0, sizeof(*out));
	const char *why = cimd_check_document(&cfg, "https://client.example.com/m", t, strlen(t), out, &uris);
	json_decref(uris);
	return why;
}

static void test_private_key_jwt(void)
{
	struct client out;
	CHECK(keyed("\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks_uri\":\"https://client.example.com/j\"",
		    &out) == NULL);
	CHECK(out.private_key_jwt && out.jwks_uri && strcmp(out.jwks_uri, "https://client.example.com/j") == 0 &&
	      !out.jwks);
	client_free(&out);
	CHECK(keyed("\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks\":{\"keys\":[{\"kty\":\"OKP\"}]}",
		    &out) == NULL);
	CHECK(out.private_key_jwt && out.jwks && strstr(out.jwks, "\"keys\"") && !out.jwks_uri);
	client_free(&out);
	const char *bad[] = {
		"\"token_endpoint_auth_method\":\"private_key_jwt\"",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks_uri\":\"https://client.example.com/j\",\"jwks\":{}",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks_uri\":\"http://client.example.com/j\"",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks_uri\":\"https://127.0.0.1/j\"",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks_uri\":7",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks\":[]",
		"\"token_endpoint_auth_method\":\"private_key_jwt\",\"jwks\":{\"k\":[]}",
		"\"token_endpoint_auth_method\":\"none\",\"jwks_uri\":\"https://client.example.com/j\"",
		"\"jwks\":{\"keys\":[]}",
		"\"token_endpoint_auth_method\":\"client_secret_post\"",
		"\"token_endpoint_auth_method\":7",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(keyed(bad[i], &out) != NULL);
		client_free(&out);
	}
}

int main(void)
{
	cfg.registration.client_id_metadata_documents = 1;
	cfg.registration.allow_loopback_redirects = 1;
	cfg.registration.allow_private_schemes = 1;
	test_url();
	test_max_age();
	test_document();
	test_private_key_jwt();
	TEST_DONE();
}
