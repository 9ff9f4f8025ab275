/* resources.c: a client's `resource` parameter names a configured resource
 * only when both canonicalise alike (RFC 8707; scheme and host case, the
 * default port, a trailing slash); anything else names none. */
#include <stdlib.h>
#include <string.h>

#include "resources.h"
#include "uri.h"
#include "test.h"

static struct cfg_resource res[3];
static struct config cfg;

static void setup(const char *public_url)
{
	memset(res, 0, sizeof(res));
	res[0].path = "/mcp";
	res[1].path = "/docs/v1";
	res[2].path = "/mcp2";
	memset(&cfg, 0, sizeof(cfg));
	cfg.public_url = (char *)public_url;
	cfg.resources = res;
	cfg.n_resources = 3;
}

static void test_url(void)
{
	char out[64];
	setup("https://broker.example.com");
	CHECK(resources_url(&cfg, &res[1], out, sizeof(out)) == 0);
	CHECK_STR(out, "https://broker.example.com/docs/v1");
	size_t n = strlen("https://broker.example.com/docs/v1");
	CHECK(resources_url(&cfg, &res[1], out, n + 1) == 0);
	CHECK(resources_url(&cfg, &res[1], out, n) < 0); /* never cut */
	CHECK(resources_url(&cfg, &res[1], out, 1) < 0);
}

/* With keep set, each resource carries its canonical URL as config_parse
 * leaves it; the answers must not change. */
static void test_find_with(int keep)
{
	setup("https://broker.example.com");
	char *kept[3] = { NULL, NULL, NULL };
	for (size_t i = 0; keep && i < 3; i++) {
		char url[256];
		CHECK(resources_url(&cfg, &res[i], url, sizeof(url)) == 0);
		res[i].canonical = kept[i] = uri_canonical_resource(url);
		CHECK(kept[i] != NULL);
	}
	const struct {
		const char *resource;
		int want; /* index into res, -1: none */
	} cases[] = {
		{ "https://broker.example.com/mcp", 0 },
		{ "https://broker.example.com/mcp/", 0 },
		{ "HTTPS://BROKER.example.COM/mcp", 0 },
		{ "https://broker.example.com:443/mcp", 0 },
		{ "https://broker.example.com/docs/v1", 1 },
		{ "https://broker.example.com/docs/v1/", 1 },
		{ "https://broker.example.com/mcp2", 2 },
		{ "https://broker.example.com/MCP", -1 }, /* paths are case-sensitive */
		{ "https://broker.example.com/mc", -1 },  /* no prefix match */
		{ "https://broker.example.com/mcp/x", -1 },
		{ "https://broker.example.com/docs", -1 },
		{ "https://broker.example.com", -1 },
		{ "https://broker.example.com/", -1 },
		{ "http://broker.example.com/mcp", -1 },       /* another scheme */
		{ "https://broker.example.com:8443/mcp", -1 }, /* another port */
		{ "https://other.example.com/mcp", -1 },
		{ "https://broker.example.com.evil.example/mcp", -1 },
		{ "https://user@broker.example.com/mcp", -1 },
		{ "https://broker.example.com/mcp?x=1", -1 },
		{ "https://broker.example.com/mcp#f", -1 },
		{ "/mcp", -1 },
		{ "mcp", -1 },
		{ "", -1 },
		{ "ftp://broker.example.com/mcp", -1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cfg_resource *got = resources_find(&cfg, cases[i].resource);
		int ok = cases[i].want < 0 ? got == NULL : got == &res[cases[i].want];
		if (!ok)
			fprintf(stderr, "resource %s\n", cases[i].resource);
		CHECK(ok);
	}
	for (size_t i = 0; i < 3; i++)
		free(kept[i]);
}

static void test_find_port(void)
{
	setup("http://127.0.0.1:8080");
	CHECK(resources_find(&cfg, "http://127.0.0.1:8080/mcp") == &res[0]);
	CHECK(resources_find(&cfg, "HTTP://127.0.0.1:8080/mcp/") == &res[0]);
	CHECK(resources_find(&cfg, "http://127.0.0.1/mcp") == NULL);
	CHECK(resources_find(&cfg, "http://127.0.0.1:80/mcp") == NULL);
	CHECK(resources_find(&cfg, "http://localhost:8080/mcp") == NULL);
	setup("https://broker.example.com:443");
	CHECK(resources_find(&cfg, "https://broker.example.com/mcp") == &res[0]);
	cfg.n_resources = 0;
	CHECK(resources_find(&cfg, "https://broker.example.com/mcp") == NULL);
}

int main(void)
{
	test_url();
	test_find_with(0);
	test_find_with(1);
	test_find_port();
	TEST_DONE();
}
