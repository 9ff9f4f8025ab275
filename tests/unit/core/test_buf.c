/* buf.c: the capped owned buffer. Overflow frees and reports -1; take moves
 * ownership out; secret buffers take the wiping paths. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "test.h"

static void test_add_and_cap(void)
{
	struct buf b;
	buf_init(&b, 10);
	CHECK(b.ptr == NULL && b.len == 0 && b.max == 10);
	CHECK(buf_add(&b, "hello", 5) == 0);
	CHECK(b.len == 5 && strcmp(b.ptr, "hello") == 0);
	CHECK(buf_adds(&b, "world") == 0); /* exactly max */
	CHECK(b.len == 10 && strcmp(b.ptr, "helloworld") == 0);
	CHECK(b.cap >= 11 && b.cap <= 11); /* capped at max + NUL */
	CHECK(buf_add(&b, "", 0) == 0);    /* nothing more is fine at the cap */
	CHECK(b.len == 10);
	/* One byte past the cap: freed, -1. */
	CHECK(buf_add(&b, "!", 1) == -1);
	CHECK(b.ptr == NULL && b.len == 0 && b.cap == 0);
	/* The freed buffer is usable again, still capped. */
	CHECK(buf_adds(&b, "again") == 0 && strcmp(b.ptr, "again") == 0);
	buf_free(&b);
	CHECK(b.ptr == NULL);
	buf_free(&b); /* twice is harmless */

	/* A single add larger than max. */
	buf_init(&b, 4);
	CHECK(buf_add(&b, "12345", 5) == -1);
	CHECK(b.ptr == NULL);
	/* A huge n must not wrap. */
	CHECK(buf_add(&b, "x", (size_t)-1) == -1);
	CHECK(buf_add(&b, "ab", 2) == 0);
	CHECK(buf_add(&b, "x", (size_t)-1) == -1);
	CHECK(b.ptr == NULL && b.len == 0);
	buf_free(&b);

	/* max 0: only empty content. */
	buf_init(&b, 0);
	CHECK(buf_add(&b, "", 0) == 0);
	CHECK(b.ptr != NULL && b.ptr[0] == '\0');
	CHECK(buf_add(&b, "a", 1) == -1);
	buf_free(&b);
}

static void test_growth(void)
{
	struct buf b;
	buf_init(&b, 100000);
	char chunk[97];
	memset(chunk, 'x', sizeof(chunk));
	size_t total = 0;
	while (total + sizeof(chunk) <= 100000) {
		if (buf_add(&b, chunk, sizeof(chunk)) != 0)
			break;
		total += sizeof(chunk);
	}
	CHECK(b.len == total);
	CHECK(b.ptr && b.ptr[b.len] == '\0');
	CHECK(b.cap <= 100001);
	size_t i;
	for (i = 0; b.ptr && i < b.len && b.ptr[i] == 'x'; i++)
		;
	CHECK(i == total);
	buf_free(&b);
}

static void test_printf(void)
{
	struct buf b;
	buf_init(&b, 32);
	CHECK(buf_printf(&b, "%s=%d", "n", 42) == 0);
	CHECK_STR(b.ptr, "n=42");
	CHECK(buf_printf(&b, "&%s", "x") == 0);
	CHECK_STR(b.ptr, "n=42&x");
	CHECK(b.len == 6);
	CHECK(buf_printf(&b, "%s", "") == 0); /* empty is fine */
	CHECK(b.len == 6);
	/* Fills to exactly max. */
	CHECK(buf_printf(&b, "%026d", 0) == 0);
	CHECK(b.len == 32 && strlen(b.ptr) == 32);
	/* Past max: freed, -1. */
	CHECK(buf_printf(&b, "%c", 'z') == -1);
	CHECK(b.ptr == NULL && b.len == 0);
	buf_free(&b);

	/* printf on an empty buffer with empty output leaves a valid string. */
	buf_init(&b, 8);
	CHECK(buf_printf(&b, "%s", "") == 0);
	CHECK(b.ptr != NULL && b.ptr[0] == '\0' && b.len == 0);
	CHECK(buf_printf(&b, "%s", "123456789") == -1);
	CHECK(b.ptr == NULL);
	buf_free(&b);
}

static void test_take_and_reset(void)
{
	struct buf b;
	size_t len = 99;
	buf_init(&b, 64);
	CHECK(buf_adds(&b, "owned") == 0);
	char *p = buf_take(&b, &len);
	CHECK(p != NULL && len == 5 && strcmp(p, "owned") == 0);
	CHECK(b.ptr == NULL && b.len == 0 && b.cap == 0);
	free(p);
	/* Taking an empty buffer gives an empty string, not NULL. */
	p = buf_take(&b, &len);
	CHECK(p != NULL && len == 0 && p[0] == '\0');
	free(p);
	p = buf_take(&b, NULL);
	CHECK(p != NULL && p[0] == '\0');
	free(p);
	/* The buffer is reusable after take. */
	CHECK(buf_adds(&b, "next") == 0 && strcmp(b.ptr, "next") == 0);

	buf_reset(&b);
	CHECK(b.len == 0 && b.ptr && b.ptr[0] == '\0');
	CHECK(buf_adds(&b, "after reset") == 0);
	CHECK_STR(b.ptr, "after reset");
	buf_free(&b);
	buf_reset(&b); /* on a freed buffer */
	CHECK(b.ptr == NULL && b.len == 0);
}

static void test_secret(void)
{
	struct buf b;
	buf_init(&b, 4096);
	b.secret = 1;
	/* Several regrows go through the wipe-old-block path. */
	for (int i = 0; i < 100; i++)
		CHECK(buf_printf(&b, "tok_%08d;", i) == 0);
	CHECK(b.len == 1300);
	CHECK(b.ptr && strncmp(b.ptr, "tok_00000000;tok_00000001;", 26) == 0);
	buf_reset(&b);
	CHECK(b.len == 0 && b.ptr && b.ptr[0] == '\0');
	CHECK(buf_adds(&b, "client_secret=abc") == 0);
	buf_free(&b);
	CHECK(b.ptr == NULL);

	/* Overflow of a secret buffer wipes and frees. */
	buf_init(&b, 16);
	b.secret = 1;
	CHECK(buf_adds(&b, "0123456789") == 0);
	CHECK(buf_adds(&b, "0123456789") == -1);
	CHECK(b.ptr == NULL);
	CHECK(buf_adds(&b, "x") == 0);
	char *p = buf_take(&b, NULL);
	CHECK_STR(p, "x");
	free(p);
	buf_free(&b);
}

int main(void)
{
	test_add_and_cap();
	test_growth();
	test_printf();
	test_take_and_reset();
	test_secret();
	TEST_DONE();
}
