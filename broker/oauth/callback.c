#include "callback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "app.h"
#include "audit.h"
#include "authorize.h"
#include "connect.h"
#include "cookie.h"
#include "crypto.h"
#include "db.h"
#include "grant.h"
#include "html.h"
#include "log.h"
#include "upstream.h"
#include "vault.h"

#define STATE_MAX 128   /* the state the broker sends upstream is 43 characters */
#define UPCODE_MAX 2048 /* an upstream authorization code */

struct pending {
	char client_id[LIM_CLIENT_ID + 1];
	char redirect_uri[LIM_REDIRECT_URI + 1];
	char state[LIM_STATE + 1];
	int has_state;
	char challenge[LIM_PKCE_VERIFIER_MAX + 1];
	char resource[2048];
	char scope[LIM_SCOPE + 1];
	char upstream[65];
};

/* Takes the pending row of this state (single use). 1 taken and fresh and
 * bound to this browser, 0 not (error page sent), -1 database error. */
static int take_pending(struct http_req *r, struct db_conn *c, const char *state, struct pending *pd)
{
	static struct db_stmt q = DB_STMT(
		"DELETE FROM pending_authorizations WHERE state_hash = $1::bytea RETURNING "
		"encode(browser_hash, 'hex'), client_id, redirect_uri, client_state, code_challenge, "
		"resource, array_to_string(scopes, ' '), upstream, expires_at > now()");
	char hash[67];
	vault_hash_hex(state, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		return -1;
	}
	int ok = 0;
	if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 8), "t") != 0) {
		html_error_page(r, 400, "Sign-in expired",
				"This sign-in is unknown or has expired. Start again from your application.");
		goto out;
	}
	if (!cookie_browser_is(r, PQgetvalue(res, 0, 0))) {
		html_error_page(r, 403, "Request refused",
				"This sign-in was started in another browser. Start again from your application.");
		goto out;
	}
	snprintf(pd->client_id, sizeof(pd->client_id), "%s", PQgetvalue(res, 0, 1));
	snprintf(pd->redirect_uri, sizeof(pd->redirect_uri), "%s", PQgetvalue(res, 0, 2));
	pd->has_state = !PQgetisnull(res, 0, 3);
	snprintf(pd->state, sizeof(pd->state), "%s", PQgetvalue(res, 0, 3));
	snprintf(pd->challenge, sizeof(pd->challenge), "%s", PQgetvalue(res, 0, 4));
	snprintf(pd->resource, sizeof(pd->resource), "%s", PQgetvalue(res, 0, 5));
	snprintf(pd->scope, sizeof(pd->scope), "%s", PQgetvalue(res, 0, 6));
	snprintf(pd->upstream, sizeof(pd->upstream), "%s", PQgetvalue(res, 0, 7));
	ok = 1;
out:
	PQclear(res);
	return ok;
}

/* Stores user, grant (upstream tokens sealed), consent and code in one
 * transaction. code receives the broker's one-time code. */
