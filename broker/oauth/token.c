#include "token.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include "client_auth.h"
#include "crypto.h"
#include "dpop.h"
#include "form.h"
#include "reqform.h"
#include "grant.h"
#include "idjag.h"
#include "jparse.h"
#include "log.h"
#include "resources.h"
#include "num.h"
#include "ratelimit.h"
#include "scope.h"
#include "upstream.h"
#include "uri.h"
#include "vault.h"

/* What a step of a token request came to. Every step runs only while the
 * previous ones came to TK_OK; respond() turns the last into the answer. */
enum tk_rc {
	TK_OK = 0,
	TK_REFUSED,     /* 400 with the RFC 6749 section 5.2 refusal */
	TK_REUSED,      /* the code or refresh token was redeemed before (a check's verdict) */
	TK_REPLAYED,    /* tokens: the successor pair of a refresh retried within the grace window */
	TK_UNAVAILABLE, /* 503: the database, or out of memory */
	TK_ANSWERED,    /* r was answered already (client authentication, 429 slow_down) */
};

/* A refusal: fixed texts, never the request's own. */
struct tk_refusal {
	const char *error;
	const char *description;
};

static enum tk_rc refuse(struct tk_refusal *why, const char *error, const char *description)
{
	why->error = error;
	why->description = description;
	return TK_REFUSED;
}

static void send_tokens(struct http_req *r, const struct issued *t)
{
	r->secret_response = 1;
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Pragma", "no-cache");
	http_send_json(r, 200, grant_token_response(t));
}

static void respond(struct http_req *r, enum tk_rc rc, const struct tk_refusal *why, const struct issued *t)
{
	switch (rc) {
	case TK_OK:
	case TK_REPLAYED: send_tokens(r, t); break;
	case TK_REFUSED: http_send_oauth_error(r, 400, why->error, why->description); break;
	case TK_ANSWERED: break;
	case TK_REUSED: /* always resolved by the grant's step */
	case TK_UNAVAILABLE: http_send_oauth_unavailable(r); break;
	}
}

/* The client's own bucket (limits.token_per_client_per_minute), charged
 * only by a request that proved something: a confidential client's
 * authentication, or a public client's valid code or refresh token. Anybody
 * can name a public client; nobody else can empty its bucket (DESIGN 3.5).
 * TK_OK go on; TK_ANSWERED when r was answered 429 slow_down. */
static enum tk_rc client_bucket(struct http_req *r, const struct client *cl, const char *grant_id)
{
	char key[LIM_CLIENT_ID + 40];
	snprintf(key, sizeof(key), "%s\n%s", cl->client_id, cl->confidential || !grant_id ? "" : grant_id);
	long per_min = r->app->cfg->limits.token_per_client_per_minute;
	int retry = 1;
	enum tk_rc rc = TK_OK;
	if (per_min > 0 && !ratelimit_take("token", key, (double)per_min / 60.0, (double)per_min / 6.0 + 1, &retry)) {
		http_send_slow_down(r, retry, "too many token requests for this client");
		rc = TK_ANSWERED;
	}
	return rc;
}

/* ---- pure parsing and checks ------------------------------------------ */

enum tk_grant { TG_CODE, TG_REFRESH, TG_CLIENT_CREDENTIALS, TG_JWT_BEARER };

static const char *grant_type_name(enum tk_grant gt)
{
	switch (gt) {
	case TG_CODE: return "authorization_code";
	case TG_REFRESH: return "refresh_token";
	case TG_JWT_BEARER: return GRANT_TYPE_JWT_BEARER;
	default: return "client_credentials";
	}
}

/* The grant type of a token request; dup: the form repeated a parameter. */
static enum tk_rc parse_grant_type(const json_t *form, int dup, enum tk_grant *gt, struct tk_refusal *why)
{
	const char *s = form_get(form, "grant_type");
	enum tk_rc rc = TK_OK;
	if (dup)
		rc = refuse(why, "invalid_request", "a parameter was given more than once");
	else if (!s)
		rc = refuse(why, "invalid_request", "grant_type is required");
	else if (strcmp(s, grant_type_name(TG_CODE)) == 0)
		*gt = TG_CODE;
	else if (strcmp(s, grant_type_name(TG_REFRESH)) == 0)
		*gt = TG_REFRESH;
	else if (strcmp(s, grant_type_name(TG_CLIENT_CREDENTIALS)) == 0)
		*gt = TG_CLIENT_CREDENTIALS;
	else if (strcmp(s, grant_type_name(TG_JWT_BEARER)) == 0)
		*gt = TG_JWT_BEARER;
	else
		rc = refuse(why, "unsupported_grant_type",
			    "grant_type must be authorization_code, refresh_token, client_credentials or "
			    "urn:ietf:params:oauth:grant-type:jwt-bearer");
	return rc;
}

/* RFC 7636 section 4.1: 43..128 unreserved characters. */
static int verifier_ok(const char *v)
{
	size_t n = v ? strlen(v) : 0;
	int ok = n >= LIM_PKCE_VERIFIER_MIN && n <= LIM_PKCE_VERIFIER_MAX;
	for (size_t i = 0; ok && i < n; i++) {
		char c = v[i];
		ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		     c == '.' || c == '_' || c == '~';
	}
	return ok;
}

/* RFC 8707 section 2.2: a resource named in a token request is the one the
 * code or grant is bound to, in any canonical form; requested may be NULL. */
static enum tk_rc resource_check(const struct config *cfg, const char *requested, const char *bound,
				 const char *description, struct tk_refusal *why)
{
	const struct cfg_resource *named = requested ? resources_find(cfg, requested) : NULL;
	char url[2048] = "";
	enum tk_rc rc = TK_OK;
	if (requested && (!named || resources_url(cfg, named, url, sizeof(url)) < 0 || strcmp(url, bound) != 0))
		rc = refuse(why, "invalid_target", description);
	return rc;
}

/* A resource with "require_dpop" takes no Bearer token: one is not
 * issued for it (the client learns here, not at its first call). */
static enum tk_rc dpop_required(const struct config *cfg, const char *resource_url, const char *jkt,
				struct tk_refusal *why)
{
	const struct cfg_resource *res = resources_find(cfg, resource_url);
	return res && res->require_dpop && !*jkt
		       ? refuse(why, "invalid_dpop_proof",
				"the resource accepts DPoP-bound tokens only: a DPoP proof is required")
		       : TK_OK;
}

/* An authorization_code request: views into the form, which wipes them. */
struct code_req {
	const char *code, *redirect_uri, *verifier, *resource;
};

