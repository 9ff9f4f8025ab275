/* dpop.c: DPoP proofs (RFC 9449) signed here with keys made by OpenSSL
 * (ES256, RS256, PS256, EdDSA), verified against what a request was: the
 * thumbprint of an accepted key, htm, htu normalisation, the iat window,
 * ath, the bound key, nonces, the jti replay set (its generations on the
 * monotonic clock too, with a 2 s window: about 4 s of sleeping, skipped
 * under torture), and the headers that are never accepted. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "dpop.h"
#include "jose.h"
#include "lim.h"
#include "test.h"

#define NOW 1700000000LL
#define HTU "https://as.example/token"

/* RFC 7638 3.1 */
static const char t_jwk[] =
	"{\"kty\":\"RSA\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAF"
	"bWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6"
	"Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh"
	"6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\"}";

/* A signing key, the alg it signs with and its public JWK. */
struct key {
	const char *alg;
	EVP_PKEY *k;
	char jwk[1024];
};

/* keys[0..3]: ES256, RS256, PS256 (the same RSA key), EdDSA; other: a
 * second ES256 key. */
static struct key keys[4], other;
static int have_keys;

static int ec_new(struct key *out)
{
	uint8_t pt[65];
	char x[48], y[48];
	size_t n = 0;
	out->alg = "ES256";
	out->k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!out->k || EVP_PKEY_get_octet_string_param(out->k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &n) != 1 ||
	    n != 65 || pt[0] != 4)
		return -1;
	crypto_b64url_encode(pt + 1, 32, x);
	crypto_b64url_encode(pt + 33, 32, y);
	snprintf(out->jwk, sizeof(out->jwk), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	return 0;
}

static int rsa_new(struct key *rs, struct key *ps)
{
	BIGNUM *n = NULL, *e = NULL;
	uint8_t nb[512], eb[8];
	char ns[700], es[16];
	int rc = -1;
	rs->alg = "RS256";
	ps->alg = "PS256";
	rs->k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (rs->k && EVP_PKEY_get_bn_param(rs->k, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
	    EVP_PKEY_get_bn_param(rs->k, OSSL_PKEY_PARAM_RSA_E, &e) == 1 && EVP_PKEY_up_ref(rs->k) == 1) {
		ps->k = rs->k;
		crypto_b64url_encode(nb, (size_t)BN_bn2bin(n, nb), ns);
		crypto_b64url_encode(eb, (size_t)BN_bn2bin(e, eb), es);
		snprintf(rs->jwk, sizeof(rs->jwk), "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", ns, es);
		memcpy(ps->jwk, rs->jwk, sizeof(ps->jwk));
		rc = 0;
	}
	BN_free(n);
	BN_free(e);
	return rc;
}

static int ed_new(struct key *out)
{
	uint8_t pub[32];
	char x[48];
	size_t n = sizeof(pub);
	out->alg = "EdDSA";
	out->k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!out->k || EVP_PKEY_get_raw_public_key(out->k, pub, &n) != 1 || n != 32)
		return -1;
	crypto_b64url_encode(pub, 32, x);
	snprintf(out->jwk, sizeof(out->jwk), "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", x);
	return 0;
}

/* input signed by k as its alg says, the JOSE form of the signature into
 * sig64 (ES256: r||s). 0, or -1 (an allocation, under torture). */
static int sign_input(const struct key *k, const char *alg, const char *input, char *sig64)
{
	uint8_t sig[512], rs[64];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *p = NULL;
	int eddsa = strcmp(alg, "EdDSA") == 0, pss = strcmp(alg, "PS256") == 0;
	int ok = m && EVP_DigestSignInit_ex(m, &p, eddsa ? NULL : "SHA256", NULL, NULL, k->k, NULL) == 1 &&
		 (!pss || (EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PSS_PADDING) == 1 &&
			   EVP_PKEY_CTX_set_rsa_pss_saltlen(p, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
		 EVP_DigestSign(m, sig, &sl, (const uint8_t *)input, strlen(input)) == 1;
	EVP_MD_CTX_free(m);
	if (!ok)
		return -1;
	if (strcmp(alg, "ES256") == 0) {
		const uint8_t *d = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)sl);
		ok = es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
		     BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32;
		ECDSA_SIG_free(es);
		if (!ok)
			return -1;
		memcpy(sig, rs, sizeof(rs));
		sl = sizeof(rs);
	}
	crypto_b64url_encode(sig, sl, sig64);
	return 0;
}

/* The compact JWS of header and payload (JSON texts), signed by k with alg
 * (NULL: k's own), into out; "" when signing failed. */
static char proof_buf[8192];
static const char *jws(const struct key *k, const char *alg, const char *header, const char *payload)
{
	static char input[6144];
	char h[3072], p[3072], sig64[700];
	crypto_b64url_encode(header, strlen(header), h);
	crypto_b64url_encode(payload, strlen(payload), p);
	snprintf(input, sizeof(input), "%s.%s", h, p);
	if (sign_input(k, alg ? alg : k->alg, input, sig64) < 0)
		proof_buf[0] = '\0';
	else
		snprintf(proof_buf, sizeof(proof_buf), "%s.%s", input, sig64);
	return proof_buf;
}

/* The usual header of k's proofs, with extra members (",..." or ""). */
static const char *header_of(const struct key *k, const char *extra)
{
	static char h[2048];
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"%s\",\"jwk\":%s%s}", k->alg, k->jwk, extra);
	return h;
}

/* A jti used by no proof before in this process. */
static const char *fresh_jti(void)
{
	static char j[32];
	static unsigned seq;
	snprintf(j, sizeof(j), "jti-%u", ++seq);
	return j;
}

