#include "account.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "connect.h"
#include "connection.h"
#include "cookie.h"
#include "crypto.h"
#include "form.h"
#include "grant.h"
#include "html.h"
#include "jparse.h"
#include "log.h"
#include "num.h"
#include "ratelimit.h"
#include "reqform.h"
#include "revoker.h"
#include "upstream.h"
#include "vault.h"

#define COOKIE_ACCOUNT "mcpb_account"
#define CSRF_PURPOSE "account"
#define SEAL_PURPOSE "account-session"
#define LOGIN_TTL "600"          /* seconds a sign-in may take at the upstream */
#define ACCOUNT_GRANTS "200"     /* grants one page lists */
#define ACCOUNT_LOGINS_PER_S 0.5 /* sign-ins one client address starts, sustained */
#define ACCOUNT_LOGIN_BURST 20.0

/* Who is signed in: an upstream account, and the trusted issuers whose
 * users sign in there (a JSON array, for the grants of enterprise users). */
struct account {
	char upstream[65];
	char subject[256];
	char login[128];
	char *issuers;
};

/* The grants one account may see and act on: its own user's at the
 * upstream, or an enterprise user's of an issuer that signs in there (the
 * same subject, as the connect page's identity leg requires). A machine
 * client's grant belongs to no one here. $1 upstream, $2 subject, $3
 * issuers. */
#define OWNED                                                                                            \
	"g.status = 'active' AND u.subject = $2 AND u.subject NOT LIKE 'client:%' AND (u.upstream = $1 " \
	"OR u.upstream IN (SELECT json_array_elements_text($3::json)))"
#define UTC_MINUTE(x) "to_char(" x " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')"

static void account_free(struct account *a)
{
	free(a->issuers);
	crypto_wipe(a, sizeof(*a));
}

static void see_other(struct http_req *r, const char *done)
{
	char location[1200];
	snprintf(location, sizeof(location), "%s/account%s%s", r->app->cfg->public_url, done ? "?done=" : "",
		 done ? done : "");
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Referrer-Policy", "no-referrer");
	http_add_header(r, "Location", location);
	http_send(r, 303, "text/plain", "", 0);
}

static void unavailable(struct http_req *r)
{
	http_add_header(r, "Retry-After", "1");
	html_error_page(r, 503, "Temporarily unavailable", "Please try again in a moment.");
}

/* 1 and *a filled when this browser holds an unexpired sign-in sealed for
 * it (and its upstream is still configured), 0 when not, -1 when out of
 * memory. */
static int session_open(struct http_req *r, struct account *a)
{
	const struct config *cfg = r->app->cfg;
	const char *v = cookie_get(r, COOKIE_ACCOUNT), *browser = cookie_get(r, COOKIE_BROWSER);
	json_t *j = v && browser ? cookie_open(r, SEAL_PURPOSE, v) : NULL, *iss = NULL;
	int rc = 0;
	memset(a, 0, sizeof(*a));
	if (!j)
		return 0;
	const char *up = json_string_value(json_object_get(j, "u")), *sub = json_string_value(json_object_get(j, "s"));
	const char *login = json_string_value(json_object_get(j, "l")), *b = json_string_value(json_object_get(j, "b"));
	json_int_t exp = json_integer_value(json_object_get(j, "e"));
	if (!up || !sub || !b || strlen(b) != 64 || !cookie_browser_is(r, b) || exp <= (json_int_t)time(NULL) ||
	    !config_upstream(cfg, up) || strlen(up) >= sizeof(a->upstream) || strlen(sub) >= sizeof(a->subject))
		goto out;
	snprintf(a->upstream, sizeof(a->upstream), "%s", up);
	snprintf(a->subject, sizeof(a->subject), "%s", sub);
	snprintf(a->login, sizeof(a->login), "%s", login ? login : "");
	if (!(iss = json_array()))
		goto oom;
	for (size_t i = 0; i < cfg->n_trusted_issuers; i++)
		if (strcmp(cfg->trusted_issuers[i].login_upstream, up) == 0 &&
		    json_array_append_new(iss, json_string(cfg->trusted_issuers[i].issuer)) < 0)
			goto oom;
	if (!(a->issuers = json_dumps(iss, JSON_COMPACT)))
		goto oom;
	rc = 1;
	goto out;
oom:
	rc = -1;
out:
	json_decref(iss);
	json_decref(j);
	return rc;
}

