/* private_key_jwt client authentication (RFC 7523 section 2.2, RFC 7521):
 * client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
 * and client_assertion, a JWS signed with one of the client's keys.
 * iss = sub = client_id; aud names the token endpoint or the issuer; exp is
 * required and at most LIM_ASSERTION_LIFETIME_S ahead; iat and nbf are
 * honoured; jti is required and accepted once across every node
 * (client_assertion_jtis). Skew of LIM_ASSERTION_LEEWAY_S is allowed. */
#ifndef MCPB_CLIENT_ASSERTION_H
#define MCPB_CLIENT_ASSERTION_H
#include <jansson.h>
#include "client.h"
#include "db.h"
#include "http.h"
#include "jose.h"

#define CLIENT_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

enum client_assertion {
	CLA_OK = 0,
	CLA_INVALID,     /* answer invalid_client */
	CLA_UNAVAILABLE, /* database, allocation, fetch slots: answer 503 */
};

/* Authenticates the client of r by the assertion (NUL-terminated, from the
 * form); form_id is the form's client_id or NULL, and must equal iss when
 * given. On CLA_OK *out is the client (confidential set: it proved a key)
 * and the jti is spent; otherwise *out is all zero and nothing was written.
 * The reason of a refusal is logged, never answered. */
enum client_assertion client_assertion_verify(struct http_req *r, struct db_conn *c, const char *assertion,
					      const char *form_id, struct client *out) WUR;

/* ---- the pure steps, exposed for unit tests ---- */

/* The claims' rules for client_id at time now against the audiences
 * aud[0..n_aud): NULL, or a fixed reason. */
const char *client_assertion_claims_check(const json_t *claims, const char *client_id, long long now,
					  const char *const *aud, size_t n_aud) WUR;

/* 0 when a key of jwks (JSON text) verifies j: the key whose kid is j's
 * kid when j names one, else every key that fits j's algorithm in turn.
 * -1 otherwise (no such key, unfit key, bad signature, bad JWKS). */
int client_assertion_signature_check(const struct jws *j, const char *jwks) WUR;

#endif