/* Claims jti, htm, htu, iat and extra (",..." or ""). */
static const char *claims(const char *jti, const char *htm, const char *htu, long long iat, const char *extra)
{
	static char c[4096];
	snprintf(c, sizeof(c), "{\"jti\":\"%s\",\"htm\":\"%s\",\"htu\":\"%s\",\"iat\":%lld%s}", jti, htm, htu, iat,
		 extra);
	return c;
}

static struct dpop_expect expect(void)
{
	struct dpop_expect e = { .space = DPOP_SPACE_RESOURCE,
				 .htm = "POST",
				 .htu = HTU,
				 .nonce_ttl_s = 300,
				 .max_age_s = 120,
				 .now = (time_t)NOW };
	return e;
}

static char jkt[DPOP_JKT_LEN + 1];
static const char *why;

static enum dpop_rc verify(const char *proof, const struct dpop_expect *e)
{
	memset(jkt, 'x', sizeof(jkt) - 1); /* cleared on a refusal */
	jkt[DPOP_JKT_LEN] = '\0';
	why = "unset";
	enum dpop_rc rc = dpop_verify(proof, e, jkt, &why);
	if (rc != DPOP_OK)
		CHECK(jkt[0] == '\0' && why && strlen(why) > 0);
	return rc;
}

/* A fresh proof by k with the usual header and the given claims, against e. */
static enum dpop_rc try_claims(const struct key *k, const char *htm, const char *htu, long long iat, const char *extra,
			       const struct dpop_expect *e)
{
	return verify(jws(k, NULL, header_of(k, ""), claims(fresh_jti(), htm, htu, iat, extra)), e);
}

static enum dpop_rc try_htu(const char *htu, const struct dpop_expect *e)
{
	return try_claims(&keys[0], e->htm, htu, NOW, "", e);
}

/* A refusal whose reason contains part. */
static int refused_for(enum dpop_rc rc, const char *part)
{
	return rc == DPOP_INVALID && why && strstr(why, part) != NULL;
}

static int thumb(const char *jwk_text, char out[44])
{
	json_t *jwk = json_loads(jwk_text, 0, NULL);
	int rc = jose_jwk_thumbprint(jwk, out);
	json_decref(jwk);
	return rc;
}

static void test_ok_each_alg(void)
{
	char t[44];
	CHECK(thumb(t_jwk, t) == 0);
	CHECK_STR(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	struct dpop_expect e = expect();
	for (int i = 0; i < 4; i++) {
		CHECK(try_claims(&keys[i], "POST", HTU, NOW, "", &e) == DPOP_OK);
		CHECK(why == NULL);
		CHECK(thumb(keys[i].jwk, t) == 0);
		CHECK(strlen(jkt) == DPOP_JKT_LEN);
		CHECK_STR(jkt, t);
	}
	/* RS256 and PS256 are one key: one thumbprint; the other keys differ. */
	char a[44], b[44];
	CHECK(thumb(keys[0].jwk, a) == 0 && thumb(other.jwk, b) == 0 && strcmp(a, b) != 0);
	/* the key's JWK may carry the members RFC 7517 allows beside it */
	char jwk_more[sizeof(keys[0].jwk)];
	struct key k = keys[0];
	snprintf(jwk_more, sizeof(jwk_more), "%.*s,\"kid\":\"k1\",\"alg\":\"ES256\",\"use\":\"sig\"}",
		 (int)strlen(k.jwk) - 1, k.jwk);
	memcpy(k.jwk, jwk_more, sizeof(k.jwk));
	CHECK(try_claims(&k, "POST", HTU, NOW, "", &e) == DPOP_OK);
	CHECK(thumb(keys[0].jwk, t) == 0);
	CHECK_STR(jkt, t); /* the thumbprint takes only the required members */
	/* typ compares as a media type: case does not matter */
	char h[1200];
	snprintf(h, sizeof(h), "{\"typ\":\"DPoP+JWT\",\"alg\":\"EdDSA\",\"jwk\":%s}", keys[3].jwk);
	CHECK(verify(jws(&keys[3], NULL, h, claims(fresh_jti(), "POST", HTU, NOW, "")), &e) == DPOP_OK);
}

static void test_htm(void)
{
	struct dpop_expect e = expect();
	CHECK(refused_for(try_claims(&keys[0], "GET", HTU, NOW, "", &e), "htm"));
	CHECK(refused_for(try_claims(&keys[0], "post", HTU, NOW, "", &e), "htm"));
	CHECK(refused_for(try_claims(&keys[0], "POST ", HTU, NOW, "", &e), "htm"));
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""),
				     "{\"jti\":\"a\",\"htu\":\"" HTU "\",\"iat\":1700000000}"),
				 &e),
			  "htm"));
	e.htm = "GET";
	CHECK(try_claims(&keys[0], "GET", HTU, NOW, "", &e) == DPOP_OK);
}