static int store_grant(struct http_req *r, struct db_conn *c, const struct pending *pd,
		       const struct upstream_tokens *tok, const struct upstream_identity *id, char code[TOKEN_TEXT_MAX])
{
	static struct db_stmt q_user = DB_STMT(
		"INSERT INTO users(id, upstream, subject, login, email, name) VALUES ($1::uuid, $2, $3, $4, $5, $6) "
		"ON CONFLICT (upstream, subject) DO UPDATE SET login = EXCLUDED.login, email = EXCLUDED.email, "
		"name = EXCLUDED.name, last_login_at = now() RETURNING id::text");
	static struct db_stmt q_grant = DB_STMT(
		"INSERT INTO grants(id, user_id, client_id, resource, upstream, scopes, key_id, up_access, "
		"up_refresh, up_expires_at, up_scope) VALUES ($1::uuid, $2::uuid, $3, $4, $5, "
		"string_to_array($6, ' '), $7, $8::bytea, $9::bytea, "
		"CASE WHEN $10::int > 0 THEN now() + make_interval(secs => $10::int) END, $11)");
	static struct db_stmt q_consent = DB_STMT(
		"INSERT INTO consents(user_id, client_id, resource, scopes) VALUES ($1::uuid, $2, $3, "
		"string_to_array($4, ' ')) ON CONFLICT (user_id, client_id, resource) DO UPDATE SET "
		"scopes = EXCLUDED.scopes, granted_at = now()");
	static struct db_stmt q_code = DB_STMT(
		"INSERT INTO auth_codes(code_hash, grant_id, client_id, redirect_uri, code_challenge, resource, "
		"scopes, expires_at) VALUES ($1::bytea, $2::uuid, $3, $4, $5, $6, string_to_array($7, ' '), "
		"now() + make_interval(secs => $8::int))");
	const struct config *cfg = r->app->cfg;
	char user_uuid[37], grant_id[37], user_id[40], exp[24], ttl[16], code_hash[67];
	char *enc_access = NULL, *enc_refresh = NULL;
	const char *key_id = NULL;
	PGresult *res = NULL;
	int rc = -1;
	if (vault_uuid(user_uuid) < 0 || vault_uuid(grant_id) < 0 ||
	    crypto_token_new(TOKEN_PREFIX_CODE, code, TOKEN_TEXT_MAX) < 0)
		return -1;
	enc_access = vault_seal(cfg, grant_id, "access", tok->access_token, &key_id);
	if (tok->refresh_token)
		enc_refresh = vault_seal(cfg, grant_id, "refresh", tok->refresh_token, &key_id);
	if (!enc_access || (tok->refresh_token && !enc_refresh))
		goto out;
	if (db_begin(c) < 0)
		goto out;
	const char *pu[] = { user_uuid, pd->upstream, id->subject, id->login, id->email, id->name };
	if (!(res = db_exec_ok(c, &q_user, 6, pu)) || PQntuples(res) != 1)
		goto out;
	snprintf(user_id, sizeof(user_id), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	snprintf(exp, sizeof(exp), "%ld", tok->expires_in);
	const char *pg[] = { grant_id, user_id,    pd->client_id, pd->resource, pd->upstream, pd->scope,
			     key_id,   enc_access, enc_refresh,   exp,          tok->scope };
	if (!(res = db_exec_ok(c, &q_grant, 11, pg)))
		goto out;
	PQclear(res);
	const char *pc[] = { user_id, pd->client_id, pd->resource, pd->scope };
	if (!(res = db_exec_ok(c, &q_consent, 4, pc)))
		goto out;
	PQclear(res);
	vault_hash_hex(code, code_hash);
	snprintf(ttl, sizeof(ttl), "%ld", cfg->tokens.code_ttl);
	const char *pk[] = { code_hash,     grant_id,     pd->client_id, pd->redirect_uri,
			     pd->challenge, pd->resource, pd->scope,     ttl };
	if (!(res = db_exec_ok(c, &q_code, 8, pk)))
		goto out;
	PQclear(res);
	res = NULL;
	struct audit a = { "grant.created", "user", user_id, pd->client_id, grant_id, r->id };
	if (audit_record(c, &a,
			 json_pack("{s:s, s:s, s:s, s:b}", "upstream", pd->upstream, "resource", pd->resource, "scope",
				   pd->scope, "upstream_refreshable", tok->refresh_token != NULL)) < 0)
		goto out;
	if (db_commit(c) < 0)
		goto out;
	rc = 0;
out:
	PQclear(res);
	if (rc < 0) {
		db_rollback(c);
		crypto_wipe(code, TOKEN_TEXT_MAX);
	}
	free(enc_access);
	free(enc_refresh);
	return rc;
}

/* The upstream issued tokens that no grant will hold (identity or storage
 * failed): revoke them upstream now, best effort, rather than leave live
 * credentials nobody can revoke later. */
static void discard_upstream_tokens(struct http_req *r, const struct cfg_upstream *up, const struct upstream_ep *ep,
				    const struct upstream_tokens *tok)
{
	if (!tok->access_token || ep->github)
		return; /* GitHub's grant API would take the user's other sessions too */
	enum upstream_rc rc = upstream_revoke(up, ep, tok->access_token, tok->refresh_token);
	json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "result", upstream_rc_name(rc));
	log_event(LOG_INFO, "callback.upstream_tokens_discarded", r->id, f);
}

/* The error the client gets when the upstream leg failed on cls: worth a
 * retry when the upstream is in trouble, server_error when the code was
 * refused or the broker's own upstream credentials are wrong. */
static const char *upstream_error_code(enum upstream_class cls)
{
	switch (cls) {
	case UPC_RATE_LIMITED:
	case UPC_SERVER_ERROR:
	case UPC_TIMEOUT:
	case UPC_UNREACHABLE:
	case UPC_GARBAGE: return "temporarily_unavailable";
	default: return "server_error";
	}
}

/* The upstream's answer names one of each parameter and a state the broker
 * could have issued; else the error page is sent and NULL returned. */
static const char *callback_state(struct http_req *r)
{
	static const char *const params[] = { "state", "code", "error", "iss" };
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (http_query_count(r, params[i]) > 1) {
			html_error_page(r, 400, "Invalid request", "A parameter was given more than once.");
			return NULL;
		}
	const char *state = http_query(r, "state");
	if (!state || !*state || strlen(state) > STATE_MAX) {
		html_error_page(r, 400, "Invalid request", "The sign-in response has no valid state.");
		return NULL;
	}
	return state;
}

