/* jparse.c: outside JSON is depth-bounded before jansson sees it. */
#include <stdint.h>
#include <string.h>

#include "jparse.h"
#include "test.h"

static void test_depth(void)
{
	CHECK(jparse_depth("", 0, 16) == 0);
	CHECK(jparse_depth("1", 1, 16) == 0);
	CHECK(jparse_depth("[]", 2, 16) == 1);
	CHECK(jparse_depth("{\"a\":[{}]}", 10, 16) == 3);
	CHECK(jparse_depth("[[[", 3, 2) == SIZE_MAX);
	CHECK(jparse_depth("[[[", 3, 3) == 3);
	/* Brackets inside strings do not count, escaped quotes do not end them. */
	CHECK(jparse_depth("[\"[[[[\"]", 8, 1) == 1);
	CHECK(jparse_depth("[\"\\\"[[[\"]", 10, 1) == 1);
	/* A trailing backslash does not read past the end. */
	CHECK(jparse_depth("\"\\", 2, 1) == 0);
}

static void test_parse(void)
{
	json_t *j = jparse("{\"a\":1}", 7, 0, 16);
	CHECK(json_is_object(j));
	json_decref(j);
	char deep[64];
	memset(deep, '[', 17);
	memset(deep + 17, ']', 17);
	CHECK(jparse(deep, 34, 0, 16) == NULL);
	CHECK((j = jparse(deep + 1, 32, 0, 16)) != NULL);
	json_decref(j);
	CHECK(jparse("{\"a\":1,\"a\":2}", 13, 0, 16) == NULL); /* duplicates always refused */
	CHECK(jparse("[1\0,2]", 6, 0, 16) == NULL);            /* jansson would read [1,2] */
	CHECK(jparse(NULL, 0, 0, 16) == NULL);
	CHECK(jparse_str(NULL, 0, 16) == NULL);
	CHECK((j = jparse_str("[true]", 0, 16)) != NULL);
	json_decref(j);
}

int main(void)
{
	test_depth();
	test_parse();
	TEST_DONE();
}
