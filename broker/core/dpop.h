/* DPoP proofs (RFC 9449): a client proves possession of a key with a JWT
 * signed by it on every token request and every request carrying a
 * DPoP-bound access token. This module verifies one proof against what the
 * request was (method, URL, access token, bound key, nonce), remembers the
 * proof's jti in this node's memory for as long as the proof could be
 * accepted (no database: it runs on the proxy's hot path), and makes and
 * checks the nonces a server may demand (stateless: an HMAC of a time slot
 * under a key every node derives from the same secret, so a nonce issued by
 * one node is good at all, and it bounds how long another node, which has
 * not seen the jti, could accept a replay). */
#ifndef MCPB_DPOP_H
#define MCPB_DPOP_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "buf.h" /* WUR */
#include "config.h"
#include "crypto.h"
#include "lim.h"

#define DPOP_JKT_LEN 43      /* an RFC 7638 SHA-256 thumbprint, base64url */
#define DPOP_NONCE_LEN 32    /* base64url of an 8-byte slot and a 16-byte MAC */
#define DPOP_FUTURE_S 10     /* clock skew: an iat at most this far ahead */
#define DPOP_RSA_N_CHARS 683 /* base64url of a 4096-bit modulus */
/* What metadata advertises (dpop_signing_alg_values_supported). */
#define DPOP_ALGS "RS256 PS256 ES256 EdDSA"

/* What the proof must match. */
/* Each endpoint kind remembers jtis apart, so that a flood of proofs
 * anybody can make at the token endpoint (a key of one's own and a client
 * id suffice) cannot fill the memory the proxy's requests need. */
enum dpop_space {
	DPOP_SPACE_TOKEN = 0,
	DPOP_SPACE_RESOURCE,
	DPOP_SPACES,
};

/* A verified proof whose jti is still to be recorded (dpop_record): its
 * keyed hashes, made once. */
struct dpop_pending {
	int set;
	enum dpop_space space;
	long window_s;
	uint64_t h, k; /* of (jkt, jti) and of jkt */
};

struct dpop_expect {
	enum dpop_space space;
	const char *htm;          /* the request's method */
	const char *htu;          /* the request's URL: public_url and the decoded path (a query is ignored) */
	const char *access_token; /* non-NULL: ath must be its hash */
	const char *jkt;          /* non-NULL: the proof's key must have this thumbprint */
	const uint8_t *nonce_key; /* non-NULL: the proof must carry a current nonce made under it */
	long nonce_ttl_s;         /* a nonce's slot length (it is good for one to two) */
	long max_age_s;           /* iat at most this old */
	time_t now;
	/* NULL: the jti is recorded by dpop_verify. Else it is only checked,
	 * and *pending filled for dpop_record once the request succeeded (the
	 * token endpoint: a proof anybody can make with a key of their own
	 * then takes no room unless it got tokens). */
	struct dpop_pending *pending;
};

enum dpop_rc {
	DPOP_OK = 0,
	DPOP_INVALID, /* invalid_dpop_proof: *why says what */
	DPOP_NONCE,   /* use_dpop_nonce: valid but without a current nonce */
};

/* Verifies proof (the DPoP header's value) against e: a compact JWS with
 * typ "dpop+jwt", an alg of jose.h, a public jwk in its header that signed
 * it; claims jti (1..LIM_DPOP_JTI), htm equal to e->htm, htu equal to
 * e->htu once both are normalised (scheme and host lowercase, default port
 * dropped, query and fragment ignored), iat within [now - max_age_s,
 * now + DPOP_FUTURE_S], ath and nonce as e asks. Last, its jti must not
 * have been accepted on this node within the window (in e->space): then it
 * is recorded. A space that holds its maximum of jtis refuses proofs (fail
 * closed) until its older generation turns over.
 * DPOP_OK with jkt_out the key's thumbprint; else *why is a fixed text. */
enum dpop_rc dpop_verify(const char *proof, const struct dpop_expect *e, char jkt_out[DPOP_JKT_LEN + 1],
			 const char **why) WUR;

/* Records the jti of a proof dpop_verify checked with e->pending: 0, or
 * -1 with *why (recorded meanwhile, the key's share used, or full). */
int dpop_record(const struct dpop_pending *p, const char **why) WUR;

/* The expectation of a proof for (htm, htu) under cfg's dpop settings
 * (nonce key when required, slot length, max age, now); the caller adds
 * access_token, jkt and pending as the endpoint needs. */
struct dpop_expect dpop_expect_for(const struct config *cfg, enum dpop_space space, const char *htm, const char *htu);
/* With dpop.require_nonce, a current nonce into out: 0; else (or on
 * failure) -1. What every DPoP-Nonce header of the broker carries. */
int dpop_current_nonce(const struct config *cfg, char out[DPOP_NONCE_LEN + 1]) WUR;

/* A nonce for now under key (slot length ttl_s) into out. 0, or -1. */
int dpop_nonce(const uint8_t key[CRYPTO_KEY_LEN], long ttl_s, time_t now, char out[DPOP_NONCE_LEN + 1]) WUR;
/* 1 when nonce was made under key in the current slot or the one before. */
int dpop_nonce_ok(const uint8_t key[CRYPTO_KEY_LEN], long ttl_s, time_t now, const char *nonce);

/* 1 when a proof's htu names request_url: both normalised as above, the
 * htu's path percent-decoded first, since request_url's path is the one
 * the server decoded, routed and forwards (so "/mcp/a%20b" and "/mcp/a b"
 * name the same request, as they do for the broker). */
int dpop_htu_matches(const char *htu, const char *request_url);

/* Forgets every recorded jti and built key, and sets the memory's bounds:
 * jtis per generation and per key (0: the defaults). Tests. */
void dpop_replay_reset(size_t max, size_t per_key);

#endif