static enum tk_rc parse_code(const json_t *form, struct code_req *q, struct tk_refusal *why)
{
	enum tk_rc rc = TK_OK;
	q->code = form_get(form, "code");
	q->redirect_uri = form_get(form, "redirect_uri");
	q->verifier = form_get(form, "code_verifier");
	q->resource = form_get(form, "resource");
	if (!q->code || !*q->code || strlen(q->code) > LIM_TOKEN)
		rc = refuse(why, "invalid_request", "code is required");
	else if (!q->verifier)
		rc = refuse(why, "invalid_request", "code_verifier is required");
	else if (!verifier_ok(q->verifier))
		rc = refuse(why, "invalid_grant", "code_verifier is malformed");
	return rc;
}

/* An auth_codes row: views into the query result. */
struct code_row {
	const char *grant_id, *client_id, *redirect_uri, *challenge, *resource, *scope;
	int live, used;
};

/* PKCE S256 (RFC 7636 section 4.6), compared in constant time. */
static int pkce_ok(const char *verifier, const char *challenge)
{
	uint8_t digest[CRYPTO_SHA256_LEN];
	char computed[64];
	crypto_sha256(verifier, strlen(verifier), digest);
	crypto_b64url_encode(digest, sizeof(digest), computed);
	int ok = crypto_ct_equal(computed, strlen(computed), challenge, strlen(challenge));
	crypto_wipe(digest, sizeof(digest));
	crypto_wipe(computed, sizeof(computed));
	return ok;
}

/* The stored code against the request and the authenticated client:
 * TK_OK, TK_REUSED (redeemed before, whatever else), or TK_REFUSED. */
static enum tk_rc code_check(const struct code_req *q, const struct code_row *row, const struct client *cl,
			     struct tk_refusal *why)
{
	/* redirect_uri may be left out only where the authorization request
	 * could leave it out too (one registered URI, RFC 6749 section 3.1.2.3)
	 * and the code is bound to exactly that URI: it cannot have been sent
	 * anywhere else. */
	int implied = cl->n_redirect_uris == 1 && strcmp(row->redirect_uri, cl->redirect_uris[0]) == 0;
	enum tk_rc rc = TK_OK;
	if (row->used)
		rc = TK_REUSED;
	else if (!row->live)
		rc = refuse(why, "invalid_grant", "the code has expired");
	else if (strcmp(row->client_id, cl->client_id) != 0)
		rc = refuse(why, "invalid_grant", "the code was issued to another client");
	else if (!q->redirect_uri && !implied)
		rc = refuse(why, "invalid_request", "redirect_uri is required");
	else if (q->redirect_uri && strcmp(row->redirect_uri, q->redirect_uri) != 0)
		rc = refuse(why, "invalid_grant", "redirect_uri does not match the authorization request");
	else if (!pkce_ok(q->verifier, row->challenge))
		rc = refuse(why, "invalid_grant", "code_verifier does not match the code_challenge");
	return rc;
}

/* A refresh_token request: views into the form. */
struct refresh_req {
	const char *token, *scope, *resource;
};

static enum tk_rc parse_refresh(const json_t *form, struct refresh_req *q, struct tk_refusal *why)
{
	enum tk_rc rc = TK_OK;
	q->token = form_get(form, "refresh_token");
	q->scope = form_get(form, "scope");
	q->resource = form_get(form, "resource");
	/* An empty scope is an absent one, not a narrowing to nothing. */
	if (q->scope && q->scope[strspn(q->scope, " ")] == '\0')
		q->scope = NULL;
	if (!q->token || !*q->token || strlen(q->token) > LIM_TOKEN)
		rc = refuse(why, "invalid_request", "refresh_token is required");
	return rc;
}

/* A tokens row of kind refresh with its grant: views into the query result. */
struct refresh_row {
	const char *grant_id, *client_id, *resource, *scope;
	const char *jkt;       /* the DPoP key the token is bound to, NULL when none */
	const char *successor; /* sealed successor pair, NULL when none */
	int live, revoked, active, used, in_grace;
};

/* The stored refresh token against the authenticated client: TK_OK,
 * TK_REUSED (rotated before), or TK_REFUSED. */
static enum tk_rc refresh_check(const struct refresh_row *row, const struct client *cl, const char *jkt,
				struct tk_refusal *why)
{
	enum tk_rc rc = TK_OK;
	if (strcmp(row->client_id, cl->client_id) != 0)
		rc = refuse(why, "invalid_grant", "the refresh token was issued to another client");
	/* A bound refresh token is only its key holder's (RFC 9449 section 5):
	 * checked before reuse, so that whoever stole it without the key does
	 * not set off reuse detection with it (RFC 7009 revocation, which any
	 * holder of a token may ask, is another matter). */
	else if (row->jkt && !*jkt)
		rc = refuse(why, "invalid_dpop_proof", "the refresh token is DPoP-bound: a DPoP proof is required");
	else if (row->jkt && strcmp(row->jkt, jkt) != 0)
		rc = refuse(why, "invalid_dpop_proof", "the refresh token is bound to another DPoP key");
	else if (row->revoked || !row->active)
		rc = refuse(why, "invalid_grant", "the authorization was revoked");
	else if (row->used)
		rc = TK_REUSED;
	else if (!row->live)
		rc = refuse(why, "invalid_grant", "the refresh token has expired");
	return rc;
}

/* Narrowing only (RFC 6749 section 6): out receives requested, normalised,
 * when it is a subset of granted. TK_UNAVAILABLE when out of memory. */
static enum tk_rc scope_narrow(const char *requested, const char *granted, char out[LIM_SCOPE + 1],
			       struct tk_refusal *why)
{
	struct scopes want = { 0 }, have = { 0 };
	char *joined = NULL;
	enum tk_rc rc = TK_OK;
	if (scopes_parse(requested, &want) < 0 || scopes_parse(granted, &have) < 0 || !scopes_subset(&want, &have))
		rc = refuse(why, "invalid_scope", "scope may only be narrowed on refresh");
	else if (!(joined = scopes_join(&want)) || (size_t)snprintf(out, LIM_SCOPE + 1, "%s", joined) > LIM_SCOPE)
		rc = TK_UNAVAILABLE;
	free(joined);
	scopes_free(&want);
	scopes_free(&have);
	return rc;
}

/* A client_credentials request (RFC 6749 section 4.4) of the machine
 * client mc, checked against the configuration: the resource it names (or
 * its only one) and the scope, normalised (default: every scope it may get
 * that the resource defines). */
struct cc_req {
	const struct cfg_resource *res;
	char url[2048]; /* res's public URL: the tokens' audience */
	char scope[LIM_SCOPE + 1];
};

/* The configured resource with path, when mc may get tokens for it. */
static const struct cfg_resource *cc_resource(const struct config *cfg, const struct cfg_client *mc, const char *path)
{
	const struct cfg_resource *res = NULL;
	for (size_t i = 0; path && i < mc->n_resources; i++)
		if (strcmp(mc->resources[i], path) == 0)
			for (size_t k = 0; k < cfg->n_resources; k++)
				if (strcmp(cfg->resources[k].path, path) == 0)
					res = &cfg->resources[k];
	return res;
}

