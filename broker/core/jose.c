#include "jose.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "crypto.h"
#include "jparse.h"
#include "lim.h"

#define JOSE_ES256_COORD 32 /* P-256 coordinate and scalar bytes */
#define JOSE_ED25519_KEY 32
#define JOSE_RSA_E_MAX 8     /* public exponent bytes */
#define JOSE_MEMBER_MAX 2048 /* a base64url JWK member (RSA-8192: 1366) */

static const struct {
	const char *name;
	enum jose_alg alg;
} algs[] = {
	{ "RS256", JOSE_RS256 },
	{ "PS256", JOSE_PS256 },
	{ "ES256", JOSE_ES256 },
	{ "EdDSA", JOSE_EDDSA },
};

int jose_alg_parse(const char *name, enum jose_alg *out)
{
	for (size_t i = 0; name && i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(name, algs[i].name) == 0) {
			*out = algs[i].alg;
			return 0;
		}
	return -1;
}

static const char *alg_name(enum jose_alg alg)
{
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (algs[i].alg == alg)
			return algs[i].name;
	return "";
}

/* ---- compact serialisation ---------------------------------------------- */

/* One base64url segment holding a JSON object. */
static json_t *segment_json(const char *p, size_t n)
{
	uint8_t raw[LIM_JWS_BYTES];
	long len = n ? crypto_b64url_decode(p, n, raw, sizeof(raw)) : -1;
	json_t *o = len > 0 ? jparse((const char *)raw, (size_t)len, 0, LIM_JSON_DEPTH) : NULL;
	if (o && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

/* The header's rules: a known alg, kid a bounded string, no extension the
 * verifier would have to understand (crit, RFC 7515 4.1.11). */
static int header_check(struct jws *j)
{
	const json_t *kid = json_object_get(j->header, "kid");
	if (jose_alg_parse(json_string_value(json_object_get(j->header, "alg")), &j->alg) < 0)
		return -1;
	if (json_object_get(j->header, "crit") || json_object_get(j->header, "b64"))
		return -1;
	if (kid && (!json_is_string(kid) || json_string_length(kid) == 0 || json_string_length(kid) > LIM_JWK_KID))
		return -1;
	j->kid = json_string_value(kid);
	return 0;
}

int jose_parse(const char *s, size_t len, struct jws *out)
{
	int rc = -1;
	memset(out, 0, sizeof(*out));
	if (!s || len == 0 || len > LIM_JWS_BYTES || memchr(s, '\0', len))
		goto out;
	const char *d1 = memchr(s, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - s)) : NULL;
	if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - s)))
		goto out;
	size_t sig_chars = len - (size_t)(d2 + 1 - s);
	if (!(out->header = segment_json(s, (size_t)(d1 - s))) || header_check(out) < 0)
		goto out;
	if (!(out->payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1))))
		goto out;
	if (sig_chars == 0 || !(out->sig = OPENSSL_malloc(LIM_JWS_SIG)))
		goto out;
	long n = crypto_b64url_decode(d2 + 1, sig_chars, out->sig, LIM_JWS_SIG);
	if (n <= 0)
		goto out;
	out->sig_len = (size_t)n;
	out->input = s;
	out->input_len = (size_t)(d2 - s);
	rc = 0;
out:
	if (rc < 0)
		jose_free(out);
	return rc;
}

void jose_free(struct jws *j)
{
	json_decref(j->header);
	json_decref(j->payload);
	OPENSSL_free(j->sig);
	memset(j, 0, sizeof(*j));
}

/* ---- JWK -> EVP_PKEY ---------------------------------------------------- */

/* A base64url member of jwk decoded into out[0..cap): its length, or -1. */
static long member_bytes(const json_t *jwk, const char *name, uint8_t *out, size_t cap)
{
	const json_t *v = json_object_get(jwk, name);
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > JOSE_MEMBER_MAX)
		return -1;
	return crypto_b64url_decode(json_string_value(v), json_string_length(v), out, cap);
}

static int member_is(const json_t *jwk, const char *name, const char *want)
{
	const char *v = json_string_value(json_object_get(jwk, name));
	return v && strcmp(v, want) == 0;
}

