/* netaddr.c: IP literals and CIDR prefixes, strictly spelled: IPv6 forms,
 * IPv4-mapped addresses, the edge prefixes /0, /32 and /128, junk. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "netaddr.h"
#include "test.h"

static int bits(const char *s)
{
	struct cidr c;
	return cidr_parse(s, &c) == 0 ? c.bits : -1;
}

static void test_cidr(void)
{
	CHECK(bits("10.0.0.0/8") == 8);
	CHECK(bits("0.0.0.0/0") == 0);
	CHECK(bits("192.168.1.7") == 32);
	CHECK(bits("::1") == 128);
	CHECK(bits("fe80::/10") == 10);
	CHECK(bits("2001:db8::/032") == 32);
	CHECK(bits("10.0.0.0/33") == -1);
	CHECK(bits("::/129") == -1);
	CHECK(bits("10.0.0.0/") == -1);
	CHECK(bits("10.0.0.0/8x") == -1);
	/* Only decimal digits: strtol took a sign and leading blanks
	 * ("::/+81" was 81 bits; found by fuzz_netaddr). */
	CHECK(bits("::/+81") == -1);
	CHECK(bits("10.0.0.0/+8") == -1);
	CHECK(bits("10.0.0.0/ 8") == -1);
	CHECK(bits("10.0.0.0/-0") == -1);
	CHECK(bits("10.0.0.0/0008") == -1);

	struct cidr c;
	uint8_t a[16];
	int fam;
	CHECK(cidr_parse("10.0.0.0/8", &c) == 0 && ip_parse("10.200.3.4", &fam, a) == 0);
	CHECK(cidr_contains(&c, fam, a) == 1);
	CHECK(ip_parse("11.0.0.1", &fam, a) == 0 && cidr_contains(&c, fam, a) == 0);
	CHECK(ip_parse("::ffff:10.0.0.1", &fam, a) == 0 && fam == AF_INET6 && cidr_contains(&c, fam, a) == 0);
}

static void test_ip(void)
{
	int fam;
	uint8_t a[16];
	CHECK(ip_parse("127.0.0.1", &fam, a) == 0 && fam == AF_INET && a[0] == 127 && a[3] == 1);
	CHECK(ip_parse("[::1]", &fam, a) == -1);
	CHECK(ip_parse("127.1", &fam, a) == -1);
	CHECK(ip_parse("0x7f.0.0.1", &fam, a) == -1);
	CHECK(ip_parse("010.0.0.1", &fam, a) == -1);
	CHECK(ip_parse(" 127.0.0.1", &fam, a) == -1);
}

/* 1 when ip is inside cidr (both parse). */
static int in(const char *cidr, const char *ip)
{
	struct cidr c;
	uint8_t a[16];
	int fam;
	return cidr_parse(cidr, &c) == 0 && ip_parse(ip, &fam, a) == 0 && cidr_contains(&c, fam, a) == 1;
}

