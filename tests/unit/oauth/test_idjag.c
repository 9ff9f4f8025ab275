/* idjag.c: the SEP-990 rules over an ID-JAG's header and claims. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idjag.h"
#include "lim.h"
#include "test.h"

#define NOW 1800000000LL
#define SELF "https://broker.example"

/* The check over a header and payload given as JSON text. */
static const char *check(const char *header, const char *payload)
{
	json_t *h = json_loads(header, 0, NULL), *p = json_loads(payload, 0, NULL);
	CHECK(h != NULL && p != NULL);
	const char *why = idjag_claims_check(h, p, SELF, "agent", "sub", NOW);
	json_decref(h);
	json_decref(p);
	return why;
}

#define TYP "{\"alg\":\"RS256\",\"typ\":\"oauth-id-jag+jwt\"}"

/* A payload: aud, exp and iat relative to NOW, then extra members. */
static const char *with(const char *aud, long long exp_d, long long iat_d, const char *extra)
{
	char t[1024];
	snprintf(t, sizeof(t),
		 "{\"iss\":\"https://idp\",\"sub\":\"u1\",\"aud\":%s,\"client_id\":\"agent\",\"resource\":"
		 "\"https://broker.example/mcp\",\"exp\":%lld,\"iat\":%lld,\"jti\":\"j1\"%s}",
		 aud, NOW + exp_d, NOW + iat_d, extra);
	return check(TYP, t);
}

static void test_claims(void)
{
	CHECK(with("\"" SELF "\"", 60, 0, "") == NULL);
	CHECK(with("[\"" SELF "\"]", 60, 0, ",\"scope\":\"a b\"") == NULL);
	CHECK(with("\"" SELF "\"", 60, -30, ",\"nbf\":1800000000") == NULL);
	/* One audience, exactly us. */
	CHECK(with("[\"" SELF "\", \"https://other\"]", 60, 0, "") != NULL);
	CHECK(with("[]", 60, 0, "") != NULL);
	CHECK(with("\"" SELF "/\"", 60, 0, "") != NULL);
	CHECK(with("\"https://BROKER.example\"", 60, 0, "") != NULL);
	CHECK(with("7", 60, 0, "") != NULL);
	/* Times. */
	CHECK(with("\"" SELF "\"", -LIM_ASSERTION_LEEWAY_S, 0, "") != NULL);
	CHECK(with("\"" SELF "\"", LIM_IDJAG_LIFETIME_S + LIM_ASSERTION_LEEWAY_S, 0, "") == NULL);
	CHECK(with("\"" SELF "\"", LIM_IDJAG_LIFETIME_S + LIM_ASSERTION_LEEWAY_S + 1, 0, "") != NULL);
	CHECK(with("\"" SELF "\"", 60, LIM_ASSERTION_LEEWAY_S + 1, "") != NULL);
	CHECK(with("\"" SELF "\"", 60, 0, ",\"nbf\":1800000100") != NULL);
	CHECK(with("\"" SELF "\"", 60, 0, ",\"nbf\":\"soon\"") != NULL);
	/* Members. */
	CHECK(with("\"" SELF "\"", 60, 0, ",\"scope\":7") != NULL);
	CHECK(check(TYP, "{\"iss\":\"i\",\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"other\","
			 "\"resource\":\"r\",\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}") != NULL);
	CHECK(check(TYP, "{\"iss\":\"i\",\"aud\":\"" SELF "\",\"client_id\":\"agent\",\"resource\":\"r\","
			 "\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}") != NULL); /* no subject */
	CHECK(check(TYP, "{\"iss\":\"i\",\"sub\":\"a b\",\"aud\":\"" SELF "\",\"client_id\":\"agent\","
			 "\"resource\":\"r\",\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}") != NULL);
	CHECK(check(TYP, "{\"iss\":\"i\",\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"agent\","
			 "\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}") != NULL); /* no resource */
	CHECK(check(TYP, "{\"iss\":\"i\",\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"agent\","
			 "\"resource\":\"r\",\"exp\":1800000060,\"jti\":\"j\"}") != NULL); /* no iat */
	CHECK(check(TYP, "{\"iss\":\"i\",\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"agent\","
			 "\"resource\":\"r\",\"exp\":1800000060,\"iat\":1800000000}") != NULL); /* no jti */
	CHECK(check(TYP, "{\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"agent\",\"resource\":\"r\","
			 "\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}") != NULL); /* no iss */
}

static void test_typ(void)
{
	const char *ok = "{\"iss\":\"i\",\"sub\":\"u\",\"aud\":\"" SELF "\",\"client_id\":\"agent\",\"resource\":\"r\","
			 "\"exp\":1800000060,\"iat\":1800000000,\"jti\":\"j\"}";
	CHECK(check(TYP, ok) == NULL);
	CHECK(check("{\"typ\":\"application/oauth-id-jag+jwt\"}", ok) == NULL);
	CHECK(check("{\"typ\":\"OAuth-ID-JAG+JWT\"}", ok) == NULL);
	CHECK(check("{\"typ\":\"JWT\"}", ok) != NULL);
	CHECK(check("{}", ok) != NULL);
	CHECK(check("{\"typ\":\"oauth-id-jag+jwt \"}", ok) != NULL);
	CHECK(check("{\"typ\":[\"oauth-id-jag+jwt\"]}", ok) != NULL);
}

int main(void)
{
	test_claims();
	test_typ();
	TEST_DONE();
}
