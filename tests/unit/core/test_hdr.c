/* hdr.c: RFC 9110/9112 field syntax and framing rules, one check per rule
 * and the variants an attacker tries next. */
#include <stdint.h>
#include <string.h>

#include "hdr.h"
#include "test.h"

#define TOK(s) hdr_token_ok((s), strlen(s))

static void test_tokens(void)
{
	CHECK(TOK("Content-Length"));
	CHECK(TOK("X-MCP-User"));
	CHECK(TOK("!#$%&'*+-.^_`|~09azAZ"));
	CHECK(!TOK(""));
	CHECK(!TOK("X-MCP-User\t"));
	CHECK(!TOK("Authorization "));
	CHECK(!TOK(" Host"));
	CHECK(!TOK("A:B"));
	CHECK(!TOK("A\x01"));
	CHECK(!TOK("A\x7f"));
	CHECK(!TOK("A\xc3\xa9"));
	CHECK(!TOK("(a)"));
	CHECK(!TOK("a\"b"));
	CHECK(!TOK("a/b"));
	CHECK(!hdr_token_ok("ab", 3)); /* an embedded NUL */
	CHECK(!hdr_token_ok(NULL, 0));
}

static void test_values(void)
{
	CHECK(hdr_value_ok("Bearer abc", 10, 0));
	CHECK(hdr_value_ok("a\tb", 3, 0));
	CHECK(hdr_value_ok("", 0, 0));
	CHECK(!hdr_value_ok("a\rb", 3, 1));
	CHECK(!hdr_value_ok("a\nb", 3, 1));
	CHECK(!hdr_value_ok("a\0b", 3, 1));
	CHECK(!hdr_value_ok("a\x7f", 2, 1));
	CHECK(!hdr_value_ok("\x1b[31m", 5, 1));
	CHECK(hdr_value_ok("caf\xc3\xa9", 5, 1));
	CHECK(!hdr_value_ok("caf\xc3\xa9", 5, 0));
}

static void test_hop_and_lists(void)
{
	CHECK(hdr_hop_by_hop("Connection", 10));
	CHECK(hdr_hop_by_hop("TRANSFER-ENCODING", 17));
	CHECK(hdr_hop_by_hop("content-length", 14));
	CHECK(!hdr_hop_by_hop("Content-Type", 12));
	CHECK(!hdr_hop_by_hop("te", 1)); /* a prefix is not the name */
	CHECK(hdr_list_has("keep-alive, X-Secret", "x-secret", 8));
	CHECK(hdr_list_has(" close ,\tupgrade ", "upgrade", 7));
	CHECK(!hdr_list_has("x-secrets", "x-secret", 8));
	CHECK(!hdr_list_has("", "x", 1));
	CHECK(!hdr_list_has(NULL, "x", 1));
}

static void test_content_length(void)
{
	uint64_t v = 7;
	CHECK(hdr_content_length("0", &v) == 0 && v == 0);
	CHECK(hdr_content_length("1234", &v) == 0 && v == 1234);
	CHECK(hdr_content_length("999999999999999999", &v) == 0 && v == 999999999999999999ull);
	CHECK(hdr_content_length("9999999999999999999", &v) == -1); /* 19 digits */
	CHECK(hdr_content_length("", &v) == -1);
	CHECK(hdr_content_length("+5", &v) == -1);
	CHECK(hdr_content_length("-1", &v) == -1);
	CHECK(hdr_content_length(" 5", &v) == -1);
	CHECK(hdr_content_length("5 ", &v) == -1);
	CHECK(hdr_content_length("5,5", &v) == -1);
	CHECK(hdr_content_length("0x10", &v) == -1);
	CHECK(hdr_content_length(NULL, &v) == -1);
}

static void test_transfer_encoding(void)
{
	CHECK(hdr_transfer_encoding("chunked") == HDR_TE_CHUNKED);
	CHECK(hdr_transfer_encoding("CHUNKED") == HDR_TE_CHUNKED);
	CHECK(hdr_transfer_encoding("  chunked\t") == HDR_TE_CHUNKED);
	CHECK(hdr_transfer_encoding("gzip, chunked") == HDR_TE_UNSUPPORTED);
	CHECK(hdr_transfer_encoding("gzip;q=1, chunked") == HDR_TE_UNSUPPORTED);
	CHECK(hdr_transfer_encoding("chunked, identity") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("chunked, chunked") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("identity") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("gzip") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("chunked;x=1") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("chunked,") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding(",chunked") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("chunk") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("chunkedx") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding("x\x01, chunked") == HDR_TE_INVALID);
	CHECK(hdr_transfer_encoding(NULL) == HDR_TE_INVALID);
}

static void test_json_content_type(void)
{
	CHECK(hdr_json_content_type("application/json"));
	CHECK(hdr_json_content_type("Application/JSON"));
	CHECK(hdr_json_content_type("application/json; charset=utf-8"));
	CHECK(hdr_json_content_type("application/json;charset=UTF-8"));
	CHECK(hdr_json_content_type("application/json ;\tcharset=\"utf-8\" "));
	CHECK(!hdr_json_content_type("application/json; charset=utf-7"));
	CHECK(!hdr_json_content_type("application/json; charset=\"UTF-7\""));
	CHECK(!hdr_json_content_type("application/json; charset=utf-16le"));
	CHECK(!hdr_json_content_type("application/json; charset=latin1"));
	CHECK(!hdr_json_content_type("application/json; charset=utf-8; charset=utf-7"));
	CHECK(!hdr_json_content_type("application/json; charset=utf-8x"));
	CHECK(!hdr_json_content_type("application/json; foo=bar"));
	CHECK(!hdr_json_content_type("application/json;"));
	CHECK(!hdr_json_content_type("application/jsonx"));
	CHECK(!hdr_json_content_type("application/json-seq"));
	CHECK(!hdr_json_content_type("application/json, text/plain"));
	CHECK(!hdr_json_content_type("text/plain"));
	CHECK(!hdr_json_content_type(" application/json"));
	CHECK(!hdr_json_content_type(""));
	CHECK(!hdr_json_content_type(NULL));
	CHECK(hdr_identity_encoding(NULL));
	CHECK(hdr_identity_encoding("identity"));
	CHECK(hdr_identity_encoding(" Identity "));
	CHECK(!hdr_identity_encoding("gzip"));
	CHECK(!hdr_identity_encoding("identity, gzip"));
	CHECK(!hdr_identity_encoding(""));
}

int main(void)
{
	test_tokens();
	test_values();
	test_hop_and_lists();
	test_content_length();
	test_transfer_encoding();
	test_json_content_type();
	TEST_DONE();
}
