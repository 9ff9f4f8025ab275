/* forward.c: which client fields travel downstream, how the path below the
 * resource is re-encoded, and the lines the broker adds (the injected
 * credential, identity, forwarding) with their refusals. */
#include <stdlib.h>
#include <string.h>

#include "../../../broker/proxy/forward.c"
#include "test.h"

static void test_trim(void)
{
	struct str t = forward_ows_trim(" \tabc d\t ");
	CHECK(t.len == 5 && memcmp(t.p, "abc d", 5) == 0);
	t = forward_ows_trim("   ");
	CHECK(t.len == 0);
	t = forward_ows_trim("x");
	CHECK(t.len == 1 && t.p[0] == 'x');
}

static void test_dropped(void)
{
	const char *inj = "Authorization";
	/* Credentials, hop-by-hop and framing fields. */
	CHECK(forward_dropped("Authorization", inj, NULL));
	CHECK(forward_dropped("cookie", inj, NULL));
	CHECK(forward_dropped("Transfer-Encoding", inj, NULL));
	CHECK(forward_dropped("Content-Length", inj, NULL));
	CHECK(forward_dropped("Content-Type", inj, NULL)); /* the broker sets it */
	/* Identity and routing, by name and by family. */
	CHECK(forward_dropped("X-MCP-User", inj, NULL));
	CHECK(forward_dropped("x-mcp-anything", inj, NULL));
	CHECK(forward_dropped("X-Forwarded-Whatever", inj, NULL));
	CHECK(forward_dropped("CF-Connecting-IP", inj, NULL));
	CHECK(forward_dropped("X-Amzn-Oidc-Data", inj, NULL));
	CHECK(forward_dropped("X-HTTP-Method-Override", inj, NULL));
	CHECK(forward_dropped("Remote-User", inj, NULL));
	/* '_' is '-' to CGI servers. */
	CHECK(forward_dropped("X_MCP_User", inj, NULL));
	CHECK(forward_dropped("Accept_Language", inj, NULL));
	/* The header the credential goes in, whatever the resource names. */
	CHECK(forward_dropped("X-Api-Key", "x-api-key", NULL));
	CHECK(!forward_dropped("X-Api-Key", inj, NULL));
	/* Fields the client's Connection lists (split at SP, HTAB and ','). */
	CHECK(forward_dropped("X-Trace", inj, "keep-alive, x-trace"));
	CHECK(forward_dropped("X-Trace", inj, "x-other\tX-TRACE"));
	CHECK(forward_dropped("X-Trace", inj, "a b x-trace"));
	CHECK(!forward_dropped("X-Trace", inj, "x-traces, x-trac"));
	CHECK(!forward_dropped("X-Trace", inj, ""));
	/* The MCP fields are the client's to say. */
	CHECK(!forward_dropped("Accept", inj, NULL));
	CHECK(!forward_dropped("Mcp-Session-Id", inj, NULL));
	CHECK(!forward_dropped("MCP-Protocol-Version", inj, NULL));
	CHECK(!forward_dropped("Last-Event-ID", inj, NULL));
	CHECK(!forward_dropped("Mcp-Method", inj, NULL));
	CHECK(!forward_dropped("xcf-thing", inj, NULL)); /* a family is a prefix, not a substring */
}

static void test_dot_segments(void)
{
	CHECK(forward_has_dot_segment("/a/./b"));
	CHECK(forward_has_dot_segment("/a/../b"));
	CHECK(forward_has_dot_segment("/.."));
	CHECK(forward_has_dot_segment("/."));
	CHECK(forward_has_dot_segment("/a/.."));
	CHECK(!forward_has_dot_segment(""));
	CHECK(!forward_has_dot_segment("/"));
	CHECK(!forward_has_dot_segment("/a/b"));
	CHECK(!forward_has_dot_segment("/a..b/.c/..."));
	CHECK(!forward_has_dot_segment("//"));
}

static int suffix(const char *rest, const char *want)
{
	struct buf b;
	buf_init(&b, 1024);
	int rc = append_suffix(&b, rest);
	int ok = want ? rc == 0 && strcmp(b.ptr ? b.ptr : "", want) == 0 : rc < 0;
	buf_free(&b);
	return ok;
}

static void test_suffix(void)
{
	CHECK(suffix("", ""));
	CHECK(suffix("/a/b", "/a/b"));
	CHECK(suffix("/a b/c%d", "/a%20b/c%25d"));
	CHECK(suffix("/x?y#z", "/x%3Fy%23z")); /* decoded '?' and '#' stay in the segment */
	CHECK(suffix("/", "/"));
	CHECK(suffix("/a/..", NULL));
	CHECK(suffix("/./a", NULL));
	CHECK(suffix("a", NULL)); /* a suffix starts with '/' */
}

static int count(const struct curl_slist *l)
{
	int n = 0;
	for (; l; l = l->next)
		n++;
	return n;
}

