#include "authorize.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "app_type.h"
#include "cimd.h"
#include "client_resolve.h"
#include "cookie.h"
#include "crypto.h"
#include "db.h"
#include "form.h"
#include "html.h"
#include "log.h"
#include "reqform.h"
#include "resources.h"
#include "scope.h"
#include "upstream.h"
#include "uri.h"
#include "vault.h"

#define PENDING_TTL_S 600 /* upstream state lifetime: <= 10 minutes */
#define CONSENT_REQUEST_TTL_S 600

static const char *const param_names[AUTHZ_P_N] = {
	[AUTHZ_P_CLIENT_ID] = "client_id",
	[AUTHZ_P_REDIRECT_URI] = "redirect_uri",
	[AUTHZ_P_RESPONSE_TYPE] = "response_type",
	[AUTHZ_P_STATE] = "state",
	[AUTHZ_P_SCOPE] = "scope",
	[AUTHZ_P_CODE_CHALLENGE] = "code_challenge",
	[AUTHZ_P_CODE_CHALLENGE_METHOD] = "code_challenge_method",
	[AUTHZ_P_RESOURCE] = "resource",
};

/* ---- the authorization response ---------------------------------------- */

static void no_store(struct http_req *r)
{
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Pragma", "no-cache");
}

static void redirect_to(struct http_req *r, const char *location)
{
	no_store(r);
	http_add_header(r, "Location", location);
	http_send(r, 302, "text/plain", "", 0);
}

int authorize_callback_url(const struct config *cfg, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/callback", cfg->public_url);
	return n >= 0 && (size_t)n < cap ? 0 : -1;
}

