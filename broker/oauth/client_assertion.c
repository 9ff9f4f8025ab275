#include "client_assertion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cimd.h"
#include "client_resolve.h"
#include "crypto.h"
#include "jparse.h"
#include "lim.h"
#include "log.h"

/* ---- claims ------------------------------------------------------------- */

static int claim_is(const json_t *claims, const char *name, const char *want)
{
	const char *v = json_string_value(json_object_get(claims, name));
	return v && strcmp(v, want) == 0;
}

/* aud: a string or an array of strings, one of which is in aud[]. */
static int audience_ok(const json_t *claim, const char *const *aud, size_t n_aud)
{
	size_t n = json_is_array(claim) ? json_array_size(claim) : 1;
	if (n == 0 || n > LIM_ASSERTION_AUDS)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const char *v = json_string_value(json_is_array(claim) ? json_array_get(claim, i) : claim);
		for (size_t k = 0; v && k < n_aud; k++)
			if (strcmp(v, aud[k]) == 0)
				return 1;
	}
	return 0;
}

/* A NumericDate claim: -1 absent, 0 present and an integer (*v), 1 other. */
static int numeric_date(const json_t *claims, const char *name, long long *v)
{
	const json_t *c = json_object_get(claims, name);
	if (!c)
		return -1;
	if (!json_is_integer(c))
		return 1;
	*v = (long long)json_integer_value(c);
	return 0;
}

const char *client_assertion_claims_check(const json_t *claims, const char *client_id, long long now,
					  const char *const *aud, size_t n_aud)
{
	long long exp = 0, iat = 0, nbf = 0;
	const json_t *jti = json_object_get(claims, "jti");
	if (!claim_is(claims, "iss", client_id))
		return "iss is not the client_id";
	if (!claim_is(claims, "sub", client_id))
		return "sub is not the client_id";
	if (!audience_ok(json_object_get(claims, "aud"), aud, n_aud))
		return "aud names neither the token endpoint nor the issuer";
	if (numeric_date(claims, "exp", &exp) != 0)
		return "exp is missing or not a number";
	if (exp <= now - LIM_ASSERTION_LEEWAY_S) /* exp itself may be anything: never added to */
		return "the assertion has expired";
	if (exp > now + LIM_ASSERTION_LIFETIME_S + LIM_ASSERTION_LEEWAY_S)
		return "exp is too far ahead";
	int has_iat = numeric_date(claims, "iat", &iat), has_nbf = numeric_date(claims, "nbf", &nbf);
	if (has_iat > 0 || (has_iat == 0 && iat > now + LIM_ASSERTION_LEEWAY_S))
		return "iat is in the future";
	if (has_nbf > 0 || (has_nbf == 0 && nbf > now + LIM_ASSERTION_LEEWAY_S))
		return "the assertion is not yet valid";
	if (!json_is_string(jti) || json_string_length(jti) == 0 || json_string_length(jti) > LIM_ASSERTION_JTI)
		return "jti is missing or too long";
	return NULL;
}

/* ---- signature ---------------------------------------------------------- */

static int key_verifies(const struct jws *j, const json_t *jwk)
{
	EVP_PKEY *key = NULL;
	int rc = jose_jwk_key(jwk, j->alg, &key) == 0
			 ? jose_verify(j->alg, key, j->input, j->input_len, j->sig, j->sig_len)
			 : -1;
	EVP_PKEY_free(key);
	return rc;
}

int client_assertion_signature_check(const struct jws *j, const char *jwks)
{
	json_t *set = jwks ? jparse(jwks, strlen(jwks), 0, LIM_JSON_DEPTH) : NULL;
	const json_t *keys = json_object_get(set, "keys");
	int rc = -1;
	if (!json_is_array(keys) || json_array_size(keys) > LIM_JWKS_KEYS)
		goto out;
	for (size_t i = 0; rc < 0 && i < json_array_size(keys); i++) {
		const json_t *k = json_array_get(keys, i);
		const char *kid = json_string_value(json_object_get(k, "kid"));
		/* A kid names one key: no other is tried. */
		if (j->kid && (!kid || strcmp(kid, j->kid) != 0))
			continue;
		rc = key_verifies(j, k);
		if (j->kid)
			break;
	}
out:
	json_decref(set);
	return rc;
}

/* ---- the jti store ------------------------------------------------------ */

/* Spends client_id's jti until exp (+ leeway): 0, 1 when already spent
 * (a replay, on any node), -1 on a database error. */
