#include "authorize.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app.h"
#include "audit.h"
#include "clients.h"
#include "cookie.h"
#include "crypto.h"
#include "form.h"
#include "grant.h"
#include "html.h"
#include "log.h"
#include "reqform.h"
#include "resources.h"
#include "scope.h"
#include "upstream.h"
#include "uri.h"
#include "vault.h"

#define DB_WAIT_MS 2000
#define PENDING_TTL_S 600     /* upstream state lifetime: <= 10 minutes */
#define CONSENT_REQUEST_TTL_S 600

/* A validated authorization request. */
struct authz {
	struct client client;
	char redirect_uri[LIM_REDIRECT_URI + 1];
	char state[LIM_STATE + 1];
	int has_state;
	char challenge[129];
	const struct cfg_resource *res;
	char resource_url[2048];
	char *scope; /* space-joined, never NULL after validation */
};

static void authz_free(struct authz *a)
{
	client_free(&a->client);
	free(a->scope);
	a->scope = NULL;
}

static void no_store(struct http_req *r)
{
	(void)http_add_header(r, "Cache-Control", "no-store");
	(void)http_add_header(r, "Pragma", "no-cache");
}

static void redirect_to(struct http_req *r, const char *location)
{
	no_store(r);
	(void)http_add_header(r, "Location", location);
	http_send(r, 302, "text/plain", "", 0);
}

/* Redirects an error to a verified redirect_uri (RFC 6749 4.1.2.1, RFC 9207). */
static void redirect_error(struct http_req *r, const char *redirect_uri, const char *error,
			   const char *desc, const char *state)
{
	struct buf q;
	buf_init(&q, 8192);
	if (form_add(&q, "error", error) < 0 || (desc && form_add(&q, "error_description", desc) < 0) ||
	    (state && form_add(&q, "state", state) < 0) ||
	    form_add(&q, "iss", r->app->cfg->public_url) < 0) {
		buf_free(&q);
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		return;
	}
	char *loc = uri_with_query(redirect_uri, q.ptr);
	buf_free(&q);
	json_t *f = json_pack("{s:s, s:s?}", "error", error, "description", desc);
	log_event(LOG_INFO, "authorize.error", r->id, f);
	if (!loc) {
		html_error_page(r, 400, "Invalid request", "The redirect URI cannot be used.");
		return;
	}
	redirect_to(r, loc);
	free(loc);
}

static int pkce_challenge_ok(const char *c)
{
	size_t n = strlen(c);
	if (n < 43 || n > 128)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = c[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '.' || ch == '_' || ch == '~'))
			return 0;
	}
	return 1;
}

/* RFC 6749 appendix A: VSCHAR = %x20-7E (state, client_id). */
static int vschar_only(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return 0;
	return 1;
}

/* Validates the request parameters. On failure the response (an error
 * page or an error redirect) has been sent and -1 is returned. get() reads
 * one parameter; dup() reports a repeated one. */
struct params {
	struct http_req *r;
	const json_t *obj; /* sealed request, or NULL for the query string */
};

static const char *param(const struct params *p, const char *name)
{
	return p->obj ? json_string_value(json_object_get(p->obj, name)) : http_query(p->r, name);
}

static int param_dup(const struct params *p, const char *name)
{
	return p->obj ? 0 : http_query_count(p->r, name) > 1;
}

