/* The OAuth client model: what the broker knows of one client, however it
 * was registered (configuration, RFC 7591, a Client ID Metadata Document).
 * Depends on core only: no database, no HTTP. */
#ifndef MCPB_CLIENT_H
#define MCPB_CLIENT_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "buf.h"
#include "config.h"
#include "crypto.h"
#include "lim.h"

struct client {
	char client_id[LIM_CLIENT_ID + 1];
	char kind[8]; /* static, dynamic, cimd */
	char *name;   /* may be NULL */
	char **redirect_uris;
	size_t n_redirect_uris;
	int confidential; /* has a secret; after private_key_jwt: proved a key */
	uint8_t secret_hash[CRYPTO_SHA256_LEN];
	int disabled;
	/* private_key_jwt (RFC 7523): the client authenticates only by a signed
	 * assertion, verified with its JWKS: inline (jwks, JSON text) or at
	 * jwks_uri (fetched like a CIMD document). One of them when set. */
	int private_key_jwt;
	char *jwks;
	char *jwks_uri;
	/* The grant types its clients row registered (RFC 7591 grant_types),
	 * read with the client by clients_lookup: CLIENT_GT_* bits, valid when
	 * grant_types_known (a client without a row has them all). */
	int grant_types_known;
	unsigned grant_types;
};

#define CLIENT_GT_CODE 1u
#define CLIENT_GT_REFRESH 2u
#define CLIENT_GT_CLIENT_CREDENTIALS 4u
#define CLIENT_GT_JWT_BEARER 8u /* never in CLIENT_GT_ALL: configured clients only */
#define CLIENT_GT_ALL 7u
/* The CLIENT_GT_ bit of an RFC 6749 grant_type name (0: none). */
unsigned client_grant_type_bit(const char *name);

/* How a client lookup ended (store/clients.h, oauth/cimd.h,
 * oauth/client_resolve.h). Anything but CLIENT_FOUND leaves the client
 * all zero. */
enum client_find {
	CLIENT_FOUND = 0,   /* filled in, enabled or not: check ->disabled */
	CLIENT_UNKNOWN,     /* no usable client by that id */
	CLIENT_UNAVAILABLE, /* database error, allocation failure, fetches saturated: answer 503 */
};

/* Frees what cl owns, wipes the secret hash and zeroes *cl. An all-zero
 * client may be freed, and freed again. */
void client_free(struct client *cl);

/* Sets cl's private_key_jwt keys to copies of jwks (JSON text) or
 * jwks_uri, exactly one non-NULL. 0, or -1 on allocation failure. */
int client_set_keys(struct client *cl, const char *jwks, const char *jwks_uri) WUR;

/* *dst = a deep copy of src (dst's old contents are not freed). 0, or -1
 * on allocation failure with *dst all zero. */
int client_copy(struct client *dst, const struct client *src) WUR;

/* 1 when id can be a client_id at all: 1..LIM_CLIENT_ID bytes of VSCHAR
 * (RFC 6749 appendix A.1). Anything else is nobody's id. */
int client_id_ok(const char *id);

/* Replaces cl's redirect URIs with copies of uris[0..n). 0, or -1 on
 * allocation failure with cl holding none. */
int client_set_uris(struct client *cl, const char *const *uris, size_t n) WUR;
/* The same from a JSON array of 1..LIM_REDIRECT_URIS strings; -1 for
 * anything else. */
int client_set_uris_json(struct client *cl, const json_t *uris) WUR;

/* 1 when uri is one of cl's redirect URIs (loopback: any port, RFC 8252 7.3). */
int client_redirect_ok(const struct client *cl, const char *uri);

/* 1 when the registration policy allows this kind of redirect URI: https
 * always; loopback http and private-use schemes as configured. */
int client_redirect_policy_ok(const struct config *cfg, const char *uri);

#endif
