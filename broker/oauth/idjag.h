/* Identity Assertion JWT Authorization Grants (ID-JAG; SEP-990, the
 * enterprise-managed authorization of MCP): the assertion of a
 * grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer request (RFC 7523
 * section 2.1) at /token. An enterprise IdP in trusted_issuers issued it by
 * RFC 8693 token exchange, for one user, one client of ours and one of our
 * resources:
 *   header  typ "oauth-id-jag+jwt", alg RS256, PS256, ES256 or EdDSA (never
 *           none or HS*), signed by a key of the issuer's jwks_uri;
 *   claims  iss a trusted issuer, aud exactly our issuer (a string, or an
 *           array of that one string), client_id the authenticated client,
 *           resource one of our resource URLs, the issuer's subject claim,
 *           exp (at most LIM_IDJAG_LIFETIME_S ahead), iat, jti (single use
 *           across every node), scope optional; nbf honoured.
 * Every refusal is invalid_grant with a fixed reason. Verifying writes
 * nothing: the jti is spent (idjag_spend) in the transaction that issues
 * the token, so an assertion refused for any reason is not burnt. */
#ifndef MCPB_IDJAG_H
#define MCPB_IDJAG_H
#include <jansson.h>
#include "config.h"
#include "db.h"
#include "http.h"

#define IDJAG_TYP "oauth-id-jag+jwt"
#define LIM_IDJAG_LIFETIME_S 600

struct idjag {
	const struct cfg_trusted_issuer *ti;
	const struct cfg_resource *res;
	char resource[2048]; /* res's URL: the claim, canonical */
	char subject[256];
	char scope[LIM_SCOPE + 1]; /* the claim ("" when absent: has_scope 0) */
	int has_scope;
	char jti[LIM_ASSERTION_JTI + 1];
	long long exp;
};

enum idjag_rc {
	IDJAG_OK = 0,
	IDJAG_INVALID,     /* answer invalid_grant (why says which rule) */
	IDJAG_UNAVAILABLE, /* database, keys not fetchable now: 503 */
};

/* Verifies assertion for the authenticated client_id into *out. */
enum idjag_rc idjag_verify(struct http_req *r, struct db_conn *c, const char *assertion, const char *client_id,
			   struct idjag *out, const char **why) WUR;

/* Spends g's (issuer, jti) until its exp inside the caller's transaction
 * (single use across every node; a concurrent spender waits for it): 0,
 * 1 already spent, -1 on a database error. */
int idjag_spend(struct db_conn *c, const struct idjag *g) WUR;

/* ---- the pure rules, exposed for unit tests ---- */

/* The header's and claims' rules at time now for client_id, our issuer
 * self and the subject claim's name: NULL, or a fixed reason. */
const char *idjag_claims_check(const json_t *header, const json_t *claims, const char *self, const char *client_id,
			       const char *subject_claim, long long now) WUR;

#endif
