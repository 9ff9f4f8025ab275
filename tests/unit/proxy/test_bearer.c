/* bearer.c: the token of an Authorization value, and what is refused
 * before any cache or database is asked. */
#include <string.h>

#include "bearer.h"
#include "test.h"

static void test_token(void)
{
	char t[LIM_TOKEN + 9];
	int dpop = 1;
	CHECK_STR(bearer_token("Bearer mcpb_at_x", &dpop), "mcpb_at_x");
	CHECK(dpop == 0);
	/* RFC 9449 section 7.1: the DPoP scheme, also case-insensitive. */
	CHECK_STR(bearer_token("DPoP mcpb_at_x", &dpop), "mcpb_at_x");
	CHECK(dpop == 1);
	CHECK_STR(bearer_token("dpop abc", &dpop), "abc");
	CHECK(dpop == 1);
	CHECK(bearer_token("DPoP ", &dpop) == NULL);
	CHECK(bearer_token("DPoPabc", &dpop) == NULL);
	CHECK(bearer_token("DPoP", &dpop) == NULL);
	CHECK_STR(bearer_token("bearer abc", &dpop), "abc");   /* the scheme is case-insensitive */
	CHECK_STR(bearer_token("BEARER  abc", &dpop), " abc"); /* one space is the separator; the rest is the token's */
	CHECK(bearer_token(NULL, &dpop) == NULL);
	CHECK(bearer_token("Bearer ", &dpop) == NULL);
	CHECK(bearer_token("Bearer", &dpop) == NULL);
	CHECK(bearer_token("Basic YWJj", &dpop) == NULL);
	CHECK(bearer_token("Bearerabc", &dpop) == NULL);
	memcpy(t, "Bearer ", 7);
	memset(t + 7, 'a', LIM_TOKEN);
	t[7 + LIM_TOKEN] = '\0';
	CHECK(bearer_token(t, &dpop) == t + 7);
	t[7 + LIM_TOKEN] = 'a';
	t[8 + LIM_TOKEN] = '\0';
	CHECK(bearer_token(t, &dpop) == NULL);
}

static void test_not_access_tokens(void)
{
	/* Judged without the app, the cache or a connection: none is touched. */
	struct token_info ti;
	struct db_conn *c = NULL;
	char hash[65] = "x";
	char long_tok[LIM_TOKEN + 2];
	CHECK(bearer_validate(NULL, &c, "mcpb_rt_refresh", &ti, hash) == BEARER_INVALID);
	CHECK(hash[0] == '\0' && c == NULL);
	CHECK(bearer_validate(NULL, &c, "ghp_upstream", &ti, hash) == BEARER_INVALID);
	CHECK(bearer_validate(NULL, &c, "", &ti, hash) == BEARER_INVALID);
	memcpy(long_tok, TOKEN_PREFIX_ACCESS, strlen(TOKEN_PREFIX_ACCESS));
	memset(long_tok + strlen(TOKEN_PREFIX_ACCESS), 'a', sizeof(long_tok) - 1 - strlen(TOKEN_PREFIX_ACCESS));
	long_tok[sizeof(long_tok) - 1] = '\0';
	CHECK(bearer_validate(NULL, &c, long_tok, &ti, hash) == BEARER_INVALID);
}

int main(void)
{
	test_token();
	test_not_access_tokens();
	TEST_DONE();
}
