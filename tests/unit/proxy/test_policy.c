/* policy.c: which tools/call messages a token's scopes allow, what is
 * recorded for the audit, and the step-up scope list of a refusal. */
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "rpc.h"
#include "test.h"

static char *read_tools[] = { "list_issues", "get_file" };
static char *write_tools[] = { "create_issue" };
static char *any_tool[] = { "*" };
static struct cfg_scope_rule rules[] = {
	{ "read", read_tools, 2 },
	{ "write", write_tools, 1 },
	{ "admin", any_tool, 1 },
};
static struct cfg_resource res = { .path = "/mcp", .scopes = rules, .n_scopes = 3 };

static char *call(const char *tool, int id)
{
	static char b[256];
	snprintf(b, sizeof(b), "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"tools/call\",\"params\":{\"name\":\"%s\"}}",
		 id, tool);
	return b;
}

/* The body last judged: the verdict's tool is a view into it. */
static json_t *parsed;

/* Judges body for a token holding scope; tools and the verdict come back. */
static enum policy_rc judge(const char *body, const char *scope, json_t **tools, struct policy_verdict *v)
{
	json_decref(parsed);
	parsed = NULL;
	if (rpc_parse(body, strlen(body), &parsed) < 0)
		abort();
	*tools = json_array();
	if (!*tools)
		abort();
	return policy_check(&res, scope, parsed, *tools, v);
}

static void test_allow(void)
{
	json_t *tools;
	struct policy_verdict v;
	CHECK(judge("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", "read", &tools, &v) == POLICY_ALLOW);
	CHECK(json_array_size(tools) == 0);
	json_decref(tools);

	CHECK(judge(call("list_issues", 1), "read", &tools, &v) == POLICY_ALLOW);
	CHECK(json_array_size(tools) == 1);
	CHECK_STR(json_string_value(json_array_get(tools, 0)), "list_issues");
	CHECK(v.want == NULL);
	json_decref(tools);

	/* A "*" rule allows every tool; one held scope of several suffices. */
	CHECK(judge(call("delete_repo", 1), "admin", &tools, &v) == POLICY_ALLOW);
	json_decref(tools);
	CHECK(judge(call("create_issue", 1), "read write", &tools, &v) == POLICY_ALLOW);
	json_decref(tools);
}

static void test_step_up(void)
{
	json_t *tools;
	struct policy_verdict v;
	/* The token's scopes plus the first scope that allows the tool. */
	CHECK(judge(call("create_issue", 1), "read", &tools, &v) == POLICY_INSUFFICIENT);
	CHECK_STR(v.tool, "create_issue");
	CHECK_STR(v.want, "read write");
	CHECK(json_array_size(tools) == 1); /* recorded before it was judged */
	policy_verdict_free(&v);
	CHECK(v.want == NULL && v.tool == NULL);
	json_decref(tools);

	/* A token without scopes asks for the allowing scope alone. */
	CHECK(judge(call("get_file", 1), "", &tools, &v) == POLICY_INSUFFICIENT);
	CHECK_STR(v.want, "read");
	policy_verdict_free(&v);
	json_decref(tools);

	/* Scope names are whole words: "reader" is not "read". */
	CHECK(judge(call("get_file", 1), "reader", &tools, &v) == POLICY_INSUFFICIENT);
	CHECK_STR(v.want, "reader read");
	policy_verdict_free(&v);
	json_decref(tools);
}

static void test_batch(void)
{
	json_t *tools;
	struct policy_verdict v;
	char body[1024];
	/* The first refusal stops the judging: the third call is not recorded. */
	int n = snprintf(body, sizeof(body), "[%s,", call("list_issues", 1));
	n += snprintf(body + n, sizeof(body) - (size_t)n, "%s,", call("create_issue", 2));
	snprintf(body + n, sizeof(body) - (size_t)n, "%s]", call("get_file", 3));
	CHECK(judge(body, "read", &tools, &v) == POLICY_INSUFFICIENT);
	CHECK_STR(v.tool, "create_issue");
	CHECK(json_array_size(tools) == 2);
	policy_verdict_free(&v);
	json_decref(tools);
}

static void test_refusals(void)
{
	json_t *tools;
	struct policy_verdict v;
	CHECK(judge("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}", "admin", &tools, &v) ==
	      POLICY_NO_NAME);
	json_decref(tools);
	CHECK(judge("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":7}}", "admin", &tools,
		    &v) == POLICY_NO_NAME);
	json_decref(tools);
	/* An unreadable scope list on the token is an error, not a refusal. */
	CHECK(judge(call("get_file", 1), "read \"x", &tools, &v) == POLICY_ERROR);
	json_decref(tools);
}

/* A body of n calls to get_file. */
static char *batch(int n)
{
	size_t cap = (size_t)n * 128 + 8, len = 0;
	char *b = malloc(cap);
	if (!b)
		abort();
	b[len++] = '[';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(b + len, cap - len, "%s%s", i ? "," : "", call("get_file", i));
	snprintf(b + len, cap - len, "]");
	return b;
}

static void test_batch_cap(void)
{
	json_t *tools;
	struct policy_verdict v;
	char *b = batch(POLICY_MAX_TOOLS);
	CHECK(judge(b, "read", &tools, &v) == POLICY_ALLOW);
	CHECK(json_array_size(tools) == POLICY_MAX_TOOLS);
	json_decref(tools);
	free(b);
	b = batch(POLICY_MAX_TOOLS + 1);
	CHECK(judge(b, "read", &tools, &v) == POLICY_TOO_MANY);
	CHECK(json_array_size(tools) == POLICY_MAX_TOOLS);
	json_decref(tools);
	free(b);
}

int main(void)
{
	test_allow();
	test_step_up();
	test_batch();
	test_refusals();
	test_batch_cap();
	json_decref(parsed);
	TEST_DONE();
}
