#include "connect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "audit.h"
#include "authorize.h"
#include "connection.h"
#include "cookie.h"
#include "crypto.h"
#include "form.h"
#include "html.h"
#include "log.h"
#include "notify.h"
#include "reqform.h"
#include "upstream.h"
#include "vault.h"

#define CSRF_PURPOSE "connect"
#define UPCODE_MAX 2048

/* What a ticket (or a leg) is about. */
struct connect_view {
	char grant_id[37];
	char elicitation_id[37];
	char upstream[65];       /* the account asked for */
	char signin[65];         /* where the grant's user proves who they are (the identity leg) */
	char subject[256];       /* the grant's user there */
	char grant_upstream[65]; /* the grant's sign-in upstream (the account may be it: an ID-JAG grant's) */
	char client_name[LIM_CLIENT_NAME + 1];
	char resource[2048];
};

static void redirect_to(struct http_req *r, const char *location)
{
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Referrer-Policy", "no-referrer");
	http_add_header(r, "Location", location);
	http_send(r, 302, "text/plain", "", 0);
}

static int ticket_shape_ok(const char *t)
{
	size_t n = t ? strlen(t) : 0, pre = strlen(CONNECT_TICKET_PREFIX);
	return n > pre && n < CONNECT_TICKET_MAX && strncmp(t, CONNECT_TICKET_PREFIX, pre) == 0 &&
	       strspn(t + pre, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n - pre;
}

/* Fills v from one row: grant_id, elicitation_id, upstream, the user's
 * namespace, subject, client_name, resource, the grant's upstream starting
 * at column col. The identity leg runs at the user's own upstream, or, for
 * an enterprise user (whose namespace is a trusted issuer), at its
 * login_upstream. 0, or -1 when the user has no way to prove who they are
 * (a machine client's grant, an issuer no longer trusted). */
static int view_from(const struct config *cfg, PGresult *res, int col, struct connect_view *v)
{
	snprintf(v->grant_id, sizeof(v->grant_id), "%s", PQgetvalue(res, 0, col));
	snprintf(v->elicitation_id, sizeof(v->elicitation_id), "%s", PQgetvalue(res, 0, col + 1));
	snprintf(v->upstream, sizeof(v->upstream), "%s", PQgetvalue(res, 0, col + 2));
	snprintf(v->subject, sizeof(v->subject), "%s", PQgetvalue(res, 0, col + 4));
	snprintf(v->client_name, sizeof(v->client_name), "%s", PQgetvalue(res, 0, col + 5));
	snprintf(v->resource, sizeof(v->resource), "%s", PQgetvalue(res, 0, col + 6));
	snprintf(v->grant_upstream, sizeof(v->grant_upstream), "%s", PQgetvalue(res, 0, col + 7));
	const char *ns = PQgetvalue(res, 0, col + 3);
	const struct cfg_trusted_issuer *ti = config_trusted_issuer(cfg, ns);
	const char *signin = ti ? ti->login_upstream : config_upstream(cfg, ns) ? ns : NULL;
	snprintf(v->signin, sizeof(v->signin), "%s", signin ? signin : "");
	return signin && strncmp(v->subject, "client:", 7) != 0 ? 0 : -1;
}

#define VIEW_COLUMNS                                                              \
	"t.grant_id::text, t.elicitation_id, t.upstream, u.upstream, u.subject, " \
	"coalesce(nullif(c.client_name, ''), g.client_id), g.resource, g.upstream"
#define VIEW_JOINS                                                                                     \
	"JOIN grants g ON g.id = t.grant_id AND g.status = 'active' JOIN users u ON u.id = g.user_id " \
	"LEFT JOIN clients c ON c.client_id = g.client_id"

static void expired_page(struct http_req *r)
{
	html_error_page(r, 400, "Link expired",
			"This connect link is unknown, expired or already used. Retry the request in your "
			"application to get a new one.");
}

static void no_identity_page(struct http_req *r)
{
	html_error_page(r, 400, "Cannot connect",
			"This authorization has no user who could sign in to connect an account.");
}

static int page_html(struct buf *b, const struct http_req *r, const struct connect_view *v, const char *ticket,
		     const char *csrf)
{
	int rc = buf_adds(b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
			     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
			     "<title>Connect your ") < 0;
	rc = rc || html_escape(b, v->upstream) < 0;
	rc = rc ||
	     buf_adds(b, " account</title><style>body{font-family:system-ui,sans-serif;max-width:34em;"
			 "margin:3em auto;padding:0 1em;color:#222}button{font-size:1em;padding:.5em 1.4em;"
			 "margin-right:.6em}code{word-break:break-all}</style></head><body><h1>Connect your ") < 0;
	rc = rc || html_escape(b, v->upstream) < 0;
	rc = rc || buf_adds(b, " account</h1><p><strong>") < 0 || html_escape(b, v->client_name) < 0;
	rc = rc || buf_adds(b, "</strong> asks to use your <strong>") < 0 || html_escape(b, v->upstream) < 0;
	rc = rc || buf_adds(b, "</strong> account through <code>") < 0 || html_escape(b, v->resource) < 0;
	rc = rc || buf_adds(b, "</code>.</p><ol><li>First sign in with <strong>") < 0 || html_escape(b, v->signin) < 0;
	rc = rc ||
	     buf_adds(b, "</strong> as the account that authorized this application: this proves the "
			 "request is yours.</li><li>Then sign in with <strong>") < 0 ||
	     html_escape(b, v->upstream) < 0;
	rc = rc || buf_adds(b, "</strong> and allow access.</li></ol><p>Only continue if you asked for this "
			       "yourself, from an application you trust.</p><form method=\"post\" action=\"") < 0;
	rc = rc || html_escape(b, r->app->cfg->public_url) < 0;
	rc = rc || buf_adds(b, "/connect\"><input type=\"hidden\" name=\"ticket\" value=\"") < 0 ||
	     html_escape(b, ticket) < 0;
	rc = rc || buf_adds(b, "\"><input type=\"hidden\" name=\"csrf\" value=\"") < 0 || html_escape(b, csrf) < 0;
	rc = rc || buf_adds(b, "\"><button type=\"submit\" name=\"decision\" value=\"approve\">Continue</button>"
			       "<button type=\"submit\" name=\"decision\" value=\"deny\">Cancel</button></form>"
			       "</body></html>") < 0;
	return rc ? -1 : 0;
}

/* Runs q (a ticket's lookup, or its spending) for ticket into *v, on a
 * connection it acquires into *c (the caller releases it). 0, or -1 with
 * the page sent: unavailable, expired, or no user to prove. */
static int ticket_view(struct http_req *r, struct db_conn **c, struct db_stmt *q, const char *ticket,
		       struct connect_view *v)
{
	char hash[67];
	if (db_acquire(r->app->db, c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		return -1;
	}
	vault_hash_hex(ticket, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(*c, q, 1, p);
	int rc = -1;
	if (!res)
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
	else if (PQntuples(res) != 1)
		expired_page(r);
	else if (view_from(r->app->cfg, res, 0, v) < 0)
		no_identity_page(r);
	else
		rc = 0;
	PQclear(res);
	return rc;
}

void connect_get(struct http_req *r)
{
	static struct db_stmt q = DB_STMT("SELECT " VIEW_COLUMNS " FROM connect_tickets t " VIEW_JOINS
					  " WHERE t.ticket_hash = $1::bytea AND t.used_at IS NULL "
					  "AND t.expires_at > now()");
	struct db_conn *c = NULL;
	struct connect_view v;
	char browser[64], csrf[64] = "";
	struct buf b;
	buf_init(&b, 16 * 1024);
	memset(&v, 0, sizeof(v));
	const char *ticket = http_query(r, "ticket");
	if (http_query_count(r, "ticket") != 1 || !ticket_shape_ok(ticket)) {
		expired_page(r);
		goto out;
	}
	if (ticket_view(r, &c, &q, ticket, &v) < 0)
		goto out;
	if (cookie_browser(r, browser) < 0 || cookie_csrf(r, browser, CSRF_PURPOSE, csrf) < 0 ||
	    page_html(&b, r, &v, ticket, csrf) < 0)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		html_send(r, 200, &b);
out:
	crypto_wipe(csrf, sizeof(csrf));
	buf_free(&b);
	db_release(r->app->db, &c);
}

int connect_leg_prepare(struct http_req *r, const struct cfg_upstream *up, char state[64], char **url)
{
	struct upstream_ep ep;
	char verifier[64], challenge[64], redirect[1100];
	uint8_t digest[CRYPTO_SHA256_LEN];
	int rc = -1;
	*url = NULL;
	if (!up || upstream_endpoints(up, &ep) < 0) {
		html_error_page(r, 503, "Temporarily unavailable", "The identity provider is not reachable now.");
		return -1;
	}
	if (crypto_token_new("", state, 64) < 0 || cookie_derive(r, "upstream-pkce", state, verifier) < 0 ||
	    authorize_callback_url(r->app->cfg, redirect, sizeof(redirect)) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	crypto_sha256(verifier, strlen(verifier), digest);
	crypto_b64url_encode(digest, sizeof(digest), challenge);
	if (!(*url = upstream_authorize_url(up, &ep, redirect, state, ep.pkce ? challenge : NULL))) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	rc = 0;
out:
	if (rc < 0)
		crypto_wipe(state, 64);
	crypto_wipe(verifier, sizeof(verifier));
	return rc;
}

void connect_drop_proof(struct http_req *r, const struct cfg_upstream *up, const struct upstream_tokens *tok)
{
	struct upstream_ep ep;
	if (!tok->access_token || upstream_endpoints(up, &ep) < 0 || !ep.github)
		return;
	enum upstream_rc rc = upstream_revoke_one(up, &ep, tok->access_token);
	if (rc != UP_OK)
		log_event(LOG_WARN, "connect.proof_not_revoked", r->id,
			  json_pack("{s:s, s:s}", "upstream", up->name, "result", upstream_rc_name(rc)));
}

void connect_redirect(struct http_req *r, const char *location)
{
	redirect_to(r, location);
}

/* Stores a leg for this browser and sends it to upstream's authorization
 * endpoint (state and PKCE of its own). */
static void start_leg(struct http_req *r, struct db_conn *c, const struct connect_view *v, const char *leg,
		      const char *upstream, const char *browser)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO pending_connects(state_hash, browser_hash, grant_id, upstream, leg, elicitation_id, "
		"expires_at) VALUES ($1::bytea, $2::bytea, $3::uuid, $4, $5, $6, "
		"now() + make_interval(secs => $7::int))");
	char state[64], state_hash[67], browser_hash[67], ttl[16];
	char *url = NULL;
	PGresult *res = NULL;
	if (connect_leg_prepare(r, config_upstream(r->app->cfg, upstream), state, &url) < 0)
		return;
	vault_hash_hex(state, state_hash);
	vault_hash_hex(browser, browser_hash);
	snprintf(ttl, sizeof(ttl), "%d", CONNECT_TICKET_TTL_S);
	const char *p[] = { state_hash, browser_hash, v->grant_id, v->upstream, leg, v->elicitation_id, ttl };
	if (!(res = db_exec_ok(c, &q, 7, p))) {
		html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
		goto out;
	}
	log_event(LOG_INFO, "connect.upstream_redirect", r->id,
		  json_pack("{s:s, s:s, s:s}", "grant_id", v->grant_id, "upstream", upstream, "leg", leg));
	redirect_to(r, url);
out:
	PQclear(res);
	free(url);
	crypto_wipe(state, sizeof(state));
}

void connect_post(struct http_req *r)
{
	/* Spent here, whatever follows: a ticket starts one flow. */
	static struct db_stmt q = DB_STMT("UPDATE connect_tickets t SET used_at = now() FROM grants g "
					  "JOIN users u ON u.id = g.user_id LEFT JOIN clients c ON "
					  "c.client_id = g.client_id WHERE t.ticket_hash = $1::bytea AND "
					  "t.used_at IS NULL AND t.expires_at > now() AND g.id = t.grant_id AND "
					  "g.status = 'active' RETURNING " VIEW_COLUMNS);
	struct db_conn *c = NULL;
	struct connect_view v;
	json_t *form = NULL;
	const char *why = NULL;
	int dup = 0;
	memset(&v, 0, sizeof(v));
	if (!(form = reqform_body(r, &dup, &why)) || dup) {
		html_error_page(r, 400, "Invalid request", "The form could not be read.");
		goto out;
	}
	const char *ticket = form_get(form, "ticket"), *decision = form_get(form, "decision");
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	if (!cookie_csrf_ok(r, CSRF_PURPOSE, form_get(form, "csrf")) || !browser) {
		html_error_page(r, 403, "Request refused",
				"This form was not issued to this browser. Open the link from your application again.");
		goto out;
	}
	if (!ticket_shape_ok(ticket)) {
		expired_page(r);
		goto out;
	}
	if (ticket_view(r, &c, &q, ticket, &v) < 0)
		goto out;
	if (!decision || strcmp(decision, "approve") != 0) {
		html_error_page(r, 200, "Cancelled", "Nothing was connected.");
		goto out;
	}
	start_leg(r, c, &v, "identity", v.signin, browser);
out:
	form_free(&form);
	db_release(r->app->db, &c);
}

/* The upstream's code in this callback, or NULL with the page sent. */
static const char *leg_code(struct http_req *r, const struct cfg_upstream *up)
{
	const char *iss = http_query(r, "iss"), *code = http_query(r, "code");
	if (iss && up->issuer && strcmp(iss, up->issuer) != 0) {
		log_event(LOG_WARN, "connect.issuer_mismatch", r->id, json_pack("{s:s}", "upstream", up->name));
		html_error_page(r, 400, "Sign-in refused", "The answer came from another identity provider.");
		return NULL;
	}
	if (http_query(r, "error") || !code || !*code || strlen(code) > UPCODE_MAX) {
		html_error_page(r, 400, "Not connected", "The sign-in was not completed. Nothing was connected.");
		return NULL;
	}
	return code;
}

int connect_leg_exchange(struct http_req *r, const struct cfg_upstream *up, const char *state,
			 struct upstream_tokens *tok, struct upstream_identity *id)
{
	struct upstream_ep ep;
	char verifier[64] = "", redirect[1100];
	const char *code;
	int rc = -1;
	if (upstream_endpoints(up, &ep) < 0) {
		html_error_page(r, 503, "Temporarily unavailable", "The identity provider is not reachable now.");
		return -1;
	}
	if (!(code = leg_code(r, up)))
		return -1;
	if (cookie_derive(r, "upstream-pkce", state, verifier) < 0 ||
	    authorize_callback_url(r->app->cfg, redirect, sizeof(redirect)) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	enum upstream_class cls = upstream_exchange_code(up, &ep, code, redirect, ep.pkce ? verifier : NULL, r->id, tok,
							 NULL);
	if (cls == UPC_OK)
		cls = upstream_identity(up, &ep, tok, r->id, id, NULL);
	if (cls != UPC_OK) {
		log_event(LOG_WARN, "connect.upstream_failed", r->id,
			  json_pack("{s:s, s:s}", "upstream", up->name, "result", upstream_class_name(cls)));
		html_error_page(r, upstream_class_http_status(cls) == 401 ? 400 : upstream_class_http_status(cls),
				"Not connected",
				"The identity provider did not complete the sign-in. Try again later.");
		goto out;
	}
	rc = 0;
out:
	crypto_wipe(verifier, sizeof(verifier));
	return rc;
}

static void done_page(struct http_req *r, const struct connect_view *v, const char *login)
{
	struct buf b;
	buf_init(&b, 8192);
	int rc = buf_adds(&b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Connected"
			      "</title><style>body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;"
			      "padding:0 1em}</style></head><body><h1>Connected</h1><p>Your <strong>") < 0;
	rc = rc || html_escape(&b, v->upstream) < 0 || buf_adds(&b, "</strong> account") < 0;
	if (login && *login)
		rc = rc || buf_adds(&b, " <strong>") < 0 || html_escape(&b, login) < 0 || buf_adds(&b, "</strong>") < 0;
	rc = rc || buf_adds(&b, " is connected to <strong>") < 0 || html_escape(&b, v->client_name) < 0;
	rc = rc || buf_adds(&b, "</strong>. You can close this window and return to the application.</p>"
				"</body></html>") < 0;
	if (rc)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		html_send(r, 200, &b);
	buf_free(&b);
}

int connect_callback(struct http_req *r, struct db_conn *c, const char *state)
{
	static struct db_stmt q = DB_STMT(
		"DELETE FROM pending_connects t USING grants g JOIN users u ON u.id = g.user_id "
		"LEFT JOIN clients c ON c.client_id = g.client_id WHERE t.state_hash = $1::bytea AND "
		"g.id = t.grant_id RETURNING encode(t.browser_hash, 'hex'), t.leg, t.expires_at > now(), "
		"g.status = 'active', " VIEW_COLUMNS);
	struct connect_view v;
	struct upstream_tokens tok = { 0 };
	struct upstream_identity id = { 0 };
	char hash[67];
	memset(&v, 0, sizeof(v));
	vault_hash_hex(state, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return 0;
	}
	int identified = view_from(r->app->cfg, res, 4, &v) == 0;
	char leg[16];
	snprintf(leg, sizeof(leg), "%s", PQgetvalue(res, 0, 1));
	int fresh = strcmp(PQgetvalue(res, 0, 2), "t") == 0, active = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	int bound = cookie_browser_is(r, PQgetvalue(res, 0, 0));
	PQclear(res);
	if (!fresh || !active || !identified) {
		expired_page(r);
		goto out;
	}
	if (!bound) {
		html_error_page(
			r, 403, "Request refused",
			"This sign-in was started in another browser. Open the link from your application again.");
		goto out;
	}
	int identity = strcmp(leg, "identity") == 0;
	const struct cfg_upstream *up = config_upstream(r->app->cfg, identity ? v.signin : v.upstream);
	if (!up) {
		html_error_page(r, 503, "Temporarily unavailable", "The identity provider is not configured.");
		goto out;
	}
	if (connect_leg_exchange(r, up, state, &tok, &id) < 0)
		goto out;
	if (identity) {
		/* Only the grant's own user may attach an account to it. The
		 * sign-in tokens were only a proof: revoked where that spares the
		 * user's other tokens (GitHub's, which never expire), and wiped. */
		connect_drop_proof(r, up, &tok);
		if (strcmp(id.subject, v.subject) != 0) {
			struct audit a = { "connection.identity_mismatch", "user", NULL, NULL, v.grant_id, r->id };
			if (audit_record(c, &a, json_pack("{s:s, s:s}", "upstream", v.upstream, "signin", v.signin)) <
			    0)
				log_msg(LOG_WARN, "audit.failed", r->id, "connection.identity_mismatch not recorded");
			log_event(LOG_WARN, "connect.identity_mismatch", r->id,
				  json_pack("{s:s, s:s}", "grant_id", v.grant_id, "upstream", v.upstream));
			html_error_page(r, 403, "Another account",
					"You signed in as another account than the one that authorized this "
					"application. Nothing was connected.");
			goto out;
		}
		start_leg(r, c, &v, "account", v.upstream, browser);
		goto out;
	}
	/* The grant's own sign-in upstream (an ID-JAG grant holds none until
	 * now) goes where a sign-in's session is kept; any other beside it. */
	int attached = strcmp(v.upstream, v.grant_upstream) == 0
			       ? connection_attach_signin(r->app, c, v.grant_id, v.upstream, &tok, r->id)
			       : connection_attach(r->app, c, v.grant_id, v.upstream, &tok, &id, r->id);
	if (attached < 0) {
		html_error_page(r, 503, "Temporarily unavailable", "The account could not be stored. Try again.");
		goto out;
	}
	/* Where the client holds a stream open, it learns at once. */
	if (notify_publish_elicited(c, v.grant_id, v.elicitation_id) < 0)
		log_msg(LOG_WARN, "connect.notify_failed", r->id, "notifications/elicitation/complete not announced");
	log_event(LOG_INFO, "connect.connected", r->id,
		  json_pack("{s:s, s:s, s:s}", "grant_id", v.grant_id, "upstream", v.upstream, "elicitation_id",
			    v.elicitation_id));
	done_page(r, &v, id.login);
out:
	upstream_tokens_free(&tok);
	upstream_identity_free(&id);
	return 1;
}