void authorize_redirect_error(struct http_req *r, const char *redirect_uri, const char *error, const char *desc,
			      const char *state)
{
	struct buf q;
	buf_init(&q, 8192);
	if (form_add(&q, "error", error) < 0 || (desc && form_add(&q, "error_description", desc) < 0) ||
	    (state && form_add(&q, "state", state) < 0) || form_add(&q, "iss", r->app->cfg->public_url) < 0) {
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

void authorize_redirect_code(struct http_req *r, const char *redirect_uri, const char *code, const char *state)
{
	struct buf q;
	char *loc = NULL;
	buf_init(&q, 8192);
	q.secret = 1;
	if (form_add(&q, "code", code) < 0 || (state && form_add(&q, "state", state) < 0) ||
	    form_add(&q, "iss", r->app->cfg->public_url) < 0 || !(loc = uri_with_query(redirect_uri, q.ptr)))
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		redirect_to(r, loc);
	buf_free(&q);
	if (loc) {
		crypto_wipe(loc, strlen(loc));
		free(loc);
	}
}

/* ---- the parse step ----------------------------------------------------- */

static int page_error(struct authorize_error *err, int status, const char *title, const char *message)
{
	*err = (struct authorize_error){ 0, status, title, message };
	return -1;
}

static int redirect_error(struct authorize_error *err, const char *code, const char *description)
{
	*err = (struct authorize_error){ 1, 302, code, description };
	return -1;
}

/* RFC 7636 section 4.2: 43 to 128 unreserved characters. */
static int pkce_challenge_ok(const char *c)
{
	size_t n = strlen(c);
	if (n < LIM_PKCE_VERIFIER_MIN || n > LIM_PKCE_VERIFIER_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = c[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		      ch == '.' || ch == '_' || ch == '~'))
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

int authorize_parse_client(const struct authorize_params *p, const char **client_id, struct authorize_error *err)
{
	const char *id = p->v[AUTHZ_P_CLIENT_ID];
	*client_id = NULL;
	if (p->dup[AUTHZ_P_CLIENT_ID] || p->dup[AUTHZ_P_REDIRECT_URI])
		return page_error(err, 400, "Invalid request", "A parameter was given more than once.");
	if (!id || !*id)
		return page_error(err, 400, "Invalid request", "The request names no client.");
	*client_id = id;
	return 0;
}

static int parse_redirect_uri(const struct client *cl, const struct authorize_params *p, struct authorize_request *out,
			      struct authorize_error *err)
{
	const char *uri = p->v[AUTHZ_P_REDIRECT_URI];
	if (!uri) {
		/* Allowed only when it is unambiguous (RFC 6749 3.1.2.3). */
		if (cl->n_redirect_uris != 1)
			return page_error(err, 400, "Invalid request", "The request has no redirect URI.");
		uri = cl->redirect_uris[0];
	}
	size_t n = strlen(uri);
	if (n > LIM_REDIRECT_URI || !client_redirect_ok(cl, uri))
		return page_error(err, 400, "Invalid redirect URI",
				  "The redirect URI is not registered for this application.");
	memcpy(out->redirect_uri, uri, n + 1);
	return 0;
}

/* From here on refusals go back to the verified redirect URI; state only
 * once it is known to travel back intact. */
static int parse_state(const struct authorize_params *p, struct authorize_request *out, struct authorize_error *err)
{
	const char *state = p->v[AUTHZ_P_STATE];
	if (!state)
		return 0;
	size_t n = strlen(state);
	if (n > LIM_STATE)
		return redirect_error(err, "invalid_request", "state is too long");
	/* Not echoed: it could not travel back intact (the sealed consent
	 * request is JSON, which drops invalid UTF-8). */
	if (!vschar_only(state))
		return redirect_error(err, "invalid_request", "state may hold only printable ASCII");
	memcpy(out->state, state, n + 1);
	out->has_state = 1;
	return 0;
}

static int parse_repeats(const struct authorize_params *p, struct authorize_error *err)
{
	for (size_t i = AUTHZ_P_RESPONSE_TYPE; i < AUTHZ_P_N; i++) {
		if (!p->dup[i])
			continue;
		if (i == AUTHZ_P_RESOURCE)
			return redirect_error(err, "invalid_target", "only one resource per request is supported");
		return redirect_error(err, "invalid_request", "a parameter was given more than once");
	}
	return 0;
}

static int parse_code_flow(const struct authorize_params *p, struct authorize_request *out, struct authorize_error *err)
{
	const char *rt = p->v[AUTHZ_P_RESPONSE_TYPE];
	const char *ch = p->v[AUTHZ_P_CODE_CHALLENGE], *method = p->v[AUTHZ_P_CODE_CHALLENGE_METHOD];
	if (!rt)
		return redirect_error(err, "invalid_request", "response_type is required");
	if (strcmp(rt, "code") != 0)
		return redirect_error(err, "unsupported_response_type", "only response_type=code is supported");
	if (!ch || !*ch)
		return redirect_error(err, "invalid_request", "code_challenge (PKCE) is required");
	if (!method || strcmp(method, "S256") != 0)
		return redirect_error(err, "invalid_request", "code_challenge_method must be S256");
	if (!pkce_challenge_ok(ch))
		return redirect_error(err, "invalid_request", "code_challenge is malformed");
	memcpy(out->challenge, ch, strlen(ch) + 1);
	return 0;
}

static int parse_resource(const struct config *cfg, const struct authorize_params *p, struct authorize_request *out,
			  struct authorize_error *err)
{
	const char *resource = p->v[AUTHZ_P_RESOURCE];
	if (resource)
		out->res = resources_find(cfg, resource);
	else if (cfg->n_resources == 1)
		out->res = &cfg->resources[0];
	if (!out->res)
		return redirect_error(err, "invalid_target",
				      resource ? "the resource is not served by this authorization server"
					       : "resource is required: this server protects several resources");
	if (resources_url(cfg, out->res, out->resource_url, sizeof(out->resource_url)) < 0)
		return page_error(err, 500, "Server error", "The request could not be completed.");
	return 0;
}

/* The scopes asked for (none: the resource's defaults, or all it offers),
 * each offered by the resource; offline_access is dropped, as refresh
 * tokens are always issued. */
static int parse_scope(const struct cfg_resource *res, const struct authorize_params *p, struct authorize_request *out,
		       struct authorize_error *err)
{
	struct scopes want = { 0 }, allowed = { 0 };
	char *joined = NULL;
	int rc = -1;
	int bad = scopes_parse(p->v[AUTHZ_P_SCOPE], &want) < 0;
	scopes_remove(&want, "offline_access");
	for (size_t i = 0; i < res->n_scopes && !bad; i++)
		bad = scopes_add(&allowed, res->scopes[i].scope) < 0;
	if (!bad && want.n == 0) {
		for (size_t i = 0; i < res->n_default_scopes && !bad; i++)
			bad = scopes_add(&want, res->default_scopes[i]) < 0;
		for (size_t i = 0; !res->n_default_scopes && i < allowed.n && !bad; i++)
			bad = scopes_add(&want, allowed.v[i]) < 0;
	}
	if (bad || !scopes_subset(&want, &allowed)) {
		redirect_error(err, "invalid_scope", "a requested scope is not offered by this resource");
		goto out;
	}
	if (!(joined = scopes_join(&want))) {
		page_error(err, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	if (strlen(joined) > LIM_SCOPE) { /* stored and compared whole, never cut */
		redirect_error(err, "invalid_scope", "too many scopes requested");
		goto out;
	}
	out->scope = joined;
	joined = NULL;
	rc = 0;
out:
	free(joined);
	scopes_free(&want);
	scopes_free(&allowed);
	return rc;
}

int authorize_parse(const struct config *cfg, const struct client *cl, const struct authorize_params *p,
		    struct authorize_request *out, struct authorize_error *err)
{
	memset(out, 0, sizeof(*out));
	out->client = cl;
	if (parse_redirect_uri(cl, p, out, err) < 0 || parse_state(p, out, err) < 0 || parse_repeats(p, err) < 0 ||
	    parse_code_flow(p, out, err) < 0 || parse_resource(cfg, p, out, err) < 0 ||
	    parse_scope(out->res, p, out, err) < 0)
		return -1;
	return 0;
}

void authorize_request_free(struct authorize_request *a)
{
	free(a->scope);
	a->scope = NULL;
}

/* ---- the handlers -------------------------------------------------------- */

static void params_from_query(struct http_req *r, struct authorize_params *p)
{
	for (size_t i = 0; i < AUTHZ_P_N; i++) {
		p->v[i] = http_query(r, param_names[i]);
		p->dup[i] = http_query_count(r, param_names[i]) > 1;
	}
}

static void params_from_sealed(const json_t *req, struct authorize_params *p)
{
	for (size_t i = 0; i < AUTHZ_P_N; i++) {
		p->v[i] = json_string_value(json_object_get(req, param_names[i]));
		p->dup[i] = 0;
	}
}

/* Parses p, looking up the client it names into *cl. -1 when the request is
 * refused (the error page or error redirect has been sent). */
static int validate(struct http_req *r, struct db_conn *c, const struct authorize_params *p, struct client *cl,
		    struct authorize_request *a)
{
	struct authorize_error err;
	const char *client_id;
	int rc = -1;
	memset(a, 0, sizeof(*a));
	if (authorize_parse_client(p, &client_id, &err) < 0)
		goto refused;
	const char *why = NULL;
	enum client_find found = client_resolve(r->app, c, client_id, cl, &why);
	if (found == CLIENT_UNAVAILABLE) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	if (found == CLIENT_UNKNOWN || cl->disabled) {
		html_error_page(r, 400, "Unknown client",
				why ? why : "The application that sent you here is not registered.");
		goto out;
	}
	if (authorize_parse(r->app->cfg, cl, p, a, &err) < 0)
		goto refused;
	rc = 0;
	goto out;
refused:
	if (err.redirect)
		authorize_redirect_error(r, a->redirect_uri, err.code, err.description, a->has_state ? a->state : NULL);
	else
		html_error_page(r, err.status, err.code, err.description);
out:
	return rc;
}

static const char *client_display_name(const struct client *cl)
{
	return cl->name && *cl->name ? cl->name : cl->client_id;
}

/* What a remembered consent is for: client, redirect URI, resource, scopes. */
static char *consent_key(const struct authorize_request *a)
{
	struct buf b;
	buf_init(&b, 8192);
	if (buf_printf(&b, "%s|%s|%s|%s", a->client->client_id, a->redirect_uri, a->resource_url, a->scope) < 0)
		return NULL;
	return buf_take(&b, NULL);
}

/* The validated request the consent form carries, sealed, bound to this
 * browser and expiring; malloc'd, NULL on failure. */
static char *seal_request(struct http_req *r, const struct authorize_request *a, const char *browser)
{
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "response_type", "code", "client_id",
				a->client->client_id, "redirect_uri", a->redirect_uri, "code_challenge", a->challenge,
				"code_challenge_method", "S256", "resource", a->resource_url, "exp",
				(json_int_t)time(NULL) + CONSENT_REQUEST_TTL_S);
	char *sealed = NULL;
	if (req && (!a->has_state || json_object_set_new(req, "state", json_string(a->state)) == 0) &&
	    (!*a->scope || json_object_set_new(req, "scope", json_string(a->scope)) == 0) &&
	    json_object_set_new(req, "browser", json_string(browser)) == 0)
		sealed = cookie_seal(r, "consent-request", req);
	json_decref(req);
	return sealed;
}

/* What the consent page shows; every value is escaped. */
struct consent_view {
	const char *client_name; /* the client's name, or its id */
	const char *client_id;
	const char *cimd_host; /* the host of the client's metadata document, or NULL */
	const char *resource_url;
	const char *upstream;
	const char *redirect_host; /* where the browser goes back to */
	const struct scopes *scopes;
	const char *public_url;
	const char *sealed; /* the sealed request */
	const char *csrf;
	int unverified;    /* the operator does not vouch for the client's identity */
	int loopback_only; /* every redirect URI of the client is on localhost */
};

/* 1 when the client's identity is nobody's word but its own: registered by
 * anyone at /register, or described by a document on a host that is not in
 * registration.cimd_trusted_hosts. Configured clients are the operator's. */
static int client_unverified(const struct config *cfg, const struct client *cl)
{
	if (strcmp(cl->kind, "static") == 0)
		return 0;
	if (strcmp(cl->kind, "cimd") != 0)
		return 1;
	CURLU *u = curl_url();
	char *host = NULL;
	int unverified = 1;
	if (u && curl_url_set(u, CURLUPART_URL, cl->client_id, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host)
		for (size_t i = 0; unverified && i < cfg->registration.n_cimd_trusted_hosts; i++)
			unverified = !cimd_host_matches(cfg->registration.cimd_trusted_hosts[i], host);
	curl_free(host);
	curl_url_cleanup(u);
	return unverified;
}

/* 1 when every redirect URI of cl is on 127.0.0.1, [::1] or localhost. */
static int client_loopback_only(const struct client *cl)
{
	for (size_t i = 0; i < cl->n_redirect_uris; i++)
		if (app_type_uri_kind(cl->redirect_uris[i]) != APP_URI_LOOPBACK)
			return 0;
	return cl->n_redirect_uris > 0;
}

static int consent_html(struct buf *b, const struct consent_view *v)
{
	int rc = buf_adds(b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
			     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
			     "<title>Authorize ") < 0;
	rc = rc || html_escape(b, v->client_name) < 0;
	rc = rc || buf_adds(b, "</title><style>body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;"
			       "padding:0 1em;color:#222}.host{font-size:1.25em;font-weight:600;padding:.4em .6em;"
			       "background:#f3f3f3;border-radius:4px;display:inline-block}button{font-size:1em;"
			       "padding:.5em 1.4em;margin-right:.6em}code{word-break:break-all}.warn{padding:.5em .7em;"
			       "background:#fff4e5;border-left:4px solid #e69500}</style></head><body>"
			       "<h1>Authorize access</h1><p><strong>") < 0;
	rc = rc || html_escape(b, v->client_name) < 0;
	rc = rc || buf_adds(b, "</strong> wants to use <code>") < 0 || html_escape(b, v->resource_url) < 0;
	rc = rc || buf_adds(b, "</code> on your behalf, signing you in with <strong>") < 0;
	rc = rc || html_escape(b, v->upstream) < 0;
	rc = rc || buf_adds(b, "</strong>.</p><p>If you approve, you will be sent back to:</p><p class=\"host\">") < 0;
	rc = rc || html_escape(b, v->redirect_host) < 0;
	rc = rc || buf_adds(b, "</p><p>Client ID: <code>") < 0 || html_escape(b, v->client_id) < 0;
	rc = rc || buf_adds(b, "</code></p>") < 0;
	/* The document's host is what the user can actually trust. */
	if (v->cimd_host)
		rc = rc || buf_adds(b, "<p>This application is described by <span class=\"host\">") < 0 ||
		     html_escape(b, v->cimd_host) < 0 ||
		     buf_adds(b, "</span>; its name above is what that site claims.</p>") < 0;
	if (v->unverified)
		rc = rc || buf_adds(b, "<p class=\"warn\"><strong>Unverified application.</strong> This application's "
				       "identity has not been verified by the operator of this service.</p>") < 0;
	if (v->loopback_only)
		rc = rc || buf_adds(b, "<p class=\"warn\">This application will receive the authorization on this "
				       "computer only (localhost).</p>") < 0;
	rc = rc || buf_adds(b, "<h2>Requested permissions</h2><ul>") < 0;
	for (size_t i = 0; !rc && i < v->scopes->n; i++)
		rc = buf_adds(b, "<li>") < 0 || html_escape(b, v->scopes->v[i]) < 0 || buf_adds(b, "</li>") < 0;
	if (!rc && v->scopes->n == 0)
		rc = buf_adds(b, "<li>basic access</li>") < 0;
	rc = rc || buf_adds(b, "</ul><p>Only approve if you started this from an application you trust.</p>"
			       "<form method=\"post\" action=\"") < 0;
	rc = rc || html_escape(b, v->public_url) < 0;
	rc = rc || buf_adds(b, "/authorize\"><input type=\"hidden\" name=\"request\" value=\"") < 0;
	rc = rc || html_escape(b, v->sealed) < 0;
	rc = rc || buf_adds(b, "\"><input type=\"hidden\" name=\"csrf\" value=\"") < 0;
	rc = rc || html_escape(b, v->csrf) < 0;
	rc = rc || buf_adds(b, "\"><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>"
			       "<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>"
			       "</body></html>") < 0;
	return rc ? -1 : 0;
}

static void consent_page(struct http_req *r, const struct authorize_request *a, const char *browser)
{
	const struct client *cl = a->client;
	int cimd = strcmp(cl->kind, "cimd") == 0;
	char csrf[64] = "";
	struct scopes sc = { 0 };
	struct buf b;
	buf_init(&b, 64 * 1024);
	char *host = uri_display_host(a->redirect_uri);
	char *chost = cimd ? uri_display_host(cl->client_id) : NULL;
	char *sealed = seal_request(r, a, browser);
	const struct consent_view v = { client_display_name(cl),
					cl->client_id,
					chost,
					a->resource_url,
					a->res->upstream,
					host,
					&sc,
					r->app->cfg->public_url,
					sealed,
					csrf,
					client_unverified(r->app->cfg, cl),
					client_loopback_only(cl) };
	if (!host || (cimd && !chost) || !sealed || cookie_csrf(r, browser, cl->client_id, csrf) < 0 ||
	    scopes_parse(a->scope, &sc) < 0 || consent_html(&b, &v) < 0)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		html_send(r, 200, &b);
	buf_free(&b);
	scopes_free(&sc);
	crypto_wipe(csrf, sizeof(csrf));
	free(sealed);
	free(chost);
	free(host);
}

/* Approved: store the pending request and send the browser upstream. */
static void start_upstream(struct http_req *r, struct db_conn *c, const struct authorize_request *a,
			   const char *browser)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO pending_authorizations(state_hash, browser_hash, client_id, redirect_uri, "
		"client_state, code_challenge, resource, scopes, upstream, expires_at) VALUES ($1::bytea, "
		"$2::bytea, $3, $4, $5, $6, $7, string_to_array($8, ' '), $9, "
		"now() + make_interval(secs => $10::int))");
	const struct config *cfg = r->app->cfg;
	const struct cfg_upstream *up = config_upstream(cfg, a->res->upstream);
	const char *client_state = a->has_state ? a->state : NULL;
	struct upstream_ep ep;
	char state[64], verifier[64], challenge[64], state_hash[67], browser_hash[67], ttl[16];
	char redirect[1100];
	uint8_t digest[CRYPTO_SHA256_LEN];
	char *url = NULL, *key = NULL;
	PGresult *res = NULL;
	if (!up || upstream_endpoints(up, &ep) < 0) {
		authorize_redirect_error(r, a->redirect_uri, "temporarily_unavailable",
					 "the upstream identity provider is not reachable", client_state);
		return;
	}
	if (crypto_token_new("", state, sizeof(state)) < 0 || cookie_derive(r, "upstream-pkce", state, verifier) < 0 ||
	    authorize_callback_url(cfg, redirect, sizeof(redirect)) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	crypto_sha256(verifier, strlen(verifier), digest);
	crypto_b64url_encode(digest, sizeof(digest), challenge);
	vault_hash_hex(state, state_hash);
	vault_hash_hex(browser, browser_hash);
	snprintf(ttl, sizeof(ttl), "%d", PENDING_TTL_S);
	const char *p[] = { state_hash,   browser_hash, a->client->client_id, a->redirect_uri,
			    client_state, a->challenge, a->resource_url,      a->scope,
			    up->name,     ttl };
	if (!(res = db_exec_ok(c, &q, 10, p))) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	if (!(url = upstream_authorize_url(up, &ep, redirect, state, ep.pkce ? challenge : NULL))) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	if ((key = consent_key(a)) && cookie_consent_add(r, key) < 0)
		log_msg(LOG_WARN, "authorize.consent_cookie", r->id, "consent cookie not set");
	json_t *f = json_pack("{s:s, s:s, s:s}", "client_id", a->client->client_id, "resource", a->resource_url,
			      "upstream", up->name);
	log_event(LOG_INFO, "authorize.upstream_redirect", r->id, f);
	redirect_to(r, url);
out:
	PQclear(res);
	free(key);
	free(url);
	crypto_wipe(state, sizeof(state));
	crypto_wipe(verifier, sizeof(verifier));
}

void authorize_get(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct client cl;
	struct authorize_request a;
	struct authorize_params p;
	char browser[64];
	char *key = NULL;
	memset(&cl, 0, sizeof(cl));
	memset(&a, 0, sizeof(a));
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	params_from_query(r, &p);
	if (validate(r, c, &p, &cl, &a) < 0)
		goto out;
	if (cookie_browser(r, browser) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	key = consent_key(&a);
	if (key && cookie_consent_has(r, key))
		start_upstream(r, c, &a, browser);
	else
		consent_page(r, &a, browser);
out:
	free(key);
	authorize_request_free(&a);
	client_free(&cl);
	db_release(r->app->db, &c);
}

/* The consent form is one this node issued, intact, to this browser, and
 * fresh. 0, or -1 with the refusal sent. */
static int consent_form_ok(struct http_req *r, const json_t *form, const json_t *req, const char *browser)
{
	const char *client_id = json_string_value(json_object_get(req, "client_id"));
	const char *bound = json_string_value(json_object_get(req, "browser"));
	if (!req || !client_id || !json_is_integer(json_object_get(req, "exp"))) {
		html_error_page(r, 400, "Invalid request",
				"The consent form is damaged. Start again from your application.");
		return -1;
	}
	if (!cookie_csrf_ok(r, client_id, form_get(form, "csrf")) || !browser || !bound ||
	    !crypto_ct_equal(browser, strlen(browser), bound, strlen(bound))) {
		html_error_page(r, 403, "Request refused",
				"This consent form was not issued to this browser. Start again from your application.");
		return -1;
	}
	if (json_integer_value(json_object_get(req, "exp")) < (json_int_t)time(NULL)) {
		html_error_page(r, 400, "Request expired",
				"The consent page expired. Start again from your application.");
		return -1;
	}
	return 0;
}

void authorize_post(struct http_req *r)
{
	struct db_conn *c = NULL;
	struct client cl;
	struct authorize_request a;
	struct authorize_params p;
	json_t *form = NULL, *req = NULL;
	const char *why = NULL;
	int dup = 0;
	memset(&cl, 0, sizeof(cl));
	memset(&a, 0, sizeof(a));
	if (!(form = reqform_body(r, &dup, &why)) || dup) {
		html_error_page(r, 400, "Invalid request", "The consent form could not be read.");
		goto out;
	}
	const char *decision = form_get(form, "decision");
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	req = cookie_open(r, "consent-request", form_get(form, "request"));
	if (consent_form_ok(r, form, req, browser) < 0)
		goto out;
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	params_from_sealed(req, &p);
	if (validate(r, c, &p, &cl, &a) < 0)
		goto out;
	if (decision && strcmp(decision, "approve") == 0)
		start_upstream(r, c, &a, browser);
	else if (decision && strcmp(decision, "deny") == 0)
		authorize_redirect_error(r, a.redirect_uri, "access_denied", "the user denied the request",
					 a.has_state ? a.state : NULL);
	else
		html_error_page(r, 400, "Invalid request", "No decision was made.");
out:
	authorize_request_free(&a);
	client_free(&cl);
	db_release(r->app->db, &c);
	form_free(&form);
	json_decref(req);
}
