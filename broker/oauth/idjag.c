#include "idjag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app.h"
#include "cimd.h"
#include "client_assertion.h"
#include "crypto.h"
#include "jose.h"
#include "lim.h"
#include "log.h"
#include "resources.h"

static int visible(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

/* typ, by RFC 7515 section 4.1.9: the media type, "application/" optional,
 * in any case. */
static int typ_ok(const json_t *header)
{
	const char *t = json_string_value(json_object_get(header, "typ"));
	if (t && strncasecmp(t, "application/", 12) == 0)
		t += 12;
	return t && strcasecmp(t, IDJAG_TYP) == 0;
}

/* aud names us, and only us. */
static int audience_ok(const json_t *aud, const char *self)
{
	if (json_is_array(aud))
		aud = json_array_size(aud) == 1 ? json_array_get(aud, 0) : NULL;
	const char *v = json_string_value(aud);
	return v && strcmp(v, self) == 0;
}

/* A NumericDate: -1 absent, 0 an integer (*v), 1 anything else. */
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

const char *idjag_claims_check(const json_t *header, const json_t *claims, const char *self, const char *client_id,
			       const char *subject_claim, long long now)
{
	long long exp = 0, iat = 0, nbf = 0;
	const json_t *jti = json_object_get(claims, "jti"), *scope = json_object_get(claims, "scope");
	if (!typ_ok(header))
		return "the assertion's typ is not " IDJAG_TYP;
	if (!json_is_string(json_object_get(claims, "iss")))
		return "iss is missing";
	if (!audience_ok(json_object_get(claims, "aud"), self))
		return "aud must name this authorization server, and only it";
	const char *cid = json_string_value(json_object_get(claims, "client_id"));
	if (!cid || strcmp(cid, client_id) != 0)
		return "client_id is not the authenticated client";
	if (!visible(json_string_value(json_object_get(claims, subject_claim)), 255))
		return "the subject claim is missing or invalid";
	if (!json_is_string(json_object_get(claims, "resource")))
		return "resource is missing";
	if (scope && (!json_is_string(scope) || json_string_length(scope) > LIM_SCOPE))
		return "scope is not a string of scopes";
	if (numeric_date(claims, "exp", &exp) != 0)
		return "exp is missing or not a number";
	if (exp <= now - LIM_ASSERTION_LEEWAY_S)
		return "the assertion has expired";
	if (exp > now + LIM_IDJAG_LIFETIME_S + LIM_ASSERTION_LEEWAY_S)
		return "exp is too far ahead";
	if (numeric_date(claims, "iat", &iat) != 0)
		return "iat is missing or not a number";
	if (iat > now + LIM_ASSERTION_LEEWAY_S)
		return "iat is in the future";
	int has_nbf = numeric_date(claims, "nbf", &nbf);
	if (has_nbf > 0 || (has_nbf == 0 && nbf > now + LIM_ASSERTION_LEEWAY_S))
		return "the assertion is not yet valid";
	if (!json_is_string(jti) || json_string_length(jti) == 0 || json_string_length(jti) > LIM_ASSERTION_JTI)
		return "jti is missing or too long";
	return NULL;
}

int idjag_spend(struct db_conn *c, const struct idjag *g)
{
	const char *iss = g->ti->issuer, *jti = g->jti;
	long long exp = g->exp;
	static struct db_stmt q = DB_STMT(
		"INSERT INTO client_assertion_jtis(jti_hash, expires_at) VALUES ($1, to_timestamp($2::bigint)) "
		"ON CONFLICT (jti_hash) DO NOTHING RETURNING 1");
	struct buf b;
	char hash[65], exps[24];
	int rc = -1;
	buf_init(&b, 2048);
	/* Its own namespace: a client assertion's (client_id \n jti) cannot
	 * collide with it. */
	if (buf_printf(&b, "id-jag\n%s\n%s", iss, jti) < 0)
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

/* The issuer, its keys and the signature. */
static enum idjag_rc signed_by_trusted(struct http_req *r, struct db_conn *c, const struct jws *j,
				       const struct cfg_trusted_issuer **ti, const char **why)
{
	char *jwks = NULL;
	const char *fwhy = NULL;
	*ti = config_trusted_issuer(r->app->cfg, json_string_value(json_object_get(j->payload, "iss")));
	if (!*ti) {
		*why = "the assertion's issuer is not trusted";
		return IDJAG_INVALID;
	}
	enum client_find f = cimd_jwks(r->app, c, (*ti)->jwks_uri, &jwks, &fwhy);
	enum idjag_rc rc = IDJAG_OK;
	if (f != CLIENT_FOUND) {
		log_msg(LOG_WARN, "idjag.keys_unavailable", r->id, "the keys of %s: %s", (*ti)->issuer,
			fwhy ? fwhy : "not fetched");
		*why = "the issuer's keys are not available";
		rc = IDJAG_UNAVAILABLE;
	} else if (client_assertion_signature_check(j, jwks) < 0) {
		*why = "no key of the issuer verifies the signature";
		rc = IDJAG_INVALID;
	}
	free(jwks);
	return rc;
}

enum idjag_rc idjag_verify(struct http_req *r, struct db_conn *c, const char *assertion, const char *client_id,
			   struct idjag *out, const char **why)
{
	const struct config *cfg = r->app->cfg;
	struct jws j;
	enum idjag_rc rc = IDJAG_INVALID;
	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (!assertion || jose_parse(assertion, strlen(assertion), &j) < 0) {
		*why = "the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA";
		return IDJAG_INVALID;
	}
	if ((rc = signed_by_trusted(r, c, &j, &out->ti, why)) != IDJAG_OK)
		goto out;
	rc = IDJAG_INVALID;
	if ((*why = idjag_claims_check(j.header, j.payload, cfg->public_url, client_id, out->ti->subject_claim,
				       (long long)time(NULL))))
		goto out;
	const char *resource = json_string_value(json_object_get(j.payload, "resource"));
	if (!(out->res = resources_find(cfg, resource)) ||
	    resources_url(cfg, out->res, out->resource, sizeof(out->resource)) < 0) {
		*why = "resource is not a resource of this server";
		goto out;
	}
	snprintf(out->subject, sizeof(out->subject), "%s",
		 json_string_value(json_object_get(j.payload, out->ti->subject_claim)));
	const char *scope = json_string_value(json_object_get(j.payload, "scope"));
	out->has_scope = scope != NULL;
	snprintf(out->scope, sizeof(out->scope), "%s", scope ? scope : "");
	out->exp = (long long)json_integer_value(json_object_get(j.payload, "exp"));
	snprintf(out->jti, sizeof(out->jti), "%s", json_string_value(json_object_get(j.payload, "jti")));
	rc = IDJAG_OK;
out:
	if (rc == IDJAG_INVALID)
		log_msg(LOG_INFO, "idjag.refused", r->id, "%s", *why);
	if (rc != IDJAG_OK)
		memset(out, 0, sizeof(*out));
	jose_free(&j);
	return rc;
}