static void test_htu(void)
{
	struct dpop_expect e = expect();
	/* scheme and host case, the default port, query and fragment */
	CHECK(try_htu("HTTPS://AS.Example/token", &e) == DPOP_OK);
	CHECK(try_htu("https://as.example:443/token", &e) == DPOP_OK);
	CHECK(try_htu("https://as.example/token?x=1&y=2", &e) == DPOP_OK);
	CHECK(try_htu("https://as.example/token#frag", &e) == DPOP_OK);
	CHECK(try_htu("https://as.example:443/token?a#b", &e) == DPOP_OK);
	/* the path is compared as it is */
	CHECK(refused_for(try_htu("https://as.example/Token", &e), "htu"));
	CHECK(refused_for(try_htu("https://as.example/token/", &e), "htu"));
	CHECK(refused_for(try_htu("https://as.example/", &e), "htu"));
	CHECK(refused_for(try_htu("https://as.example/tokens", &e), "htu"));
	/* another port, scheme or host; userinfo; not an absolute http(s) URL */
	CHECK(refused_for(try_htu("https://as.example:8443/token", &e), "htu"));
	CHECK(refused_for(try_htu("http://as.example/token", &e), "htu"));
	CHECK(refused_for(try_htu("https://as.example.evil/token", &e), "htu"));
	CHECK(refused_for(try_htu("https://user@as.example/token", &e), "htu"));
	CHECK(refused_for(try_htu("https://user:pw@as.example/token", &e), "htu"));
	CHECK(refused_for(try_htu("ftp://as.example/token", &e), "htu"));
	CHECK(refused_for(try_htu("as.example/token", &e), "htu"));
	CHECK(refused_for(try_htu("/token", &e), "htu"));
	CHECK(refused_for(try_htu("", &e), "htu"));
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""),
				     "{\"jti\":\"a\",\"htm\":\"POST\",\"htu\":7,\"iat\":1700000000}"),
				 &e),
			  "htu"));
	/* http: port 80 is the default one, 443 is not */
	e.htu = "http://127.0.0.1:80/mcp";
	CHECK(try_htu("http://127.0.0.1/mcp", &e) == DPOP_OK);
	CHECK(refused_for(try_htu("http://127.0.0.1:443/mcp", &e), "htu"));
	CHECK(refused_for(try_htu("https://127.0.0.1/mcp", &e), "htu"));
	/* an IPv6 literal: its colons are no port */
	e.htu = "https://[2001:db8::1]:443/mcp";
	CHECK(try_htu("https://[2001:DB8::1]/mcp", &e) == DPOP_OK);
	CHECK(try_htu("https://[2001:db8::1]:443/mcp?q", &e) == DPOP_OK);
	CHECK(refused_for(try_htu("https://[2001:db8::1]:8443/mcp", &e), "htu"));
	CHECK(refused_for(try_htu("https://[2001:db8::2]/mcp", &e), "htu"));
	e.htu = "https://[2001:db8::1]:8443/mcp";
	CHECK(try_htu("HTTPS://[2001:DB8::1]:8443/mcp", &e) == DPOP_OK);
	CHECK(refused_for(try_htu("https://[2001:db8::1]/mcp", &e), "htu"));
	CHECK(refused_for(try_htu("https://[2001:db8::1]:844/mcp", &e), "htu"));

	/* dpop_htu_matches itself: the proof's path is percent-decoded (the
	 * request URL's path is the decoded one the server routed). */
	CHECK(dpop_htu_matches("https://a.example/a%20b", "https://a.example/a b"));
	CHECK(dpop_htu_matches("https://a.example/a%2Fb", "https://a.example/a/b"));
	CHECK(dpop_htu_matches("https://a.example/%6Dcp", "https://a.example/mcp"));
	CHECK(!dpop_htu_matches("https://a.example/a%20b", "https://a.example/a%20b")); /* no double decoding */
	CHECK(!dpop_htu_matches("https://a.example/a%2", "https://a.example/a%2"));
	CHECK(!dpop_htu_matches("https://a.example/a%zz", "https://a.example/a%zz"));
	CHECK(!dpop_htu_matches("https://a.example/a%00", "https://a.example/a"));
	/* The request URL is not cut at a '?' or '#': its path is the decoded
	 * one, where they came from %3F and %23 (and are forwarded re-encoded). */
	CHECK(!dpop_htu_matches("https://a.example/mcp/a", "https://a.example/mcp/a?x"));
	CHECK(!dpop_htu_matches("https://a.example/mcp/a", "https://a.example/mcp/a#x"));
	CHECK(dpop_htu_matches("https://a.example/mcp/a%3Fx", "https://a.example/mcp/a?x"));
	CHECK(dpop_htu_matches("https://a.example/mcp/a%23x?q", "https://a.example/mcp/a#x"));
	CHECK(dpop_htu_matches("https://a.example", "https://a.example/"));
	CHECK(dpop_htu_matches("https://a.example?x", "https://A.EXAMPLE:443"));
	CHECK(dpop_htu_matches("https://a.example#f/g", "https://a.example/"));
	CHECK(dpop_htu_matches("https://[::1]", "https://[::1]:443/"));
	CHECK(dpop_htu_matches("http://[::1]:80/x", "http://[::1]/x"));
	CHECK(!dpop_htu_matches("https://[::1]:80/x", "https://[::1]/x"));
	CHECK(dpop_htu_matches("https://a.example/p@q", "https://a.example/p@q"));
	CHECK(dpop_htu_matches("https://a.example/P", "https://a.example/P"));
	CHECK(!dpop_htu_matches("https://a.example/P", "https://a.example/p"));
	CHECK(!dpop_htu_matches("https://a.example/%41", "https://a.example/%61"));
	CHECK(!dpop_htu_matches("https://a.example:4430/", "https://a.example/"));
	CHECK(!dpop_htu_matches("https://a.example:44/", "https://a.example/"));
	CHECK(!dpop_htu_matches("https://u@a.example/", "https://u@a.example/"));
	CHECK(!dpop_htu_matches("https://", "https://"));
	CHECK(!dpop_htu_matches("https:///x", "https:///x"));
	CHECK(!dpop_htu_matches("https://?x", "https://?x"));
	CHECK(!dpop_htu_matches("wss://a.example/", "wss://a.example/"));
	CHECK(!dpop_htu_matches("https:/a.example/", "https:/a.example/"));
	CHECK(!dpop_htu_matches(NULL, "https://a.example/"));
	CHECK(!dpop_htu_matches("https://a.example/", NULL));
}

