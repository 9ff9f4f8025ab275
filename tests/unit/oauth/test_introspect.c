/* introspect.c: the pure steps of POST /introspect (RFC 7662): the
 * request's token, the audience a resource server may see, and the answer
 * for an active token. introspect.c is included to reach its statics. */
#include <jansson.h>
#include <string.h>

#include "../../../broker/oauth/introspect.c"
#include "test.h"

static void test_parse(void)
{
	const char *token = "x";
	char big[LIM_TOKEN + 2];
	json_t *f = json_pack("{s:s}", "token", "mcpb_at_abc");
	CHECK(parse_request(f, 0, &token) == TI_OK);
	CHECK_STR(token, "mcpb_at_abc");
	CHECK(parse_request(f, 1, &token) == TI_REFUSED); /* a repeated parameter */
	CHECK(parse_request(NULL, 0, &token) == TI_REFUSED && token == NULL);
	json_decref(f);
	f = json_pack("{s:s}", "token_type_hint", "access_token");
	CHECK(parse_request(f, 0, &token) == TI_REFUSED);
	json_decref(f);
	memset(big, 'a', LIM_TOKEN);
	big[LIM_TOKEN] = '\0';
	f = json_pack("{s:s}", "token", big);
	CHECK(parse_request(f, 0, &token) == TI_OK);
	json_decref(f);
	big[LIM_TOKEN] = 'a';
	big[LIM_TOKEN + 1] = '\0';
	f = json_pack("{s:s}", "token", big);
	CHECK(parse_request(f, 0, &token) == TI_INACTIVE); /* no broker token is that long */
	json_decref(f);
}

static void test_audience(void)
{
	struct config cfg;
	char *paths[] = { "/mcp/github", "/mcp/sentry" };
	struct cfg_resource_server all = { NULL, 0, "rs", { 0 }, 1 }, some = { paths, 2, "rs", { 0 }, 1 };
	memset(&cfg, 0, sizeof(cfg));
	cfg.public_url = "https://broker.example.com";
	CHECK(audience_ok(&cfg, &all, "https://broker.example.com/mcp/anything"));
	CHECK(audience_ok(&cfg, &some, "https://broker.example.com/mcp/github"));
	CHECK(audience_ok(&cfg, &some, "https://broker.example.com/mcp/sentry"));
	CHECK(!audience_ok(&cfg, &some, "https://broker.example.com/mcp/gitlab"));
	CHECK(!audience_ok(&cfg, &some, "https://broker.example.com/mcp/github/"));
	CHECK(!audience_ok(&cfg, &some, "https://broker.example.com/mcp/git"));
	CHECK(!audience_ok(&cfg, &some, "/mcp/github"));
	CHECK(!audience_ok(&cfg, &some, ""));
}

static void test_answer(void)
{
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.public_url = "https://broker.example.com";
	struct token_row row = { .kind = "access",
				 .client_id = "app",
				 .aud = "https://broker.example.com/mcp/github",
				 .scope = "read write",
				 .sub = "github:1001",
				 .exp = 1700000600,
				 .iat = 1700000000 };
	json_t *a = active_answer(&cfg, &row);
	CHECK(json_is_true(json_object_get(a, "active")));
	CHECK_STR(json_string_value(json_object_get(a, "scope")), "read write");
	CHECK_STR(json_string_value(json_object_get(a, "client_id")), "app");
	CHECK_STR(json_string_value(json_object_get(a, "sub")), "github:1001");
	CHECK_STR(json_string_value(json_object_get(a, "aud")), "https://broker.example.com/mcp/github");
	CHECK(json_integer_value(json_object_get(a, "exp")) == 1700000600);
	CHECK(json_integer_value(json_object_get(a, "iat")) == 1700000000);
	CHECK_STR(json_string_value(json_object_get(a, "token_type")), "Bearer");
	CHECK_STR(json_string_value(json_object_get(a, "iss")), "https://broker.example.com");
	CHECK(json_object_size(a) == 9);
	json_decref(a);
	row.kind = "refresh";
	a = active_answer(&cfg, &row);
	CHECK_STR(json_string_value(json_object_get(a, "token_type")), "refresh_token");
	json_decref(a);
	/* A DPoP-bound access token names its key (RFC 9449 section 6.2). */
	row.kind = "access";
	row.jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
	a = active_answer(&cfg, &row);
	CHECK_STR(json_string_value(json_object_get(a, "token_type")), "DPoP");
	CHECK_STR(json_string_value(json_object_get(json_object_get(a, "cnf"), "jkt")), row.jkt);
	CHECK(json_object_size(a) == 10);
	json_decref(a);
	/* Connected accounts are listed when there are any. */
	row.connections = "[]";
	a = active_answer(&cfg, &row);
	CHECK(json_object_get(a, "mcpb_connections") == NULL);
	json_decref(a);
	row.connections = "[\"sentry\"]";
	a = active_answer(&cfg, &row);
	CHECK_STR(json_string_value(json_array_get(json_object_get(a, "mcpb_connections"), 0)), "sentry");
	CHECK(json_object_size(a) == 11);
	json_decref(a);
}

int main(void)
{
	test_parse();
	test_audience();
	test_answer();
	TEST_DONE();
}