/* ---- pages ---------------------------------------------------------- */

#define STYLE                                                                                               \
	"<style>body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;"        \
	"color:#222}section{border:1px solid #ccc;border-radius:6px;padding:.4em 1em 1em;margin:1em 0}"     \
	"dt{font-weight:600;float:left;clear:left;width:7em}dd{margin-left:8em}code{word-break:break-all}"  \
	"button{font-size:1em;padding:.35em 1em}button:focus{outline:3px solid #1a6dd6;outline-offset:2px}" \
	"form{display:inline}ul{padding-left:1.2em}li{margin:.3em 0}.note{background:#eef6ee;"              \
	"padding:.5em 1em;border-radius:4px}</style>"

static int head(struct buf *b, const char *title)
{
	return buf_adds(b, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
			   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>") < 0 ||
			       html_escape(b, title) < 0 || buf_adds(b, "</title>" STYLE "</head><body>") < 0
		       ? -1
		       : 0;
}

/* <form method=post action=".../account/<action>"> with the CSRF token;
 * the caller adds its fields and the button. */
static int form_open(struct buf *b, const struct http_req *r, const char *action, const char *csrf)
{
	return buf_adds(b, "<form method=\"post\" action=\"") < 0 || html_escape(b, r->app->cfg->public_url) < 0 ||
			       buf_adds(b, "/account/") < 0 || buf_adds(b, action) < 0 ||
			       buf_adds(b, "\"><input type=\"hidden\" name=\"csrf\" value=\"") < 0 ||
			       html_escape(b, csrf) < 0 || buf_adds(b, "\">") < 0
		       ? -1
		       : 0;
}

static int hidden(struct buf *b, const char *name, const char *value)
{
	return buf_adds(b, "<input type=\"hidden\" name=\"") < 0 || buf_adds(b, name) < 0 ||
			       buf_adds(b, "\" value=\"") < 0 || html_escape(b, value) < 0 || buf_adds(b, "\">") < 0
		       ? -1
		       : 0;
}

static int signin_html(struct buf *b, const struct http_req *r, const char *csrf)
{
	const struct config *cfg = r->app->cfg;
	int rc = head(b, "Your authorizations") < 0 ||
		 buf_adds(b, "<h1>Your authorizations</h1><p>Sign in to see the applications you authorized "
			     "through this broker, and to revoke them or disconnect the accounts they use.</p>") < 0;
	for (size_t i = 0; !rc && i < cfg->n_upstreams; i++) {
		const char *name = cfg->upstreams[i].name;
		rc = form_open(b, r, "login", csrf) < 0 || hidden(b, "upstream", name) < 0 ||
		     buf_adds(b, "<p><button type=\"submit\">Sign in with ") < 0 || html_escape(b, name) < 0 ||
		     buf_adds(b, "</button></p></form>") < 0;
	}
	return rc || buf_adds(b, "</body></html>") < 0 ? -1 : 0;
}

static const char *done_text(const char *done)
{
	if (!done)
		return NULL;
	if (strcmp(done, "revoked") == 0)
		return "The authorization was revoked. The application can no longer act for you.";
	if (strcmp(done, "disconnected") == 0)
		return "The account was disconnected.";
	return NULL;
}

/* One grant: row i of the listing (see account_get for the columns). */
static int grant_html(struct buf *b, const struct http_req *r, PGresult *res, int i, const char *csrf)
{
	const char *gid = PQgetvalue(res, i, 0), *name = PQgetvalue(res, i, 1);
	const char *signin = PQgetvalue(res, i, 7);
	int rc = buf_adds(b, "<section aria-label=\"") < 0 || html_escape(b, name) < 0 || buf_adds(b, "\"><h2>") < 0 ||
		 html_escape(b, name) < 0 || buf_adds(b, "</h2><dl><dt>Client</dt><dd><code>") < 0 ||
		 html_escape(b, PQgetvalue(res, i, 2)) < 0 ||
		 buf_adds(b, "</code></dd><dt>Resource</dt><dd><code>") < 0 ||
		 html_escape(b, PQgetvalue(res, i, 3)) < 0 || buf_adds(b, "</code></dd><dt>Scopes</dt><dd>") < 0 ||
		 html_escape(b, *PQgetvalue(res, i, 4) ? PQgetvalue(res, i, 4) : "(none)") < 0 ||
		 buf_adds(b, "</dd><dt>Created</dt><dd>") < 0 || html_escape(b, PQgetvalue(res, i, 5)) < 0 ||
		 buf_adds(b, "</dd><dt>Last used</dt><dd>") < 0 ||
		 html_escape(b, PQgetisnull(res, i, 6) ? "never" : PQgetvalue(res, i, 6)) < 0 ||
		 buf_adds(b, "</dd></dl><h3>Accounts</h3><ul>") < 0;
	if (strcmp(PQgetvalue(res, i, 8), "t") == 0)
		rc = rc || buf_adds(b, "<li><strong>") < 0 || html_escape(b, signin) < 0 ||
		     buf_adds(b, "</strong> (signed in with it)</li>") < 0;
	json_t *list = jparse_str(PQgetvalue(res, i, 9), 0, LIM_JSON_DEPTH), *k;
	size_t j;
	rc = rc || !json_is_array(list);
	json_array_foreach(list, j, k)
	{
		const char *up = json_string_value(json_object_get(k, "upstream"));
		const char *login = json_string_value(json_object_get(k, "login"));
		const char *at = json_string_value(json_object_get(k, "at"));
		if (rc || !up)
			continue;
		rc = buf_adds(b, "<li><strong>") < 0 || html_escape(b, up) < 0 || buf_adds(b, "</strong>") < 0;
		if (login && *login)
			rc = rc || buf_adds(b, " as ") < 0 || html_escape(b, login) < 0;
		rc = rc || buf_adds(b, ", connected ") < 0 || html_escape(b, at ? at : "") < 0 ||
		     buf_adds(b, " ") < 0 || form_open(b, r, "disconnect", csrf) < 0 || hidden(b, "grant", gid) < 0 ||
		     hidden(b, "upstream", up) < 0 || buf_adds(b, "<button type=\"submit\">Disconnect ") < 0 ||
		     html_escape(b, up) < 0 || buf_adds(b, "</button></form></li>") < 0;
	}
	size_t connected = json_array_size(list);
	json_decref(list);
	if (connected == 0 && strcmp(PQgetvalue(res, i, 8), "t") != 0)
		rc = rc || buf_adds(b, "<li>none connected</li>") < 0;
	rc = rc || buf_adds(b, "</ul>") < 0 || form_open(b, r, "revoke", csrf) < 0 || hidden(b, "grant", gid) < 0 ||
	     buf_adds(b, "<button type=\"submit\">Revoke ") < 0 || html_escape(b, name) < 0 ||
	     buf_adds(b, "</button></form></section>") < 0;
	return rc ? -1 : 0;
}

static int list_html(struct buf *b, const struct http_req *r, const struct account *a, PGresult *res, const char *csrf,
		     const char *done)
{
	const char *note = done_text(done);
	int n = PQntuples(res);
	int rc = head(b, "Your authorizations") < 0 ||
		 buf_adds(b, "<h1>Your authorizations</h1><p>Signed in with <strong>") < 0 ||
		 html_escape(b, a->upstream) < 0 || buf_adds(b, "</strong> as <strong>") < 0 ||
		 html_escape(b, *a->login ? a->login : a->subject) < 0 || buf_adds(b, "</strong>. ") < 0 ||
		 form_open(b, r, "logout", csrf) < 0 ||
		 buf_adds(b, "<button type=\"submit\">Sign out</button></form></p>") < 0;
	if (note)
		rc = rc || buf_adds(b, "<p class=\"note\" role=\"status\">") < 0 || html_escape(b, note) < 0 ||
		     buf_adds(b, "</p>") < 0;
	if (n == 0)
		rc = rc || buf_adds(b, "<p>No application holds an authorization of yours.</p>") < 0;
	for (int i = 0; !rc && i < n; i++)
		rc = grant_html(b, r, res, i, csrf);
	return rc || buf_adds(b, "</body></html>") < 0 ? -1 : 0;
}

/* The columns grant_html reads: id, client name, client_id, resource,
 * scopes, created, last tool call (NULL: never), sign-in upstream, whether
 * its session is there, connected accounts (a JSON array). */
#define LIST_SQL                                                                                                                                                \
	"SELECT g.id::text, coalesce(nullif(c.client_name, ''), g.client_id), g.client_id, g.resource, "                                                        \
	"array_to_string(g.scopes, ' '), " UTC_MINUTE(                                                                                                          \
		"g.created_at") ", "                                                                                                                            \
				"(SELECT " UTC_MINUTE(                                                                                                          \
					"max(e.at)") " FROM audit_events e WHERE e.grant_id = g.id "                                                            \
						     "AND e.event = 'tool.called'), g.upstream, g.up_access IS NOT NULL, "                                      \
						     "(SELECT coalesce(json_agg(json_build_object('upstream', k.upstream, 'login', k.login, 'at', " UTC_MINUTE( \
							     "k.connected_at") ") ORDER BY k.upstream), '[]') FROM grant_connections k "                        \
									       "WHERE k.grant_id = g.id) FROM grants g JOIN users u ON u.id = g.user_id "       \
									       "LEFT JOIN clients c ON c.client_id = g.client_id WHERE " OWNED                  \
									       " ORDER BY g.created_at DESC, g.id LIMIT " ACCOUNT_GRANTS

void account_get(struct http_req *r)
{
	static struct db_stmt q = DB_STMT(LIST_SQL);
	struct account a;
	struct db_conn *c = NULL;
	PGresult *res = NULL;
	char browser[64], csrf[64] = "";
	struct buf b;
	buf_init(&b, 512 * 1024);
	int s = session_open(r, &a);
	if (s < 0 || cookie_browser(r, browser) < 0 || cookie_csrf(r, browser, CSRF_PURPOSE, csrf) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	if (s == 0) {
		if (signin_html(&b, r, csrf) < 0)
			html_error_page(r, 500, "Server error", "The request could not be completed.");
		else
			html_send(r, 200, &b);
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		unavailable(r);
		goto out;
	}
	const char *p[] = { a.upstream, a.subject, a.issuers };
	if (!(res = db_exec_ok(c, &q, 3, p))) {
		unavailable(r);
		goto out;
	}
	const char *done = http_query_count(r, "done") == 1 ? http_query(r, "done") : NULL;
	if (list_html(&b, r, &a, res, csrf, done) < 0)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		html_send(r, 200, &b);
out:
	crypto_wipe(csrf, sizeof(csrf));
	PQclear(res);
	db_release(r->app->db, &c);
	buf_free(&b);
	account_free(&a);
}

/* ---- forms ---------------------------------------------------------- */

/* The posted form when it carries this browser's CSRF token; NULL with the
 * page sent. */
static json_t *checked_form(struct http_req *r)
{
	const char *why = NULL;
	int dup = 0;
	json_t *form = reqform_body(r, &dup, &why);
	if (!form || dup) {
		html_error_page(r, 400, "Invalid request", "The form could not be read.");
		form_free(&form);
		return NULL;
	}
	if (!cookie_get(r, COOKIE_BROWSER) || !cookie_csrf_ok(r, CSRF_PURPOSE, form_get(form, "csrf"))) {
		html_error_page(r, 403, "Request refused",
				"This form was not issued to this browser. Open the page again.");
		form_free(&form);
		return NULL;
	}
	return form;
}

void account_login(struct http_req *r)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO pending_account_logins(state_hash, browser_hash, upstream, expires_at) VALUES "
		"($1::bytea, $2::bytea, $3, now() + interval '" LOGIN_TTL " seconds')");
	struct db_conn *c = NULL;
	PGresult *res = NULL;
	char state[64] = "", state_hash[67], browser_hash[67];
	char *url = NULL;
	json_t *form = checked_form(r);
	if (!form)
		return;
	const char *name = form_get(form, "upstream");
	const struct cfg_upstream *up = name ? config_upstream(r->app->cfg, name) : NULL;
	if (!up) {
		html_error_page(r, 400, "Invalid request", "There is no such identity provider here.");
		goto out;
	}
	/* Anyone may start a sign-in (the CSRF token is the browser's own):
	 * each start writes a row, so each address starts a few only. */
	int retry = 1;
	if (!ratelimit_take("account-login", r->client_ip, ACCOUNT_LOGINS_PER_S, ACCOUNT_LOGIN_BURST, &retry)) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", retry);
		http_add_header(r, "Retry-After", ra);
		html_error_page(r, 429, "Too many sign-ins", "Too many sign-ins from your address. Try again shortly.");
		goto out;
	}
	/* The upstream's endpoints first (discovery may take a while): no
	 * pooled connection is held meanwhile. */
	if (connect_leg_prepare(r, up, state, &url) < 0)
		goto out;
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		unavailable(r);
		goto out;
	}
	vault_hash_hex(state, state_hash);
	vault_hash_hex(cookie_get(r, COOKIE_BROWSER), browser_hash);
	const char *p[] = { state_hash, browser_hash, up->name };
	if (!(res = db_exec_ok(c, &q, 3, p))) {
		unavailable(r);
		goto out;
	}
	log_event(LOG_INFO, "account.upstream_redirect", r->id, json_pack("{s:s}", "upstream", up->name));
	connect_redirect(r, url);
