/* netaddr.c: IP literals and CIDR prefixes, strictly spelled. */
#include <arpa/inet.h>
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

int main(void)
{
	test_cidr();
	test_ip();
	TEST_DONE();
}