static const char *nth(const struct curl_slist *l, int i)
{
	for (; l && i; l = l->next)
		i--;
	return l ? l->data : NULL;
}

static void test_broker_lines(void)
{
	struct cfg_inject inj[2] = { { "Authorization", "Bearer {upstream_token}", NULL } };
	struct cfg_resource res = { .path = "/mcp", .inject = inj, .n_inject = 1 };
	struct forward_identity id = { "github", "octocat", "client-1", "read write" };
	struct curl_slist *l = NULL;
	const char *tok[2] = { "gho_secret", NULL };

	CHECK(add_broker_lines(&l, &res, &id, tok, "10.0.0.1", "req-1", 0) == 0);
	CHECK(count(l) == 4);
	CHECK_STR(nth(l, 0), "Authorization: Bearer gho_secret");
	CHECK_STR(nth(l, 1), "X-Forwarded-For: 10.0.0.1");
	CHECK_STR(nth(l, 2), "X-Request-Id: req-1");
	CHECK_STR(nth(l, 3), "Expect:");
	forward_headers_free(&l);
	CHECK(l == NULL);
	forward_headers_free(&l); /* NULL-safe */

	res.identity_headers = 1;
	inj[0] = (struct cfg_inject){ "X-Api-Key", "token={upstream_token};v=2", NULL };
	tok[0] = "k";
	CHECK(add_broker_lines(&l, &res, &id, tok, "::1", "req-2", 1) == 0);
	CHECK(count(l) == 8);
	CHECK_STR(nth(l, 0), "X-Api-Key: token=k;v=2");
	CHECK_STR(nth(l, 1), "X-MCP-User: github:octocat");
	CHECK_STR(nth(l, 2), "X-MCP-Client: client-1");
	CHECK_STR(nth(l, 3), "X-MCP-Scopes: read write");
	CHECK_STR(nth(l, 7), "Content-Type: application/json");
	forward_headers_free(&l);

	/* Two upstreams: each template gets its own token; a named
	 * placeholder is replaced whole; a token not held injects nothing. */
	inj[1] = (struct cfg_inject){ "X-Sentry-Token", "Bearer {upstream_token:sentry}!", "sentry" };
	res.n_inject = 2;
	res.identity_headers = 0;
	const char *two[2] = { "gh", "sn" };
	CHECK(add_broker_lines(&l, &res, &id, two, "::1", "r", 0) == 0);
	CHECK_STR(nth(l, 0), "X-Api-Key: token=gh;v=2");
	CHECK_STR(nth(l, 1), "X-Sentry-Token: Bearer sn!");
	forward_headers_free(&l);
	const char *one[2] = { "gh", NULL };
	CHECK(add_broker_lines(&l, &res, &id, one, "::1", "r", 0) == 0);
	CHECK(count(l) == 4);
	CHECK_STR(nth(l, 0), "X-Api-Key: token=gh;v=2");
	forward_headers_free(&l);
	const char *badtwo[2] = { "gh", "s\r\nX: y" };
	CHECK(add_broker_lines(&l, &res, &id, badtwo, "::1", "r", 0) < 0);
	forward_headers_free(&l);
	res.n_inject = 1;

	/* What the upstream issued or the user is called must be a field value. */
	tok[0] = "k\r\nX-MCP-User: admin";
	CHECK(add_broker_lines(&l, &res, &id, tok, "::1", "r", 0) < 0);
	forward_headers_free(&l);
	tok[0] = "k\x7f";
	CHECK(add_broker_lines(&l, &res, &id, tok, "::1", "r", 0) < 0);
	forward_headers_free(&l);
	tok[0] = "k";
	struct forward_identity bad = { "github", "octo\ncat", "c", "" };
	CHECK(add_broker_lines(&l, &res, &bad, tok, "::1", "r", 0) < 0);
	forward_headers_free(&l);
	/* A template without the placeholder injects nothing: refused. */
	inj[0].value = "Bearer";
	CHECK(add_broker_lines(&l, &res, &id, tok, "::1", "r", 0) < 0);
	forward_headers_free(&l);
}

static void test_add_line(void)
{
	struct curl_slist *l = NULL;
	char *big = malloc(FORWARD_LINE_MAX + 1);
	if (!big)
		abort();
	memset(big, 'a', FORWARD_LINE_MAX);
	big[FORWARD_LINE_MAX] = '\0';
	CHECK(add_line(&l, "X: %s", big) < 0); /* never cut short */
	CHECK(l == NULL);
	big[FORWARD_LINE_MAX - 4] = '\0';
	CHECK(add_line(&l, "X: %s", big) == 0);
	CHECK(count(l) == 1 && strlen(l->data) == FORWARD_LINE_MAX - 1);
	forward_headers_free(&l);
	free(big);
}

int main(void)
{
	test_trim();
	test_dropped();
	test_dot_segments();
	test_suffix();
	test_broker_lines();
	test_add_line();
	TEST_DONE();
}