/* The scopes mc may get at res into *allowed. -1 when out of memory. */
static int cc_allowed(const struct cfg_client *mc, const struct cfg_resource *res, struct scopes *allowed)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < mc->n_scopes; i++)
		for (size_t k = 0; rc == 0 && k < res->n_scopes; k++)
			if (strcmp(mc->scopes[i], res->scopes[k].scope) == 0 && !scopes_has(allowed, mc->scopes[i]))
				rc = scopes_add(allowed, mc->scopes[i]);
	return rc;
}

/* s space-joined into out; TK_UNAVAILABLE when out of memory (a list of
 * scopes the configuration allows always fits). */
static enum tk_rc cc_scope_text(const struct scopes *s, char out[LIM_SCOPE + 1])
{
	char *joined = scopes_join(s);
	enum tk_rc rc = joined && (size_t)snprintf(out, LIM_SCOPE + 1, "%s", joined) <= LIM_SCOPE ? TK_OK
												  : TK_UNAVAILABLE;
	free(joined);
	return rc;
}

static enum tk_rc parse_client_credentials(const struct config *cfg, const json_t *form, const struct cfg_client *mc,
					   struct cc_req *q, struct tk_refusal *why)
{
	const char *resource = form_get(form, "resource");
	const char *scope = form_get(form, "scope");
	const struct cfg_resource *named = resource ? resources_find(cfg, resource) : NULL;
	struct scopes want = { 0 }, allowed = { 0 };
	enum tk_rc rc = TK_OK;
	if (scope && scope[strspn(scope, " ")] == '\0')
		scope = NULL; /* an empty scope is an absent one */
	if (resource)
		q->res = named ? cc_resource(cfg, mc, named->path) : NULL;
	else
		q->res = mc->n_resources == 1 ? cc_resource(cfg, mc, mc->resources[0]) : NULL;
	if (!resource && mc->n_resources != 1)
		rc = refuse(why, "invalid_request", "resource is required");
	else if (!q->res)
		rc = refuse(why, "invalid_target", "the client may not get tokens for this resource");
	else if (resources_url(cfg, q->res, q->url, sizeof(q->url)) < 0 || cc_allowed(mc, q->res, &allowed) < 0)
		rc = TK_UNAVAILABLE;
	else if (scope && (scopes_parse(scope, &want) < 0 || !scopes_subset(&want, &allowed)))
		rc = refuse(why, "invalid_scope", "scope is not one the client may get");
	else
		rc = cc_scope_text(scope ? &want : &allowed, q->scope);
	scopes_free(&want);
	scopes_free(&allowed);
	return rc;
}

/* ---- the successor pair of a rotated refresh token -------------------- */

static int successor_key(const char *presented, uint8_t key[CRYPTO_KEY_LEN])
{
	return crypto_hkdf(presented, strlen(presented), "mcp-broker", 10, "refresh-successor", key, CRYPTO_KEY_LEN);
}

/* t sealed under a key derived from the presented refresh token (only its
 * holder can read it back), AAD its hash; malloc'd hex, NULL on failure. */
static char *seal_successor(const char *presented, const char *hash, const struct issued *t, time_t access_exp)
{
	uint8_t key[CRYPTO_KEY_LEN];
	json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s}", "a", t->access, "r", t->refresh, "e", (json_int_t)access_exp,
			      "s", t->scope, "k", t->jkt);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	char *out = NULL;
	form_free(&j); /* the object holds token text: wiped before it is freed */
	if (text && successor_key(presented, key) == 0)
		out = vault_seal_key(key, hash, text, strlen(text));
	crypto_wipe(key, sizeof(key));
	if (text) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	return out;
}

/* The pair seal_successor sealed into t: 0, or -1 when blob does not open
 * under presented or does not hold a pair. */
static int open_successor(const char *presented, const char *hash, const char *blob, struct issued *t)
{
	uint8_t key[CRYPTO_KEY_LEN];
	int rc = -1;
	char *text = NULL;
	if (successor_key(presented, key) == 0)
		text = vault_open_key(key, hash, blob, NULL);
	crypto_wipe(key, sizeof(key));
	json_t *j = text ? jparse_str(text, 0, LIM_JSON_DEPTH) : NULL;
	vault_free(text);
	const char *a = json_string_value(json_object_get(j, "a"));
	const char *rt = json_string_value(json_object_get(j, "r"));
	const char *s = json_string_value(json_object_get(j, "s"));
	const char *k = json_string_value(json_object_get(j, "k")); /* absent: sealed by an older node */
	json_int_t e = json_integer_value(json_object_get(j, "e"));
	if (a && rt && s && strlen(a) < sizeof(t->access) && strlen(rt) < sizeof(t->refresh) &&
	    strlen(s) < sizeof(t->scope) && (!k || strlen(k) < sizeof(t->jkt))) {
		snprintf(t->access, sizeof(t->access), "%s", a);
		snprintf(t->refresh, sizeof(t->refresh), "%s", rt);
		snprintf(t->scope, sizeof(t->scope), "%s", s);
		snprintf(t->jkt, sizeof(t->jkt), "%s", k ? k : "");
		t->expires_in = (long)(e - time(NULL));
		if (t->expires_in < 0)
			t->expires_in = 0;
		rc = 0;
	}
	form_free(&j); /* wipes the token text */
	return rc;
}

/* ---- authorization_code ----------------------------------------------- */

/* Opens the transaction and reads the code under its row lock; *res owns
 * what row points into. */
static enum tk_rc code_load(struct db_conn *c, const char *hash, PGresult **res, struct code_row *row,
			    struct tk_refusal *why)
{
	static struct db_stmt q = DB_STMT("SELECT grant_id::text, client_id, redirect_uri, code_challenge, resource, "
					  "array_to_string(scopes, ' '), expires_at > now(), used_at IS NOT NULL "
					  "FROM auth_codes WHERE code_hash = $1::bytea FOR UPDATE");
	const char *p[] = { hash };
	enum tk_rc rc;
	if (db_begin(c) < 0 || !(*res = db_exec_ok(c, &q, 1, p))) {
		rc = TK_UNAVAILABLE;
	} else if (PQntuples(*res) != 1) {
		rc = refuse(why, "invalid_grant", "the code is unknown");
	} else {
		row->grant_id = PQgetvalue(*res, 0, 0);
		row->client_id = PQgetvalue(*res, 0, 1);
		row->redirect_uri = PQgetvalue(*res, 0, 2);
		row->challenge = PQgetvalue(*res, 0, 3);
		row->resource = PQgetvalue(*res, 0, 4);
		row->scope = PQgetvalue(*res, 0, 5);
		row->live = strcmp(PQgetvalue(*res, 0, 6), "t") == 0;
		row->used = strcmp(PQgetvalue(*res, 0, 7), "t") == 0;
		rc = TK_OK;
	}
	return rc;
}

