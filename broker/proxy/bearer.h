/* Bearer authentication of proxied resources (RFC 6750): the access token
 * of an Authorization header, its validation (the node's cache, then the
 * database) and the challenge that answers a missing or refused one. */
#ifndef MCPB_BEARER_H
#define MCPB_BEARER_H
#include "app.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "grant.h"
#include "http.h"

/* The token of an Authorization value: what follows "Bearer " (RFC 6750)
 * or "DPoP " (RFC 9449 section 7.1; *dpop set to 1), scheme
 * case-insensitive, 1..LIM_TOKEN bytes; NULL when the value is not that. */
const char *bearer_token(const char *authorization, int *dpop);

enum bearer_rc {
	BEARER_VALID,       /* *ti filled */
	BEARER_INVALID,     /* unknown, expired or revoked */
	BEARER_UNAVAILABLE, /* the database could not answer */
};

/* Validates one of the broker's access tokens through the node's cache
 * (evicted on every revocation), else the database (a pooled connection is
 * acquired into *c when it is NULL; the caller releases it). hash gets the
 * token's SHA-256 hex ("" when the token is not an access token). */
enum bearer_rc bearer_validate(struct app *app, struct db_conn **c, const char *token, struct token_info *ti,
			       char hash[65]) WUR;

/* Answers r with status and a WWW-Authenticate challenge naming res's
 * protected-resource metadata (RFC 9728 5.1), the scope to ask for (NULL:
 * the resource's default scopes; "": none) and the error code (NULL: none),
 * with a JSON-RPC error body. The scheme is DPoP (with the algs it takes,
 * RFC 9449 section 7.1) where the resource requires DPoP or the request
 * presented a DPoP token, else Bearer. */
void bearer_challenge(struct http_req *r, const struct cfg_resource *res, int status, const char *error,
		      const char *scope);

/* A refused DPoP proof: 401 with a DPoP challenge whose error is error
 * (invalid_dpop_proof, or use_dpop_nonce with a fresh DPoP-Nonce header)
 * and error_description description (a fixed text). */
void bearer_dpop_refused(struct http_req *r, const struct cfg_resource *res, const char *error,
			 const char *description);

#endif
