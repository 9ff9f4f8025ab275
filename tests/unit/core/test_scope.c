/* scope.c: scope lists (RFC 6749 section 3.3): the scope-token charset,
 * duplicates, the per-token, per-list and count limits, empty lists, and the
 * set operations and join the endpoints build on. */
#include <stdlib.h>
#include <string.h>

#include "scope.h"
#include "test.h"

/* Parses s and joins the result: "-" when refused. */
static char *roundtrip(const char *s)
{
	struct scopes sc;
	if (scopes_parse(s, &sc) < 0)
		return strdup("-");
	char *j = scopes_join(&sc);
	scopes_free(&sc);
	return j;
}

static void check_rt(const char *in, const char *want)
{
	char *got = roundtrip(in);
	CHECK_STR(got, want);
	free(got);
}

static void test_parse(void)
{
	struct scopes sc;
	CHECK(scopes_parse("read write", &sc) == 0 && sc.n == 2);
	CHECK_STR(sc.v[0], "read");
	CHECK_STR(sc.v[1], "write");
	scopes_free(&sc);
	CHECK(sc.n == 0);

	/* Empty and absent lists are valid and empty. */
	CHECK(scopes_parse("", &sc) == 0 && sc.n == 0);
	CHECK(scopes_parse(NULL, &sc) == 0 && sc.n == 0);
	CHECK(scopes_parse("   ", &sc) == 0 && sc.n == 0);

	/* Runs of spaces separate like one; duplicates collapse, first order kept;
	 * tokens are case-sensitive. */
	check_rt("  read   write  ", "read write");
	check_rt("b a b a c", "b a c");
	check_rt("Read read", "Read read");
	check_rt("repo:status user:email https://x.example/s?a=[1]",
		 "repo:status user:email https://x.example/s?a=[1]");
	/* Only space separates: a tab, CR or LF is a byte no token may hold. */
	check_rt("read\twrite", "-");
	check_rt("read\nwrite", "-");
	check_rt("read\r", "-");
}

static void test_charset(void)
{
	/* scope-token = 1*( %x21 / %x23-5B / %x5D-7E ): every byte alone and
	 * inside a token. */
	for (int c = 1; c < 256; c++) {
		if (c == ' ')
			continue;
		int ok = c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
		char alone[2] = { (char)c, 0 }, inside[4] = { 'a', (char)c, 'b', 0 };
		struct scopes sc;
		int r1 = scopes_parse(alone, &sc);
		CHECK(r1 == (ok ? 0 : -1) && sc.n == (ok ? 1u : 0u));
		scopes_free(&sc);
		int r2 = scopes_parse(inside, &sc);
		CHECK(r2 == (ok ? 0 : -1) && sc.n == (ok ? 1u : 0u));
		scopes_free(&sc);
		if (r1 != (ok ? 0 : -1) || r2 != (ok ? 0 : -1))
			fprintf(stderr, "byte 0x%02x\n", c);
	}
	/* One bad token refuses the whole list, and nothing is left behind. */
	struct scopes sc;
	CHECK(scopes_parse("read wr\"ite admin", &sc) == -1 && sc.n == 0);
	CHECK(scopes_parse("read \xc3\xa9", &sc) == -1 && sc.n == 0);
}

static void test_limits(void)
{
	struct scopes sc;
	char s[LIM_SCOPE + 2];

	/* A token of 128 bytes is kept, 129 is refused. */
	memset(s, 'x', 128);
	s[128] = '\0';
	CHECK(scopes_parse(s, &sc) == 0 && sc.n == 1 && strlen(sc.v[0]) == 128);
	scopes_free(&sc);
	memset(s, 'x', 129);
	s[129] = '\0';
	CHECK(scopes_parse(s, &sc) == -1 && sc.n == 0);

	/* The whole list: LIM_SCOPE bytes, spaces included. */
	memset(s, ' ', LIM_SCOPE);
	s[0] = 'a';
	s[LIM_SCOPE - 1] = 'b';
	s[LIM_SCOPE] = '\0';
	CHECK(scopes_parse(s, &sc) == 0 && sc.n == 2);
	scopes_free(&sc);
	s[LIM_SCOPE - 1] = ' ';
	s[LIM_SCOPE] = 'b';
	s[LIM_SCOPE + 1] = '\0';
	CHECK(scopes_parse(s, &sc) == -1 && sc.n == 0);

	/* LIM_SCOPES distinct tokens; one more is refused; duplicates do not
	 * count against the limit. */
	size_t o = 0;
	for (int i = 0; i < LIM_SCOPES; i++)
		o += (size_t)snprintf(s + o, sizeof(s) - o, "s%d ", i);
	CHECK(scopes_parse(s, &sc) == 0 && sc.n == LIM_SCOPES);
	scopes_free(&sc);
	snprintf(s + o, sizeof(s) - o, "s0 s1");
	CHECK(scopes_parse(s, &sc) == 0 && sc.n == LIM_SCOPES);
	scopes_free(&sc);
	snprintf(s + o, sizeof(s) - o, "extra");
	CHECK(scopes_parse(s, &sc) == -1 && sc.n == 0);
}

static void test_sets(void)
{
	struct scopes a, b, none;
	CHECK(scopes_parse("read write", &a) == 0);
	CHECK(scopes_parse("write", &b) == 0);
	CHECK(scopes_parse("", &none) == 0);
	CHECK(scopes_has(&a, "read") && scopes_has(&a, "write"));
	CHECK(!scopes_has(&a, "Read") && !scopes_has(&a, "rea") && !scopes_has(&a, "read "));
	CHECK(scopes_subset(&b, &a) && !scopes_subset(&a, &b));
	CHECK(scopes_subset(&none, &a) && scopes_subset(&none, &none) && !scopes_subset(&a, &none));

	/* add: no duplicates, LIM_SCOPES at most; remove keeps the order and
	 * ignores what is absent. */
	CHECK(scopes_add(&b, "write") == 0 && b.n == 1);
	CHECK(scopes_add(&b, "admin") == 0 && scopes_add(&b, "read") == 0 && b.n == 3);
	scopes_remove(&b, "admin");
	scopes_remove(&b, "nothing");
	char *j = scopes_join(&b);
	CHECK_STR(j, "write read");
	free(j);
	scopes_remove(&b, "write");
	scopes_remove(&b, "read");
	CHECK(b.n == 0);
	for (int i = 0; i < LIM_SCOPES; i++) {
		char n[16];
		snprintf(n, sizeof(n), "s%d", i);
		CHECK(scopes_add(&b, n) == 0);
	}
	CHECK(scopes_add(&b, "one-more") == -1 && b.n == LIM_SCOPES);
	CHECK(scopes_add(&b, "s7") == 0 && b.n == LIM_SCOPES); /* present: no room needed */

	/* join of an empty list is "", not NULL (a response may carry it). */
	j = scopes_join(&none);
	CHECK_STR(j, "");
	free(j);
	scopes_free(&a);
	scopes_free(&b);
	scopes_free(&none);
}

int main(void)
{
	test_parse();
	test_charset();
	test_limits();
	test_sets();
	TEST_DONE();
}