static int validate(struct http_req *r, struct db_conn *c, const struct params *p, struct authz *a)
{
	const struct config *cfg = r->app->cfg;
	memset(a, 0, sizeof(*a));
	const char *client_id = param(p, "client_id");
	const char *redirect_uri = param(p, "redirect_uri");
	if (param_dup(p, "client_id") || param_dup(p, "redirect_uri")) {
		html_error_page(r, 400, "Invalid request", "A parameter was given more than once.");
		return -1;
	}
	if (!client_id || !*client_id) {
		html_error_page(r, 400, "Invalid request", "The request names no client.");
		return -1;
	}
	int found = clients_lookup(r->app, c, client_id, &a->client);
	if (found < 0) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		return -1;
	}
	if (!found || a->client.disabled) {
		const char *why = clients_last_error();
		html_error_page(r, 400, "Unknown client",
				why ? why : "The application that sent you here is not registered.");
		return -1;
	}
	if (!redirect_uri) {
		/* Allowed only when it is unambiguous (RFC 6749 3.1.2.3). */
		if (a->client.n_redirect_uris != 1) {
			html_error_page(r, 400, "Invalid request", "The request has no redirect URI.");
			return -1;
		}
		redirect_uri = a->client.redirect_uris[0];
	}
	if (strlen(redirect_uri) > LIM_REDIRECT_URI || !client_redirect_ok(&a->client, redirect_uri)) {
		html_error_page(r, 400, "Invalid redirect URI",
				"The redirect URI is not registered for this application.");
		return -1;
	}
	snprintf(a->redirect_uri, sizeof(a->redirect_uri), "%s", redirect_uri);

	/* From here errors go back to the verified redirect URI. */
	const char *state = param(p, "state");
	if (state && strlen(state) > LIM_STATE) {
		redirect_error(r, a->redirect_uri, "invalid_request", "state is too long", NULL);
		return -1;
	}
	if (state && !vschar_only(state)) {
		/* Not echoed: it could not travel back intact (the sealed consent
		 * request is JSON, which drops invalid UTF-8). */
		redirect_error(r, a->redirect_uri, "invalid_request", "state may hold only printable ASCII", NULL);
		return -1;
	}
	if (state) {
		snprintf(a->state, sizeof(a->state), "%s", state);
		a->has_state = 1;
	}
	static const char *const single[] = { "response_type", "state", "scope", "code_challenge",
					       "code_challenge_method", "resource" };
	for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
		if (param_dup(p, single[i])) {
			redirect_error(r, a->redirect_uri, strcmp(single[i], "resource") == 0 ? "invalid_target" : "invalid_request",
				       strcmp(single[i], "resource") == 0 ? "only one resource per request is supported"
									  : "a parameter was given more than once",
				       state);
			return -1;
		}
	const char *rt = param(p, "response_type");
	if (!rt) {
		redirect_error(r, a->redirect_uri, "invalid_request", "response_type is required", state);
		return -1;
	}
	if (strcmp(rt, "code") != 0) {
		redirect_error(r, a->redirect_uri, "unsupported_response_type", "only response_type=code is supported", state);
		return -1;
	}
	const char *ch = param(p, "code_challenge"), *method = param(p, "code_challenge_method");
	if (!ch || !*ch) {
		redirect_error(r, a->redirect_uri, "invalid_request", "code_challenge (PKCE) is required", state);
		return -1;
	}
	if (!method || strcmp(method, "S256") != 0) {
		redirect_error(r, a->redirect_uri, "invalid_request", "code_challenge_method must be S256", state);
		return -1;
	}
	if (!pkce_challenge_ok(ch)) {
		redirect_error(r, a->redirect_uri, "invalid_request", "code_challenge is malformed", state);
		return -1;
	}
	snprintf(a->challenge, sizeof(a->challenge), "%s", ch);

	const char *resource = param(p, "resource");
	if (resource)
		a->res = resources_find(cfg, resource);
	else if (cfg->n_resources == 1)
		a->res = &cfg->resources[0];
	if (!a->res) {
		redirect_error(r, a->redirect_uri, "invalid_target",
			       resource ? "the resource is not served by this authorization server"
					: "resource is required: this server protects several resources",
			       state);
		return -1;
	}
	if (resources_url(cfg, a->res, a->resource_url, sizeof(a->resource_url)) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		return -1;
	}

	struct scopes want = { 0 }, allowed = { 0 };
	const char *scope = param(p, "scope");
	int bad = scopes_parse(scope, &want) < 0;
	scopes_remove(&want, "offline_access"); /* refresh tokens are always issued */
	for (size_t i = 0; i < a->res->n_scopes && !bad; i++)
		bad = scopes_add(&allowed, a->res->scopes[i].scope) < 0;
	if (!bad && want.n == 0) {
		for (size_t i = 0; i < a->res->n_default_scopes && !bad; i++)
			bad = scopes_add(&want, a->res->default_scopes[i]) < 0;
		for (size_t i = 0; !a->res->n_default_scopes && i < allowed.n && !bad; i++)
			bad = scopes_add(&want, allowed.v[i]) < 0;
	}
	if (bad || !scopes_subset(&want, &allowed)) {
		scopes_free(&want);
		scopes_free(&allowed);
		redirect_error(r, a->redirect_uri, "invalid_scope", "a requested scope is not offered by this resource", state);
		return -1;
	}
	a->scope = scopes_join(&want);
	scopes_free(&want);
	scopes_free(&allowed);
	if (a->scope && strlen(a->scope) > LIM_SCOPE) {
		/* Stored and compared whole, never cut. */
		free(a->scope);
		a->scope = NULL;
		redirect_error(r, a->redirect_uri, "invalid_scope", "too many scopes requested", state);
		return -1;
	}
	if (!a->scope) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		return -1;
	}
	return 0;
}