/* The upstream's code for the pending authorization pd, or NULL when the
 * upstream answered another issuer, an error or no code (the client's
 * error redirect has been sent). */
static const char *upstream_code(struct http_req *r, const struct cfg_upstream *up, const struct pending *pd)
{
	const char *st = pd->has_state ? pd->state : NULL;
	const char *up_iss = http_query(r, "iss");
	if (up_iss && up->issuer && strcmp(up_iss, up->issuer) != 0) {
		/* RFC 9207: an answer naming another issuer is a mix-up attempt. */
		json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "client_id", pd->client_id);
		log_event(LOG_WARN, "callback.issuer_mismatch", r->id, f);
		authorize_redirect_error(r, pd->redirect_uri, "server_error",
					 "the upstream answer came from another issuer", st);
		return NULL;
	}
	if (http_query(r, "error")) {
		json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "client_id", pd->client_id);
		log_event(LOG_INFO, "callback.upstream_denied", r->id, f);
		authorize_redirect_error(r, pd->redirect_uri, "access_denied", "the upstream sign-in was not completed",
					 st);
		return NULL;
	}
	const char *upcode = http_query(r, "code");
	if (!upcode || !*upcode || strlen(upcode) > UPCODE_MAX) {
		authorize_redirect_error(r, pd->redirect_uri, "server_error", "the upstream answered without a code",
					 st);
		return NULL;
	}
	return upcode;
}

void callback_get(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct pending pd;
	struct upstream_tokens tok = { 0 };
	struct upstream_identity id = { 0 };
	char verifier[64] = "", code[TOKEN_TEXT_MAX] = "", redirect[1100];
	const struct config *cfg = r->app->cfg;
	memset(&pd, 0, sizeof(pd));
	const char *state = callback_state(r);
	if (!state)
		goto out;
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	/* A leg of an in-band connect (connect.c) comes back here too. */
	int leg = connect_callback(r, c, state);
	if (leg == 0)
		leg = account_callback(r, c, state); /* and the sign-in of the account page */
	if (leg < 0)
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
	if (leg != 0 || take_pending(r, c, state, &pd) != 1)
		goto out;
	const char *st = pd.has_state ? pd.state : NULL;
	const struct cfg_upstream *up = config_upstream(cfg, pd.upstream);
	struct upstream_ep ep;
	if (!up || upstream_endpoints(up, &ep) < 0) {
		authorize_redirect_error(r, pd.redirect_uri, "temporarily_unavailable",
					 "the upstream identity provider is not reachable", st);
		goto out;
	}
	const char *upcode = upstream_code(r, up, &pd);
	if (!upcode)
		goto out;
	if (cookie_derive(r, "upstream-pkce", state, verifier) < 0 ||
	    authorize_callback_url(cfg, redirect, sizeof(redirect)) < 0) {
		authorize_redirect_error(r, pd.redirect_uri, "server_error", NULL, st);
		goto out;
	}
	/* Each failed call is classified, counted and logged by upstream.c;
	 * nothing is stored before both succeed. */
	enum upstream_class urc = upstream_exchange_code(up, &ep, upcode, redirect, ep.pkce ? verifier : NULL, r->id,
							 &tok, NULL);
	if (urc == UPC_OK)
		urc = upstream_identity(up, &ep, &tok, r->id, &id, NULL);
	if (urc != UPC_OK) {
		json_t *f = json_pack("{s:s, s:s, s:s}", "upstream", up->name, "result", upstream_class_name(urc),
				      "client_id", pd.client_id);
		log_event(LOG_WARN, "callback.upstream_failed", r->id, f);
		discard_upstream_tokens(r, up, &ep, &tok);
		authorize_redirect_error(r, pd.redirect_uri, upstream_error_code(urc),
					 "the upstream identity provider did not complete the sign-in", st);
		goto out;
	}
	if (store_grant(r, c, &pd, &tok, &id, code) < 0) {
		discard_upstream_tokens(r, up, &ep, &tok);
		authorize_redirect_error(r, pd.redirect_uri, "server_error", "the authorization could not be stored",
					 st);
		goto out;
	}
	authorize_redirect_code(r, pd.redirect_uri, code, st);
out:
	crypto_wipe(verifier, sizeof(verifier));
	crypto_wipe(code, sizeof(code));
	upstream_tokens_free(&tok);
	upstream_identity_free(&id);
	db_release(r->app->db, &c);
}
