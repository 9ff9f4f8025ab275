#include "vault.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define VAULT_VERSION 1
#define VAULT_HEX_MAX (1024 * 1024) /* hex digits of one blob */

static char *to_hex(const uint8_t *b, size_t n)
{
	char *out = malloc(2 * n + 3);
	static const char hex[] = "0123456789abcdef";
	if (!out)
		return NULL;
	out[0] = '\\';
	out[1] = 'x';
	for (size_t i = 0; i < n; i++) {
		out[2 + 2 * i] = hex[b[i] >> 4];
		out[3 + 2 * i] = hex[b[i] & 15];
	}
	out[2 + 2 * n] = '\0';
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes libpq's bytea hex output into a malloc'd buffer. */
static uint8_t *from_hex(const char *s, size_t *n)
{
	if (!s || s[0] != '\\' || s[1] != 'x')
		return NULL;
	s += 2;
	size_t len = strlen(s);
	if (len % 2 || len > VAULT_HEX_MAX)
		return NULL;
	uint8_t *out = malloc(len / 2 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			free(out);
			return NULL;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*n = len / 2;
	return out;
}

char *vault_seal_key(const uint8_t key[CRYPTO_KEY_LEN], const char *aad, const void *pt, size_t n)
{
	size_t total = 1 + CRYPTO_NONCE_LEN + n + CRYPTO_TAG_LEN;
	uint8_t *blob = malloc(total);
	char *out = NULL;
	if (!blob)
		return NULL;
	blob[0] = VAULT_VERSION;
	if (crypto_aead_seal(key, aad, strlen(aad), pt, n, blob + 1, blob + 1 + CRYPTO_NONCE_LEN,
			     blob + 1 + CRYPTO_NONCE_LEN + n) == 0)
		out = to_hex(blob, total);
	free(blob); /* ciphertext only: nothing to wipe */
	return out;
}

char *vault_open_key(const uint8_t key[CRYPTO_KEY_LEN], const char *aad, const char *hex, size_t *np)
{
	size_t total = 0;
	uint8_t *blob = from_hex(hex, &total);
	char *pt = NULL;
	if (!blob)
		return NULL;
	if (total < 1 + CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN || blob[0] != VAULT_VERSION)
		goto out;
	size_t n = total - 1 - CRYPTO_NONCE_LEN - CRYPTO_TAG_LEN;
	pt = malloc(n + 1);
	if (!pt)
		goto out;
	/* A plaintext that does not authenticate may have been written before
	 * the tag was checked; every sealed value is text, and vault_free wipes
	 * up to its first NUL. */
	if (crypto_aead_open(key, aad, strlen(aad), blob + 1, blob + 1 + CRYPTO_NONCE_LEN, n,
			     blob + 1 + CRYPTO_NONCE_LEN + n, (uint8_t *)pt) < 0 ||
	    memchr(pt, '\0', n) != NULL) {
		OPENSSL_cleanse(pt, n);
		free(pt);
		pt = NULL;
		goto out;
	}
	pt[n] = '\0';
	if (np)
		*np = n;
out:
	free(blob);
	return pt;
}

char *vault_seal(const struct config *cfg, const char *id, const char *purpose, const char *pt, const char **key_id)
{
	char aad[128];
	if ((size_t)snprintf(aad, sizeof(aad), "%s:%s", id, purpose) >= sizeof(aad))
		return NULL;
	*key_id = cfg->encryption_keys[0].id;
	return vault_seal_key(cfg->encryption_keys[0].key, aad, pt, strlen(pt));
}

char *vault_open(const struct config *cfg, const char *key_id, const char *id, const char *purpose, const char *hex)
{
	char aad[128];
	if ((size_t)snprintf(aad, sizeof(aad), "%s:%s", id, purpose) >= sizeof(aad))
		return NULL;
	for (size_t i = 0; i < cfg->n_encryption_keys; i++)
		if (strcmp(cfg->encryption_keys[i].id, key_id) == 0)
			return vault_open_key(cfg->encryption_keys[i].key, aad, hex, NULL);
	return NULL;
}

void vault_free(char *pt)
{
	if (!pt)
		return;
	OPENSSL_cleanse(pt, strlen(pt));
	free(pt);
}

void vault_hash_hex(const char *secret, char out[67])
{
	out[0] = '\\';
	out[1] = 'x';
	crypto_sha256_hex(secret, strlen(secret), out + 2);
}

int vault_uuid(char out[37])
{
	uint8_t b[16];
	if (crypto_random(b, sizeof(b)) < 0)
		return -1;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
		 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

void vault_connection_purpose(char out[96], const char *upstream, const char *kind)
{
	snprintf(out, 96, "%s:%s", upstream, kind);
}
