/* jose.c: compact JWS parsing, JWK -> key, signature verification and
 * RFC 7638 thumbprints, against the RFCs' known-answer vectors and keys
 * made here with OpenSSL. */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "jose.h"
#include "lim.h"
#include "test.h"

/* RFC 7515 A.1 payload, and the A.2 (RS256) and A.3 (ES256) JWS of it. */
#define PAYLOAD "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
static const char a2[] =
	"eyJhbGciOiJSUzI1NiJ9." PAYLOAD
	".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr"
	"7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi"
	"12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlU"
	"PQGe77Rw";
static const char a2_jwk[] =
	"{\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHm"
	"fHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
	"SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoud"
	"F8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\",\"e\":\"AQAB\"}";
static const char a3[] = "eyJhbGciOiJFUzI1NiJ9." PAYLOAD
			 ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
static const char a3_jwk[] = "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
			     "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";
/* RFC 8037 A.4 (Ed25519; its payload is text, not a JWT: verified below
 * the parser) and A.3 (its thumbprint). */
static const char a4[] = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
			 "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
static const char a4_jwk[] =
	"{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}";
/* RFC 7638 3.1 */
static const char t_jwk[] =
	"{\"kty\":\"RSA\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAF"
	"bWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6"
	"Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh"
	"6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\"}";

static json_t *js(const char *s)
{
	return json_loads(s, 0, NULL);
}

/* 0 when text parses and verifies under jwk (JSON text). */
static int verify_with(const char *text, const char *jwk_text)
{
	struct jws j;
	EVP_PKEY *key = NULL;
	json_t *jwk = js(jwk_text);
	int rc = -1;
	if (jose_parse(text, strlen(text), &j) == 0 && jose_jwk_key(jwk, j.alg, &key) == 0)
		rc = jose_verify(j.alg, key, j.input, j.input_len, j.sig, j.sig_len);
	EVP_PKEY_free(key);
	json_decref(jwk);
	jose_free(&j);
	return rc;
}

/* RFC 8037 A.4 verified as signing input and signature. */
static int eddsa_with(const char *text, const char *jwk_text)
{
	EVP_PKEY *key = NULL;
	json_t *jwk = js(jwk_text);
	const char *dot = strrchr(text, '.');
	uint8_t sig[128];
	long n = crypto_b64url_decode(dot + 1, strlen(dot + 1), sig, sizeof(sig));
	int rc = -1;
	if (n > 0 && jose_jwk_key(jwk, JOSE_EDDSA, &key) == 0)
		rc = jose_verify(JOSE_EDDSA, key, text, (size_t)(dot - text), sig, (size_t)n);
	EVP_PKEY_free(key);
	json_decref(jwk);
	return rc;
}

/* text with the character at i replaced by c. */
static int verify_changed(const char *text, size_t i, char c, const char *jwk)
{
	char *t = strdup(text);
	if (!t)
		return -1;
	t[i] = c;
	int rc = verify_with(t, jwk);
	free(t);
	return rc;
}

static void test_vectors(void)
{
	CHECK(verify_with(a2, a2_jwk) == 0);
	CHECK(verify_with(a3, a3_jwk) == 0);
	CHECK(eddsa_with(a4, a4_jwk) == 0);
	CHECK(verify_with(a4, a4_jwk) < 0); /* the payload is no JSON object */
	struct jws j;
	CHECK(jose_parse(a2, strlen(a2), &j) == 0);
	CHECK(j.alg == JOSE_RS256 && j.kid == NULL && j.sig_len == 256);
	CHECK(json_integer_value(json_object_get(j.payload, "exp")) == 1300819380);
	CHECK(j.input_len == strlen("eyJhbGciOiJSUzI1NiJ9." PAYLOAD));
	jose_free(&j);
	jose_free(&j); /* a freed jws may be freed again */
}