static void test_iat(void)
{
	struct dpop_expect e = expect();
	CHECK(try_claims(&keys[0], "POST", HTU, NOW - 120, "", &e) == DPOP_OK);
	CHECK(refused_for(try_claims(&keys[0], "POST", HTU, NOW - 121, "", &e), "iat"));
	CHECK(try_claims(&keys[0], "POST", HTU, NOW + DPOP_FUTURE_S, "", &e) == DPOP_OK);
	CHECK(refused_for(try_claims(&keys[0], "POST", HTU, NOW + DPOP_FUTURE_S + 1, "", &e), "iat"));
	CHECK(refused_for(try_claims(&keys[0], "POST", HTU, 0, "", &e), "iat"));
	CHECK(refused_for(try_claims(&keys[0], "POST", HTU, -NOW, "", &e), "iat"));
	e.max_age_s = 5;
	CHECK(try_claims(&keys[0], "POST", HTU, NOW - 5, "", &e) == DPOP_OK);
	CHECK(refused_for(try_claims(&keys[0], "POST", HTU, NOW - 6, "", &e), "iat"));
	/* iat that is no integer, or missing */
	static const char *const bad[] = { "\"1700000000\"", "1700000000.5", "1.7e9",       "1700000000.0",
					   "null",           "true",         "[1700000000]" };
	char c[256];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(c, sizeof(c), "{\"jti\":\"%s\",\"htm\":\"POST\",\"htu\":\"" HTU "\",\"iat\":%s}", fresh_jti(),
			 bad[i]);
		CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), c), &e), "iat"));
	}
	snprintf(c, sizeof(c), "{\"jti\":\"%s\",\"htm\":\"POST\",\"htu\":\"" HTU "\"}", fresh_jti());
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), c), &e), "iat"));
}

static void test_jti(void)
{
	struct dpop_expect e = expect();
	char j[LIM_DPOP_JTI + 2], c[512];
	memset(j, 'j', sizeof(j));
	j[LIM_DPOP_JTI] = '\0';
	CHECK(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(j, "POST", HTU, NOW, "")), &e) == DPOP_OK);
	j[LIM_DPOP_JTI] = 'j';
	j[LIM_DPOP_JTI + 1] = '\0';
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(j, "POST", HTU, NOW, "")), &e),
			  "jti"));
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims("", "POST", HTU, NOW, "")), &e),
			  "jti"));
	snprintf(c, sizeof(c), "{\"jti\":7,\"htm\":\"POST\",\"htu\":\"" HTU "\",\"iat\":%lld}", NOW);
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), c), &e), "jti"));
	snprintf(c, sizeof(c), "{\"htm\":\"POST\",\"htu\":\"" HTU "\",\"iat\":%lld}", NOW);
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), c), &e), "jti"));
}

/* The ath of token: base64url of its SHA-256 (RFC 9449 section 4.2). */
static void ath_of(const char *token, char out[48])
{
	uint8_t d[32];
	unsigned int n = 0;
	if (EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL) != 1)
		memset(d, 0, sizeof(d));
	crypto_b64url_encode(d, sizeof(d), out);
}

static void test_ath(void)
{
	/* RFC 9449 section 7.1's access token and ath */
	static const char rfc_at[] = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
	char ath[48], extra[128];
	struct dpop_expect e = expect();
	e.htm = "GET";
	e.htu = "https://resource.example.org/protectedresource";
	e.access_token = rfc_at;
	ath_of(rfc_at, ath);
	CHECK_STR(ath, "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
	snprintf(extra, sizeof(extra), ",\"ath\":\"%s\"", ath);
	CHECK(try_claims(&keys[1], e.htm, e.htu, NOW, extra, &e) == DPOP_OK);
	/* missing, another token's, not a string, changed in one character */
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW, "", &e), "ath"));
	ath_of("another token", ath);
	snprintf(extra, sizeof(extra), ",\"ath\":\"%s\"", ath);
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW, extra, &e), "ath"));
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW, ",\"ath\":7", &e), "ath"));
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW, ",\"ath\":\"\"", &e), "ath"));
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW,
				     ",\"ath\":\"fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEp\"", &e),
			  "ath"));
	CHECK(refused_for(try_claims(&keys[1], e.htm, e.htu, NOW,
				     ",\"ath\":\"fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo=\"", &e),
			  "ath"));
	/* without an access token to match, ath is not looked at */
	e.access_token = NULL;
	CHECK(try_claims(&keys[1], e.htm, e.htu, NOW, ",\"ath\":\"anything\"", &e) == DPOP_OK);
}

static void test_jkt_binding(void)
{
	char t[44], t_other[44];
	struct dpop_expect e = expect();
	CHECK(thumb(keys[3].jwk, t) == 0 && thumb(other.jwk, t_other) == 0);
	e.jkt = t;
	CHECK(try_claims(&keys[3], "POST", HTU, NOW, "", &e) == DPOP_OK);
	CHECK_STR(jkt, t);
	CHECK(refused_for(try_claims(&other, "POST", HTU, NOW, "", &e), "bound"));
	e.jkt = t_other;
	CHECK(refused_for(try_claims(&keys[3], "POST", HTU, NOW, "", &e), "bound"));
	CHECK(try_claims(&other, "POST", HTU, NOW, "", &e) == DPOP_OK);
	e.jkt = "";
	CHECK(refused_for(try_claims(&other, "POST", HTU, NOW, "", &e), "bound"));
}

