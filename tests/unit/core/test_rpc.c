/* rpc.c: what the policy reads of a proxied body is what every JSON parser
 * would read: strict JSON, one message or a batch of them, no duplicate
 * keys, NUL, BOM, unrepresentable numbers or absurd nesting. */
#include <string.h>

#include "lim.h"
#include "rpc.h"
#include "test.h"

static int parses(const char *s)
{
	json_t *j = NULL;
	int rc = rpc_parse(s, strlen(s), &j);
	json_decref(j);
	return rc == 0;
}

static void test_parse(void)
{
	CHECK(parses("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"));
	CHECK(parses(" \n{\"a\":1}\t"));
	CHECK(parses("[{\"a\":1},{\"b\":2}]"));
	CHECK(!parses(""));
	CHECK(!parses("[]"));
	CHECK(!parses("[1]"));
	CHECK(!parses("[{\"a\":1},2]"));
	CHECK(!parses("\"tools/call\""));
	CHECK(!parses("42"));
	CHECK(!parses("null"));
	CHECK(!parses("{\"method\":\"a\",\"method\":\"tools/call\"}"));
	CHECK(!parses("{\"params\":{\"name\":\"a\",\"name\":\"b\"}}"));
	CHECK(!parses("\xef\xbb\xbf{\"a\":1}"));              /* UTF-8 BOM */
	CHECK(!parses("\xff\xfe{\0\"\0a\0\"\0:\0\x31\0}\0")); /* UTF-16 */
	CHECK(!parses("{\"a\":\"\\u0000\"}"));
	CHECK(!parses("{\"a\":\"\xc3\"}"));         /* truncated UTF-8 */
	CHECK(!parses("{\"a\":\"\xed\xa0\x80\"}")); /* encoded surrogate */
	CHECK(!parses("{\"a\":1} x"));
	CHECK(!parses("{\"a\":1}{\"b\":2}"));
	CHECK(!parses("{\"id\":123456789012345678901234567890}"));
	CHECK(!parses("{\"id\":1e400}"));
	CHECK(!parses("{'a':1}"));
	CHECK(!parses("{\"a\":1,}"));
	json_t *j = NULL;
	CHECK(rpc_parse("{\"a\":1}\0{}", 10, &j) == -1); /* a NUL byte in the body */
	CHECK(j == NULL);
	/* jansson 2.14 reads these as {"a":1}, [1,2] and {"a":null} (found by fuzz_rpc). */
	CHECK(rpc_parse("{\"a\":1\0}", 8, &j) == -1 && j == NULL);
	CHECK(rpc_parse("[{\"a\":[1\0,2]}]", 14, &j) == -1 && j == NULL);
	CHECK(rpc_parse("{\"a\":null\0}", 11, &j) == -1 && j == NULL);
	CHECK(rpc_parse(NULL, 0, &j) == -1);

	char deep[512];
	size_t n = 0;
	for (int i = 0; i < RPC_MAX_DEPTH - 1; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"a\":");
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "1");
	for (int i = 0; i < RPC_MAX_DEPTH - 1; i++)
		deep[n++] = '}';
	deep[n] = '\0';
	CHECK(parses(deep)); /* RPC_MAX_DEPTH - 1 objects deep, plus a number */
	char batch[600];
	snprintf(batch, sizeof(batch), "[%s,%s]", deep, "{\"b\":2}");
	CHECK(parses(batch)); /* the same message inside a batch: the limit is per message */
	char deeper[600];
	snprintf(deeper, sizeof(deeper), "{\"x\":[%s]}", deep);
	CHECK(!parses(deeper));
	/* Brackets inside strings are no nesting: the deepest message beside a
	 * string of brackets still parses. */
	char strings[700];
	snprintf(strings, sizeof(strings), "[%s,{\"s\":\"[[[[{{{{\\\"[[[\"}]", deep);
	CHECK(parses(strings));
	/* A bracket bomb is refused before jansson builds anything. */
	static char bomb[100001];
	memset(bomb, '[', sizeof(bomb) - 1);
	CHECK(rpc_parse(bomb, sizeof(bomb) - 1, &j) == -1 && j == NULL);
}