/* A replayed code: whoever holds it may be an attacker. Kill what the
 * first exchange issued (OAuth 2.1 section 4.1.3), committed. */
static enum tk_rc code_replayed(struct http_req *r, struct db_conn *c, const struct client *cl, const char *grant_id,
				struct tk_refusal *why)
{
	char actor[LIM_CLIENT_ID + 8];
	snprintf(actor, sizeof(actor), "client:%s", cl->client_id);
	return grant_revoke(r->app, c, grant_id, "code_replay", actor, r->id) < 0 || db_commit(c) < 0
		       ? TK_UNAVAILABLE
		       : refuse(why, "invalid_grant", "the code was already used");
}

/* Marks the code used and issues the grant's first pair into t, committed
 * with its audit record; refused when the grant was revoked meanwhile. */
static enum tk_rc code_redeem(struct http_req *r, struct db_conn *c, const struct client *cl, const char *hash,
			      const struct code_row *row, const char *jkt, struct issued *t, struct tk_refusal *why)
{
	static struct db_stmt q_use = DB_STMT("UPDATE auth_codes SET used_at = now() WHERE code_hash = $1::bytea");
	static struct db_stmt q_grant = DB_STMT("SELECT status = 'active' FROM grants WHERE id = $1::uuid");
	static struct db_stmt q_client_used = DB_STMT("UPDATE clients SET last_used_at = now() WHERE client_id = $1");
	const char *p[] = { hash }, *pg[] = { row->grant_id }, *pcl[] = { cl->client_id };
	struct audit a = { "token.issued", "client", NULL, cl->client_id, row->grant_id, r->id };
	struct grant_binding b = { jkt, !cl->confidential };
	PGresult *used = NULL, *grant = NULL, *touched = NULL;
	enum tk_rc rc = TK_UNAVAILABLE;
	if (!(used = db_exec_ok(c, &q_use, 1, p)) || !(grant = db_exec_ok(c, &q_grant, 1, pg)) || PQntuples(grant) != 1)
		rc = TK_UNAVAILABLE;
	else if (strcmp(PQgetvalue(grant, 0, 0), "t") != 0)
		rc = refuse(why, "invalid_grant", "the authorization was revoked");
	else if ((touched = db_exec_ok(c, &q_client_used, 1, pcl)) &&
		 grant_issue(r->app, c, row->grant_id, cl->client_id, row->resource, row->scope, &b, t) == 0 &&
		 audit_record(c, &a,
			      json_pack("{s:s, s:s, s:b}", "grant_type", "authorization_code", "scope", row->scope,
					"dpop", *jkt != '\0')) == 0 &&
		 db_commit(c) == 0)
		rc = TK_OK;
	PQclear(used);
	PQclear(grant);
	PQclear(touched);
	return rc;
}

static enum tk_rc grant_code(struct http_req *r, struct db_conn *c, const json_t *form, const struct client *cl,
			     const char *jkt, struct issued *t, struct tk_refusal *why)
{
	struct code_req q;
	struct code_row row = { 0 };
	PGresult *res = NULL;
	char hash[67] = "";
	enum tk_rc rc = parse_code(form, &q, why);
	if (rc == TK_OK) {
		vault_hash_hex(q.code, hash);
		rc = code_load(c, hash, &res, &row, why);
	}
	if (rc == TK_OK)
		rc = code_check(&q, &row, cl, why);
	if (rc == TK_REUSED)
		rc = code_replayed(r, c, cl, row.grant_id, why);
	/* A valid code: now (and only now) a public client's bucket pays. A
	 * limited exchange rolls back and the code stays usable. */
	if (rc == TK_OK && !cl->confidential)
		rc = client_bucket(r, cl, row.grant_id);
	if (rc == TK_OK)
		rc = resource_check(r->app->cfg, q.resource, row.resource,
				    "resource does not match the authorization request", why);
	if (rc == TK_OK)
		rc = dpop_required(r->app->cfg, row.resource, jkt, why);
	if (rc == TK_OK)
		rc = code_redeem(r, c, cl, hash, &row, jkt, t, why);
	PQclear(res);
	crypto_wipe(hash, sizeof(hash));
	return rc;
}

/* ---- refresh_token ---------------------------------------------------- */

/* Opens the transaction and reads the refresh token and its grant under the
 * token's row lock; *res owns what row points into. */
static enum tk_rc refresh_load(struct db_conn *c, const char *hash, long grace, PGresult **res, struct refresh_row *row,
			       struct tk_refusal *why)
{
	static struct db_stmt q = DB_STMT(
		"SELECT t.grant_id::text, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"t.expires_at > now(), t.revoked_at IS NOT NULL, g.status = 'active', t.used_at IS NOT NULL, "
		"coalesce(now() - t.used_at <= make_interval(secs => $2::int), false), t.successor, t.jkt "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id "
		"WHERE t.token_hash = $1::bytea AND t.kind = 'refresh' FOR UPDATE OF t");
	char graces[24];
	snprintf(graces, sizeof(graces), "%ld", grace);
	const char *p[] = { hash, graces };
	enum tk_rc rc;
	if (!(*res = db_begin_exec_ok(c, &q, 2, p))) {
		rc = TK_UNAVAILABLE;
	} else if (PQntuples(*res) != 1) {
		rc = refuse(why, "invalid_grant", "the refresh token is unknown");
	} else {
		row->grant_id = PQgetvalue(*res, 0, 0);
		row->client_id = PQgetvalue(*res, 0, 1);
		row->resource = PQgetvalue(*res, 0, 2);
		row->scope = PQgetvalue(*res, 0, 3);
		row->live = strcmp(PQgetvalue(*res, 0, 4), "t") == 0;
		row->revoked = strcmp(PQgetvalue(*res, 0, 5), "t") == 0;
		row->active = strcmp(PQgetvalue(*res, 0, 6), "t") == 0;
		row->used = strcmp(PQgetvalue(*res, 0, 7), "t") == 0;
		row->in_grace = strcmp(PQgetvalue(*res, 0, 8), "t") == 0;
		row->successor = PQgetisnull(*res, 0, 9) ? NULL : PQgetvalue(*res, 0, 9);
		row->jkt = PQgetisnull(*res, 0, 10) ? NULL : PQgetvalue(*res, 0, 10);
		rc = TK_OK;
	}
	return rc;
}

/* A rotated refresh token presented again. Within the grace window, with a
 * successor that opens under it: a retry or a concurrent duplicate, given
 * the same successor pair (TK_REPLAYED, the transaction rolled back).
 * Otherwise reuse: the grant dies, committed. */
