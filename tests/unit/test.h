/* A minimal unit-test harness: CHECK records a failure and goes on; the
 * process exits non-zero when any check failed. */
#ifndef MCPB_TEST_H
#define MCPB_TEST_H
#include <stdio.h>
#include <string.h>

static int test_failures, test_checks;

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		test_checks++;                                                                   \
		if (!(cond)) {                                                                   \
			test_failures++;                                                         \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                                \
	} while (0)

#define CHECK_STR(a, b)                                                                                    \
	do {                                                                                               \
		const char *a_ = (a), *b_ = (b);                                                           \
		test_checks++;                                                                             \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
			test_failures++;                                                                   \
			fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, \
				a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                   \
		}                                                                                          \
	} while (0)

#define TEST_DONE()                                                           \
	do {                                                                  \
		printf("%d checks, %d failed\n", test_checks, test_failures); \
		return test_failures ? 1 : 0;                                 \
	} while (0)

#endif