static void test_tool_calls(void)
{
	json_t *j = NULL;
	const char *tool = NULL;
	CHECK(rpc_parse(
		      "[{\"method\":\"tools/call\",\"params\":{\"name\":\"a\"}},{\"method\":\"tools\\u002fcall\","
		      "\"params\":{\"name\":\"del\\u0065te\"}},{\"method\":\"tools/list\"},{\"method\":\"tools/call\"},"
		      "{\"method\":\"tools/call\",\"params\":{\"name\":7}},{\"method\":\"Tools/Call\",\"params\":{\"name\":\"x\"}}]",
		      strlen("[{\"method\":\"tools/call\",\"params\":{\"name\":\"a\"}},{\"method\":\"tools\\u002fcall\","
			     "\"params\":{\"name\":\"del\\u0065te\"}},{\"method\":\"tools/list\"},{\"method\":\"tools/call\"},"
			     "{\"method\":\"tools/call\",\"params\":{\"name\":7}},{\"method\":\"Tools/Call\",\"params\":{\"name\":\"x\"}}]"),
		      &j) == 0);
	CHECK(rpc_count(j) == 6);
	CHECK(rpc_tool_call(rpc_message(j, 0), &tool) == 1 && strcmp(tool, "a") == 0);
	/* Escapes are decoded before the policy reads them, as the SDK does. */
	CHECK(rpc_tool_call(rpc_message(j, 1), &tool) == 1 && strcmp(tool, "delete") == 0);
	CHECK(rpc_tool_call(rpc_message(j, 2), &tool) == 0);
	CHECK(rpc_tool_call(rpc_message(j, 3), &tool) == -1);
	CHECK(rpc_tool_call(rpc_message(j, 4), &tool) == -1);
	CHECK(rpc_tool_call(rpc_message(j, 5), &tool) == 0); /* no such method for the SDK either */
	json_decref(j);

	char big[400];
	memset(big, 'x', sizeof(big));
	int len = snprintf(big, sizeof(big), "{\"method\":\"tools/call\",\"params\":{\"name\":\"");
	memset(big + len, 'n', RPC_MAX_TOOL + 1);
	snprintf(big + len + RPC_MAX_TOOL + 1, sizeof(big) - (size_t)len - RPC_MAX_TOOL - 1, "\"}}");
	CHECK(rpc_parse(big, strlen(big), &j) == 0);
	CHECK(rpc_tool_call(j, &tool) == -1);
	json_decref(j);
	/* A name with an escaped NUL is refused at parse time. */
	CHECK(!parses("{\"method\":\"tools/call\",\"params\":{\"name\":\"a\\u0000b\"}}"));
}

/* rpc_headers_agree on a body text: 1 or 0, and *bad_id the id of the
 * message that disagrees (-1 none or not an integer). */
static int agree(const char *s, const char *hm, const char *hn, int required, long *bad_id)
{
	json_t *j = NULL, *bad = NULL;
	if (rpc_parse(s, strlen(s), &j) < 0)
		return -1;
	int rc = rpc_headers_agree(j, hm, hn, required, &bad);
	json_t *id = json_object_get(bad, "id");
	*bad_id = json_is_integer(id) ? (long)json_integer_value(id) : -1;
	CHECK(rc == 1 ? bad == NULL : bad != NULL);
	json_decref(j);
	return rc;
}

/* A resources/read of a uri of n 'A's (n a multiple of 3) against its
 * base64 Mcp-Name. */