static void test_nonce_functions(void)
{
	uint8_t key[CRYPTO_KEY_LEN], key2[CRYPTO_KEY_LEN];
	char n[DPOP_NONCE_LEN + 1], n2[DPOP_NONCE_LEN + 1], bad[DPOP_NONCE_LEN + 2];
	memset(key, 7, sizeof(key));
	memset(key2, 8, sizeof(key2));
	const long ttl = 300;
	const time_t slot0 = (time_t)(NOW - NOW % ttl); /* the slot NOW is in starts here */
	CHECK(dpop_nonce(key, ttl, (time_t)NOW, n) == 0);
	CHECK(strlen(n) == DPOP_NONCE_LEN);
	/* the same slot gives the same nonce; the next another one */
	CHECK(dpop_nonce(key, ttl, slot0, n2) == 0 && strcmp(n, n2) == 0);
	CHECK(dpop_nonce(key, ttl, slot0 + ttl - 1, n2) == 0 && strcmp(n, n2) == 0);
	CHECK(dpop_nonce(key, ttl, slot0 + ttl, n2) == 0 && strcmp(n, n2) != 0);
	CHECK(dpop_nonce(key2, ttl, (time_t)NOW, n2) == 0 && strcmp(n, n2) != 0);
	/* good in its slot and the next; not before it, not two slots on */
	CHECK(dpop_nonce_ok(key, ttl, slot0, n));
	CHECK(dpop_nonce_ok(key, ttl, (time_t)NOW, n));
	CHECK(dpop_nonce_ok(key, ttl, slot0 + ttl, n));
	CHECK(dpop_nonce_ok(key, ttl, slot0 + 2 * ttl - 1, n));
	CHECK(!dpop_nonce_ok(key, ttl, slot0 + 2 * ttl, n));
	CHECK(!dpop_nonce_ok(key, ttl, slot0 - 1, n));
	CHECK(!dpop_nonce_ok(key, ttl, slot0 + 100 * ttl, n));
	/* another key, another slot length */
	CHECK(!dpop_nonce_ok(key2, ttl, (time_t)NOW, n));
	CHECK(!dpop_nonce_ok(key, 60, (time_t)NOW, n));
	/* malformed: short, long, not base64url, one character changed */
	snprintf(bad, sizeof(bad), "%.*s", DPOP_NONCE_LEN - 1, n);
	CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, bad));
	snprintf(bad, sizeof(bad), "%sA", n);
	CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, bad));
	snprintf(bad, sizeof(bad), "%s", n);
	bad[DPOP_NONCE_LEN - 1] = '=';
	CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, bad));
	for (size_t i = 0; i < DPOP_NONCE_LEN; i += 5) {
		snprintf(bad, sizeof(bad), "%s", n);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, bad));
	}
	CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, ""));
	CHECK(!dpop_nonce_ok(key, ttl, (time_t)NOW, NULL));
	CHECK(!dpop_nonce_ok(key, 0, (time_t)NOW, n));
	CHECK(!dpop_nonce_ok(key, ttl, -1, n));
	CHECK(dpop_nonce(key, 0, (time_t)NOW, n2) < 0);
	CHECK(dpop_nonce(key, -5, (time_t)NOW, n2) < 0);
	CHECK(dpop_nonce(key, ttl, -1, n2) < 0);
}

static void test_nonce_in_proof(void)
{
	uint8_t key[CRYPTO_KEY_LEN], key2[CRYPTO_KEY_LEN];
	char n[DPOP_NONCE_LEN + 1], extra[96];
	memset(key, 7, sizeof(key));
	memset(key2, 9, sizeof(key2));
	struct dpop_expect e = expect();
	e.nonce_key = key;
	const long ttl = e.nonce_ttl_s;
	const time_t slot0 = (time_t)(NOW - NOW % ttl);
	/* none: DPOP_NONCE, and the jti is not remembered (the retry may reuse it) */
	const char *jti = "nonce-retry";
	CHECK(verify(jws(&keys[2], NULL, header_of(&keys[2], ""), claims(jti, "POST", HTU, NOW, "")), &e) ==
	      DPOP_NONCE);
	CHECK(why && strstr(why, "nonce") && jkt[0] == '\0');
	CHECK(dpop_nonce(key, ttl, (time_t)NOW, n) == 0);
	snprintf(extra, sizeof(extra), ",\"nonce\":\"%s\"", n);
	CHECK(verify(jws(&keys[2], NULL, header_of(&keys[2], ""), claims(jti, "POST", HTU, NOW, extra)), &e) ==
	      DPOP_OK);
	/* the current slot's and the previous slot's */
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, extra, &e) == DPOP_OK);
	CHECK(dpop_nonce(key, ttl, slot0 - 1, n) == 0);
	snprintf(extra, sizeof(extra), ",\"nonce\":\"%s\"", n);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, extra, &e) == DPOP_OK);
	/* two slots old, from the next slot, under another key, malformed */
	CHECK(dpop_nonce(key, ttl, slot0 - ttl - 1, n) == 0);
	snprintf(extra, sizeof(extra), ",\"nonce\":\"%s\"", n);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, extra, &e) == DPOP_NONCE);
	CHECK(dpop_nonce(key, ttl, slot0 + ttl, n) == 0);
	snprintf(extra, sizeof(extra), ",\"nonce\":\"%s\"", n);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, extra, &e) == DPOP_NONCE);
	CHECK(dpop_nonce(key2, ttl, (time_t)NOW, n) == 0);
	snprintf(extra, sizeof(extra), ",\"nonce\":\"%s\"", n);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, extra, &e) == DPOP_NONCE);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, ",\"nonce\":\"abc\"", &e) == DPOP_NONCE);
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, ",\"nonce\":42", &e) == DPOP_NONCE);
	/* a proof wrong otherwise is invalid, whatever its nonce */
	CHECK(refused_for(try_claims(&keys[2], "GET", HTU, NOW, "", &e), "htm"));
	/* without a nonce key, a nonce is not looked at */
	e.nonce_key = NULL;
	CHECK(try_claims(&keys[2], "POST", HTU, NOW, ",\"nonce\":\"abc\"", &e) == DPOP_OK);
}

