/* IP addresses and CIDR prefixes (IPv4 and IPv6), for the CIMD address
 * policy and the trusted-proxy rule. */
#ifndef MCPB_NETADDR_H
#define MCPB_NETADDR_H
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int bits;
};

/* "10.0.0.0/8", "::1", "fe80::/10" (no prefix = a single address). */
int cidr_parse(const char *s, struct cidr *c);
/* 1 when the family's raw address a (4 or 16 bytes) is inside c. */
int cidr_contains(const struct cidr *c, int family, const uint8_t *a);
/* Parses an IP literal (no brackets) into family and a[16]. */
int ip_parse(const char *s, int *family, uint8_t a[16]);

#endif