out:
	crypto_wipe(state, sizeof(state));
	free(url);
	PQclear(res);
	db_release(r->app->db, &c);
	form_free(&form);
}

int account_callback(struct http_req *r, struct db_conn *c, const char *state)
{
	static struct db_stmt q = DB_STMT("DELETE FROM pending_account_logins WHERE state_hash = $1::bytea RETURNING "
					  "encode(browser_hash, 'hex'), upstream, expires_at > now()");
	struct upstream_tokens tok = { 0 };
	struct upstream_identity id = { 0 };
	char hash[67], upstream[65], bhash[65];
	char *sealed = NULL;
	json_t *j = NULL;
	vault_hash_hex(state, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return 0;
	}
	snprintf(bhash, sizeof(bhash), "%s", PQgetvalue(res, 0, 0));
	snprintf(upstream, sizeof(upstream), "%s", PQgetvalue(res, 0, 1));
	int fresh = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	PQclear(res);
	int bound = cookie_browser_is(r, bhash);
	const struct cfg_upstream *up = config_upstream(r->app->cfg, upstream);
	if (!fresh || !up) {
		html_error_page(r, 400, "Sign-in expired",
				"This sign-in is unknown or has expired. Open the page again.");
		goto out;
	}
	if (!bound) {
		html_error_page(r, 403, "Request refused",
				"This sign-in was started in another browser. Open the page again.");
		goto out;
	}
	/* The tokens only prove who this is: revoked where that spares the
	 * user's other tokens, and wiped. */
	if (connect_leg_exchange(r, up, state, &tok, &id) < 0)
		goto out;
	connect_drop_proof(r, up, &tok);
	j = json_pack("{s:s, s:s, s:s?, s:s, s:I}", "u", upstream, "s", id.subject, "l", id.login, "b", bhash, "e",
		      (json_int_t)time(NULL) + ACCOUNT_SESSION_S);
	if (!j || !(sealed = cookie_seal(r, SEAL_PURPOSE, j)) ||
	    cookie_set(r, COOKIE_ACCOUNT, sealed, ACCOUNT_SESSION_S) < 0) {
		html_error_page(r, 500, "Server error", "The request could not be completed.");
		goto out;
	}
	log_event(LOG_INFO, "account.signed_in", r->id, json_pack("{s:s}", "upstream", upstream));
	see_other(r, NULL);
out:
	if (sealed)
		crypto_wipe(sealed, strlen(sealed));
	free(sealed);
	json_decref(j);
	upstream_tokens_free(&tok);
	upstream_identity_free(&id);
	return 1;
}