static void test_replay(void)
{
	struct dpop_expect e = expect();
	char p[sizeof(proof_buf)];
	snprintf(p, sizeof(p), "%s", jws(&keys[0], NULL, header_of(&keys[0], ""), claims("r1", "POST", HTU, NOW, "")));
	CHECK(verify(p, &e) == DPOP_OK);
	CHECK(refused_for(verify(p, &e), "jti was used before"));
	CHECK(refused_for(verify(p, &e), "jti was used before"));
	/* another proof with the same jti (another iat), by the same key */
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims("r1", "POST", HTU, NOW - 1, "")),
				 &e),
			  "jti was used before"));
	/* the same jti by another key is another proof */
	CHECK(verify(jws(&other, NULL, header_of(&other, ""), claims("r1", "POST", HTU, NOW, "")), &e) == DPOP_OK);
	dpop_replay_reset(0, 0);
	CHECK(verify(p, &e) == DPOP_OK);
	CHECK(refused_for(verify(p, &e), "jti was used before"));

	/* A proof refused for another reason leaves its jti unrecorded. */
	char t[44];
	CHECK(thumb(other.jwk, t) == 0);
	const char *const jtis[] = { "r-htm", "r-htu", "r-iat", "r-ath", "r-jkt", "r-sig" };
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(jtis[0], "GET", HTU, NOW, "")),
				 &e),
			  "htm"));
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""),
				     claims(jtis[1], "POST", "https://as.example/other", NOW, "")),
				 &e),
			  "htu"));
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""),
				     claims(jtis[2], "POST", HTU, NOW - 1000, "")),
				 &e),
			  "iat"));
	struct dpop_expect ea = e, ej = e;
	ea.access_token = "at";
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(jtis[3], "POST", HTU, NOW, "")),
				 &ea),
			  "ath"));
	ej.jkt = t;
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(jtis[4], "POST", HTU, NOW, "")),
				 &ej),
			  "bound"));
	/* signed by another key than its header's */
	CHECK(refused_for(verify(jws(&other, NULL, header_of(&keys[0], ""), claims(jtis[5], "POST", HTU, NOW, "")), &e),
			  "signature"));
	for (size_t i = 0; i < sizeof(jtis) / sizeof(jtis[0]); i++) {
		CHECK(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(jtis[i], "POST", HTU, NOW, "")), &e) ==
		      DPOP_OK);
		CHECK(refused_for(verify(proof_buf, &e), "jti was used before"));
	}
}

static void test_refused_headers(void)
{
	struct dpop_expect e = expect();
	const char *c;
	char h[2048];
	const struct key *k = &keys[0];
#define REFUSED(proof) CHECK(verify((proof), &e) == DPOP_INVALID)
	/* typ */
	c = claims(fresh_jti(), "POST", HTU, NOW, "");
	snprintf(h, sizeof(h), "{\"typ\":\"JWT\",\"alg\":\"ES256\",\"jwk\":%s}", k->jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "typ"));
	snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"jwk\":%s}", k->jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "typ"));
	snprintf(h, sizeof(h), "{\"typ\":7,\"alg\":\"ES256\",\"jwk\":%s}", k->jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "typ"));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt \",\"alg\":\"ES256\",\"jwk\":%s}", k->jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "typ"));
	/* no jwk, a jwk that is no object, a private one, one of another alg */
	CHECK(refused_for(verify(jws(k, NULL, "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\"}", c), &e), "jwk"));
	CHECK(refused_for(verify(jws(k, NULL, "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":\"x\"}", c), &e),
			  "jwk"));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":%.*s,\"d\":\"%s\"}}",
		 (int)strlen(k->jwk) - 1, k->jwk, "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "jwk"));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":%s}", keys[3].jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "jwk"));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":%s}", t_jwk);
	CHECK(refused_for(verify(jws(k, NULL, h, c), &e), "jwk"));
	/* a JWK naming another alg than the header's */
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"PS256\",\"jwk\":%.*s,\"alg\":\"RS256\"}}",
		 (int)strlen(keys[1].jwk) - 1, keys[1].jwk);
	CHECK(refused_for(verify(jws(&keys[2], NULL, h, c), &e), "jwk"));
	/* alg none and HS256: never an algorithm (signed anyway, with ES256) */
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"none\",\"jwk\":%s}", k->jwk);
	REFUSED(jws(k, "ES256", h, c));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"HS256\",\"jwk\":%s}", k->jwk);
	REFUSED(jws(k, "ES256", h, c));
	snprintf(h, sizeof(h), "{\"typ\":\"dpop+jwt\",\"alg\":\"none\",\"jwk\":%s}", k->jwk);
	char unsigned_jws[6200], hb[3072], pb[3072];
	crypto_b64url_encode(h, strlen(h), hb);
	crypto_b64url_encode(c, strlen(c), pb);
	snprintf(unsigned_jws, sizeof(unsigned_jws), "%s.%s.", hb, pb);
	REFUSED(unsigned_jws);
	/* the header's alg and the signature's scheme differ */
	REFUSED(jws(&keys[1], "PS256", header_of(&keys[1], ""), c));
	REFUSED(jws(&keys[2], "RS256", header_of(&keys[2], ""), c));
	/* signed by another key (of the same alg) than the header's */
	CHECK(refused_for(verify(jws(&other, NULL, header_of(k, ""), c), &e), "signature"));
	CHECK(refused_for(verify(jws(k, NULL, header_of(&other, ""), c), &e), "signature"));
	/* crit, even with the parameter present */
	REFUSED(jws(k, NULL, header_of(k, ",\"crit\":[\"x\"],\"x\":1"), c));
	REFUSED(jws(k, NULL, header_of(k, ",\"crit\":[]"), c));
	/* a changed payload or signature */
	char t[sizeof(proof_buf)];
	snprintf(t, sizeof(t), "%s", jws(k, NULL, header_of(k, ""), claims(fresh_jti(), "POST", HTU, NOW, "")));
	char *dot1 = strchr(t, '.'), *dot2 = strrchr(t, '.');
	if (dot1 && dot2 && dot2 > dot1 + 4) {
		char was = dot1[3];
		dot1[3] = was == 'A' ? 'B' : 'A';
		REFUSED(t);
		dot1[3] = was;
		was = dot2[5];
		dot2[5] = was == 'A' ? 'B' : 'A';
		REFUSED(t);
		dot2[5] = was;
		CHECK(verify(t, &e) == DPOP_OK); /* as it was signed: nothing was recorded */
	}
	/* not a JWS at all */
	REFUSED("");
	REFUSED("a.b.c");
	REFUSED("...");
	CHECK(verify(NULL, &e) == DPOP_INVALID);
	/* a kid beside the jwk does no harm */
	CHECK(verify(jws(k, NULL, header_of(k, ",\"kid\":\"k\""), claims(fresh_jti(), "POST", HTU, NOW, "")), &e) ==
	      DPOP_OK);
