/* uri.c: resource canonicalisation, redirect URI policy and matching. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "uri.h"

static void check_canonical(const char *in, const char *want)
{
	char *c = uri_canonical_resource(in);
	if (want)
		CHECK_STR(c, want);
	else
		CHECK(c == NULL);
	free(c);
}

static void test_canonical(void)
{
	check_canonical("https://MCP.Example.com:443/mcp/", "https://mcp.example.com/mcp");
	check_canonical("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp");
	check_canonical("https://mcp.example.com/mcp?x=1", NULL);
	check_canonical("https://u@mcp.example.com/mcp", NULL);
	check_canonical("ftp://mcp.example.com/mcp", NULL);
	/* Not a fixed point: curl decoded the host to 127.0.1, which it reads
	 * as 127.0.0.1 the next time (found by fuzz_uri). */
	check_canonical("http://127%2e0.1:33/c2", NULL);
	check_canonical("https://mcp%2eexample.com/mcp", "https://mcp.example.com/mcp"); /* decoded at once */
}

static void test_redirects(void)
{
	const char *why = NULL;
	CHECK(uri_redirect_allowed("http://127.0.0.1:33418/callback", &why) == 0);
	CHECK(uri_redirect_allowed("https://client.example.com/cb", &why) == 0);
	CHECK(uri_redirect_allowed("com.example.app:/oauth2redirect", &why) == 0);
	CHECK(uri_redirect_allowed("http:/127.0.0.1/cb", &why) == -1);
	CHECK(uri_redirect_allowed("http://evil.example/cb", &why) == -1);
	CHECK(uri_redirect_allowed("javascript:alert(1)", &why) == -1);

	CHECK(uri_redirect_matches("http://127.0.0.1:33418/callback", "http://127.0.0.1:5555/callback"));
	CHECK(uri_redirect_matches("http://[::1]/cb", "http://[::1]:9/cb"));
	CHECK(!uri_redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:9/other"));
	CHECK(!uri_redirect_matches("https://client.example.com/cb", "https://client.example.com:444/cb"));
	/* The requested URI must pass the registration policy itself: curl
	 * also reads these as loopback URIs with another port (found by
	 * fuzz_uri). */
	CHECK(!uri_redirect_matches("http://[::1]:1", "http:/[::1]:/"));
	CHECK(!uri_redirect_matches("http://127.0.0.1:1/cb", "http:/127.0.0.1:2/cb"));
	CHECK(!uri_redirect_matches("http://127.0.0.1:1/cb", "http:///127.0.0.1:2/cb"));
	CHECK(!uri_redirect_matches("http://localhost:1/cb", "HTTP:/localhost:2/cb"));
}

int main(void)
{
	test_canonical();
	test_redirects();
	TEST_DONE();
}
