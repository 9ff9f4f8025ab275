/* JOSE for verifying signed JWTs (RFC 7515 JWS compact serialisation,
 * RFC 7517 JWK, RFC 7518/8037 algorithms, RFC 7638 thumbprints). Pure:
 * no I/O. Only asymmetric signature algorithms exist here: "none" and
 * HS* are not algorithms this module knows, so no caller can accept them. */
#ifndef MCPB_JOSE_H
#define MCPB_JOSE_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "buf.h"

enum jose_alg {
	JOSE_RS256 = 1,
	JOSE_PS256,
	JOSE_ES256,
	JOSE_EDDSA, /* Ed25519 only */
};

/* A parsed compact JWS. header and payload are JSON objects (jparse,
 * LIM_JSON_DEPTH); input points into the parsed text (the signing input,
 * "header.payload"); sig is owned. kid is the header's kid or NULL. */
struct jws {
	json_t *header, *payload;
	const char *input;
	size_t input_len;
	uint8_t *sig;
	size_t sig_len;
	enum jose_alg alg;
	const char *kid;
};

/* Parses s[0..len) (at most LIM_JWS_BYTES) into *out: three strict
 * base64url segments, a header object whose alg is one of enum jose_alg
 * with a string kid (<= LIM_JWK_KID) if any and no "crit", and a payload
 * object. 0, or -1 with *out all zero. */
int jose_parse(const char *s, size_t len, struct jws *out) WUR;
/* Frees what j owns and zeroes it; a zeroed jws may be freed again. */
void jose_free(struct jws *j);

/* The algorithm named name ("RS256", "PS256", "ES256", "EdDSA"): 0, or -1
 * for anything else ("none", "HS256", ...). */
int jose_alg_parse(const char *name, enum jose_alg *out) WUR;

/* A public key from a JWK that fits alg: RSA n/e (2048..8192 bits) for
 * RS256 and PS256, EC P-256 x/y for ES256, OKP Ed25519 x for EdDSA. A JWK
 * whose kty, crv, "alg" (when present) or "use" (when present, must be
 * "sig") does not fit, or that holds a private part ("d"), is refused.
 * 0 with *out a new key, or -1 with *out NULL. */
int jose_jwk_key(const json_t *jwk, enum jose_alg alg, EVP_PKEY **out) WUR;
/* The member checks of jose_jwk_key without building the key: 1 when jwk
 * is an object without "d" whose kty, "alg" and "use" fit alg. (Its key
 * members are judged only by building it.) */
int jose_jwk_fits(const json_t *jwk, enum jose_alg alg);

/* 0 when sig is a valid alg signature of input[0..len) by key (ES256: the
 * 64-byte JOSE r||s form), -1 otherwise (key of another type included). */
int jose_verify(enum jose_alg alg, EVP_PKEY *key, const void *input, size_t len, const uint8_t *sig,
		size_t sig_len) WUR;

/* The RFC 7638 thumbprint of a public JWK (RSA, EC or OKP): base64url of
 * SHA-256 of its required members in lexicographic order; out holds 44
 * bytes. 0, or -1 for a JWK without them. */
int jose_jwk_thumbprint(const json_t *jwk, char out[44]) WUR;

#endif