#undef REFUSED
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps until the monotonic clock reads at least t. */
static void sleep_until(double t)
{
	for (double now = mono(); now < t; now = mono()) {
		double d = t - now;
		struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
		nanosleep(&ts, NULL);
	}
}

/* The replay set's two generations, with a window W of 2 s (max age -8,
 * so iat is in [now + 8, now + 10]): an entry is kept at least W, and is
 * gone after two turnovers. Generations turn on whole seconds of the
 * monotonic clock from the first proof after a reset (second S). */
static void test_generations(void)
{
	struct dpop_expect e = expect();
	e.max_age_s = 2 - DPOP_FUTURE_S;
	const struct key *k = &keys[0];
	char a[sizeof(proof_buf)], b[sizeof(proof_buf)], c[sizeof(proof_buf)];
	snprintf(a, sizeof(a), "%s", jws(k, NULL, header_of(k, ""), claims("gen-a", "POST", HTU, NOW + 9, "")));
	snprintf(b, sizeof(b), "%s", jws(k, NULL, header_of(k, ""), claims("gen-b", "POST", HTU, NOW + 9, "")));
	snprintf(c, sizeof(c), "%s", jws(k, NULL, header_of(k, ""), claims("gen-c", "POST", HTU, NOW + 9, "")));
	dpop_replay_reset(0, 0);
	double s = (double)(long)mono(); /* the generation starts in this second */
	CHECK(verify(a, &e) == DPOP_OK);
	CHECK(refused_for(verify(a, &e), "used before"));
	/* S + 1: the same generation takes c */
	sleep_until(s + 1.05);
	CHECK(refused_for(verify(a, &e), "used before"));
	CHECK(verify(c, &e) == DPOP_OK);
	/* S + 2: a turnover; a and c are in the old generation, still refused */
	sleep_until(s + 2.05);
	CHECK(refused_for(verify(a, &e), "used before"));
	CHECK(verify(b, &e) == DPOP_OK);
	/* S + 3: no turnover yet: c has been kept for more than W */
	sleep_until(s + 3.05);
	CHECK(refused_for(verify(c, &e), "used before"));
	CHECK(refused_for(verify(a, &e), "used before"));
	/* S + 4: the second turnover drops a and c; b is in the old generation */
	sleep_until(s + 4.05);
	CHECK(refused_for(verify(b, &e), "used before"));
	CHECK(verify(a, &e) == DPOP_OK);
	CHECK(verify(c, &e) == DPOP_OK);
	CHECK(refused_for(verify(a, &e), "used before"));
	dpop_replay_reset(0, 0);
}

/* The binding and the RSA bounds come before any arithmetic: a proof by a
 * key other than the bound one is refused for that even with a junk
 * signature, and an RSA key over 4096 bits or with another exponent is
 * refused before a key is built. */
static void test_cheap_refusals(void)
{
	struct dpop_expect e = expect();
	char bound[DPOP_JKT_LEN + 1];
	CHECK(try_htu(HTU, &e) == DPOP_OK);
	memcpy(bound, jkt, sizeof(bound));
	e.jkt = bound;
	char junk[8192];
	const char *good = jws(&other, NULL, header_of(&other, ""), claims(fresh_jti(), "POST", HTU, NOW, ""));
	snprintf(junk, sizeof(junk), "%.*sAAAA", (int)(strrchr(good, '.') - good + 1), good);
	CHECK(refused_for(verify(junk, &e), "not the one the token is bound to"));
	/* An 8192-bit modulus (fake: never parsed) and e = 3 on a real key. */
	char n[1400], hdr[2048];
	memset(n, 'A', 1366);
	n[0] = 'w';
	n[1366] = '\0';
	snprintf(hdr, sizeof(hdr),
		 "{\"typ\":\"dpop+jwt\",\"alg\":\"RS256\",\"jwk\":{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"%s\"}}", n);
	e = expect();
	CHECK(refused_for(verify(jws(&keys[1], "RS256", hdr, claims(fresh_jti(), "POST", HTU, NOW, "")), &e),
			  "over 4096 bits"));
	json_t *j = json_loads(keys[1].jwk, 0, NULL);
	CHECK(j && json_object_set_new(j, "e", json_string("Aw")) == 0);
	char *jt = j ? json_dumps(j, JSON_COMPACT) : NULL;
	snprintf(hdr, sizeof(hdr), "{\"typ\":\"dpop+jwt\",\"alg\":\"RS256\",\"jwk\":%s}", jt ? jt : "{}");
	CHECK(refused_for(verify(jws(&keys[1], "RS256", hdr, claims(fresh_jti(), "POST", HTU, NOW, "")), &e),
			  "exponent is not 65537"));
	free(jt);
	json_decref(j);
}