/* The signed-in account and its form, or 0 with the page sent (the caller
 * frees both either way). */
static int acting(struct http_req *r, struct account *a, json_t **form)
{
	memset(a, 0, sizeof(*a));
	if (!(*form = checked_form(r)))
		return 0;
	int s = session_open(r, a);
	if (s < 0)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else if (s == 0)
		html_error_page(r, 403, "Signed out", "Your sign-in has expired. Open the page and sign in again.");
	return s > 0;
}

/* Locks the account's grant (form field "grant") in the transaction
 * begun on c: 1 when it is theirs and active, 0 when not (page sent), -1
 * on a database error (page sent). */
static int lock_owned(struct http_req *r, struct db_conn *c, const struct account *a, const char *gid)
{
	static struct db_stmt q = DB_STMT("SELECT g.id FROM grants g JOIN users u ON u.id = g.user_id WHERE "
					  "g.id = $4::uuid AND " OWNED " FOR UPDATE OF g");
	if (!num_uuid_ok(gid)) {
		html_error_page(r, 404, "Not found", "That authorization is not yours or no longer exists.");
		return 0;
	}
	const char *p[] = { a->upstream, a->subject, a->issuers, gid };
	PGresult *res = db_exec_ok(c, &q, 4, p);
	if (!res) {
		unavailable(r);
		return -1;
	}
	int n = PQntuples(res);
	PQclear(res);
	if (n != 1)
		html_error_page(r, 404, "Not found", "That authorization is not yours or no longer exists.");
	return n == 1;
}

