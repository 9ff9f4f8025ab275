#include "token.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include "clients.h"
#include "crypto.h"
#include "form.h"
#include "reqform.h"
#include "grant.h"
#include "log.h"
#include "resources.h"
#include "ratelimit.h"
#include "scope.h"
#include "uri.h"
#include "vault.h"

#define DB_WAIT_MS 2000

static void send_tokens(struct http_req *r, const struct issued *t)
{
	r->secret_response = 1;
	(void)http_add_header(r, "Cache-Control", "no-store");
	(void)http_add_header(r, "Pragma", "no-cache");
	http_send_json(r, 200, grant_token_response(t));
}

static int verifier_ok(const char *v)
{
	size_t n = v ? strlen(v) : 0;
	if (n < LIM_PKCE_VERIFIER_MIN || n > LIM_PKCE_VERIFIER_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '.' || c == '_' || c == '~'))
			return 0;
	}
	return 1;
}

/* The client's own bucket (limits.token_per_client_per_minute), charged
 * only by a request that proved something: a confidential client's
 * authentication, or a public client's valid code or refresh token. Anybody
 * can name a public client; nobody else can empty its bucket (DESIGN 3.5).
 * 0 go on; -1 when r was answered 429 slow_down. */
static int client_bucket(struct http_req *r, const struct client *cl, const char *grant_id)
{
	char key[LIM_CLIENT_ID + 40];
	snprintf(key, sizeof(key), "%s\n%s", cl->client_id, cl->confidential || !grant_id ? "" : grant_id);
	long per_min = r->app->cfg->limits.token_per_client_per_minute;
	int retry = 1;
	if (per_min <= 0 ||
	    ratelimit_take("token", key, (double)per_min / 60.0, (double)per_min / 6.0 + 1, &retry))
		return 0;
	http_send_slow_down(r, retry, "too many token requests for this client");
	return -1;
}

/* ---- authorization_code ----------------------------------------------- */