/* EVP_PKEY_fromdata of a public key of type name from what bld holds. */
static EVP_PKEY *key_from(const char *name, OSSL_PARAM_BLD *bld)
{
	EVP_PKEY *key = NULL;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		EVP_PKEY_free(key);
		key = NULL;
	}
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return key;
}

static EVP_PKEY *rsa_key(const json_t *jwk)
{
	uint8_t n[LIM_JWK_RSA_MAX_BYTES + 1], e[JOSE_RSA_E_MAX];
	long nl = member_bytes(jwk, "n", n, sizeof(n)), el = member_bytes(jwk, "e", e, sizeof(e));
	EVP_PKEY *key = NULL;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	if (nl <= 0 || el <= 0 || (e[el - 1] & 1) == 0)
		goto out;
	if (!(bn = BN_bin2bn(n, (int)nl, NULL)) || !(be = BN_bin2bn(e, (int)el, NULL)))
		goto out;
	int bytes = BN_num_bytes(bn);
	if (bytes < LIM_JWK_RSA_MIN_BYTES || bytes > LIM_JWK_RSA_MAX_BYTES || BN_is_one(be))
		goto out;
	if (!(bld = OSSL_PARAM_BLD_new()) || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1)
		goto out;
	key = key_from("RSA", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return key;
}

/* A P-256 point, checked to be on the curve by OpenSSL as it is decoded. */
static EVP_PKEY *ec_key(const json_t *jwk)
{
	uint8_t pub[1 + 2 * JOSE_ES256_COORD];
	EVP_PKEY *key = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	pub[0] = 0x04; /* uncompressed */
	if (!member_is(jwk, "crv", "P-256") || member_bytes(jwk, "x", pub + 1, JOSE_ES256_COORD) != JOSE_ES256_COORD ||
	    member_bytes(jwk, "y", pub + 1 + JOSE_ES256_COORD, JOSE_ES256_COORD) != JOSE_ES256_COORD)
		goto out;
	if (!(bld = OSSL_PARAM_BLD_new()) ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)) != 1)
		goto out;
	key = key_from("EC", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	return key;
}

static EVP_PKEY *ed25519_key(const json_t *jwk)
{
	uint8_t x[JOSE_ED25519_KEY];
	EVP_PKEY *key = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	if (!member_is(jwk, "crv", "Ed25519") || member_bytes(jwk, "x", x, sizeof(x)) != JOSE_ED25519_KEY)
		goto out;
	if (!(bld = OSSL_PARAM_BLD_new()) ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, x, sizeof(x)) != 1)
		goto out;
	key = key_from("ED25519", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	return key;
}

int jose_jwk_fits(const json_t *jwk, enum jose_alg alg)
{
	const json_t *a = json_object_get(jwk, "alg"), *use = json_object_get(jwk, "use");
	if (!json_is_object(jwk) || json_object_get(jwk, "d"))
		return 0;
	if ((a && !member_is(jwk, "alg", alg_name(alg))) || (use && !member_is(jwk, "use", "sig")))
		return 0;
	switch (alg) {
	case JOSE_RS256:
	case JOSE_PS256: return member_is(jwk, "kty", "RSA");
	case JOSE_ES256: return member_is(jwk, "kty", "EC");
	case JOSE_EDDSA: return member_is(jwk, "kty", "OKP");
	}
	return 0;
}

int jose_jwk_key(const json_t *jwk, enum jose_alg alg, EVP_PKEY **out)
{
	*out = NULL;
	if (!jose_jwk_fits(jwk, alg))
		return -1;
	switch (alg) {
	case JOSE_RS256:
	case JOSE_PS256: *out = member_is(jwk, "kty", "RSA") ? rsa_key(jwk) : NULL; break;
	case JOSE_ES256: *out = member_is(jwk, "kty", "EC") ? ec_key(jwk) : NULL; break;
	case JOSE_EDDSA: *out = member_is(jwk, "kty", "OKP") ? ed25519_key(jwk) : NULL; break;
	}
	return *out ? 0 : -1;
}

/* ---- verification ------------------------------------------------------- */