/* A key built once is reused by thumbprint and alg (the key cache): the
 * members the thumbprint leaves out are still judged on every proof. */
static void test_key_cache(void)
{
	struct dpop_expect e = expect();
	char hdr[2048], jwk[1024];
	CHECK(try_htu(HTU, &e) == DPOP_OK); /* keys[0]'s key is built and kept */
	const char *extra[] = { ",\"use\":\"enc\"", ",\"alg\":\"RS256\"", ",\"d\":\"AAAA\"" };
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		snprintf(jwk, sizeof(jwk), "%.*s%s}", (int)strlen(keys[0].jwk) - 1, keys[0].jwk, extra[i]);
		snprintf(hdr, sizeof(hdr), "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":%s}", jwk);
		CHECK(refused_for(verify(jws(&keys[0], NULL, hdr, claims(fresh_jti(), "POST", HTU, NOW, "")), &e),
				  "jwk is not a public key of its alg"));
	}
	/* The same key under another alg is another entry, and does not fit. */
	CHECK(refused_for(verify(jws(&keys[0], "ES256",
				     "{\"typ\":\"dpop+jwt\",\"alg\":\"EdDSA\",\"jwk\":{\"kty\":\"EC\"}}",
				     claims(fresh_jti(), "POST", HTU, NOW, "")),
				 &e),
			  "jwk"));
	CHECK(try_htu(HTU, &e) == DPOP_OK);
}

/* With e.pending the jti is checked, not recorded, until dpop_record. */
static void test_pending(void)
{
	struct dpop_expect e = expect();
	struct dpop_pending p;
	const char *w = NULL;
	e.space = DPOP_SPACE_TOKEN;
	e.pending = &p;
	const char *proof = jws(&keys[0], NULL, header_of(&keys[0], ""), claims(fresh_jti(), "POST", HTU, NOW, ""));
	char saved[8192];
	snprintf(saved, sizeof(saved), "%s", proof);
	CHECK(verify(saved, &e) == DPOP_OK && p.set);
	CHECK(verify(saved, &e) == DPOP_OK && p.set); /* not recorded yet */
	CHECK(dpop_record(&p, &w) == 0);
	CHECK(refused_for(verify(saved, &e), "used before") && !p.set);
	CHECK(dpop_record(&p, &w) < 0); /* nothing pending after a refusal */
	/* A check that could not be recorded is refused: a full space fails
	 * closed in check-only mode too. */
	dpop_replay_reset(8, 4); /* room for 8 jtis, 4 of a key, 1 key */
	for (int i = 0; i < 4; i++)
		CHECK(verify(jws(&keys[0], NULL, header_of(&keys[0], ""), claims(fresh_jti(), "POST", HTU, NOW, "")),
			     &e) == DPOP_OK &&
		      dpop_record(&p, &w) == 0);
	CHECK(refused_for(verify(jws(&keys[0], NULL, header_of(&keys[0], ""),
				     claims(fresh_jti(), "POST", HTU, NOW, "")),
				 &e),
			  "too many proofs of this key"));
	CHECK(refused_for(verify(jws(&other, NULL, header_of(&other, ""), claims(fresh_jti(), "POST", HTU, NOW, "")),
				 &e),
			  "cannot be checked for replay now"));
	dpop_replay_reset(0, 0);
	/* The token space and the resource space remember apart. */
	e.pending = NULL;
	e.space = DPOP_SPACE_RESOURCE;
	CHECK(verify(saved, &e) == DPOP_OK);
	CHECK(refused_for(verify(saved, &e), "used before"));
}

/* One key's share of a generation: past it only that key is refused; past
 * the total, everybody (fail closed). The bounds are lowered for the test. */
static void test_key_share(void)
{
	struct dpop_expect e = expect();
	int ok = 1;
	dpop_replay_reset(64, 32);
	for (unsigned i = 0; i < 32; i++)
		ok &= try_htu(HTU, &e) == DPOP_OK;
	CHECK(ok);
	CHECK(refused_for(try_htu(HTU, &e), "too many proofs of this key"));
	for (unsigned i = 0; i < 32; i++)
		ok &= try_claims(&other, "POST", HTU, NOW, "", &e) == DPOP_OK;
	CHECK(ok);
	/* 64 in all: a third key, within its share, finds no room. */
	CHECK(refused_for(try_claims(&keys[3], "POST", HTU, NOW, "", &e), "cannot be checked for replay now"));
	dpop_replay_reset(0, 0);
	CHECK(try_htu(HTU, &e) == DPOP_OK);
}

int main(void)
{
	have_keys = ec_new(&keys[0]) == 0 && rsa_new(&keys[1], &keys[2]) == 0 && ed_new(&keys[3]) == 0 &&
		    ec_new(&other) == 0;
	CHECK(have_keys);
	if (have_keys) {
		dpop_replay_reset(0, 0);
		test_ok_each_alg();
		test_htm();
		test_htu();
		test_iat();
		test_jti();
		test_ath();
		test_jkt_binding();
		test_nonce_functions();
		test_nonce_in_proof();
		test_replay();
		test_refused_headers();
		test_cheap_refusals();
		test_key_cache();
		test_pending();
		test_key_share();
		/* About 4 s of sleeping: not once per allocation under torture. */
		if (!getenv("MCPB_TORTURE"))
			test_generations();
	}
	for (int i = 0; i < 4; i++)
		EVP_PKEY_free(keys[i].k);
	EVP_PKEY_free(other.k);
	dpop_replay_reset(0, 0);
	TEST_DONE();
}
