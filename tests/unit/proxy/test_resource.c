/* resource.c: the broker's own public origin is same-origin (scheme, host
 * and port of public_url, default ports and case normalised); a look-alike
 * is not. */
#include "../../../broker/proxy/resource.c"
#include "test.h"

static void test_same_origin(void)
{
	const char *pub = "https://broker.example.com";
	CHECK(same_origin(pub, "https://broker.example.com"));
	CHECK(same_origin(pub, "HTTPS://Broker.Example.COM"));
	CHECK(same_origin(pub, "https://broker.example.com:443"));
	CHECK(same_origin("https://broker.example.com:443/base/", "https://broker.example.com"));
	CHECK(same_origin("http://127.0.0.1:8080", "http://127.0.0.1:8080"));
	CHECK(same_origin("http://broker.example.com", "http://broker.example.com:80"));

	CHECK(!same_origin(pub, "http://broker.example.com"));       /* other scheme */
	CHECK(!same_origin(pub, "https://broker.example.com:8443")); /* other port */
	CHECK(!same_origin(pub, "https://broker.example.com.evil.test"));
	CHECK(!same_origin(pub, "https://evilbroker.example.com"));
	CHECK(!same_origin(pub, "https://example.com"));
	CHECK(!same_origin(pub, "https://user@broker.example.com")); /* userinfo */
	CHECK(!same_origin(pub, "https://broker.example.com@evil.test"));
	CHECK(!same_origin(pub, "https://broker.example.com/path"));
	CHECK(!same_origin(pub, "https://broker.example.com?q"));
	CHECK(!same_origin(pub, "https://broker.example.com#f"));
	CHECK(!same_origin(pub, "null"));
	CHECK(!same_origin(pub, ""));
	CHECK(!same_origin(pub, "broker.example.com"));
	CHECK(!same_origin(pub, "ftp://broker.example.com"));
	CHECK(!same_origin("http://127.0.0.1:8080", "http://127.0.0.1:80"));
	CHECK(!same_origin("http://127.0.0.1:8080", "http://localhost:8080"));
	CHECK(!same_origin(NULL, "https://broker.example.com"));
}

int main(void)
{
	test_same_origin();
	TEST_DONE();
}
