/* rpc.c: what the policy reads of a proxied body is what every JSON parser
 * would read: strict JSON, one message or a batch of them, no duplicate
 * keys, NUL, BOM, unrepresentable numbers or absurd nesting. */
#include <string.h>

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

static void test_headers_agree(void)
{
	json_t *j = NULL;
	const char *s = "{\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"}}";
	CHECK(rpc_parse(s, strlen(s), &j) == 0);
	CHECK(rpc_headers_agree(j, NULL, NULL));
	CHECK(rpc_headers_agree(j, "tools/call", "echo"));
	CHECK(!rpc_headers_agree(j, "tools/list", NULL));
	CHECK(!rpc_headers_agree(j, NULL, "delete"));
	CHECK(!rpc_headers_agree(j, "Tools/Call", NULL));
	json_decref(j);
	s = "{\"method\":\"resources/read\",\"params\":{\"uri\":\"file:///a\"}}";
	CHECK(rpc_parse(s, strlen(s), &j) == 0);
	CHECK(rpc_headers_agree(j, "resources/read", "file:///a"));
	CHECK(!rpc_headers_agree(j, "resources/read", "file:///b"));
	json_decref(j);
	s = "[{\"method\":\"ping\"}]";
	CHECK(rpc_parse(s, strlen(s), &j) == 0);
	CHECK(!rpc_headers_agree(j, "ping", NULL)); /* headers name one message */
	CHECK(rpc_headers_agree(j, NULL, NULL));
	json_decref(j);
}

int main(void)
{
	test_parse();
	test_tool_calls();
	test_headers_agree();
	TEST_DONE();
}
