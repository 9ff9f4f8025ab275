/* vault.c: sealing at rest. A sealed value opens to what was sealed, only
 * under its key and its associated data (row and purpose); a flipped bit
 * anywhere, a truncated or malformed blob, or an unknown key id opens to
 * nothing; after a key rotation the configuration's keys open both the old
 * and the new blobs by the key id stored beside them. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "test.h"
#include "vault.h"

#define GID "0b6f1c2e-8d4a-4f3b-9a51-2c7e6d5f4a3b"

static int opens_to(const uint8_t *key, const char *aad, const char *hex, const char *want)
{
	size_t n = 0;
	char *pt = vault_open_key(key, aad, hex, &n);
	int ok = pt && want && n == strlen(want) && strcmp(pt, want) == 0;
	if (!want)
		ok = pt == NULL;
	vault_free(pt);
	return ok;
}

static void with_key(void)
{
	uint8_t k1[CRYPTO_KEY_LEN], k2[CRYPTO_KEY_LEN];
	memset(k1, 0x11, sizeof(k1));
	memset(k2, 0x22, sizeof(k2));
	const char *secret = "gho_upstream-access-token";
	char *blob = vault_seal_key(k1, GID ":access", secret, strlen(secret));
	CHECK(blob != NULL);
	if (!blob)
		return;
	/* "\x" || version(1) || nonce(12) || ciphertext || tag(16), in hex. */
	CHECK(strncmp(blob, "\\x01", 4) == 0);
	CHECK(strlen(blob) == 2 + 2 * (1 + 12 + strlen(secret) + 16));
	CHECK(opens_to(k1, GID ":access", blob, secret));

	/* A fresh nonce each time: the same plaintext never seals the same. */
	char *again = vault_seal_key(k1, GID ":access", secret, strlen(secret));
	CHECK(again && strcmp(again, blob) != 0);
	free(again);

	CHECK(opens_to(k2, GID ":access", blob, NULL));                                 /* wrong key */
	CHECK(opens_to(k1, GID ":refresh", blob, NULL));                                /* another purpose */
	CHECK(opens_to(k1, "7d1e2f3a-4b5c-4d6e-8f70-819a2b3c4d5e:access", blob, NULL)); /* another row */

	/* Every byte matters: version, nonce, ciphertext, tag. */
	size_t len = strlen(blob);
	int refused = 0, tried = 0;
	for (size_t i = 2; i < len; i++) {
		char saved = blob[i];
		blob[i] = saved == '0' ? '1' : '0';
		refused += opens_to(k1, GID ":access", blob, NULL);
		tried++;
		blob[i] = saved;
	}
	CHECK(refused == tried);
	CHECK(opens_to(k1, GID ":access", blob, secret)); /* restored intact */

	/* Malformed blobs. */
	blob[len - 2] = '\0'; /* one byte short */
	CHECK(opens_to(k1, GID ":access", blob, NULL));
	blob[len - 1] = '\0';
	CHECK(opens_to(k1, GID ":access", blob + 2, NULL)); /* no \x */
	CHECK(opens_to(k1, GID ":access", "\\x01", NULL));  /* too short for nonce and tag */
	CHECK(opens_to(k1, GID ":access", "\\x0", NULL));   /* odd digits */
	CHECK(opens_to(k1, GID ":access", "\\xzz", NULL));  /* not hex */
	CHECK(opens_to(k1, GID ":access", "", NULL));
	CHECK(vault_open_key(k1, GID ":access", NULL, NULL) == NULL);
	free(blob);

	/* A sealed NUL byte would hide the rest of the plaintext from
	 * vault_free's wipe: such a value does not open. */
	blob = vault_seal_key(k1, GID ":access", "ab\0cd", 5);
	CHECK(blob && opens_to(k1, GID ":access", blob, NULL));
	free(blob);
}

static void rotation(void)
{
	struct cfg_key keys[2];
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	memset(keys, 0, sizeof(keys));
	keys[0].id = "old";
	memset(keys[0].key, 0x33, CRYPTO_KEY_LEN);
	keys[1].id = "older";
	memset(keys[1].key, 0x44, CRYPTO_KEY_LEN);
	cfg.encryption_keys = keys;
	cfg.n_encryption_keys = 1;

	const char *kid = NULL;
	char *under_old = vault_seal(&cfg, GID, "refresh", "r-token", &kid);
	CHECK(under_old != NULL);
	CHECK_STR(kid, "old");

	/* Rotation: a new active key first, the old one still listed. */
	struct cfg_key rotated[2] = { { "new", { 0 } }, keys[0] };
	memset(rotated[0].key, 0x55, CRYPTO_KEY_LEN);
	cfg.encryption_keys = rotated;
	cfg.n_encryption_keys = 2;
	char *under_new = vault_seal(&cfg, GID, "refresh", "r-token", &kid);
	CHECK(under_new != NULL);
	CHECK_STR(kid, "new");

	char *pt = vault_open(&cfg, "old", GID, "refresh", under_old);
	CHECK_STR(pt, "r-token");
	vault_free(pt);
	pt = vault_open(&cfg, "new", GID, "refresh", under_new);
	CHECK_STR(pt, "r-token");
	vault_free(pt);
	/* The key is found by its id, not tried in turn. */
	CHECK(vault_open(&cfg, "new", GID, "refresh", under_old) == NULL);
	CHECK(vault_open(&cfg, "older", GID, "refresh", under_old) == NULL); /* not configured */
	CHECK(vault_open(&cfg, "old", GID, "access", under_old) == NULL);    /* wrong purpose */
	/* The old key dropped from the configuration: its blobs are unreadable. */
	cfg.n_encryption_keys = 1;
	CHECK(vault_open(&cfg, "old", GID, "refresh", under_old) == NULL);

	/* Associated data longer than its buffer is refused, not truncated. */
	char long_id[200];
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	CHECK(vault_seal(&cfg, long_id, "access", "x", &kid) == NULL);
	free(under_old);
	free(under_new);
}

int main(void)
{
	with_key();
	rotation();

	char hex[67];
	vault_hash_hex("abc", hex);
	CHECK_STR(hex, "\\xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

	char a[37], b[37];
	CHECK(vault_uuid(a) == 0 && vault_uuid(b) == 0);
	CHECK(strlen(a) == 36 && a[14] == '4' && strchr("89ab", a[19]) != NULL && strcmp(a, b) != 0);
	TEST_DONE();
}