static enum tk_rc refresh_reused(struct http_req *r, struct db_conn *c, const struct client *cl, const char *presented,
				 const char *hash, const struct refresh_row *row, struct issued *t,
				 struct tk_refusal *why)
{
	char actor[LIM_CLIENT_ID + 8];
	struct audit a = { "token.refresh_reuse", actor, NULL, cl->client_id, row->grant_id, r->id };
	enum tk_rc rc;
	snprintf(actor, sizeof(actor), "client:%s", cl->client_id);
	if (row->in_grace && row->successor && open_successor(presented, hash, row->successor, t) == 0) {
		db_rollback(c);
		rc = cl->confidential ? TK_OK : client_bucket(r, cl, row->grant_id);
		if (rc == TK_OK) {
			log_msg(LOG_INFO, "token.refresh_replayed", r->id,
				"rotated refresh token replayed within grace");
			rc = TK_REPLAYED;
		}
	} else if (audit_record(c, &a, NULL) < 0 ||
		   grant_revoke(r->app, c, row->grant_id, "refresh_reuse", actor, r->id) < 0 || db_commit(c) < 0) {
		rc = TK_UNAVAILABLE;
	} else {
		rc = refuse(why, "invalid_grant", "the refresh token was already used");
	}
	return rc;
}

/* Issues the successor pair into t, keeps it sealed beside the presented
 * token for the grace window, marks that one used, and commits with the
 * audit record: one round trip. */
static enum tk_rc refresh_rotate(struct http_req *r, struct db_conn *c, const struct client *cl, const char *presented,
				 const char *hash, const struct refresh_row *row, const char *scope, const char *jkt,
				 struct issued *t)
{
	struct audit a = { "token.refreshed", "client", NULL, cl->client_id, row->grant_id, r->id };
	struct grant_binding b = { jkt, !cl->confidential };
	char *successor = NULL;
	json_t *detail = json_pack("{s:s, s:b}", "scope", scope, "dpop", *jkt != '\0');
	int ok = detail && grant_mint(r->app, scope, &b, t) == 0 &&
		 (successor = seal_successor(presented, hash, t, time(NULL) + t->expires_in)) != NULL &&
		 grant_rotate_commit(c, row->grant_id, cl->client_id, row->resource, r->app->cfg->tokens.refresh_ttl,
				     &b, t, hash, successor, &a, detail) == 0;
	json_decref(detail);
	free(successor);
	return ok ? TK_OK : TK_UNAVAILABLE;
}

static enum tk_rc grant_refresh(struct http_req *r, struct db_conn *c, const json_t *form, const struct client *cl,
				const char *jkt, struct issued *t, struct tk_refusal *why)
{
	const struct config *cfg = r->app->cfg;
	struct refresh_req q;
	struct refresh_row row = { 0 };
	PGresult *res = NULL;
	char hash[67] = "", narrowed[LIM_SCOPE + 1] = "";
	enum tk_rc rc = parse_refresh(form, &q, why);
	if (rc == TK_OK) {
		vault_hash_hex(q.token, hash);
		rc = refresh_load(c, hash, cfg->tokens.refresh_grace, &res, &row, why);
	}
	if (rc == TK_OK)
		rc = refresh_check(&row, cl, jkt, why);
	if (rc == TK_REUSED)
		rc = refresh_reused(r, c, cl, q.token, hash, &row, t, why);
	/* A valid refresh token: a public client's bucket pays; a limited
	 * refresh rolls back and the token is not rotated. */
	if (rc == TK_OK && !cl->confidential)
		rc = client_bucket(r, cl, row.grant_id);
	if (rc == TK_OK)
		rc = resource_check(cfg, q.resource, row.resource, "resource does not match the authorization", why);
	if (rc == TK_OK)
		rc = dpop_required(cfg, row.resource, jkt, why);
	if (rc == TK_OK && q.scope)
		rc = scope_narrow(q.scope, row.scope, narrowed, why);
	if (rc == TK_OK)
		rc = refresh_rotate(r, c, cl, q.token, hash, &row, q.scope ? narrowed : row.scope, jkt, t);
	PQclear(res);
	crypto_wipe(hash, sizeof(hash));
	return rc;
}

/* ---- client_credentials ----------------------------------------------- */

/* The upstream's own client_credentials grant at up for the machine
 * client's grant into *tok. An upstream in trouble is a 503 to try again
 * later; a refusal (of the broker's credentials, or of the grant) is
 * invalid_grant, as a refused code is at /callback. */
static enum tk_rc cc_upstream(struct http_req *r, const struct cfg_upstream *up, const struct upstream_ep *ep,
			      struct upstream_tokens *tok, struct tk_refusal *why)
{
	enum tk_rc rc = TK_UNAVAILABLE;
	switch (upstream_client_credentials(up, ep, r->id, tok, NULL)) {
	case UPC_OK: rc = TK_OK; break;
	case UPC_GRANT_DEAD:
	case UPC_INVALID_CLIENT:
	case UPC_UNAUTHORIZED_CLIENT:
	case UPC_REFUSED: rc = refuse(why, "invalid_grant", "the upstream refused the client credentials grant"); break;
	default: rc = TK_UNAVAILABLE; break;
	}
	return rc;
}

/* The upstream issued a token no grant will hold (the database failed):
 * revoke it upstream now, best effort, rather than leave a live credential
 * nobody can revoke later. */
static void cc_discard(struct http_req *r, const struct cfg_upstream *up, const struct upstream_ep *ep,
		       const struct upstream_tokens *tok)
{
	enum upstream_rc rc = upstream_revoke(up, ep, tok->access_token, tok->refresh_token);
	json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "result", upstream_rc_name(rc));
	log_event(LOG_INFO, "token.upstream_tokens_discarded", r->id, f);
}

/* The machine's users row (subject "client:<client_id>" under the
 * upstream's name) and a new grant holding the sealed upstream token, its
 * access token issued into t: one transaction, committed. */