void account_revoke(struct http_req *r)
{
	struct account a;
	struct db_conn *c = NULL;
	json_t *form = NULL;
	if (!acting(r, &a, &form))
		goto out;
	const char *gid = form_get(form, "grant");
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0 || db_begin(c) < 0) {
		unavailable(r);
		goto out;
	}
	int owned = lock_owned(r, c, &a, gid);
	if (owned <= 0)
		goto out;
	if (grant_revoke(r->app, c, gid, "user_revoked", "user", r->id) < 0 || db_commit(c) < 0) {
		unavailable(r);
		goto out;
	}
	see_other(r, "revoked");
out:
	db_release(r->app->db, &c); /* rolls back what was not committed */
	form_free(&form);
	account_free(&a);
}

void account_disconnect(struct http_req *r)
{
	struct account a;
	struct db_conn *c = NULL;
	json_t *form = NULL;
	if (!acting(r, &a, &form))
		goto out;
	const char *gid = form_get(form, "grant"), *up = form_get(form, "upstream");
	if (!up || strlen(up) > 64) {
		html_error_page(r, 404, "Not found", "That account is not connected.");
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0 || db_begin(c) < 0) {
		unavailable(r);
		goto out;
	}
	if (lock_owned(r, c, &a, gid) <= 0)
		goto out;
	int n = connection_disconnect(c, gid, up, "user", "user_disconnected", r->id);
	if (n < 0 || (n > 0 && db_commit(c) < 0)) {
		unavailable(r);
		goto out;
	}
	if (n == 0) {
		html_error_page(r, 404, "Not found", "That account is not connected.");
		goto out;
	}
	revoker_kick();
	see_other(r, "disconnected");
out:
	db_release(r->app->db, &c);
	form_free(&form);
	account_free(&a);
}

void account_logout(struct http_req *r)
{
	json_t *form = checked_form(r);
	if (!form)
		return;
	if (cookie_set(r, COOKIE_ACCOUNT, "", 0) < 0)
		html_error_page(r, 500, "Server error", "The request could not be completed.");
	else
		see_other(r, NULL);
	form_free(&form);
}