static void test_tampered(void)
{
	size_t h = strlen("eyJhbGciOiJSUzI1NiJ9.");
	/* payload, signature: one character each */
	CHECK(verify_changed(a2, h + 10, 'A', a2_jwk) < 0);
	CHECK(verify_changed(a2, strlen(a2) - 5, 'A', a2_jwk) < 0);
	CHECK(verify_changed(a3, h + 10, 'A', a3_jwk) < 0);
	CHECK(verify_changed(a3, strlen(a3) - 5, 'A', a3_jwk) < 0);
	char t4[sizeof(a4)];
	memcpy(t4, a4, sizeof(a4));
	t4[25] = 'A';
	CHECK(eddsa_with(t4, a4_jwk) < 0);
	memcpy(t4, a4, sizeof(a4));
	t4[sizeof(a4) - 6] = 'A';
	CHECK(eddsa_with(t4, a4_jwk) < 0);
	CHECK(eddsa_with(a4, a3_jwk) < 0);
	/* the header: the same alg, written otherwise, is another signing input */
	char other[sizeof(a2) + 16];
	snprintf(other, sizeof(other), "eyJhbGciOiAiUlMyNTYifQ%s", a2 + strlen("eyJhbGciOiJSUzI1NiJ9"));
	CHECK(verify_with(other, a2_jwk) < 0);
	/* wrong keys: the right type, another key; another type */
	CHECK(verify_with(a2, t_jwk) < 0);
	CHECK(verify_with(a3, a4_jwk) < 0);
}

/* A JWS of header and payload (JSON) with the signature of a2. */
static int parses(const char *header, const char *payload)
{
	char h[512], p[512], t[2048];
	crypto_b64url_encode(header, strlen(header), h);
	crypto_b64url_encode(payload, strlen(payload), p);
	snprintf(t, sizeof(t), "%s.%s.%s", h, p, strrchr(a2, '.') + 1);
	struct jws j;
	int rc = jose_parse(t, strlen(t), &j);
	jose_free(&j);
	return rc;
}

static void test_parse_refusals(void)
{
	CHECK(parses("{\"alg\":\"RS256\"}", "{}") == 0);
	CHECK(parses("{\"alg\":\"RS256\",\"kid\":\"k1\"}", "{}") == 0);
	/* algorithms never accepted */
	CHECK(parses("{\"alg\":\"none\"}", "{}") < 0);
	CHECK(parses("{\"alg\":\"HS256\"}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS384\"}", "{}") < 0);
	CHECK(parses("{\"alg\":\"rs256\"}", "{}") < 0);
	CHECK(parses("{}", "{}") < 0);
	CHECK(parses("{\"alg\":[\"RS256\"]}", "{}") < 0);
	/* extensions, odd kids, non-objects, duplicates */
	CHECK(parses("{\"alg\":\"RS256\",\"crit\":[\"exp\"]}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS256\",\"b64\":false}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS256\",\"kid\":7}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS256\",\"kid\":\"\"}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS256\",\"alg\":\"none\"}", "{}") < 0);
	CHECK(parses("{\"alg\":\"RS256\"}", "[1]") < 0);
	CHECK(parses("{\"alg\":\"RS256\"}", "{\"a\":1,\"a\":2}") < 0);
	CHECK(parses("{\"alg\":\"RS256\"}", "not json") < 0);
	/* segments */
	struct jws j;
	const char *bad[] = { "",
			      ".",
			      "..",
			      "a.b",
			      "a.b.c.d",
			      "eyJhbGciOiJSUzI1NiJ9..sig",
			      ".e30.c2ln",
			      "eyJhbGciOiJSUzI1NiJ9.e30.",
			      "eyJhbGciOiJSUzI1NiJ9=.e30.c2ln",
			      "eyJhbGciOiJSUzI1NiJ9.e30.c2ln+",
			      "eyJhbGciOiJSUzI1NiJ9.e3 0.c2ln",
			      "eyJhbGciOiJSUzI1NiJ9.e31.c2ln" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(jose_parse(bad[i], strlen(bad[i]), &j) < 0);
		CHECK(j.header == NULL && j.sig == NULL);
	}
	CHECK(jose_parse("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", 29, &j) == 0);
	jose_free(&j);
	CHECK(jose_parse(NULL, 0, &j) < 0);
	/* a NUL inside, and inputs over the limit */
	CHECK(jose_parse("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\0x", 31, &j) < 0);
	size_t big = LIM_JWS_BYTES + 1;
	char *huge = malloc(big + 1);
	if (!huge)
		return;
	memset(huge, 'A', big);
	huge[20] = '.';
	huge[40] = '.';
	huge[big] = '\0';
	CHECK(jose_parse(huge, big, &j) < 0);
	free(huge);
}