static void grant_code(struct http_req *r, struct db_conn *c, const json_t *form,
		       const struct client *cl)
{
	static struct db_stmt q_code = DB_STMT(
		"SELECT grant_id::text, client_id, redirect_uri, code_challenge, resource, "
		"array_to_string(scopes, ' '), expires_at > now(), used_at IS NOT NULL "
		"FROM auth_codes WHERE code_hash = $1::bytea FOR UPDATE");
	static struct db_stmt q_use = DB_STMT("UPDATE auth_codes SET used_at = now() WHERE code_hash = $1::bytea");
	static struct db_stmt q_client_used = DB_STMT("UPDATE clients SET last_used_at = now() WHERE client_id = $1");
	static struct db_stmt q_grant = DB_STMT("SELECT status = 'active' FROM grants WHERE id = $1::uuid");
	const char *code = form_get(form, "code");
	const char *redirect_uri = form_get(form, "redirect_uri");
	const char *verifier = form_get(form, "code_verifier");
	const char *resource = form_get(form, "resource");
	char hash[67];
	PGresult *res = NULL;
	struct issued t;
	memset(&t, 0, sizeof(t));
	if (!code || !*code || strlen(code) > LIM_TOKEN) {
		http_send_oauth_error(r, 400, "invalid_request", "code is required");
		return;
	}
	if (!verifier) {
		http_send_oauth_error(r, 400, "invalid_request", "code_verifier is required");
		return;
	}
	if (!verifier_ok(verifier)) {
		http_send_oauth_error(r, 400, "invalid_grant", "code_verifier is malformed");
		return;
	}
	vault_hash_hex(code, hash);
	if (db_begin(c) < 0) {
		http_send_oauth_unavailable(r);
		return;
	}
	const char *p[] = { hash };
	if (!(res = db_exec_ok(c, &q_code, 1, p))) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (PQntuples(res) != 1) {
		http_send_oauth_error(r, 400, "invalid_grant", "the code is unknown");
		goto out;
	}
	char grant_id[37], resource_bound[2048], scope[LIM_SCOPE + 1];
	snprintf(grant_id, sizeof(grant_id), "%s", PQgetvalue(res, 0, 0));
	snprintf(resource_bound, sizeof(resource_bound), "%s", PQgetvalue(res, 0, 4));
	snprintf(scope, sizeof(scope), "%s", PQgetvalue(res, 0, 5));
	if (strcmp(PQgetvalue(res, 0, 7), "t") == 0) {
		/* A replayed code: whoever holds it may be an attacker. Kill what
		 * the first exchange issued (OAuth 2.1 section 4.1.3). */
		char actor[LIM_CLIENT_ID + 8];
		snprintf(actor, sizeof(actor), "client:%s", cl->client_id);
		if (grant_revoke(r->app, c, grant_id, "code_replay", actor, r->id) < 0 || db_commit(c) < 0) {
			http_send_oauth_unavailable(r);
			goto out;
		}
		http_send_oauth_error(r, 400, "invalid_grant", "the code was already used");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the code has expired");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 1), cl->client_id) != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the code was issued to another client");
		goto out;
	}
	/* redirect_uri may be left out only where the authorization request
	 * could leave it out too (one registered URI, RFC 6749 section 3.1.2.3)
	 * and the code is bound to exactly that URI: it cannot have been sent
	 * anywhere else. */
	const char *bound_uri = PQgetvalue(res, 0, 2);
	if (!redirect_uri && !(cl->n_redirect_uris == 1 && strcmp(bound_uri, cl->redirect_uris[0]) == 0)) {
		http_send_oauth_error(r, 400, "invalid_request", "redirect_uri is required");
		goto out;
	}
	if (redirect_uri && strcmp(bound_uri, redirect_uri) != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "redirect_uri does not match the authorization request");
		goto out;
	}
	uint8_t digest[CRYPTO_SHA256_LEN];
	char computed[64];
	crypto_sha256(verifier, strlen(verifier), digest);
	crypto_b64url_encode(digest, sizeof(digest), computed);
	const char *challenge = PQgetvalue(res, 0, 3);
	if (!crypto_ct_equal(computed, strlen(computed), challenge, strlen(challenge))) {
		http_send_oauth_error(r, 400, "invalid_grant", "code_verifier does not match the code_challenge");
		goto out;
	}
	/* A valid code: now (and only now) a public client's bucket pays. A
	 * limited exchange rolls back and the code stays usable. */
	if (!cl->confidential && client_bucket(r, cl, grant_id) < 0)
		goto out;
	if (resource) {
		const struct cfg_resource *named = resources_find(r->app->cfg, resource);
		char url[2048] = "";
		if (!named || resources_url(r->app->cfg, named, url, sizeof(url)) < 0 ||
		    strcmp(url, resource_bound) != 0) {
			http_send_oauth_error(r, 400, "invalid_target", "resource does not match the authorization request");
			goto out;
		}
	}
	PQclear(res);
	res = NULL;
	if (!(res = db_exec_ok(c, &q_use, 1, p))) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	PQclear(res);
	const char *pg[] = { grant_id };
	if (!(res = db_exec_ok(c, &q_grant, 1, pg)) || PQntuples(res) != 1) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the authorization was revoked");
		goto out;
	}
	PQclear(res);
	res = NULL;
	const char *pcl[] = { cl->client_id };
	if (!(res = db_exec_ok(c, &q_client_used, 1, pcl))) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	PQclear(res);
	res = NULL;
	if (grant_issue(r->app, c, grant_id, cl->client_id, resource_bound, scope, &t) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	struct audit a = { "token.issued", "client", NULL, cl->client_id, grant_id, r->id };
	if (audit_record(c, &a, json_pack("{s:s, s:s}", "grant_type", "authorization_code", "scope", scope)) < 0 ||
	    db_commit(c) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	send_tokens(r, &t);
out:
	PQclear(res);
	issued_wipe(&t);
	if (c->in_tx)
		db_rollback(c);
}

/* ---- refresh_token ---------------------------------------------------- */

static int successor_key(const char *presented, uint8_t key[CRYPTO_KEY_LEN])
{
	return crypto_hkdf(presented, strlen(presented), "mcp-broker", 10, "refresh-successor", key,
			   CRYPTO_KEY_LEN);
}

static char *seal_successor(const char *presented, const char *hash, const struct issued *t,
			    time_t access_exp)
{
	uint8_t key[CRYPTO_KEY_LEN];
	json_t *j = json_pack("{s:s, s:s, s:I, s:s}", "a", t->access, "r", t->refresh, "e",
			      (json_int_t)access_exp, "s", t->scope);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	char *out = NULL;
	json_decref(j);
	if (text && successor_key(presented, key) == 0)
		out = vault_seal_key(key, hash, text, strlen(text));
	crypto_wipe(key, sizeof(key));
	if (text) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	return out;
}

static int open_successor(const char *presented, const char *hash, const char *blob, struct issued *t)
{
	uint8_t key[CRYPTO_KEY_LEN];
	int rc = -1;
	char *text = NULL;
	if (successor_key(presented, key) == 0)
		text = vault_open_key(key, hash, blob, NULL);
	crypto_wipe(key, sizeof(key));
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;
	vault_free(text);
	const char *a = json_string_value(json_object_get(j, "a"));
	const char *rt = json_string_value(json_object_get(j, "r"));
	const char *s = json_string_value(json_object_get(j, "s"));
	json_int_t e = json_integer_value(json_object_get(j, "e"));
	if (a && rt && s && strlen(a) < sizeof(t->access) && strlen(rt) < sizeof(t->refresh) &&
	    strlen(s) < sizeof(t->scope)) {
		snprintf(t->access, sizeof(t->access), "%s", a);
		snprintf(t->refresh, sizeof(t->refresh), "%s", rt);
		snprintf(t->scope, sizeof(t->scope), "%s", s);
		t->expires_in = (long)(e - time(NULL));
		if (t->expires_in < 0)
			t->expires_in = 0;
		rc = 0;
	}
	if (j) {
		/* the object holds token text: wipe before freeing */
		if (a)
			crypto_wipe((void *)a, strlen(a));
		if (rt)
			crypto_wipe((void *)rt, strlen(rt));
	}
	json_decref(j);
	return rc;
}

static void grant_refresh(struct http_req *r, struct db_conn *c, const json_t *form,
			  const struct client *cl)
{
	static struct db_stmt q_tok = DB_STMT(
		"SELECT t.grant_id::text, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"t.expires_at > now(), t.revoked_at IS NOT NULL, g.status = 'active', t.used_at IS NOT NULL, "
		"coalesce(extract(epoch FROM now() - t.used_at), 0)::float8, t.successor "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id "
		"WHERE t.token_hash = $1::bytea AND t.kind = 'refresh' FOR UPDATE OF t");
	static struct db_stmt q_rotate = DB_STMT(
		"UPDATE tokens SET used_at = now(), successor = $2::bytea WHERE token_hash = $1::bytea");
	const struct config *cfg = r->app->cfg;
	const char *presented = form_get(form, "refresh_token");
	const char *scope_req = form_get(form, "scope");
	const char *resource_req = form_get(form, "resource");
	char hash[67], grant_id[37], resource[2048], scope[LIM_SCOPE + 1];
	PGresult *res = NULL;
	struct issued t;
	char *successor = NULL;
	memset(&t, 0, sizeof(t));
	if (!presented || !*presented || strlen(presented) > LIM_TOKEN) {
		http_send_oauth_error(r, 400, "invalid_request", "refresh_token is required");
		return;
	}
	vault_hash_hex(presented, hash);
	if (db_begin(c) < 0) {
		http_send_oauth_unavailable(r);
		return;
	}
	const char *p[] = { hash };
	if (!(res = db_exec_ok(c, &q_tok, 1, p))) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (PQntuples(res) != 1) {
		http_send_oauth_error(r, 400, "invalid_grant", "the refresh token is unknown");
		goto out;
	}
	snprintf(grant_id, sizeof(grant_id), "%s", PQgetvalue(res, 0, 0));
	snprintf(resource, sizeof(resource), "%s", PQgetvalue(res, 0, 2));
	snprintf(scope, sizeof(scope), "%s", PQgetvalue(res, 0, 3));
	if (strcmp(PQgetvalue(res, 0, 1), cl->client_id) != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the refresh token was issued to another client");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 5), "t") == 0 || strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the authorization was revoked");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 7), "t") == 0) {
		double age = strtod(PQgetvalue(res, 0, 8), NULL);
		if (age <= (double)cfg->tokens.refresh_grace && !PQgetisnull(res, 0, 9) &&
		    open_successor(presented, hash, PQgetvalue(res, 0, 9), &t) == 0) {
			/* A retry or a concurrent duplicate: the same successor pair. */
			db_rollback(c);
			if (!cl->confidential && client_bucket(r, cl, grant_id) < 0)
				goto out;
			log_msg(LOG_INFO, "token.refresh_replayed", r->id, "rotated refresh token replayed within grace");
			send_tokens(r, &t);
			goto out;
		}
		char actor[LIM_CLIENT_ID + 8];
		snprintf(actor, sizeof(actor), "client:%s", cl->client_id);
		struct audit a = { "token.refresh_reuse", actor, NULL, cl->client_id, grant_id, r->id };
		if (audit_record(c, &a, NULL) < 0 ||
		    grant_revoke(r->app, c, grant_id, "refresh_reuse", actor, r->id) < 0 || db_commit(c) < 0) {
			http_send_oauth_unavailable(r);
			goto out;
		}
		http_send_oauth_error(r, 400, "invalid_grant", "the refresh token was already used");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 4), "t") != 0) {
		http_send_oauth_error(r, 400, "invalid_grant", "the refresh token has expired");
		goto out;
	}
	PQclear(res);
	res = NULL;
	/* A valid refresh token: a public client's bucket pays; a limited
	 * refresh rolls back and the token is not rotated. */
	if (!cl->confidential && client_bucket(r, cl, grant_id) < 0)
		goto out;
	if (resource_req) {
		/* RFC 8707 section 2.2: the grant's one resource, in any canonical form. */
		const struct cfg_resource *named = resources_find(cfg, resource_req);
		char url[2048] = "";
		if (!named || resources_url(cfg, named, url, sizeof(url)) < 0 || strcmp(url, resource) != 0) {
			http_send_oauth_error(r, 400, "invalid_target", "resource does not match the authorization");
			goto out;
		}
	}
	/* An empty scope is an absent one, not a narrowing to nothing. */
	if (scope_req && scope_req[strspn(scope_req, " ")] == '\0')
		scope_req = NULL;
	if (scope_req) {
		/* Narrowing only (RFC 6749 section 6). */
		struct scopes want = { 0 }, have = { 0 };
		int ok = scopes_parse(scope_req, &want) == 0 && scopes_parse(scope, &have) == 0 &&
			 scopes_subset(&want, &have);
		char *joined = ok ? scopes_join(&want) : NULL;
		scopes_free(&want);
		scopes_free(&have);
		if (!joined) {
			http_send_oauth_error(r, 400, "invalid_scope", "scope may only be narrowed on refresh");
			goto out;
		}
		snprintf(scope, sizeof(scope), "%s", joined);
		free(joined);
	}
	if (grant_issue(r->app, c, grant_id, cl->client_id, resource, scope, &t) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	successor = seal_successor(presented, hash, &t, time(NULL) + t.expires_in);
	const char *pr[] = { hash, successor };
	if (!successor || !(res = db_exec_ok(c, &q_rotate, 2, pr))) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	PQclear(res);
	res = NULL;
	struct audit a = { "token.refreshed", "client", NULL, cl->client_id, grant_id, r->id };
	if (audit_record(c, &a, json_pack("{s:s}", "scope", scope)) < 0 || db_commit(c) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	send_tokens(r, &t);
out:
	PQclear(res);
	free(successor);
	issued_wipe(&t);
	if (c->in_tx)
		db_rollback(c);
}

/* 1 when the client registered grant type gt (RFC 7591 grant_types; static
 * clients have both), 0 when it did not, -1 on a database error. */
static int grant_type_registered(struct db_conn *c, const char *client_id, const char *gt)
{
	static struct db_stmt q = DB_STMT("SELECT $2 = ANY(grant_types) FROM clients WHERE client_id = $1");
	const char *p[] = { client_id, gt };
	PGresult *res = db_exec_ok(c, &q, 2, p);
	if (!res)
		return -1;
	int ok = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ok;
}

void token_endpoint(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct client cl;
	json_t *form = NULL;
	int dup = 0;
	memset(&cl, 0, sizeof(cl));
	/* Browser-based clients call the token endpoint cross-origin; it uses
	 * no cookies, so any origin may read its answers (server.c preflight). */
	(void)http_add_header(r, "Access-Control-Allow-Origin", "*");
	const char *why = NULL;
	char who[LIM_CLIENT_ID + 1];
	int gated = 0;
	form = reqform_body(r, &dup, &why);
	if (!form) {
		http_send_oauth_error(r, 400, "invalid_request", why);
		return;
	}
	/* Failures of this (client, address) or address over the limit: turned
	 * away before anything is looked at, so neither secrets nor codes can
	 * be tried on. */
	clients_named_id(r, form, who);
	if (clients_failures_check(r, who) < 0)
		goto out;
	gated = 1;
	if (dup) {
		http_send_oauth_error(r, 400, "invalid_request", "a parameter was given more than once");
		goto out;
	}
	const char *gt = form_get(form, "grant_type");
	if (!gt) {
		http_send_oauth_error(r, 400, "invalid_request", "grant_type is required");
		goto out;
	}
	int is_code = strcmp(gt, "authorization_code") == 0, is_refresh = strcmp(gt, "refresh_token") == 0;
	if (!is_code && !is_refresh) {
		http_send_oauth_error(r, 400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token");
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	enum client_auth ca = clients_authenticate(r, c, form, &cl);
	if (ca != CA_OK) {
		clients_auth_error(r, ca);
		goto out;
	}
	if (cl.confidential && client_bucket(r, &cl, NULL) < 0)
		goto out;
	int registered = grant_type_registered(c, cl.client_id, gt);
	if (registered < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (!registered) {
		http_send_oauth_error(r, 400, "unauthorized_client", "the client did not register this grant type");
		goto out;
	}
	if (is_code)
		grant_code(r, c, form, &cl);
	else
		grant_refresh(r, c, form, &cl);
out:
	/* Every refusal after the gate (client authentication, an unknown,
	 * expired, reused or foreign code or refresh token, a wrong verifier,
	 * a malformed request) counts against this (client, address). */
	if (gated)
		clients_failures_count(r, who);
	form_free(&form);
	client_free(&cl);
	db_release(r->app->db, &c);
}

int token_validate(struct app *app, struct db_conn *c, const char *token, struct token_info *info)
{
	static struct db_stmt q = DB_STMT(
		"SELECT t.grant_id::text, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"g.user_id::text, u.subject, g.upstream, extract(epoch FROM t.expires_at)::bigint "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id "
		"JOIN users u ON u.id = g.user_id WHERE t.token_hash = $1::bytea AND t.kind = 'access' "
		"AND t.revoked_at IS NULL AND t.expires_at > now() AND g.status = 'active'");
	(void)app;
	char hash[67];
	memset(info, 0, sizeof(*info));
	if (!token || strncmp(token, TOKEN_PREFIX_ACCESS, strlen(TOKEN_PREFIX_ACCESS)) != 0 ||
	    strlen(token) > LIM_TOKEN)
		return 0;
	vault_hash_hex(token, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res)
		return -1;
	int ok = PQntuples(res) == 1;
	if (ok) {
		snprintf(info->grant_id, sizeof(info->grant_id), "%s", PQgetvalue(res, 0, 0));
		snprintf(info->client_id, sizeof(info->client_id), "%s", PQgetvalue(res, 0, 1));
		snprintf(info->resource, sizeof(info->resource), "%s", PQgetvalue(res, 0, 2));
		snprintf(info->scope, sizeof(info->scope), "%s", PQgetvalue(res, 0, 3));
		snprintf(info->user_id, sizeof(info->user_id), "%s", PQgetvalue(res, 0, 4));
		snprintf(info->subject, sizeof(info->subject), "%s", PQgetvalue(res, 0, 5));
		snprintf(info->upstream, sizeof(info->upstream), "%s", PQgetvalue(res, 0, 6));
		info->exp = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
	}
	PQclear(res);
	return ok;
}
