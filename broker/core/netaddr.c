#include "netaddr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int ip_parse(const char *s, int *family, uint8_t a[16])
{
	memset(a, 0, 16);
	if (inet_pton(AF_INET, s, a) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, a) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return -1;
}

int cidr_parse(const char *s, struct cidr *c)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(c, 0, sizeof(*c));
	if (ip_parse(buf, &c->family, c->addr) < 0)
		return -1;
	c->bits = c->family == AF_INET ? 32 : 128;
	if (slash) {
		/* 1 to 3 decimal digits and nothing else: strtol would also take
		 * "+8", " 8" and "-0". */
		const char *d = slash + 1;
		size_t nd = strspn(d, "0123456789");
		if (nd == 0 || nd > 3 || d[nd] != '\0')
			return -1;
		int b = 0;
		for (size_t i = 0; i < nd; i++)
			b = b * 10 + (d[i] - '0');
		if (b > c->bits)
			return -1;
		c->bits = b;
	}
	return 0;
}

int cidr_contains(const struct cidr *c, int family, const uint8_t *a)
{
	if (c->family != family)
		return 0;
	int full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(a, c->addr, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[full] & mask) == (c->addr[full] & mask);
}