static int long_name(size_t n)
{
	static char body[LIM_MCP_NAME * 2], hdr[LIM_MCP_NAME * 2];
	long id;
	size_t b = (size_t)snprintf(body, sizeof(body),
				    "{\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"");
	memset(body + b, 'A', n);
	snprintf(body + b + n, sizeof(body) - b - n, "\"}}");
	size_t h = (size_t)snprintf(hdr, sizeof(hdr), "=?base64?");
	for (size_t i = 0; i < 4 * (n / 3); i++)
		hdr[h + i] = "QUFB"[i % 4]; /* "AAA" */
	snprintf(hdr + h + 4 * (n / 3), 3, "?=");
	return agree(body, "resources/read", hdr, 1, &id);
}

static void test_headers_agree(void)
{
	long id = 0;
	const char *s = "{\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"}}";
	CHECK(agree(s, NULL, NULL, 0, &id) == 1);
	CHECK(agree(s, "tools/call", "echo", 0, &id) == 1);
	CHECK(agree(s, "tools/call", " \techo\t ", 1, &id) == 1); /* OWS around a field value */
	CHECK(agree(s, "tools/list", NULL, 0, &id) == 0 && id == 7);
	CHECK(agree(s, NULL, "delete", 0, &id) == 0 && id == 7);
	CHECK(agree(s, "Tools/Call", NULL, 0, &id) == 0);
	CHECK(agree(s, "tools/call", "ech", 0, &id) == 0);
	CHECK(agree(s, "tools/call", "echoo", 0, &id) == 0);
	/* SEP-2243's base64 form: "echo" is ZWNobw==; a broken one never agrees. */
	CHECK(agree(s, "tools/call", "=?base64?ZWNobw==?=", 1, &id) == 1);
	CHECK(agree(s, "tools/call", "=?base64?ZWNobA==?=", 1, &id) == 0);
	CHECK(agree(s, "tools/call", "=?base64?ZWNobw?=", 1, &id) == 0);     /* unpadded */
	CHECK(agree(s, "tools/call", "=?base64?ZW=obw==?=", 1, &id) == 0);   /* = inside */
	CHECK(agree(s, "tools/call", "=?base64?ZWNobw==\?=x", 1, &id) == 0); /* not the form: raw */
	CHECK(agree("{\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"=?base64?x?=\"}}", "tools/call",
		    "=?base64?PT9iYXNlNjQ/eD89?=", 1, &id) == 1); /* a name that looks like the form */
	/* On the 2026-07-28 wire a request must carry Mcp-Method, and Mcp-Name
	 * when its body has the mirrored field; notifications are exempt. */
	CHECK(agree(s, NULL, NULL, 1, &id) == 0 && id == 7);
	CHECK(agree(s, "tools/call", NULL, 1, &id) == 0 && id == 7);
	CHECK(agree(s, "tools/call", NULL, 0, &id) == 1);
	CHECK(agree("{\"id\":2,\"method\":\"tools/list\"}", "tools/list", NULL, 1, &id) == 1);
	CHECK(agree("{\"id\":2,\"method\":\"tools/list\"}", "tools/list", "x", 0, &id) == 0); /* names nothing */
	CHECK(agree("{\"method\":\"notifications/initialized\"}", NULL, NULL, 1, &id) == 1);
	CHECK(agree("{\"method\":\"notifications/initialized\"}", "notifications/cancelled", NULL, 0, &id) == 0);
	CHECK(agree("{\"id\":3,\"result\":{}}", NULL, NULL, 1, &id) == 1);
	CHECK(agree("{\"id\":3,\"result\":{}}", "ping", NULL, 0, &id) == 0);

	/* Every method of the table, with the field it mirrors. */
	static const struct {
		const char *method, *field;
	} t[] = { { "prompts/get", "name" },          { "resources/read", "uri" }, { "resources/subscribe", "uri" },
		  { "resources/unsubscribe", "uri" }, { "tasks/get", "taskId" },   { "tasks/update", "taskId" },
		  { "tasks/cancel", "taskId" },       { "tools/call", "name" } };
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char body[200], other[200];
		snprintf(body, sizeof(body), "{\"id\":9,\"method\":\"%s\",\"params\":{\"%s\":\"v-1\"}}", t[i].method,
			 t[i].field);
		snprintf(other, sizeof(other), "{\"id\":9,\"method\":\"%s\",\"params\":{\"x%s\":\"v-1\"}}", t[i].method,
			 t[i].field);
		CHECK(rpc_name_field(t[i].method) && strcmp(rpc_name_field(t[i].method), t[i].field) == 0);
		CHECK(agree(body, t[i].method, "v-1", 1, &id) == 1);
		CHECK(agree(body, t[i].method, "v-2", 1, &id) == 0 && id == 9);
		/* Mcp-Name required on the 2026-07-28 wire, but of subscribe/unsubscribe. */
		CHECK(agree(body, t[i].method, NULL, 1, &id) == (strstr(t[i].method, "subscribe") ? 1 : 0));
		CHECK(agree(body, t[i].method, NULL, 0, &id) == 1);
		CHECK(agree(other, t[i].method, "v-1", 1, &id) == 0); /* another field is not the one mirrored */
		CHECK(agree(other, t[i].method, NULL, 1, &id) == 1);  /* nothing to mirror */
	}
	CHECK(rpc_name_field("tasks/result") == NULL && rpc_name_field("tasks/list") == NULL);
	CHECK(rpc_name_field("Tools/Call") == NULL && rpc_name_field(NULL) == NULL);
	/* params.name of a method that mirrors uri is not what Mcp-Name names. */
	CHECK(agree("{\"id\":1,\"method\":\"resources/read\",\"params\":{\"name\":\"a\",\"uri\":\"b\"}}",
		    "resources/read", "a", 0, &id) == 0);
	CHECK(agree("{\"id\":1,\"method\":\"tasks/get\",\"params\":{\"taskId\":7}}", "tasks/get", "7", 0, &id) == 0);

	/* Batches: the headers must agree with every message. */
	CHECK(agree("[{\"method\":\"ping\",\"id\":1}]", "ping", NULL, 0, &id) == 1);
	CHECK(agree("[{\"method\":\"ping\",\"id\":1},{\"method\":\"tools/list\",\"id\":2}]", "ping", NULL, 0, &id) ==
		      0 &&
	      id == 2);
	CHECK(agree("[{\"method\":\"tools/call\",\"id\":1,\"params\":{\"name\":\"a\"}},{\"method\":\"tools/call\","
		    "\"id\":4,\"params\":{\"name\":\"b\"}}]",
		    "tools/call", "a", 0, &id) == 0 &&
	      id == 4);
	CHECK(agree("[{\"method\":\"ping\",\"id\":1},{\"method\":\"ping\",\"id\":5}]", NULL, NULL, 1, &id) == 0 &&
	      id == 1);
	CHECK(agree("[{\"method\":\"ping\"}]", NULL, NULL, 0, &id) == 1);

	/* A base64 Mcp-Name of LIM_MCP_NAME decoded bytes at most: at the
	 * limit it agrees, past it never. */
	CHECK(LIM_MCP_NAME % 3 == 2);
	CHECK(long_name(LIM_MCP_NAME - 2) == 1);
	CHECK(long_name(LIM_MCP_NAME + 1) == 0);
}

