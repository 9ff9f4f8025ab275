/* client_assertion.c: the RFC 7523 rules over a parsed assertion's claims,
 * and which of a client's keys may verify it. */
#include <stdlib.h>
#include <string.h>

#include "client_assertion.h"
#include "crypto.h"
#include "lim.h"
#include "test.h"

#define NOW 1800000000LL
static const char *const aud[] = { "https://broker.example/token", "https://broker.example" };

/* The claims check over a payload given as JSON text. */
static const char *claims(const char *text)
{
	json_t *c = json_loads(text, 0, NULL);
	CHECK(c != NULL);
	const char *why = client_assertion_claims_check(c, "cl", NOW, aud, 2);
	json_decref(c);
	return why;
}

/* A payload: iss, sub, aud, exp (relative to NOW), then extra members. */
static const char *with(const char *iss, const char *sub, const char *aud_json, long long exp_delta, const char *extra)
{
	char t[1024];
	snprintf(t, sizeof(t), "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":%s,\"exp\":%lld,\"jti\":\"j1\"%s}", iss, sub,
		 aud_json, NOW + exp_delta, extra);
	return claims(t);
}

#define TOKEN_AUD "\"https://broker.example/token\""

static void test_claims(void)
{
	CHECK(with("cl", "cl", TOKEN_AUD, 60, "") == NULL);
	CHECK(with("cl", "cl", "\"https://broker.example\"", 60, "") == NULL);
	CHECK(with("cl", "cl", "[\"x\", \"https://broker.example\"]", 60, "") == NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"iat\":1800000000,\"nbf\":1799999990") == NULL);
	/* iss, sub */
	CHECK(with("other", "cl", TOKEN_AUD, 60, "") != NULL);
	CHECK(with("cl", "other", TOKEN_AUD, 60, "") != NULL);
	/* aud: another server, a prefix, a trailing slash, empty, not strings */
	CHECK(with("cl", "cl", "\"https://other.example/token\"", 60, "") != NULL);
	CHECK(with("cl", "cl", "\"https://broker.example/\"", 60, "") != NULL);
	CHECK(with("cl", "cl", "\"https://broker.example/token/x\"", 60, "") != NULL);
	CHECK(with("cl", "cl", "[]", 60, "") != NULL);
	CHECK(with("cl", "cl", "[1]", 60, "") != NULL);
	CHECK(with("cl", "cl", "null", 60, "") != NULL);
	/* exp: lifetime, leeway, expired */
	CHECK(with("cl", "cl", TOKEN_AUD, LIM_ASSERTION_LIFETIME_S + LIM_ASSERTION_LEEWAY_S, "") == NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, LIM_ASSERTION_LIFETIME_S + LIM_ASSERTION_LEEWAY_S + 1, "") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 3600, "") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, -LIM_ASSERTION_LEEWAY_S + 1, "") == NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, -LIM_ASSERTION_LEEWAY_S, "") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, -3600, "") != NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"jti\":\"j\"}") != NULL);
	/* the extremes of a JSON integer (nothing overflows) */
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD
		     ",\"exp\":9223372036854775807,\"jti\":\"j\"}") != NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD
		     ",\"exp\":-9223372036854775807,\"jti\":\"j\"}") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"iat\":9223372036854775807") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"nbf\":-9223372036854775807") == NULL);
	/* at most LIM_ASSERTION_AUDS audiences */
	CHECK(with("cl", "cl",
		   "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\"," TOKEN_AUD
		   "]",
		   60, "") == NULL);
	CHECK(with("cl", "cl",
		   "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\"," TOKEN_AUD
		   "]",
		   60, "") != NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":\"1800000060\",\"jti\":\"j\"}") !=
	      NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060.5,\"jti\":\"j\"}") !=
	      NULL);
	/* iat and nbf in the future (beyond the leeway), or not numbers */
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"iat\":1800000030") == NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"iat\":1800000031") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"nbf\":1800000031") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"nbf\":\"0\"") != NULL);
	CHECK(with("cl", "cl", TOKEN_AUD, 60, ",\"iat\":null") != NULL);
	/* jti: required, a bounded string */
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060}") != NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060,\"jti\":\"\"}") != NULL);
	CHECK(claims("{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060,\"jti\":5}") != NULL);
	char longjti[LIM_ASSERTION_JTI + 200];
	memset(longjti, 'a', LIM_ASSERTION_JTI + 1);
	longjti[LIM_ASSERTION_JTI + 1] = '\0';
	char t[LIM_ASSERTION_JTI + 400];
	snprintf(t, sizeof(t),
		 "{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060,\"jti\":\"%s\"}", longjti);
	CHECK(claims(t) != NULL);
	longjti[LIM_ASSERTION_JTI] = '\0';
	snprintf(t, sizeof(t),
		 "{\"iss\":\"cl\",\"sub\":\"cl\",\"aud\":" TOKEN_AUD ",\"exp\":1800000060,\"jti\":\"%s\"}", longjti);
	CHECK(claims(t) == NULL);
}

/* An Ed25519 key and its JWK member text ("kty":...,"x":...); NULL when
 * anything fails (an allocation, under torture). */
