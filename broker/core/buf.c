#include "buf.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void buf_free(struct buf *b)
{
	if (b->ptr && b->secret)
		OPENSSL_cleanse(b->ptr, b->cap);
	free(b->ptr);
	b->ptr = NULL;
	b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
	if (b->ptr && b->secret)
		OPENSSL_cleanse(b->ptr, b->cap);
	b->len = 0;
	if (b->ptr)
		b->ptr[0] = '\0';
}

static int buf_grow(struct buf *b, size_t need)
{
	if (need > b->max || need == (size_t)-1) {
		buf_free(b);
		return -1;
	}
	if (need + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need + 1)
		cap = cap > (SIZE_MAX / 2) ? need + 1 : cap * 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	char *p = malloc(cap);
	if (!p) {
		buf_free(b);
		return -1;
	}
	if (b->ptr) {
		memcpy(p, b->ptr, b->len);
		if (b->secret)
			OPENSSL_cleanse(b->ptr, b->cap);
		free(b->ptr);
	}
	b->ptr = p;
	b->cap = cap;
	return 0;
}

int buf_add(struct buf *b, const void *data, size_t n)
{
	if (n > b->max - b->len || buf_grow(b, b->len + n) < 0) {
		buf_free(b);
		return -1;
	}
	if (n)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return 0;
}

int buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > b->max - b->len || buf_grow(b, b->len + (size_t)n) < 0) {
		buf_free(b);
		return -1;
	}
	va_start(ap, fmt);
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

char *buf_take(struct buf *b, size_t *len)
{
	char *p = b->ptr;
	if (!p) {
		p = calloc(1, 1);
	}
	if (len)
		*len = b->len;
	b->ptr = NULL;
	b->len = b->cap = 0;
	return p;
}