static const char *client_display_name(const struct authz *a)
{
	return a->client.name && *a->client.name ? a->client.name : a->client.client_id;
}

static char *consent_key(const struct authz *a)
{
	struct buf b;
	buf_init(&b, 8192);
	if (buf_printf(&b, "%s|%s|%s|%s", a->client.client_id, a->redirect_uri, a->resource_url, a->scope) < 0)
		return NULL;
	return buf_take(&b, NULL);
}

static void consent_page(struct http_req *r, const struct authz *a, const char *browser)
{
	const struct config *cfg = r->app->cfg;
	char csrf[64];
	char *host = uri_display_host(a->redirect_uri);
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "response_type", "code",
				"client_id", a->client.client_id,
				"redirect_uri", a->redirect_uri, "code_challenge", a->challenge,
				"code_challenge_method", "S256", "resource", a->resource_url, "exp",
				(json_int_t)(time(NULL) + CONSENT_REQUEST_TTL_S));
	if (req && a->has_state)
		json_object_set_new(req, "state", json_string(a->state));
	if (req && *a->scope)
		json_object_set_new(req, "scope", json_string(a->scope));
	if (req)
		json_object_set_new(req, "browser", json_string(browser));
	char *sealed = req ? cookie_seal(r, "consent-request", req) : NULL;
	json_decref(req);
	struct buf b;
	buf_init(&b, 64 * 1024);
	struct scopes sc = { 0 };
	int rc = !host || !sealed || cookie_csrf(r, browser, a->client.client_id, csrf) < 0 ||
		 scopes_parse(a->scope, &sc) < 0;
	const struct cfg_resource *res = a->res;
	rc = rc || buf_adds(&b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
				"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
				"<title>Authorize ") < 0;
	rc = rc || html_escape(&b, client_display_name(a)) < 0;
	rc = rc || buf_adds(&b, "</title><style>body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}"
				".host{font-size:1.25em;font-weight:600;padding:.4em .6em;background:#f3f3f3;border-radius:4px;display:inline-block}"
				"button{font-size:1em;padding:.5em 1.4em;margin-right:.6em}code{word-break:break-all}</style></head><body>"
				"<h1>Authorize access</h1><p><strong>") < 0;
	rc = rc || html_escape(&b, client_display_name(a)) < 0;
	rc = rc || buf_adds(&b, "</strong> wants to use <code>") < 0;
	rc = rc || html_escape(&b, a->resource_url) < 0;
	rc = rc || buf_adds(&b, "</code> on your behalf, signing you in with <strong>") < 0;
	rc = rc || html_escape(&b, res->upstream) < 0;
	rc = rc || buf_adds(&b, "</strong>.</p><p>If you approve, you will be sent back to:</p><p class=\"host\">") < 0;
	rc = rc || html_escape(&b, host) < 0;
	rc = rc || buf_adds(&b, "</p><p>Client ID: <code>") < 0;
	rc = rc || html_escape(&b, a->client.client_id) < 0;
	if (strcmp(a->client.kind, "cimd") == 0) {
		/* The document's host is what the user can actually trust. */
		char *chost = uri_display_host(a->client.client_id);
		rc = rc || !chost || buf_adds(&b, "</code></p><p>This application is described by <span class=\"host\">") < 0 ||
		     html_escape(&b, chost) < 0 || buf_adds(&b, "</span>; its name above is what that site claims.") < 0;
		free(chost);
	}
	rc = rc || buf_adds(&b, "</code></p><h2>Requested permissions</h2><ul>") < 0;
	for (size_t i = 0; !rc && i < sc.n; i++)
		rc = buf_adds(&b, "<li>") < 0 || html_escape(&b, sc.v[i]) < 0 || buf_adds(&b, "</li>") < 0;
	if (!rc && sc.n == 0)
		rc = buf_adds(&b, "<li>basic access</li>") < 0;
	rc = rc || buf_adds(&b, "</ul><p>Only approve if you started this from an application you trust.</p>"
				"<form method=\"post\" action=\"") < 0;
	rc = rc || html_escape(&b, cfg->public_url) < 0;
	rc = rc || buf_adds(&b, "/authorize\"><input type=\"hidden\" name=\"request\" value=\"") < 0;
	rc = rc || html_escape(&b, sealed) < 0;
	rc = rc || buf_adds(&b, "\"><input type=\"hidden\" name=\"csrf\" value=\"") < 0;
	rc = rc || html_escape(&b, csrf) < 0;
	rc = rc || buf_adds(&b, "\"><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>"
				"<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form></body></html>") < 0;
	if (rc) {
		buf_free(&b);
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	} else {
		html_send(r, 200, &b);
		buf_free(&b);
	}
	scopes_free(&sc);
	crypto_wipe(csrf, sizeof(csrf));
	free(sealed);
	free(host);
}

