#include "num.h"

#include <limits.h>
#include <string.h>

int num_parse_n(const char *s, size_t len, long long min, long long max, long long *out)
{
	if (!s || len == 0)
		return -1;
	size_t i = 0;
	int neg = s[0] == '-';
	if (neg)
		i = 1;
	if (i == len || len - i > 19)
		return -1;
	/* Accumulate negatively: LLONG_MIN has no positive counterpart. */
	long long v = 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		int d = s[i] - '0';
		if (v < (LLONG_MIN + d) / 10)
			return -1;
		v = v * 10 - d;
	}
	if (!neg) {
		if (v == LLONG_MIN)
			return -1;
		v = -v;
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int num_parse(const char *s, long long min, long long max, long long *out)
{
	return s ? num_parse_n(s, strlen(s), min, max, out) : -1;
}

int num_uuid_ok(const char *s)
{
	static const char hex[] = "0123456789abcdef";
	if (!s || strlen(s) != 36)
		return 0;
	for (size_t i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !strchr(hex, s[i]) || s[i] == '\0')
			return 0;
	}
	return 1;
}