static enum tk_rc cc_store(struct http_req *r, struct db_conn *c, const struct client *cl, const struct cc_req *q,
			   const struct upstream_tokens *tok, const char *jkt, struct issued *t)
{
	static struct db_stmt q_user = DB_STMT(
		"INSERT INTO users(id, upstream, subject, login, name) VALUES ($1::uuid, $2, $3, $4, $5) "
		"ON CONFLICT (upstream, subject) DO UPDATE SET login = EXCLUDED.login, name = EXCLUDED.name, "
		"last_login_at = now() RETURNING id::text");
	static struct db_stmt q_grant = DB_STMT(
		"INSERT INTO grants(id, user_id, client_id, resource, upstream, scopes, key_id, up_access, "
		"up_refresh, up_expires_at, up_scope) VALUES ($1::uuid, $2::uuid, $3, $4, $5, "
		"string_to_array($6, ' '), $7, $8::bytea, NULL, "
		"CASE WHEN $9::int > 0 THEN now() + make_interval(secs => $9::int) END, $10)");
	static struct db_stmt q_client_used = DB_STMT("UPDATE clients SET last_used_at = now() WHERE client_id = $1");
	const struct config *cfg = r->app->cfg;
	char user_uuid[37], grant_id[37], user_id[40], exp[24], subject[LIM_CLIENT_ID + 8];
	const char *key_id = NULL;
	char *enc = NULL;
	PGresult *user = NULL, *grant = NULL, *touched = NULL;
	enum tk_rc rc = TK_UNAVAILABLE;
	snprintf(subject, sizeof(subject), "client:%s", cl->client_id);
	snprintf(exp, sizeof(exp), "%ld", tok->expires_in);
	if (vault_uuid(user_uuid) < 0 || vault_uuid(grant_id) < 0 ||
	    !(enc = vault_seal(cfg, grant_id, "access", tok->access_token, &key_id)) || db_begin(c) < 0)
		goto out;
	const char *pu[] = { user_uuid, q->res->upstream, subject, cl->client_id, cl->name };
	if (!(user = db_exec_ok(c, &q_user, 5, pu)) || PQntuples(user) != 1)
		goto out;
	snprintf(user_id, sizeof(user_id), "%s", PQgetvalue(user, 0, 0));
	const char *pg[] = { grant_id, user_id, cl->client_id, q->url, q->res->upstream,
			     q->scope, key_id,  enc,           exp,    tok->scope };
	const char *pcl[] = { cl->client_id };
	struct audit ag = { "grant.created", subject, user_id, cl->client_id, grant_id, r->id };
	struct audit at = { "token.issued", "client", NULL, cl->client_id, grant_id, r->id };
	if ((grant = db_exec_ok(c, &q_grant, 10, pg)) && (touched = db_exec_ok(c, &q_client_used, 1, pcl)) &&
	    grant_issue_access(r->app, c, grant_id, cl->client_id, q->url, q->scope, &(struct grant_binding){ jkt, 0 },
			       t) == 0 &&
	    audit_record(c, &ag,
			 json_pack("{s:s, s:s, s:s}", "upstream", q->res->upstream, "resource", q->url, "scope",
				   q->scope)) == 0 &&
	    audit_record(c, &at,
			 json_pack("{s:s, s:s, s:b}", "grant_type", "client_credentials", "scope", q->scope, "dpop",
				   *jkt != '\0')) == 0 &&
	    db_commit(c) == 0)
		rc = TK_OK;
out:
	PQclear(user);
	PQclear(grant);
	PQclear(touched);
	free(enc);
	return rc;
}

/* The machine client's active grant for this resource and scope, when it
 * has one: a new access token is issued under it into t (*reused 1),
 * committed, with no upstream call (its upstream token is renewed when
 * stale, as any grant's). A grant revoked meanwhile is caught by the
 * bearer check, which needs the grant active. */
static enum tk_rc cc_reuse(struct http_req *r, struct db_conn *c, const struct client *cl, const struct cc_req *q,
			   const char *jkt, struct issued *t, int *reused)
{
	static struct db_stmt q_grant = DB_STMT(
		"SELECT id::text FROM grants WHERE client_id = $1 AND resource = $2 AND status = 'active' "
		"AND scopes = string_to_array($3, ' ') ORDER BY created_at DESC LIMIT 1");
	const char *p[] = { cl->client_id, q->url, q->scope };
	PGresult *res = NULL;
	enum tk_rc rc = TK_UNAVAILABLE;
	*reused = 0;
	if (db_begin(c) == 0 && (res = db_exec_ok(c, &q_grant, 3, p)) && PQntuples(res) == 0) {
		rc = TK_OK; /* none: the caller makes one */
	} else if (res && PQntuples(res) == 1) {
		const char *grant_id = PQgetvalue(res, 0, 0);
		struct audit a = { "token.issued", "client", NULL, cl->client_id, grant_id, r->id };
		struct grant_binding b = { jkt, 0 };
		if (grant_issue_access(r->app, c, grant_id, cl->client_id, q->url, q->scope, &b, t) == 0 &&
		    audit_record(c, &a,
				 json_pack("{s:s, s:s, s:b}", "grant_type", "client_credentials", "scope", q->scope,
					   "dpop", *jkt != '\0')) == 0 &&
		    db_commit(c) == 0) {
			*reused = 1;
			rc = TK_OK;
		}
	}
	if (c->in_tx)
		db_rollback(c);
	PQclear(res);
	return rc;
}

/* A machine client's token: only a pre-registered confidential client
 * whose grant_types is ["client_credentials"] (a public client, or one
 * registered for the code flow, is unauthorized_client). */
static enum tk_rc grant_client_credentials(struct http_req *r, struct db_conn *c, const json_t *form,
					   const struct client *cl, const char *jkt, struct issued *t,
					   struct tk_refusal *why)
{
	const struct cfg_client *mc = config_client(r->app->cfg, cl->client_id);
	const struct cfg_upstream *up = NULL;
	struct upstream_tokens tok = { 0 };
	struct upstream_ep ep;
	struct cc_req q = { 0 };
	int reused = 0;
	enum tk_rc rc = TK_OK;
	if (!cl->confidential || !mc || !mc->client_credentials)
		rc = refuse(why, "unauthorized_client", "the client may not use the client_credentials grant");
	if (rc == TK_OK)
		rc = parse_client_credentials(r->app->cfg, form, mc, &q, why);
	if (rc == TK_OK)
		rc = dpop_required(r->app->cfg, q.url, jkt, why);
	if (rc == TK_OK)
		rc = cc_reuse(r, c, cl, &q, jkt, t, &reused);
	if (rc == TK_OK && !reused &&
	    (!(up = config_upstream(r->app->cfg, q.res->upstream)) || upstream_endpoints(up, &ep) < 0))
		rc = TK_UNAVAILABLE;
	if (rc == TK_OK && !reused)
		rc = cc_upstream(r, up, &ep, &tok, why);
	if (rc == TK_OK && !reused && (rc = cc_store(r, c, cl, &q, &tok, jkt, t)) != TK_OK)
		cc_discard(r, up, &ep, &tok);
	upstream_tokens_free(&tok);
	return rc;
}

/* ---- jwt-bearer: enterprise ID-JAGs (idjag.h) --------------------------- */

/* The scope granted for an ID-JAG: what the IdP granted (its scope claim;
 * without one, the resource's default scopes, or all of them), narrowed to
 * the request's scope when it names one, and to the resource's scopes. */