static EVP_PKEY *key_of(const char *jwk_text, enum jose_alg alg)
{
	EVP_PKEY *k = NULL;
	json_t *jwk = js(jwk_text);
	int rc = jose_jwk_key(jwk, alg, &k);
	json_decref(jwk);
	CHECK((rc == 0) == (k != NULL));
	return k;
}

static int fits(const char *jwk_text, enum jose_alg alg)
{
	EVP_PKEY *k = key_of(jwk_text, alg);
	EVP_PKEY_free(k);
	return k != NULL;
}

static void test_jwk_fit(void)
{
	CHECK(fits(a2_jwk, JOSE_RS256));
	CHECK(!fits(a2_jwk, JOSE_PS256)); /* its alg says RS256 */
	CHECK(!fits(a2_jwk, JOSE_ES256));
	CHECK(fits(t_jwk, JOSE_RS256));
	CHECK(fits(a3_jwk, JOSE_ES256));
	CHECK(!fits(a3_jwk, JOSE_RS256) && !fits(a3_jwk, JOSE_EDDSA));
	CHECK(fits(a4_jwk, JOSE_EDDSA));
	CHECK(!fits(a4_jwk, JOSE_ES256));
	/* use, private parts, curves, sizes, points off the curve */
	CHECK(!fits(
		"{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"use\":\"enc\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
		JOSE_EDDSA));
	CHECK(!fits(
		"{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\",\"d\":\"nWGxne_"
		"9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}",
		JOSE_EDDSA));
	CHECK(!fits("{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
		    JOSE_EDDSA));
	CHECK(!fits("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUR\"}",
		    JOSE_EDDSA));
	CHECK(!fits("{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
		    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}",
		    JOSE_ES256));
	CHECK(!fits("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
		    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1\"}",
		    JOSE_ES256));
	CHECK(!fits("{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}", JOSE_RS256)); /* tiny modulus */
	CHECK(!fits("{\"kty\":\"oct\",\"k\":\"AQAB\"}", JOSE_RS256));
	CHECK(!fits("[]", JOSE_RS256));
}

/* A fresh RSA-2048 key and its public JWK, without alg and with "PS256";
 * NULL when anything fails (an allocation, under torture). */
static EVP_PKEY *rsa_new(char *jwk, char *jwk_ps, size_t cap)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	BIGNUM *n = NULL, *e = NULL;
	uint8_t nb[512], eb[8];
	char ns[700], es[16];
	if (!k || EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
	    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
		EVP_PKEY_free(k);
		k = NULL;
		goto out;
	}
	crypto_b64url_encode(nb, (size_t)BN_bn2bin(n, nb), ns);
	crypto_b64url_encode(eb, (size_t)BN_bn2bin(e, eb), es);
	snprintf(jwk, cap, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", ns, es);
	snprintf(jwk_ps, cap, "{\"kty\":\"RSA\",\"alg\":\"PS256\",\"n\":\"%s\",\"e\":\"%s\"}", ns, es);
out:
	BN_free(n);
	BN_free(e);
	return k;
}

/* header.payload signed by k (PSS when pss) into out; "" when signing
 * failed (an allocation, under torture). */
