/* session.c: how a session id is judged (who opened it, an initialize),
 * its binding key, and what is refused before any cache or database. */
#include <string.h>

#include "../../../broker/proxy/session.c"
#include "test.h"

static void test_judge(void)
{
	/* known, mine, initialize */
	CHECK(judge(1, 1, 0) == SESSION_PASS);
	CHECK(judge(1, 1, 1) == SESSION_PASS);
	CHECK(judge(1, 0, 0) == SESSION_FOREIGN);
	CHECK(judge(1, 0, 1) == SESSION_FOREIGN); /* an initialize cannot take over another user's id */
	CHECK(judge(0, 0, 0) == SESSION_UNKNOWN);
	CHECK(judge(0, 0, 1) == SESSION_DROP);
}

static void test_key(void)
{
	char k1[65], k2[65], k3[65], want[65];
	struct str a = { "sess-1", 6 }, b = { "sess-1xyz", 6 };
	CHECK(binding_key(&a, "http://down/mcp", k1) == 0);
	crypto_sha256_hex("sess-1|http://down/mcp", strlen("sess-1|http://down/mcp"), want);
	CHECK_STR(k1, want);
	CHECK(binding_key(&b, "http://down/mcp", k2) == 0); /* only the view's bytes count */
	CHECK_STR(k2, k1);
	CHECK(binding_key(&a, "http://other/mcp", k3) == 0); /* an id is its downstream's */
	CHECK(strcmp(k3, k1) != 0);
}

static void test_refused_early(void)
{
	/* Judged without the app, the cache or a connection: none is touched. */
	char big[SESSION_ID_MAX + 2];
	struct db_conn *c = NULL;
	CHECK(session_check(NULL, &c, "d", "u", NULL, 0) == SESSION_PASS);
	CHECK(session_check(NULL, &c, "d", "u", "", 0) == SESSION_BAD_ID);
	CHECK(session_check(NULL, &c, "d", "u", " \t ", 1) == SESSION_BAD_ID);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(session_check(NULL, &c, "d", "u", big, 0) == SESSION_BAD_ID);
	CHECK(c == NULL);

	/* Nothing to bind: no new id, or the one the request was checked against. */
	CHECK(session_record(NULL, "d", "u", NULL, NULL, "r") == 0);
	CHECK(session_record(NULL, "d", "u", " s-1\t", "s-1", "r") == 0);
	/* A new id that could not travel back as a field is refused. */
	CHECK(session_record(NULL, "d", "u", NULL, "s\r\n1", "r") < 0);
	CHECK(session_record(NULL, "d", "u", "s-0", big, "r") < 0);
}

int main(void)
{
	test_judge();
	test_key();
	test_refused_early();
	TEST_DONE();
}