static enum tk_rc jag_scope(const struct idjag *g, const char *requested, char out[LIM_SCOPE + 1],
			    struct tk_refusal *why)
{
	const struct cfg_resource *res = g->res;
	struct scopes idp = { 0 }, want = { 0 }, granted = { 0 };
	char *joined = NULL;
	enum tk_rc rc = TK_UNAVAILABLE;
	if (scopes_parse(g->scope, &idp) < 0 || (requested && scopes_parse(requested, &want) < 0)) {
		rc = refuse(why, "invalid_scope", "the scope is not a valid list of scopes");
		goto out;
	}
	for (size_t i = 0; i < res->n_scopes; i++) {
		const char *sc = res->scopes[i].scope;
		int base = g->has_scope ? scopes_has(&idp, sc) : 0;
		if (!g->has_scope) {
			base = res->n_default_scopes == 0;
			for (size_t d = 0; d < res->n_default_scopes; d++)
				base |= strcmp(res->default_scopes[d], sc) == 0;
		}
		if (base && (!requested || scopes_has(&want, sc)) && scopes_add(&granted, sc) < 0)
			goto out;
	}
	if (res->n_scopes > 0 && granted.n == 0) {
		rc = refuse(why, "invalid_scope", "none of the scopes asked for was granted by the identity provider");
		goto out;
	}
	if ((joined = scopes_join(&granted)) && (size_t)snprintf(out, LIM_SCOPE + 1, "%s", joined) <= LIM_SCOPE)
		rc = TK_OK;
out:
	free(joined);
	scopes_free(&idp);
	scopes_free(&want);
	scopes_free(&granted);
	return rc;
}

/* The enterprise user (issuer, subject) and their grant for this client and
 * resource: the active one, its scope set to this one, or a new one that
 * holds no upstream session yet (its accounts are connected in band, on the
 * first request that needs them); an access token under it into t. One
 * transaction, committed. A grant lives across ID-JAGs, so that what the
 * user connected stays connected. */
static enum tk_rc jag_store(struct http_req *r, struct db_conn *c, const struct client *cl, const struct idjag *g,
			    const char *scope, const char *jkt, struct issued *t, struct tk_refusal *why)
{
	static struct db_stmt q_user = DB_STMT(
		"INSERT INTO users(id, upstream, subject) VALUES ($1::uuid, $2, $3) ON CONFLICT (upstream, subject) "
		"DO UPDATE SET last_login_at = now() RETURNING id::text");
	/* One grant per (user, client, resource), however many first ID-JAGs
	 * race: the second waits, then finds the first's. */
	static struct db_stmt q_lock = DB_STMT(
		"SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2 || chr(10) || $3, 0))");
	static struct db_stmt q_find = DB_STMT(
		"UPDATE grants SET scopes = string_to_array($4, ' '), updated_at = now() WHERE id = (SELECT id FROM "
		"grants WHERE user_id = $1::uuid AND client_id = $2 AND resource = $3 AND status = 'active' "
		"ORDER BY created_at DESC LIMIT 1 FOR UPDATE) RETURNING id::text");
	static struct db_stmt q_grant = DB_STMT(
		"INSERT INTO grants(id, user_id, client_id, resource, upstream, scopes, key_id) VALUES ($1::uuid, "
		"$2::uuid, $3, $4, $5, string_to_array($6, ' '), $7)");
	const struct config *cfg = r->app->cfg;
	char user_uuid[37], grant_id[37], user_id[40];
	PGresult *user = NULL, *found = NULL, *grant = NULL;
	enum tk_rc rc = TK_UNAVAILABLE;
	int created = 0;
	if (vault_uuid(user_uuid) < 0 || vault_uuid(grant_id) < 0 || db_begin(c) < 0)
		goto out;
	int spent = idjag_spend(c, g);
	if (spent != 0) {
		if (spent == 1)
			rc = refuse(why, "invalid_grant", "the assertion's jti was already used");
		goto out;
	}
	const char *pu[] = { user_uuid, g->ti->issuer, g->subject };
	if (!(user = db_exec_ok(c, &q_user, 3, pu)) || PQntuples(user) != 1)
		goto out;
	snprintf(user_id, sizeof(user_id), "%s", PQgetvalue(user, 0, 0));
	const char *pf[] = { user_id, cl->client_id, g->resource, scope };
	PGresult *locked = db_exec_ok(c, &q_lock, 3, pf);
	PQclear(locked);
	if (!locked || !(found = db_exec_ok(c, &q_find, 4, pf)))
		goto out;
	if (PQntuples(found) == 1) {
		snprintf(grant_id, sizeof(grant_id), "%s", PQgetvalue(found, 0, 0));
	} else {
		const char *pg[] = { grant_id,
				     user_id,
				     cl->client_id,
				     g->resource,
				     g->res->upstream,
				     scope,
				     cfg->encryption_keys[0].id };
		if (!(grant = db_exec_ok(c, &q_grant, 7, pg)))
			goto out;
		created = 1;
	}
	char actor[300];
	snprintf(actor, sizeof(actor), "user:%s", user_id);
	struct audit ag = { "grant.created", actor, user_id, cl->client_id, grant_id, r->id };
	struct audit at = { "token.issued", "client", NULL, cl->client_id, grant_id, r->id };
	if (grant_issue_access(r->app, c, grant_id, cl->client_id, g->resource, scope,
			       &(struct grant_binding){ jkt, 0 }, t) == 0 &&
	    (!created || audit_record(c, &ag,
				      json_pack("{s:s, s:s, s:s, s:s}", "issuer", g->ti->issuer, "upstream",
						g->res->upstream, "resource", g->resource, "scope", scope)) == 0) &&
	    audit_record(c, &at,
			 json_pack("{s:s, s:s, s:s, s:b}", "grant_type", GRANT_TYPE_JWT_BEARER, "issuer", g->ti->issuer,
				   "scope", scope, "dpop", *jkt != '\0')) == 0 &&
	    db_commit(c) == 0)
		rc = TK_OK;
out:
	PQclear(user);
	PQclear(found);
	PQclear(grant);
	return rc;
}

/* An enterprise user's token from an ID-JAG (SEP-990): only a configured
 * confidential client whose grant_types is [jwt-bearer]; an access token
 * only (no refresh token: the client exchanges a fresh ID-JAG, and the
 * enterprise IdP stays the place that decides). */
static enum tk_rc grant_jwt_bearer(struct http_req *r, struct db_conn *c, const json_t *form, const struct client *cl,
				   const char *jkt, struct issued *t, struct tk_refusal *why)
{
	const struct cfg_client *mc = config_client(r->app->cfg, cl->client_id);
	const char *assertion = form_get(form, "assertion"), *resource = form_get(form, "resource");
	const char *requested = form_get(form, "scope"), *reason = NULL;
	char scope[LIM_SCOPE + 1];
	struct idjag g;
	if (!cl->confidential || !mc || !mc->jwt_bearer)
		return refuse(why, "unauthorized_client", "the client may not use the jwt-bearer grant");
	if (!assertion || !*assertion)
		return refuse(why, "invalid_request", "assertion is required");
	switch (idjag_verify(r, c, assertion, cl->client_id, &g, &reason)) {
	case IDJAG_OK: break;
	case IDJAG_INVALID: return refuse(why, "invalid_grant", reason);
	default: return TK_UNAVAILABLE;
	}
	if (resource && resources_find(r->app->cfg, resource) != g.res)
		return refuse(why, "invalid_target", "resource differs from the assertion's");
	enum tk_rc rc = jag_scope(&g, requested, scope, why);
	if (rc == TK_OK)
		rc = dpop_required(r->app->cfg, g.resource, jkt, why);
	if (rc == TK_OK)
		rc = jag_store(r, c, cl, &g, scope, jkt, t, why);
	return rc;
}

