/* IP literals (X-Forwarded-For elements, CIMD hosts) and CIDR prefixes
 * (trusted_proxies, cimd_allow_private_cidrs): ip_parse and cidr_parse. A
 * parsed address prints and parses back to the same bytes; a prefix holds
 * its own address; a prefix length is decimal digits only. */
#include <arpa/inet.h>

#include "fuzz.h"
#include "netaddr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	int fam = 0, fam2 = 0;
	uint8_t a[16], b[16];
	char text[INET6_ADDRSTRLEN];
	if (ip_parse(s, &fam, a) == 0) {
		FUZZ_CHECK(fam == AF_INET || fam == AF_INET6);
		FUZZ_CHECK(inet_ntop(fam, a, text, sizeof(text)) != NULL);
		FUZZ_CHECK(ip_parse(text, &fam2, b) == 0 && fam2 == fam && memcmp(a, b, 16) == 0);
	}
	struct cidr c;
	if (cidr_parse(s, &c) == 0) {
		FUZZ_CHECK((c.family == AF_INET && c.bits >= 0 && c.bits <= 32) ||
			   (c.family == AF_INET6 && c.bits >= 0 && c.bits <= 128));
		FUZZ_CHECK(cidr_contains(&c, c.family, c.addr) == 1);
		FUZZ_CHECK(cidr_contains(&c, c.family == AF_INET ? AF_INET6 : AF_INET, c.addr) == 0);
		const char *slash = strchr(s, '/');
		if (slash) {
			FUZZ_CHECK(slash[1] != '\0');
			for (const char *p = slash + 1; *p; p++)
				FUZZ_CHECK(*p >= '0' && *p <= '9');
		}
	}
	free(s);
	return 0;
}
