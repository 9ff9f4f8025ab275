/* Encryption at rest. Upstream tokens are sealed with AES-256-GCM under the
 * active key (encryption_keys[0]); the blob is version(1) || nonce(12) ||
 * ciphertext || tag(16) and the associated data binds it to its row and
 * purpose ("<grant id>:access"), so a ciphertext moved elsewhere fails to
 * open. Blobs travel to and from libpq as bytea hex text ("\x..."). */
#ifndef MCPB_VAULT_H
#define MCPB_VAULT_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"
#include "crypto.h"

struct config;

/* Seals pt under key with aad; returns malloc'd "\x<hex>" or NULL (out of
 * memory, no randomness). */
char *vault_seal_key(const uint8_t key[CRYPTO_KEY_LEN], const char *aad, const void *pt, size_t n) WUR;
/* Opens a "\x<hex>" blob; returns malloc'd NUL-terminated plaintext (free
 * with vault_free), or NULL when it is malformed, longer than 1 MiB of hex,
 * does not authenticate, holds a NUL byte, or memory ran out. */
char *vault_open_key(const uint8_t key[CRYPTO_KEY_LEN], const char *aad, const char *hex, size_t *n) WUR;

/* The same under the configuration's keys: seal with the active key (its id
 * in *key_id), open with the key named key_id. AAD = "<id>:<purpose>". */
char *vault_seal(const struct config *cfg, const char *id, const char *purpose, const char *pt,
		 const char **key_id) WUR;
char *vault_open(const struct config *cfg, const char *key_id, const char *id, const char *purpose,
		 const char *hex) WUR;

/* Wipes and frees a plaintext returned by vault_open*. */
void vault_free(char *pt);

/* SHA-256 of a secret as bytea hex text "\x..." in out[67]. */
void vault_hash_hex(const char *secret, char out[67]);

/* The purpose (with the grant id, the associated data) under which a
 * connected account's token of kind "access" or "refresh" is sealed:
 * "<upstream>:<kind>" in out[96]. */
void vault_connection_purpose(char out[96], const char *upstream, const char *kind);

/* A random UUID (v4) in out[37]. */
int vault_uuid(char out[37]) WUR;

#endif