static int jti_spend(struct db_conn *c, const char *client_id, const char *jti, long long exp)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO client_assertion_jtis(jti_hash, expires_at) VALUES ($1, to_timestamp($2::bigint)) "
		"ON CONFLICT (jti_hash) DO NOTHING RETURNING 1");
	struct buf b;
	char hash[65], exps[24];
	int rc = -1;
	buf_init(&b, LIM_CLIENT_ID + LIM_ASSERTION_JTI + 2);
	if (buf_printf(&b, "%s\n%s", client_id, jti) < 0)
		goto out;
	crypto_sha256_hex(b.ptr, b.len, hash);
	snprintf(exps, sizeof(exps), "%lld", exp + LIM_ASSERTION_LEEWAY_S);
	const char *p[] = { hash, exps };
	PGresult *res = db_exec_ok(c, &q, 2, p);
	if (res)
		rc = PQntuples(res) == 1 ? 0 : 1;
	PQclear(res);
out:
	buf_free(&b);
	return rc;
}

/* ---- the whole check ---------------------------------------------------- */

/* The client's JWKS text (inline, or fetched from its jwks_uri) into *jwks. */
static enum client_assertion client_keys(struct http_req *r, struct db_conn *c, const struct client *cl, char **jwks,
					 const char **why)
{
	*jwks = NULL;
	if (cl->jwks) {
		*jwks = strdup(cl->jwks);
		return *jwks ? CLA_OK : CLA_UNAVAILABLE;
	}
	enum client_find f = cimd_jwks(r->app, c, cl->jwks_uri, jwks, why);
	if (!*why)
		*why = "the client's jwks_uri could not be used";
	return f == CLIENT_FOUND ? CLA_OK : f == CLIENT_UNKNOWN ? CLA_INVALID : CLA_UNAVAILABLE;
}

/* The client the assertion names (iss; form_id, when given, must agree),
 * using private_key_jwt, into *out, and its JWKS text into *jwks. */
static enum client_assertion assertion_client(struct http_req *r, struct db_conn *c, const struct jws *j,
					      const char *form_id, struct client *out, char **jwks, const char **why)
{
	const char *iss = json_string_value(json_object_get(j->payload, "iss")), *ignored = NULL;
	if (!iss || (form_id && strcmp(form_id, iss) != 0)) {
		*why = "iss is missing or differs from client_id";
		return CLA_INVALID;
	}
	enum client_find found = client_resolve(r->app, c, iss, out, &ignored);
	if (found != CLIENT_FOUND) {
		*why = "unknown client";
		return found == CLIENT_UNAVAILABLE ? CLA_UNAVAILABLE : CLA_INVALID;
	}
	if (out->disabled || !out->private_key_jwt) {
		*why = "the client is disabled or does not use private_key_jwt";
		return CLA_INVALID;
	}
	return client_keys(r, c, out, jwks, why);
}

/* The claims' rules against this server's audiences, then the jti spent. */
static enum client_assertion claims_and_jti(struct http_req *r, struct db_conn *c, const struct jws *j,
					    const char *client_id, const char **why)
{
	struct buf tu;
	enum client_assertion rc = CLA_UNAVAILABLE;
	buf_init(&tu, LIM_PATH + 1024);
	if (buf_printf(&tu, "%s/token", r->app->cfg->public_url) < 0)
		goto out;
	const char *aud[] = { tu.ptr, r->app->cfg->public_url };
	rc = CLA_INVALID;
	if ((*why = client_assertion_claims_check(j->payload, client_id, (long long)time(NULL), aud, 2)))
		goto out;
	/* exp is within LIM_ASSERTION_LIFETIME_S of now here. */
	long long exp = (long long)json_integer_value(json_object_get(j->payload, "exp"));
	int spent = jti_spend(c, client_id, json_string_value(json_object_get(j->payload, "jti")), exp);
	if (spent == 1)
		*why = "the assertion's jti was already used";
	rc = spent == 0 ? CLA_OK : spent < 0 ? CLA_UNAVAILABLE : CLA_INVALID;
out:
	buf_free(&tu);
	return rc;
}

enum client_assertion client_assertion_verify(struct http_req *r, struct db_conn *c, const char *assertion,
					      const char *form_id, struct client *out)
{
	struct jws j;
	const char *why = NULL;
	char *jwks = NULL;
	enum client_assertion rc = CLA_INVALID;
	memset(out, 0, sizeof(*out));
	if (jose_parse(assertion, strlen(assertion), &j) < 0) {
		why = "the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA";
		goto out;
	}
	if ((rc = assertion_client(r, c, &j, form_id, out, &jwks, &why)) != CLA_OK)
		goto out;
	if (client_assertion_signature_check(&j, jwks) < 0) {
		why = "no key of the client verifies the signature";
		rc = CLA_INVALID;
		goto out;
	}
	if ((rc = claims_and_jti(r, c, &j, out->client_id, &why)) == CLA_OK)
		out->confidential = 1; /* it proved a key: token.c treats it as confidential */
out:
	if (rc == CLA_INVALID && why)
		log_msg(LOG_INFO, "client_assertion.refused", r->id, "%s", why);
	if (rc != CLA_OK)
		client_free(out);
	free(jwks);
	jose_free(&j);
	return rc;
}
