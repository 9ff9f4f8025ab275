#include "crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

int crypto_random(void *out, size_t n)
{
	if (n > INT32_MAX)
		return -1;
	return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
}

void crypto_wipe(void *p, size_t n)
{
	if (p)
		OPENSSL_cleanse(p, n);
}

/* The algorithms, fetched once from the default provider: OpenSSL 3
 * fetches EVP_sha256() and EVP_aes_256_gcm() again on every use, searching
 * its provider tables under a lock (0.6 us a digest, 0.9 us a seal here;
 * as much as an HKDF derivation for its fetch). Kept for the process's
 * life; where a fetch failed, the implicit one is used. */
static EVP_MD *sha256_impl;
static EVP_CIPHER *gcm_impl;
static EVP_KDF *hkdf_impl;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static void fetch_all(void)
{
	sha256_impl = EVP_MD_fetch(NULL, "SHA256", NULL);
	gcm_impl = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	hkdf_impl = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

static const EVP_MD *sha256(void)
{
	pthread_once(&fetch_once, fetch_all);
	return sha256_impl ? sha256_impl : EVP_sha256();
}

static const EVP_CIPHER *gcm(void)
{
	pthread_once(&fetch_once, fetch_all);
	return gcm_impl ? gcm_impl : EVP_aes_256_gcm();
}

void crypto_sha256(const void *data, size_t n, uint8_t out[CRYPTO_SHA256_LEN])
{
	unsigned int len = 0;
	/* EVP_Digest cannot fail for SHA-256 short of memory exhaustion; then the
	 * output is zeroed, which no stored hash ever equals. */
	if (EVP_Digest(data, n, out, &len, sha256(), NULL) != 1)
		memset(out, 0, CRYPTO_SHA256_LEN);
}

void crypto_sha256_hex(const void *data, size_t n, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t d[CRYPTO_SHA256_LEN];
	crypto_sha256(data, n, d);
	for (size_t i = 0; i < sizeof(d); i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[64] = '\0';
}

int crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n, uint8_t out[CRYPTO_SHA256_LEN])
{
	unsigned int len = 0;
	if (keylen > INT32_MAX)
		return -1;
	return HMAC(sha256(), key, (int)keylen, data, n, out, &len) && len == CRYPTO_SHA256_LEN ? 0 : -1;
}

size_t crypto_b64url_len(size_t n)
{
	return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void crypto_b64url_encode(const void *in, size_t n, char *out)
{
	/* EVP_EncodeBlock writes padded base64 and a NUL; work in 48-byte chunks
	 * (64 characters) through a stack buffer, then drop padding and translate. */
	const unsigned char *p = in;
	unsigned char chunk[65];
	size_t o = 0;
	while (n > 0) {
		size_t take = n > 48 ? 48 : n;
		int w = EVP_EncodeBlock(chunk, p, (int)take);
		while (w > 0 && chunk[w - 1] == '=')
			w--;
		for (int i = 0; i < w; i++)
			out[o++] = (char)(chunk[i] == '+' ? '-' : chunk[i] == '/' ? '_' : chunk[i]);
		p += take;
		n -= take;
	}
	out[o] = '\0';
	OPENSSL_cleanse(chunk, sizeof(chunk));
}

/* Decodes padded standard base64 text of length len (multiple of 4) with the
 * EVP decoder, which handles '=' correctly. */
static long b64_decode_std(const char *in, size_t len, void *out, size_t outcap)
{
	if (len % 4 || len / 4 * 3 > outcap + 2 || len > INT32_MAX)
		return -1;
	unsigned char *tmp = OPENSSL_malloc(len / 4 * 3 + 3);
	if (!tmp)
		return -1;
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	long rc = -1;
	int n1 = 0, n2 = 0;
	if (!ctx)
		goto out;
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, tmp, &n1, (const unsigned char *)in, (int)len) < 0)
		goto out;
	if (EVP_DecodeFinal(ctx, tmp + n1, &n2) != 1)
		goto out;
	size_t total = (size_t)n1 + (size_t)n2; /* both >= 0, each <= len */
	if (total > outcap)
		goto out;
	memcpy(out, tmp, total);
	rc = n1 + n2;
out:
	EVP_ENCODE_CTX_free(ctx);
	OPENSSL_clear_free(tmp, len / 4 * 3 + 3);
	return rc;
}

long crypto_b64_decode(const char *in, size_t inlen, void *out, size_t outcap)
{
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
			 c == '/' || (c == '=' && i + 2 >= inlen);
		if (!ok)
			return -1;
	}
	return b64_decode_std(in, inlen, out, outcap);
}