/* Approved: store the pending request and send the browser upstream. */
static void start_upstream(struct http_req *r, struct db_conn *c, const struct authz *a,
			   const char *browser)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO pending_authorizations(state_hash, browser_hash, client_id, redirect_uri, "
		"client_state, code_challenge, resource, scopes, upstream, expires_at) VALUES ($1::bytea, "
		"$2::bytea, $3, $4, $5, $6, $7, string_to_array($8, ' '), $9, "
		"now() + make_interval(secs => $10::int))");
	const struct config *cfg = r->app->cfg;
	const struct cfg_upstream *up = config_upstream(cfg, a->res->upstream);
	struct upstream_ep ep;
	char state[64], verifier[64], challenge[64], state_hash[67], browser_hash[67], ttl[16];
	char redirect[1100];
	uint8_t digest[CRYPTO_SHA256_LEN];
	char *url = NULL;
	if (!up || upstream_endpoints(up, &ep) < 0) {
		redirect_error(r, a->redirect_uri, "temporarily_unavailable", "the upstream identity provider is not reachable",
			       a->has_state ? a->state : NULL);
		return;
	}
	if (crypto_token_new("", state, sizeof(state)) < 0 ||
	    cookie_derive(r, "upstream-pkce", state, verifier) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		return;
	}
	crypto_sha256(verifier, strlen(verifier), digest);
	crypto_b64url_encode(digest, sizeof(digest), challenge);
	vault_hash_hex(state, state_hash);
	vault_hash_hex(browser, browser_hash);
	snprintf(ttl, sizeof(ttl), "%d", PENDING_TTL_S);
	snprintf(redirect, sizeof(redirect), "%s/callback", cfg->public_url);
	const char *p[] = { state_hash, browser_hash, a->client.client_id, a->redirect_uri,
			    a->has_state ? a->state : NULL, a->challenge, a->resource_url, a->scope,
			    up->name, ttl };
	PGresult *res = db_exec_ok(c, &q, 10, p);
	if (!res) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	PQclear(res);
	url = upstream_authorize_url(up, &ep, redirect, state, ep.pkce ? challenge : NULL);
	if (!url) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	char *key = consent_key(a);
	if (key && cookie_consent_add(r, key) < 0)
		log_msg(LOG_WARN, "authorize.consent_cookie", r->id, "consent cookie not set");
	free(key);
	json_t *f = json_pack("{s:s, s:s, s:s}", "client_id", a->client.client_id, "resource", a->resource_url,
			      "upstream", up->name);
	log_event(LOG_INFO, "authorize.upstream_redirect", r->id, f);
	redirect_to(r, url);
out:
	free(url);
	crypto_wipe(state, sizeof(state));
	crypto_wipe(verifier, sizeof(verifier));
}

void authorize_get(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct authz a;
	struct params p = { r, NULL };
	char browser[64];
	memset(&a, 0, sizeof(a));
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		(void)http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		return;
	}
	if (validate(r, c, &p, &a) < 0)
		goto out;
	if (cookie_browser(r, browser) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	char *key = consent_key(&a);
	int remembered = key && cookie_consent_has(r, key);
	free(key);
	if (remembered)
		start_upstream(r, c, &a, browser);
	else
		consent_page(r, &a, browser);
out:
	authz_free(&a);
	db_release(r->app->db, &c);
}