static void test_ipv6_forms(void)
{
	int fam;
	uint8_t a[16], want[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	CHECK(ip_parse("2001:db8::1", &fam, a) == 0 && fam == AF_INET6 && memcmp(a, want, 16) == 0);
	CHECK(ip_parse("2001:0DB8:0000:0000:0000:0000:0000:0001", &fam, a) == 0 && memcmp(a, want, 16) == 0);
	CHECK(ip_parse("::", &fam, a) == 0 && fam == AF_INET6);
	CHECK(ip_parse("::1", &fam, a) == 0 && a[15] == 1 && a[0] == 0);
	CHECK(ip_parse("::ffff:192.0.2.1", &fam, a) == 0 && fam == AF_INET6 && a[10] == 0xff && a[11] == 0xff &&
	      a[12] == 192 && a[15] == 1);
	CHECK(ip_parse("64:ff9b::192.0.2.1", &fam, a) == 0 && fam == AF_INET6 && a[12] == 192);
	/* Junk: zone ids, brackets, two "::", too many groups, a 5-digit
	 * group, a prefix, spaces, empty. */
	static const char *const junk[] = { "fe80::1%eth0",
					    "[::1]",
					    "1::2::3",
					    "1:2:3:4:5:6:7:8:9",
					    "12345::",
					    "::1/128",
					    "::1 ",
					    "",
					    ":",
					    ":::",
					    "::ffff:256.0.0.1",
					    "g::1",
					    "1.2.3.4.5",
					    "1.2.3",
					    "256.1.1.1",
					    "1.2.3.-4",
					    "localhost" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		if (ip_parse(junk[i], &fam, a) != -1)
			fprintf(stderr, "  ip_parse accepted \"%s\"\n", junk[i]);
		CHECK(ip_parse(junk[i], &fam, a) == -1);
	}
}

static void test_prefix_edges(void)
{
	/* /0 holds every address of its family and none of the other. */
	CHECK(in("0.0.0.0/0", "255.255.255.255") && in("0.0.0.0/0", "0.0.0.0"));
	CHECK(in("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") && in("::/0", "::"));
	CHECK(!in("0.0.0.0/0", "::1") && !in("::/0", "127.0.0.1"));
	/* Bits of the prefix address past /0 do not matter. */
	CHECK(in("10.1.2.3/0", "192.0.2.1"));
	/* /32 and /128: exactly one address. */
	CHECK(in("192.0.2.1/32", "192.0.2.1") && !in("192.0.2.1/32", "192.0.2.0") && !in("192.0.2.1/32", "192.0.2.3"));
	CHECK(in("2001:db8::1/128", "2001:db8::1") && !in("2001:db8::1/128", "2001:db8::"));
	CHECK(in("2001:db8::1", "2001:db8::1") && !in("2001:db8::1", "2001:db8::2"));
	/* Prefixes off a byte boundary, on both sides of the edge. */
	CHECK(in("192.0.2.128/25", "192.0.2.255") && in("192.0.2.128/25", "192.0.2.128") &&
	      !in("192.0.2.128/25", "192.0.2.127"));
	CHECK(in("172.16.0.0/12", "172.31.255.255") && !in("172.16.0.0/12", "172.32.0.0"));
	CHECK(in("fe80::/10", "febf::1") && !in("fe80::/10", "fec0::1"));
	CHECK(in("2001:db8::/127", "2001:db8::1") && !in("2001:db8::/127", "2001:db8::2"));
	CHECK(in("::/1", "7fff::") && !in("::/1", "8000::"));
	CHECK(in("0.0.0.0/1", "127.255.255.255") && !in("0.0.0.0/1", "128.0.0.0"));
	/* An IPv4-mapped address is IPv6 to a CIDR: an IPv4 rule does not hold
	 * it, an IPv6 rule on the mapped range does. */
	CHECK(!in("127.0.0.0/8", "::ffff:127.0.0.1"));
	CHECK(in("::ffff:0:0/96", "::ffff:127.0.0.1") && !in("::ffff:0:0/96", "::1"));
	CHECK(!in("::ffff:0:0/96", "127.0.0.1"));
	/* Junk CIDRs. */
	static const char *const junk[] = { "/8",          "10.0.0.0//8", "10.0.0.0/8/8", "10.0.0.0/0x8",
					    "10.0.0.0/8 ", "::/1280",     "::/-1",        "",
					    "/",           "10.0.0/8",    "[::]/0",       "fe80::%1/64" };
	struct cidr c;
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		if (cidr_parse(junk[i], &c) != -1)
			fprintf(stderr, "  cidr_parse accepted \"%s\"\n", junk[i]);
		CHECK(cidr_parse(junk[i], &c) == -1);
	}
	/* An address text longer than any address is refused before copying. */
	char big[200];
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(cidr_parse(big, &c) == -1);
	big[100] = '/';
	CHECK(cidr_parse(big, &c) == -1);
}

int main(void)
{
	test_cidr();
	test_ip();
	test_ipv6_forms();
	test_prefix_edges();
	TEST_DONE();
}