long crypto_b64url_decode(const char *in, size_t inlen, void *out, size_t outcap)
{
	if (inlen % 4 == 1 || inlen > 4 * 1024 * 1024)
		return -1;
	size_t padded = (inlen + 3) / 4 * 4;
	char *tmp = OPENSSL_malloc(padded + 1);
	if (!tmp)
		return -1;
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			tmp[i] = c;
		else if (c == '-')
			tmp[i] = '+';
		else if (c == '_')
			tmp[i] = '/';
		else {
			OPENSSL_clear_free(tmp, padded + 1);
			return -1;
		}
	}
	for (size_t i = inlen; i < padded; i++)
		tmp[i] = '=';
	long rc = b64_decode_std(tmp, padded, out, outcap);
	OPENSSL_clear_free(tmp, padded + 1);
	/* Reject non-canonical text: unused low bits of the last character set. */
	if (rc >= 0 && inlen % 4) {
		size_t tail = (size_t)rc % 3;
		char enc[8];
		crypto_b64url_encode((const unsigned char *)out + (size_t)rc - tail, tail, enc);
		if (memcmp(enc, in + inlen - crypto_b64url_len(tail), crypto_b64url_len(tail)) != 0)
			return -1;
	}
	return rc;
}

int crypto_b64_encode(const void *in, size_t n, char *out, size_t outcap)
{
	if (n > INT32_MAX / 2 || (n + 2) / 3 * 4 + 1 > outcap)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return 0;
}

int crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	uint8_t ha[CRYPTO_SHA256_LEN], hb[CRYPTO_SHA256_LEN];
	unsigned int la = 0, lb = 0;
	/* A digest that failed (memory exhaustion) makes the two unequal: two
	 * zeroed outputs must not compare equal. */
	int ok = EVP_Digest(a, alen, ha, &la, sha256(), NULL) == 1;
	ok &= EVP_Digest(b, blen, hb, &lb, sha256(), NULL) == 1;
	int eq = ok && CRYPTO_memcmp(ha, hb, sizeof(ha)) == 0;
	OPENSSL_cleanse(ha, sizeof(ha));
	OPENSSL_cleanse(hb, sizeof(hb));
	return eq;
}

int crypto_token_new(const char *prefix, char *out, size_t outcap)
{
	uint8_t rnd[CRYPTO_TOKEN_RANDOM];
	size_t plen = strlen(prefix);
	if (plen + crypto_b64url_len(sizeof(rnd)) + 1 > outcap)
		return -1;
	if (crypto_random(rnd, sizeof(rnd)) < 0)
		return -1;
	memcpy(out, prefix, plen); /* NOLINT(bugprone-not-null-terminated-result): the encoder terminates */
	crypto_b64url_encode(rnd, sizeof(rnd), out + plen);
	OPENSSL_cleanse(rnd, sizeof(rnd));
	return 0;
}

int crypto_aead_seal(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen, const void *pt, size_t n,
		     uint8_t nonce[CRYPTO_NONCE_LEN], uint8_t *ct, uint8_t tag[CRYPTO_TAG_LEN])
{
	int rc = -1, len = 0;
	if (n > INT32_MAX || aadlen > INT32_MAX)
		return -1;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx || crypto_random(nonce, CRYPTO_NONCE_LEN) < 0)
		goto out;
	if (EVP_EncryptInit_ex(ctx, gcm(), NULL, key, nonce) != 1)
		goto out;
	if (aadlen && EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aadlen) != 1)
		goto out;
	if (EVP_EncryptUpdate(ctx, ct, &len, pt, (int)n) != 1)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, ct + len, &len) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}

int crypto_aead_open(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen,
		     const uint8_t nonce[CRYPTO_NONCE_LEN], const uint8_t *ct, size_t n,
		     const uint8_t tag[CRYPTO_TAG_LEN], uint8_t *pt)
{
	int rc = -1, len = 0;
	if (n > INT32_MAX || aadlen > INT32_MAX)
		return -1;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		goto out;
	if (EVP_DecryptInit_ex(ctx, gcm(), NULL, key, nonce) != 1)
		goto out;
	if (aadlen && EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aadlen) != 1)
		goto out;
	if (EVP_DecryptUpdate(ctx, pt, &len, ct, (int)n) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, (void *)tag) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, pt + len, &len) != 1) {
		OPENSSL_cleanse(pt, n);
		goto out;
	}
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}

int crypto_hkdf(const void *ikm, size_t ikmlen, const void *salt, size_t saltlen, const char *info, uint8_t *out,
		size_t outlen)
{
	int rc = -1;
	pthread_once(&fetch_once, fetch_all);
	/* Where the one fetch failed, one per call, as before. */
	EVP_KDF *own = hkdf_impl ? NULL : EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx = hkdf_impl || own ? EVP_KDF_CTX_new(hkdf_impl ? hkdf_impl : own) : NULL;
	if (!kctx)
		goto out;
	OSSL_PARAM params[5], *p = params;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikmlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, out, outlen, params) == 1)
		rc = 0;
out:
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(own);
	return rc;
}