static void rsa_sign(EVP_PKEY *k, int pss, const char *header, char *out, size_t cap)
{
	char h[256], sig64[400];
	uint8_t sig[256];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *p = NULL;
	crypto_b64url_encode(header, strlen(header), h);
	snprintf(out, cap, "%s.%s", h, "eyJpc3MiOiJjIn0");
	int ok = m && EVP_DigestSignInit_ex(m, &p, "SHA256", NULL, NULL, k, NULL) == 1 &&
		 (!pss || (EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PSS_PADDING) == 1 &&
			   EVP_PKEY_CTX_set_rsa_pss_saltlen(p, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
		 EVP_DigestSign(m, sig, &sl, (const uint8_t *)out, strlen(out)) == 1;
	EVP_MD_CTX_free(m);
	if (!ok) {
		out[0] = '\0';
		return;
	}
	crypto_b64url_encode(sig, sl, sig64);
	size_t n = strlen(out);
	snprintf(out + n, cap - n, ".%s", sig64);
}

static void test_ps256_and_confusion(void)
{
	char jwk[1024], jwk_ps[1024], t[2048], t2[2048];
	struct jws j;
	EVP_PKEY *k = rsa_new(jwk, jwk_ps, sizeof(jwk)), *ec = NULL;
	CHECK(k != NULL);
	if (!k)
		return;
	rsa_sign(k, 1, "{\"alg\":\"PS256\"}", t, sizeof(t));
	CHECK(verify_with(t, jwk) == 0);
	CHECK(verify_with(t, jwk_ps) == 0);
	CHECK(verify_with(t, t_jwk) < 0); /* another RSA key */
	CHECK(verify_with(t, a2_jwk) < 0);
	/* Each RSA scheme refuses the other's signature over the same input,
	 * and a JWK whose alg is PS256 does not serve RS256. */
	rsa_sign(k, 0, "{\"alg\":\"PS256\"}", t2, sizeof(t2));
	CHECK(verify_with(t2, jwk) < 0);
	rsa_sign(k, 1, "{\"alg\":\"RS256\"}", t2, sizeof(t2));
	CHECK(verify_with(t2, jwk) < 0);
	rsa_sign(k, 0, "{\"alg\":\"RS256\"}", t2, sizeof(t2));
	CHECK(verify_with(t2, jwk) == 0);
	CHECK(verify_with(t2, jwk_ps) < 0);
	/* keys of another type, or none, for the algorithm; a short signature */
	ec = key_of(a3_jwk, JOSE_ES256);
	if (jose_parse(t, strlen(t), &j) == 0) {
		CHECK(jose_verify(j.alg, ec, j.input, j.input_len, j.sig, j.sig_len) < 0);
		CHECK(jose_verify(j.alg, NULL, j.input, j.input_len, j.sig, j.sig_len) < 0);
		CHECK(jose_verify(JOSE_RS256, k, j.input, j.input_len, j.sig, j.sig_len) < 0);
		CHECK(jose_verify(JOSE_PS256, k, j.input, j.input_len, j.sig, j.sig_len) == 0);
		CHECK(jose_verify(JOSE_PS256, k, j.input, j.input_len, j.sig, j.sig_len - 1) < 0);
		CHECK(jose_verify(JOSE_ES256, k, j.input, j.input_len, j.sig, 64) < 0);
		CHECK(jose_verify(JOSE_EDDSA, k, j.input, j.input_len, j.sig, 64) < 0);
	}
	jose_free(&j);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(k);
}

static int thumb(const char *jwk_text, char out[44])
{
	json_t *jwk = js(jwk_text);
	int rc = jose_jwk_thumbprint(jwk, out);
	json_decref(jwk);
	return rc;
}

static void test_thumbprint(void)
{
	char t[44];
	CHECK(thumb(t_jwk, t) == 0);
	CHECK_STR(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	CHECK(thumb(a4_jwk, t) == 0);
	CHECK_STR(t, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
	CHECK(thumb(a3_jwk, t) == 0 && strlen(t) == 43);
	CHECK(thumb("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83O\"}", t) < 0);
	CHECK(thumb("{\"kty\":\"RSA\",\"n\":\"a\\\"b\",\"e\":\"AQAB\"}", t) < 0);
	CHECK(thumb("{\"kty\":\"oct\",\"k\":\"AQAB\"}", t) < 0);
	CHECK(thumb("{}", t) < 0);
}

static void test_alg_names(void)
{
	enum jose_alg a;
	CHECK(jose_alg_parse("EdDSA", &a) == 0 && a == JOSE_EDDSA);
	CHECK(jose_alg_parse("PS256", &a) == 0 && a == JOSE_PS256);
	CHECK(jose_alg_parse("none", &a) < 0);
	CHECK(jose_alg_parse("HS256", &a) < 0);
	CHECK(jose_alg_parse(NULL, &a) < 0);
}

int main(void)
{
	test_vectors();
	test_tampered();
	test_parse_refusals();
	test_jwk_fit();
	test_ps256_and_confusion();
	test_thumbprint();
	test_alg_names();
	TEST_DONE();
}
