/* uri.c: resource canonicalisation, redirect URI policy and matching, the
 * consent page's host and query building. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lim.h"
#include "test.h"
#include "uri.h"

/* A URI the policy refuses is refused whatever happens, out of memory
 * included: accepting one exits 3, which torture mode (torture.h) does not
 * excuse as it does a failed CHECK. */
static void refused(int accepted, const char *what, const char *uri)
{
	if (accepted) {
		fprintf(stderr, "  %s accepted \"%s\"\n", what, uri);
		exit(3);
	}
}

static void check_canonical(const char *in, const char *want)
{
	char *c = uri_canonical_resource(in);
	if (want) {
		CHECK_STR(c, want);
		/* A canonical resource is a fixed point. */
		char *again = c ? uri_canonical_resource(c) : NULL;
		if (c && again)
			CHECK_STR(again, c);
		free(again);
	} else {
		refused(c != NULL, "uri_canonical_resource", in);
	}
	free(c);
}

static void check_redirect(const char *uri, int allowed)
{
	const char *why = NULL;
	int rc = uri_redirect_allowed(uri, &why);
	if (allowed)
		CHECK(rc == 0);
	else
		refused(rc != -1 || why == NULL, "uri_redirect_allowed", uri ? uri : "(null)");
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

	/* Default ports dropped, others kept; trailing slashes all go; an empty
	 * path is the bare origin. */
	check_canonical("http://mcp.example.com:80/", "http://mcp.example.com");
	check_canonical("https://mcp.example.com:8443/a//", "https://mcp.example.com:8443/a");
	check_canonical("https://mcp.example.com", "https://mcp.example.com");
	check_canonical("HTTPS://[::1]:443/mcp", "https://[::1]/mcp");
	/* Never a query, a fragment (even empty), credentials, another scheme, a
	 * relative or host-less URL, or more than LIM_REDIRECT_URI bytes. */
	check_canonical("https://mcp.example.com/mcp?", NULL);
	check_canonical("https://mcp.example.com/mcp#", NULL);
	check_canonical("https://mcp.example.com/mcp#frag", NULL);
	check_canonical("https://:pw@mcp.example.com/mcp", NULL);
	check_canonical("https://u:pw@mcp.example.com/mcp", NULL);
	check_canonical("/mcp", NULL);
	check_canonical("mcp.example.com/mcp", NULL);
	check_canonical("file:///etc/passwd", NULL);
	check_canonical("https:///mcp", NULL);
	check_canonical("", NULL);
	check_canonical(NULL, NULL);
	check_canonical("https://mcp.example.com:99999/mcp", NULL);
	char long_url[LIM_REDIRECT_URI + 16];
	int o = snprintf(long_url, sizeof(long_url), "https://mcp.example.com/");
	memset(long_url + o, 'a', sizeof(long_url) - (size_t)o - 1);
	long_url[sizeof(long_url) - 1] = '\0';
	check_canonical(long_url, NULL);
}

static void test_redirects(void)
{
	check_redirect("http://127.0.0.1:33418/callback", 1);
	check_redirect("https://client.example.com/cb", 1);
	check_redirect("com.example.app:/oauth2redirect", 1);
	check_redirect("http://[::1]:8080/cb", 1);
	check_redirect("http://LOCALHOST/cb", 1);
	check_redirect("cursor://anysphere.cursor-retrieval/oauth/callback", 1);
	check_redirect("http:/127.0.0.1/cb", 0);
	check_redirect("http://evil.example/cb", 0);
	check_redirect("javascript:alert(1)", 0);
	/* Each refusal, whatever the case of the scheme or what follows it. */
	check_redirect("JavaScript://x/%0aalert(1)", 0);
	check_redirect("data:text/html,x", 0);
	check_redirect("file:///etc/passwd", 0);
	check_redirect("vbscript:x", 0);
	check_redirect("https://client.example.com/cb#f", 0);
	check_redirect("https://client.example.com/cb#", 0);
	check_redirect("https://user@client.example.com/cb", 0);
	check_redirect("http://u:p@127.0.0.1/cb", 0);
	check_redirect("https:///client.example.com/cb", 0);
	check_redirect("https:client.example.com/cb", 0);
	check_redirect("http://127.0.0.2/cb", 0);
	check_redirect("http://127.0.0.1.evil.example/cb", 0);
	check_redirect("http://[::ffff:127.0.0.1]/cb", 0);
	check_redirect("https://client.example.com/c b", 0);
	check_redirect("https://client.example.com/cb\t", 0);
	check_redirect("https://client.example.com/\x7f", 0);
	check_redirect("", 0);
	check_redirect(NULL, 0);
	check_redirect("cb", 0);

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

static void test_display_and_query(void)
{
	char *h = uri_display_host("https://client.example.com:8443/cb?x=1");
	CHECK_STR(h, "client.example.com:8443");
	free(h);
	h = uri_display_host("http://127.0.0.1:80/cb");
	CHECK_STR(h, "127.0.0.1");
	free(h);
	/* A private-use scheme shows the URI itself without its query: curl's
	 * "host" of evil://github.com/cb is not where the browser goes. */
	h = uri_display_host("evil://github.com/cb?code=1");
	CHECK_STR(h, "evil://github.com/cb");
	free(h);
	char long_uri[300];
	memset(long_uri, 'a', sizeof(long_uri) - 1);
	memcpy(long_uri, "app:/", 5);
	long_uri[sizeof(long_uri) - 1] = '\0';
	h = uri_display_host(long_uri);
	CHECK(h && strlen(h) == 123 && strcmp(h + 120, "...") == 0 && strncmp(h, long_uri, 120) == 0);
	free(h);
	CHECK(uri_display_host("not a uri") == NULL);

	char *q = uri_with_query("https://c.example/cb", "code=a&state=b");
	CHECK_STR(q, "https://c.example/cb?code=a&state=b");
	free(q);
	q = uri_with_query("https://c.example/cb?x=1", "code=a");
	CHECK_STR(q, "https://c.example/cb?x=1&code=a");
	free(q);
	q = uri_with_query("https://c.example/cb?", "code=a");
	CHECK_STR(q, "https://c.example/cb?code=a");
	free(q);
	q = uri_with_query("https://c.example/cb?x=1&", "code=a");
	CHECK_STR(q, "https://c.example/cb?x=1&code=a");
	free(q);
	/* Appended as text, never re-serialised. */
	q = uri_with_query("com.example.app:/oauth2redirect", "code=a");
	CHECK_STR(q, "com.example.app:/oauth2redirect?code=a");
	free(q);
	CHECK(uri_with_query("https://c.example/cb#f", "code=a") == NULL);
	CHECK(uri_with_query("", "code=a") == NULL);
	CHECK(uri_with_query(NULL, "code=a") == NULL);
	CHECK(uri_with_query("https://c.example/cb", NULL) == NULL);

	CHECK(uri_host_is_loopback("127.0.0.1") && uri_host_is_loopback("[::1]") && uri_host_is_loopback("LocalHost"));
	CHECK(!uri_host_is_loopback("127.0.0.2") && !uri_host_is_loopback("::1") &&
	      !uri_host_is_loopback("localhost.") && !uri_host_is_loopback(NULL));
}

int main(void)
{
	test_canonical();
	test_redirects();
	test_display_and_query();
	TEST_DONE();
}