static EVP_PKEY *ed_new(char *members, size_t cap)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	uint8_t pub[32];
	size_t n = sizeof(pub);
	char x[64];
	if (!k || EVP_PKEY_get_raw_public_key(k, pub, &n) != 1) {
		EVP_PKEY_free(k);
		return NULL;
	}
	crypto_b64url_encode(pub, n, x);
	snprintf(members, cap, "\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"", x);
	return k;
}

/* A compact JWS of header over a small payload, signed by k, parsed into
 * *j: 0, or -1 (j zeroed) when anything failed. */
static int ed_sign(EVP_PKEY *k, const char *header, char *out, size_t cap, struct jws *j)
{
	char h[256], s64[128];
	uint8_t sig[64];
	size_t sl = sizeof(sig);
	memset(j, 0, sizeof(*j));
	crypto_b64url_encode(header, strlen(header), h);
	snprintf(out, cap, "%s.eyJpc3MiOiJjbCJ9", h);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	int ok = m && EVP_DigestSignInit_ex(m, NULL, NULL, NULL, NULL, k, NULL) == 1 &&
		 EVP_DigestSign(m, sig, &sl, (const uint8_t *)out, strlen(out)) == 1;
	EVP_MD_CTX_free(m);
	if (!ok)
		return -1;
	crypto_b64url_encode(sig, sl, s64);
	size_t n = strlen(out);
	snprintf(out + n, cap - n, ".%s", s64);
	return jose_parse(out, strlen(out), j);
}

static void test_key_selection(void)
{
	char right[128], wrong[128], jwks[1024], t[1024];
	struct jws nokid, k1;
	memset(&nokid, 0, sizeof(nokid));
	memset(&k1, 0, sizeof(k1));
	char t2[1024];
	EVP_PKEY *kr = ed_new(right, sizeof(right)), *kw = ed_new(wrong, sizeof(wrong));
	int ready = kr && kw && ed_sign(kr, "{\"alg\":\"EdDSA\"}", t, sizeof(t), &nokid) == 0 &&
		    ed_sign(kr, "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", t2, sizeof(t2), &k1) == 0;
	CHECK(ready); /* an allocation failure (torture) ends the test here */
	if (!ready)
		goto out;

	/* Without kid: every key of the algorithm is tried, others skipped. */
	snprintf(jwks, sizeof(jwks),
		 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
		 "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},{%s},{%s}]}",
		 wrong, right);
	CHECK(client_assertion_signature_check(&nokid, jwks) == 0);
	CHECK(client_assertion_signature_check(&k1, jwks) < 0); /* no key is k1 */
	snprintf(jwks, sizeof(jwks), "{\"keys\":[{%s}]}", wrong);
	CHECK(client_assertion_signature_check(&nokid, jwks) < 0);
	/* With kid: that key only. */
	snprintf(jwks, sizeof(jwks), "{\"keys\":[{\"kid\":\"k2\",%s},{\"kid\":\"k1\",%s}]}", wrong, right);
	CHECK(client_assertion_signature_check(&k1, jwks) == 0);
	CHECK(client_assertion_signature_check(&nokid, jwks) == 0);
	snprintf(jwks, sizeof(jwks), "{\"keys\":[{\"kid\":\"k2\",%s},{\"kid\":\"k1\",%s}]}", right, wrong);
	CHECK(client_assertion_signature_check(&k1, jwks) < 0); /* the right key is k2 */
	/* The named key, unfit for the algorithm. */
	snprintf(jwks, sizeof(jwks), "{\"keys\":[{\"kid\":\"k1\",\"alg\":\"ES256\",%s}]}", right);
	CHECK(client_assertion_signature_check(&k1, jwks) < 0);
	snprintf(jwks, sizeof(jwks), "{\"keys\":[{\"kid\":\"k1\",\"use\":\"enc\",%s}]}", right);
	CHECK(client_assertion_signature_check(&k1, jwks) < 0);
	/* Bad sets. */
	CHECK(client_assertion_signature_check(&nokid, NULL) < 0);
	CHECK(client_assertion_signature_check(&nokid, "not json") < 0);
	CHECK(client_assertion_signature_check(&nokid, "{\"keys\":{}}") < 0);
	CHECK(client_assertion_signature_check(&nokid, "[]") < 0);
	struct buf b;
	buf_init(&b, 64 * 1024);
	CHECK(buf_adds(&b, "{\"keys\":[") == 0);
	for (int i = 0; i < LIM_JWKS_KEYS; i++)
		CHECK(buf_printf(&b, "{%s},", wrong) == 0);
	CHECK(buf_printf(&b, "{%s}]}", right) == 0);
	CHECK(client_assertion_signature_check(&nokid, b.ptr) < 0); /* over LIM_JWKS_KEYS */
	buf_free(&b);
out:
	jose_free(&nokid);
	jose_free(&k1);
	EVP_PKEY_free(kr);
	EVP_PKEY_free(kw);
}

int main(void)
{
	test_claims();
	test_key_selection();
	TEST_DONE();
}