void authorize_post(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct authz a;
	json_t *form = NULL, *req = NULL;
	int dup = 0;
	memset(&a, 0, sizeof(a));
	const char *why = NULL;
	if (!(form = reqform_body(r, &dup, &why)) || dup) {
		html_error_page(r, 400, "Invalid request", "The consent form could not be read.");
		goto out;
	}
	const char *decision = form_get(form, "decision");
	req = cookie_open(r, "consent-request", form_get(form, "request"));
	const char *client_id = json_string_value(json_object_get(req, "client_id"));
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	const char *bound = json_string_value(json_object_get(req, "browser"));
	if (!req || !client_id || !json_is_integer(json_object_get(req, "exp"))) {
		html_error_page(r, 400, "Invalid request", "The consent form is damaged. Start again from your application.");
		goto out;
	}
	if (!cookie_csrf_ok(r, client_id, form_get(form, "csrf")) || !browser || !bound ||
	    !crypto_ct_equal(browser, strlen(browser), bound, strlen(bound))) {
		html_error_page(r, 403, "Request refused",
				"This consent form was not issued to this browser. Start again from your application.");
		goto out;
	}
	if (json_integer_value(json_object_get(req, "exp")) < (json_int_t)time(NULL)) {
		html_error_page(r, 400, "Request expired", "The consent page expired. Start again from your application.");
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		(void)http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	struct params p = { r, req };
	if (validate(r, c, &p, &a) < 0)
		goto out;
	if (decision && strcmp(decision, "approve") == 0) {
		start_upstream(r, c, &a, browser);
	} else if (decision && strcmp(decision, "deny") == 0) {
		redirect_error(r, a.redirect_uri, "access_denied", "the user denied the request",
			       a.has_state ? a.state : NULL);
	} else {
		html_error_page(r, 400, "Invalid request", "No decision was made.");
	}
out:
	authz_free(&a);
	db_release(r->app->db, &c);
	form_free(&form);
	json_decref(req);
}

/* ---- GET /callback ---------------------------------------------------- */

struct pending {
	char client_id[LIM_CLIENT_ID + 1];
	char redirect_uri[LIM_REDIRECT_URI + 1];
	char state[LIM_STATE + 1];
	int has_state;
	char challenge[129];
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
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	char want[65];
	if (browser)
		crypto_sha256_hex(browser, strlen(browser), want);
	if (!browser || !crypto_ct_equal(want, 64, PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)))) {
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
		       const struct upstream_tokens *tok, const struct upstream_identity *id,
		       char code[TOKEN_TEXT_MAX])
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
	const char *pg[] = { grant_id, user_id, pd->client_id, pd->resource, pd->upstream, pd->scope,
			     key_id, enc_access, enc_refresh, exp, tok->scope };
	if (!(res = db_exec_ok(c, &q_grant, 11, pg)))
		goto out;
	PQclear(res);
	const char *pc[] = { user_id, pd->client_id, pd->resource, pd->scope };
	if (!(res = db_exec_ok(c, &q_consent, 4, pc)))
		goto out;
	PQclear(res);
	vault_hash_hex(code, code_hash);
	snprintf(ttl, sizeof(ttl), "%ld", cfg->tokens.code_ttl);
	const char *pk[] = { code_hash, grant_id, pd->client_id, pd->redirect_uri, pd->challenge,
			     pd->resource, pd->scope, ttl };
	if (!(res = db_exec_ok(c, &q_code, 8, pk)))
		goto out;
	PQclear(res);
	res = NULL;
	struct audit a = { "grant.created", "user", user_id, pd->client_id, grant_id, r->id };
	if (audit_record(c, &a, json_pack("{s:s, s:s, s:s, s:b}", "upstream", pd->upstream, "resource",
					  pd->resource, "scope", pd->scope, "upstream_refreshable",
					  tok->refresh_token != NULL)) < 0)
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
static void discard_upstream_tokens(struct http_req *r, const struct cfg_upstream *up,
				    const struct upstream_ep *ep, const struct upstream_tokens *tok)
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