/* 1 when key is of the type alg needs (a P-256 key for ES256). */
static int key_fits(enum jose_alg alg, EVP_PKEY *key)
{
	char group[32] = "";
	switch (alg) {
	case JOSE_RS256:
	case JOSE_PS256: return EVP_PKEY_is_a(key, "RSA");
	case JOSE_ES256:
		return EVP_PKEY_is_a(key, "EC") &&
		       EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) ==
			       1 &&
		       strcmp(group, "prime256v1") == 0;
	case JOSE_EDDSA: return EVP_PKEY_is_a(key, "ED25519");
	}
	return 0;
}

/* The DER ECDSA-Sig-Value of a JOSE r||s signature; its length, or -1. */
static int es256_der(const uint8_t *sig, uint8_t **der)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, JOSE_ES256_COORD, NULL),
	       *s = BN_bin2bn(sig + JOSE_ES256_COORD, JOSE_ES256_COORD, NULL);
	int len = -1;
	*der = NULL;
	if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
		BN_free(r);
		BN_free(s);
		goto out;
	}
	len = i2d_ECDSA_SIG(es, der);
out:
	ECDSA_SIG_free(es);
	return len;
}

int jose_verify(enum jose_alg alg, EVP_PKEY *key, const void *input, size_t len, const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *mctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	uint8_t *der = NULL;
	int rc = -1;
	if (!key || !key_fits(alg, key))
		goto out;
	if ((alg == JOSE_RS256 || alg == JOSE_PS256) && sig_len != (size_t)EVP_PKEY_get_size(key))
		goto out;
	if (alg == JOSE_EDDSA && sig_len != 64)
		goto out;
	if (alg == JOSE_ES256) {
		int dl = sig_len == 2 * JOSE_ES256_COORD ? es256_der(sig, &der) : -1;
		if (dl <= 0)
			goto out;
		sig = der;
		sig_len = (size_t)dl;
	}
	if (!(mctx = EVP_MD_CTX_new()) ||
	    EVP_DigestVerifyInit_ex(mctx, &pctx, alg == JOSE_EDDSA ? NULL : "SHA256", NULL, NULL, key, NULL) != 1)
		goto out;
	if (alg == JOSE_PS256 && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
				  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
				  EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) != 1))
		goto out;
	if (alg == JOSE_RS256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
		goto out;
	if (EVP_DigestVerify(mctx, sig, sig_len, input, len) == 1)
		rc = 0;
out:
	EVP_MD_CTX_free(mctx);
	OPENSSL_free(der);
	return rc;
}

/* ---- RFC 7638 thumbprint ------------------------------------------------ */

/* Appends "name":"value" for a member that is a non-empty string of
 * base64url characters ("P-256" and "RSA" among them): nothing to escape. */
static int add_member(struct buf *b, const json_t *jwk, const char *name, int first)
{
	const char *v = json_string_value(json_object_get(jwk, name));
	size_t n = v ? strlen(v) : 0;
	if (n == 0 || n > JOSE_MEMBER_MAX ||
	    strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != n)
		return -1;
	return buf_printf(b, "%s\"%s\":\"%s\"", first ? "{" : ",", name, v);
}

int jose_jwk_thumbprint(const json_t *jwk, char out[44])
{
	static const char *const rsa[] = { "e", "kty", "n", NULL };
	static const char *const ec[] = { "crv", "kty", "x", "y", NULL };
	static const char *const okp[] = { "crv", "kty", "x", NULL };
	const char *const *names = member_is(jwk, "kty", "RSA")   ? rsa
				   : member_is(jwk, "kty", "EC")  ? ec
				   : member_is(jwk, "kty", "OKP") ? okp
								  : NULL;
	uint8_t h[CRYPTO_SHA256_LEN];
	struct buf b;
	int rc = -1;
	buf_init(&b, 4 * JOSE_MEMBER_MAX);
	out[0] = '\0';
	for (size_t i = 0; names && names[i]; i++)
		if (add_member(&b, jwk, names[i], i == 0) < 0)
			goto out;
	if (!names || buf_adds(&b, "}") < 0)
		goto out;
	crypto_sha256(b.ptr, b.len, h);
	crypto_b64url_encode(h, sizeof(h), out);
	rc = 0;
out:
	buf_free(&b);
	return rc;
}
