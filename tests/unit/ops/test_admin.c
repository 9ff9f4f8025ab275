/* admin.c: the pure steps of the operator API: the listing's query
 * (filters, limit through num_parse, the cursor) and the revocation
 * selector. admin.c is included to reach its statics. */
#include <jansson.h>
#include <string.h>

#include "../../../broker/ops/admin.c"
#include "test.h"

#define GID "0b8e4a4e-1f0c-4d1e-9b6a-3c2d1e0f9a8b"

static const char *list(const char *status, const char *limit, const char *cursor, struct grants_query *q)
{
	struct grants_args a = { "alice", "app", "github", status, limit, cursor };
	return grants_parse(&a, q);
}

static void test_grants_parse(void)
{
	struct grants_query q;
	CHECK(list(NULL, NULL, NULL, &q) == NULL);
	CHECK(q.limit == ADMIN_PAGE_DEFAULT && !q.has_cursor && q.status == NULL);
	CHECK_STR(q.user, "alice");
	CHECK_STR(q.client_id, "app");
	CHECK_STR(q.upstream, "github");
	CHECK(list("active", "1", NULL, &q) == NULL && q.limit == 1);
	CHECK_STR(q.status, "active");
	CHECK(list("revoked", "500", NULL, &q) == NULL && q.limit == 500);
	static const char *const bad_status[] = { "Active", "expired", "active ", "revoked\n" };
	for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++)
		CHECK_STR(list(bad_status[i], NULL, NULL, &q), "status must be active or revoked");
	CHECK(list("", NULL, NULL, &q) == NULL && q.status == NULL);                   /* empty: no filter */
	CHECK_STR(list("activeactiveactive", NULL, NULL, &q), "a filter is too long"); /* over 16 bytes */
	static const char *const bad_limit[] = { "0",  "501", "-1",   "",    " 5",
						 "+5", "5x",  "0x10", "1e2", "99999999999999999999" };
	for (size_t i = 0; i < sizeof(bad_limit) / sizeof(bad_limit[0]); i++)
		CHECK_STR(list(NULL, bad_limit[i], NULL, &q), "limit must be 1..500");
	/* The status is checked before the limit, the limit before the cursor. */
	CHECK_STR(list("x", "0", "x", &q), "status must be active or revoked");
	CHECK_STR(list(NULL, "0", "x", &q), "limit must be 1..500");

	CHECK(list(NULL, NULL, "1700000000123456_" GID, &q) == NULL && q.has_cursor);
	CHECK_STR(q.cur_ts, "1700000000123456");
	CHECK_STR(q.cur_id, GID);
	static const char *const bad_cursor[] = {
		"",
		"_",
		"1700000000123456",
		"_" GID,
		"17x_" GID,
		"1700000000123456_" GID "0",
		"1700000000123456_0B8E4A4E-1F0C-4D1E-9B6A-3C2D1E0F9A8B",
		"123456789012345678901234_" GID,
		"-5_" GID,
		"1700000000123456 " GID,
	};
	for (size_t i = 0; i < sizeof(bad_cursor) / sizeof(bad_cursor[0]); i++)
		CHECK_STR(list(NULL, NULL, bad_cursor[i], &q), "malformed cursor");
	/* The timestamp is compared with a bigint: past it, the cursor is malformed (not a 500). */
	CHECK(list(NULL, NULL, "9223372036854775807_" GID, &q) == NULL);
	CHECK_STR(list(NULL, NULL, "9223372036854775808_" GID, &q), "malformed cursor");
	CHECK_STR(list(NULL, NULL, "12345678901234567890123_" GID, &q), "malformed cursor");

	/* An empty filter does not filter; a too-long one is refused (it would
	 * otherwise widen the listing to every grant). */
	char longuser[302];
	memset(longuser, 'u', 301);
	longuser[301] = '\0';
	struct grants_args a = { longuser, "", NULL, NULL, NULL, NULL };
	CHECK_STR(grants_parse(&a, &q), "a filter is too long");
	longuser[300] = '\0';
	CHECK(grants_parse(&a, &q) == NULL && q.user != NULL && q.client_id == NULL);
}

static int sel(const char *text, struct revoke_sel *s)
{
	json_t *body = jparse_str(text, 0, LIM_JSON_DEPTH);
	int rc = revoke_parse(body, s);
	json_decref(body);
	return rc;
}

static void test_revoke_parse(void)
{
	struct revoke_sel s;
	CHECK(sel("{\"grant_id\":\"" GID "\"}", &s) == 0 && s.grant_id && !s.user && !s.all);
	CHECK(sel("{\"user\":\"1001\"}", &s) == 0 && s.user && !s.upstream);
	CHECK(sel("{\"user\":\"1001\",\"upstream\":\"github\"}", &s) == 0 && s.user && s.upstream);
	CHECK(sel("{\"client_id\":\"app\"}", &s) == 0 && s.client_id && !s.disable_client);
	CHECK(sel("{\"client_id\":\"app\",\"disable_client\":true}", &s) == 0 && s.disable_client);
	CHECK(sel("{\"client_id\":\"app\",\"disable_client\":false}", &s) == 0 && !s.disable_client);
	CHECK(sel("{\"upstream\":\"github\"}", &s) == 0 && s.upstream && !s.user);
	CHECK(sel("{\"all\":true}", &s) == 0 && s.all);
	static const char *const bad[] = {
		"",
		"[]",
		"null",
		"\"all\"",
		"{}",
		"{\"all\":false}",
		"{\"all\":1}",
		"{\"grant_id\":\"" GID "\",\"user\":\"1001\"}", /* two selectors */
		"{\"client_id\":\"app\",\"all\":true}",
		"{\"client_id\":\"app\",\"upstream\":\"github\"}", /* upstream narrows only user */
		"{\"grant_id\":\"" GID "\",\"upstream\":\"github\"}",
		"{\"disable_client\":true}", /* nothing to disable */
		"{\"user\":\"1001\",\"disable_client\":true}",
		"{\"client_id\":\"app\",\"disable_client\":\"yes\"}",
		"{\"grant_id\":\"0B8E4A4E-1F0C-4D1E-9B6A-3C2D1E0F9A8B\"}", /* ids are lower-case */
		"{\"grant_id\":\"" GID "0\"}",
		"{\"user\":\"\"}",
		"{\"user\":5}",
		"{\"upstream\":\"\"}",
		"{\"user\":\"1001\",\"reason\":\"x\"}",  /* unknown member */
		"{\"user\":\"1001\",\"user\":\"1002\"}", /* duplicate: not parsed */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(sel(bad[i], &s) == -1);
		if (sel(bad[i], &s) != -1)
			fprintf(stderr, "  accepted %s\n", bad[i]);
	}
	char big[LIM_CLIENT_ID + 40];
	snprintf(big, sizeof(big), "{\"client_id\":\"%0*d\"}", LIM_CLIENT_ID, 0);
	CHECK(sel(big, &s) == 0);
	snprintf(big, sizeof(big), "{\"client_id\":\"%0*d\"}", LIM_CLIENT_ID + 1, 0);
	CHECK(sel(big, &s) == -1);
	CHECK(revoke_parse(NULL, &s) == -1);
}

int main(void)
{
	test_grants_parse();
	test_revoke_parse();
	TEST_DONE();
}