/* ---- POST /token ------------------------------------------------------ */

/* With dpop.require_nonce, every answer carries a current nonce (RFC 9449
 * section 8.2): a client's next proof has one before it is asked. */
static void dpop_fresh_nonce(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	char nonce[DPOP_NONCE_LEN + 1];
	if (dpop_current_nonce(cfg, nonce) == 0)
		http_add_header(r, "DPoP-Nonce", nonce);
}

/* The request's DPoP proof (RFC 9449 section 5), when it carries one: jkt
 * gets the thumbprint of its key, which the tokens issued are bound to
 * ("" without a proof: Bearer tokens). A proof that fails is refused
 * invalid_dpop_proof, or use_dpop_nonce when only its nonce is missing or
 * stale (the answer carries a fresh one). */
static enum tk_rc dpop_step(struct http_req *r, char jkt[DPOP_JKT_LEN + 1], struct dpop_pending *pending,
			    struct tk_refusal *why)
{
	const struct config *cfg = r->app->cfg;
	char htu[2048];
	const char *msg = NULL;
	int n = http_header_count(r, "DPoP");
	jkt[0] = '\0';
	if (n == 0)
		return TK_OK;
	if (n > 1)
		return refuse(why, "invalid_dpop_proof", "a request carries one DPoP proof");
	snprintf(htu, sizeof(htu), "%s/token", cfg->public_url);
	struct dpop_expect e = dpop_expect_for(cfg, DPOP_SPACE_TOKEN, "POST", htu);
	e.pending = pending;
	switch (dpop_verify(http_header(r, "DPoP"), &e, jkt, &msg)) {
	case DPOP_OK: return TK_OK;
	case DPOP_NONCE: return refuse(why, "use_dpop_nonce", msg);
	default: return refuse(why, "invalid_dpop_proof", msg);
	}
}

/* 0 with *registered 1 when the client registered grant type gt (RFC 7591
 * grant_types; static clients have both); -1 on a database error. Known
 * from the client's lookup when it came from the clients table; asked
 * otherwise. */
static int grant_type_registered(struct db_conn *c, const struct client *cl, const char *gt, int *registered)
{
	if (cl->grant_types_known) {
		*registered = (cl->grant_types & client_grant_type_bit(gt)) != 0;
		return 0;
	}
	static struct db_stmt q = DB_STMT("SELECT $2 = ANY(grant_types) FROM clients WHERE client_id = $1");
	const char *p[] = { cl->client_id, gt };
	PGresult *res = db_exec_ok(c, &q, 2, p);
	if (res)
		*registered = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return res ? 0 : -1;
}

/* The client of the request, authenticated into *cl, a confidential
 * client's bucket charged, and allowed grant type gt. */
static enum tk_rc client_step(struct http_req *r, struct db_conn *c, const json_t *form, enum tk_grant gt,
			      struct client *cl, struct tk_refusal *why)
{
	int registered = 0;
	enum tk_rc rc = TK_OK;
	enum client_auth ca = client_auth_verify(r, c, form, cl);
	if (ca != CA_OK) {
		client_auth_error(r, ca);
		rc = TK_ANSWERED;
	} else if (cl->confidential) {
		rc = client_bucket(r, cl, NULL);
	}
	if (rc == TK_OK && grant_type_registered(c, cl, grant_type_name(gt), &registered) < 0)
		rc = TK_UNAVAILABLE;
	else if (rc == TK_OK && !registered)
		rc = refuse(why, "unauthorized_client", "the client did not register this grant type");
	return rc;
}

void token_endpoint(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct client cl;
	struct issued t;
	struct tk_refusal why = { NULL, NULL };
	json_t *form = NULL;
	enum tk_grant gt = TG_CODE;
	enum tk_rc rc;
	int dup = 0, gated = 0;
	const char *bad_form = NULL;
	char who[LIM_CLIENT_ID + 1] = "", jkt[DPOP_JKT_LEN + 1] = "";
	struct dpop_pending pending = { 0 };
	memset(&cl, 0, sizeof(cl));
	memset(&t, 0, sizeof(t));
	/* Browser-based clients call the token endpoint cross-origin; it uses
	 * no cookies, so any origin may read its answers (server.c preflight). */
	http_add_header(r, "Access-Control-Allow-Origin", "*");
	http_add_header(r, "Access-Control-Expose-Headers", "DPoP-Nonce");
	dpop_fresh_nonce(r);
	form = reqform_body(r, &dup, &bad_form);
	if (!form) {
		rc = refuse(&why, "invalid_request", bad_form);
	} else {
		/* Failures of this (client, address) or address over the limit:
		 * turned away before anything is looked at, so neither secrets
		 * nor codes can be tried on. */
		client_auth_named_id(r, form, who);
		gated = client_auth_failures_check(r, who) == 0;
		rc = gated ? parse_grant_type(form, dup, &gt, &why) : TK_ANSWERED;
	}
	if (rc == TK_OK)
		rc = dpop_step(r, jkt, &pending, &why);
	if (rc == TK_OK && db_acquire(r->app->db, &c, DB_WAIT_MS) < 0)
		rc = TK_UNAVAILABLE;
	if (rc == TK_OK)
		rc = client_step(r, c, form, gt, &cl, &why);
	if (rc == TK_OK)
		rc = gt == TG_CODE         ? grant_code(r, c, form, &cl, jkt, &t, &why)
		     : gt == TG_REFRESH    ? grant_refresh(r, c, form, &cl, jkt, &t, &why)
		     : gt == TG_JWT_BEARER ? grant_jwt_bearer(r, c, form, &cl, jkt, &t, &why)
					   : grant_client_credentials(r, c, form, &cl, jkt, &t, &why);
	if (c && c->in_tx)
		db_rollback(c);
	/* The proof's jti is remembered once it got tokens (the tokens are
	 * issued: a proof that raced its own replay is only logged). */
	const char *late = NULL;
	if ((rc == TK_OK || rc == TK_REPLAYED) && pending.set && dpop_record(&pending, &late) < 0)
		log_msg(LOG_WARN, "token.dpop_jti_unrecorded", r->id, "%s", late);
	respond(r, rc, &why, &t);
	/* Every refusal after the gate (client authentication, an unknown,
	 * expired, reused or foreign code or refresh token, a wrong verifier,
	 * a malformed request) counts against this (client, address). */
	/* A request asked for a DPoP nonce failed at nothing. */
	if (gated && !(rc == TK_REFUSED && strcmp(why.error, "use_dpop_nonce") == 0))
		client_auth_failures_count(r, who);
	issued_wipe(&t);
	form_free(&form);
	client_free(&cl);
	db_release(r->app->db, &c);
}
