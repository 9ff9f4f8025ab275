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

static void test_uuid(void)
{
	CHECK(num_uuid_ok("0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b"));
	CHECK(num_uuid_ok("00000000-0000-0000-0000-000000000000"));
	static const char *const bad[] = { NULL,
					   "",
					   "------------------------------------",
					   "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3",
					   "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3bb",
					   "0B6F1C2E-8D4A-4F3B-9A51-2C7E6D5F4A3B",
					   "0b6f1c2e8d4a-4f3b-9a51-2c7e6d5f4a3b-",
					   "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3g",
					   "{b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!num_uuid_ok(bad[i]));
}

int main(void)
{
	test_uuid();
	test_accepts();
	test_refuses();
	TEST_DONE();
}