static void test_wire(void)
{
	CHECK(rpc_wire_requires_headers("2026-07-28"));
	CHECK(rpc_wire_requires_headers("2027-01-01"));
	CHECK(!rpc_wire_requires_headers("2025-11-25"));
	CHECK(!rpc_wire_requires_headers("2025-06-18"));
	CHECK(!rpc_wire_requires_headers(NULL));
	CHECK(!rpc_wire_requires_headers(""));
	CHECK(!rpc_wire_requires_headers("2026-07-28x"));
	CHECK(!rpc_wire_requires_headers("9026-07-2x"));
	CHECK(!rpc_wire_requires_headers("2026/07/28"));
}

static int acts(const char *s)
{
	json_t *j = NULL;
	CHECK(rpc_parse(s, strlen(s), &j) == 0);
	int a = rpc_acts(j);
	json_decref(j);
	return a;
}

static void test_acts(void)
{
	CHECK(acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}"));
	CHECK(acts("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"resources/read\"}"));
	CHECK(acts("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"prompts/get\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/templates/list\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\"}")); /* a notification */
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"tools/call\"}"));
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}")); /* a response */
	CHECK(!acts("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}"));
	CHECK(!acts("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}]")); /* a batch: per message */
}

int main(void)
{
	test_acts();
	test_parse();
	test_tool_calls();
	test_headers_agree();
	test_wire();
	TEST_DONE();
}
