/* num.c: whole-string decimal parsing with bounds; everything else refused. */
#include <limits.h>

#include "num.h"
#include "test.h"

static void test_accepts(void)
{
	long long v = 0;
	CHECK(num_parse("0", 0, 10, &v) == 0 && v == 0);
	CHECK(num_parse("42", 0, 100, &v) == 0 && v == 42);
	CHECK(num_parse("-7", -10, 10, &v) == 0 && v == -7);
	CHECK(num_parse("9223372036854775807", LLONG_MIN, LLONG_MAX, &v) == 0 && v == LLONG_MAX);
	CHECK(num_parse("-9223372036854775808", LLONG_MIN, LLONG_MAX, &v) == 0 && v == LLONG_MIN);
	CHECK(num_parse("007", 0, 10, &v) == 0 && v == 7);
	CHECK(num_parse_n("123abc", 3, 0, 1000, &v) == 0 && v == 123);
}

static void test_refuses(void)
{
	const char *bad[] = { "",
			      "-",
			      "+1",
			      " 1",
			      "1 ",
			      "0x10",
			      "1e3",
			      "١",
			      "12a",
			      "--1",
			      "9223372036854775808",
			      "-9223372036854775809",
			      "99999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long long v = 77;
		CHECK(num_parse(bad[i], LLONG_MIN, LLONG_MAX, &v) == -1 && v == 77);
	}
	long long v = 77;
	CHECK(num_parse(NULL, 0, 1, &v) == -1 && v == 77);
	CHECK(num_parse("11", 0, 10, &v) == -1 && v == 77); /* out of bounds */
	CHECK(num_parse("-1", 0, 10, &v) == -1 && v == 77);
	CHECK(num_parse_n("12", 0, 0, 100, &v) == -1);
	CHECK(num_parse_n("1\0002", 3, 0, 1000, &v) == -1); /* an embedded NUL */
}

int main(void)
{
	test_accepts();
	test_refuses();
	TEST_DONE();
}