void authorize_callback(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct pending pd;
	struct upstream_tokens tok = { 0 };
	struct upstream_identity id = { 0 };
	char verifier[64] = "", code[TOKEN_TEXT_MAX] = "", redirect[1100];
	const struct config *cfg = r->app->cfg;
	memset(&pd, 0, sizeof(pd));
	static const char *const params[] = { "state", "code", "error", "iss" };
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (http_query_count(r, params[i]) > 1) {
			html_error_page(r, 400, "Invalid request", "A parameter was given more than once.");
			return;
		}
	const char *state = http_query(r, "state");
	if (!state || !*state || strlen(state) > 128) {
		html_error_page(r, 400, "Invalid request", "The sign-in response has no valid state.");
		return;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		(void)http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		return;
	}
	if (take_pending(r, c, state, &pd) != 1)
		goto out;
	const char *st = pd.has_state ? pd.state : NULL;
	const struct cfg_upstream *up = config_upstream(cfg, pd.upstream);
	struct upstream_ep ep;
	if (!up || upstream_endpoints(up, &ep) < 0) {
		redirect_error(r, pd.redirect_uri, "temporarily_unavailable", "the upstream identity provider is not reachable", st);
		goto out;
	}
	const char *up_iss = http_query(r, "iss");
	if (up_iss && up->issuer && strcmp(up_iss, up->issuer) != 0) {
		/* RFC 9207: an answer naming another issuer is a mix-up attempt. */
		json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "client_id", pd.client_id);
		log_event(LOG_WARN, "callback.issuer_mismatch", r->id, f);
		redirect_error(r, pd.redirect_uri, "server_error", "the upstream answer came from another issuer", st);
		goto out;
	}
	if (http_query(r, "error")) {
		json_t *f = json_pack("{s:s, s:s}", "upstream", up->name, "client_id", pd.client_id);
		log_event(LOG_INFO, "callback.upstream_denied", r->id, f);
		redirect_error(r, pd.redirect_uri, "access_denied", "the upstream sign-in was not completed", st);
		goto out;
	}
	const char *upcode = http_query(r, "code");
	if (!upcode || !*upcode || strlen(upcode) > 2048) {
		redirect_error(r, pd.redirect_uri, "server_error", "the upstream answered without a code", st);
		goto out;
	}
	if (cookie_derive(r, "upstream-pkce", state, verifier) < 0) {
		redirect_error(r, pd.redirect_uri, "server_error", NULL, st);
		goto out;
	}
	snprintf(redirect, sizeof(redirect), "%s/callback", cfg->public_url);
	/* Each failed call is classified, counted and logged by upstream.c;
	 * nothing is stored before both succeed. */
	enum upstream_class urc =
		upstream_exchange_code(up, &ep, upcode, redirect, ep.pkce ? verifier : NULL, r->id, &tok, NULL);
	if (urc == UPC_OK)
		urc = upstream_identity(up, &ep, &tok, r->id, &id, NULL);
	if (urc != UPC_OK) {
		json_t *f = json_pack("{s:s, s:s, s:s}", "upstream", up->name, "result", upstream_class_name(urc),
				      "client_id", pd.client_id);
		log_event(LOG_WARN, "callback.upstream_failed", r->id, f);
		discard_upstream_tokens(r, up, &ep, &tok);
		redirect_error(r, pd.redirect_uri, upstream_error_code(urc),
			       "the upstream identity provider did not complete the sign-in", st);
		goto out;
	}
	if (store_grant(r, c, &pd, &tok, &id, code) < 0) {
		discard_upstream_tokens(r, up, &ep, &tok);
		redirect_error(r, pd.redirect_uri, "server_error", "the authorization could not be stored", st);
		goto out;
	}
	struct buf q;
	buf_init(&q, 8192);
	q.secret = 1;
	if (form_add(&q, "code", code) < 0 || (st && form_add(&q, "state", st) < 0) ||
	    form_add(&q, "iss", cfg->public_url) < 0) {
		buf_free(&q);
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	char *loc = uri_with_query(pd.redirect_uri, q.ptr);
	buf_free(&q);
	if (!loc) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	redirect_to(r, loc);
	crypto_wipe(loc, strlen(loc));
	free(loc);
out:
	crypto_wipe(verifier, sizeof(verifier));
	crypto_wipe(code, sizeof(code));
	upstream_tokens_free(&tok);
	upstream_identity_free(&id);
	db_release(r->app->db, &c);
}
