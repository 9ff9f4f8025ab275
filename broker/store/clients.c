#include "clients.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit.h"
#include "cimd.h"
#include "form.h"
#include "log.h"
#include "ratelimit.h"
#include "uri.h"
#include "vault.h"

#define DB_WAIT_MS 2000

static __thread const char *last_error;

const char *clients_last_error(void)
{
	const char *e = last_error;
	last_error = NULL;
	return e;
}

int clients_redirect_policy_ok(const struct config *cfg, const char *uri)
{
	if (strncasecmp(uri, "https://", 8) == 0)
		return 1;
	if (strncasecmp(uri, "http://", 7) == 0)
		return cfg->registration.allow_loopback_redirects;
	return cfg->registration.allow_private_schemes;
}

void client_free(struct client *cl)
{
	for (size_t i = 0; i < cl->n_redirect_uris; i++)
		free(cl->redirect_uris[i]);
	free(cl->redirect_uris);
	free(cl->name);
	crypto_wipe(cl->secret_hash, sizeof(cl->secret_hash));
	memset(cl, 0, sizeof(*cl));
}

/* Parses a PostgreSQL text[] literal of redirect URIs as returned by
 * array_to_json (a JSON array, so jansson does the parsing). */
static int uris_from_json(const char *text, struct client *out)
{
	json_t *a = json_loads(text, 0, NULL);
	size_t i, n = json_array_size(a);
	json_t *v;
	if (!json_is_array(a) || n == 0 || n > LIM_REDIRECT_URIS) {
		json_decref(a);
		return -1;
	}
	out->redirect_uris = calloc(n, sizeof(char *));
	if (!out->redirect_uris) {
		json_decref(a);
		return -1;
	}
	json_array_foreach(a, i, v) {
		const char *s = json_string_value(v);
		if (!s || !(out->redirect_uris[out->n_redirect_uris] = strdup(s))) {
			json_decref(a);
			return -1;
		}
		out->n_redirect_uris++;
	}
	json_decref(a);
	return 0;
}

int clients_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out)
{
	static struct db_stmt q = DB_STMT(
		"SELECT kind, client_name, array_to_json(redirect_uris), encode(secret_hash, 'hex'), "
		"disabled_at IS NOT NULL FROM clients WHERE client_id = $1");
	memset(out, 0, sizeof(*out));
	last_error = NULL; /* no reason left over from an earlier lookup on this thread */
	if (!client_id || !*client_id || strlen(client_id) > LIM_CLIENT_ID)
		return 0;
	/* client-id = *VSCHAR (RFC 6749 appendix A.1); anything else is unknown
	 * here rather than a database encoding error. */
	for (const unsigned char *ch = (const unsigned char *)client_id; *ch; ch++)
		if (*ch < 0x20 || *ch > 0x7e)
			return 0;
	if (cimd_is_url(client_id) && !config_client(app->cfg, client_id)) {
		/* A URL client_id: its metadata document describes it. */
		const char *why = NULL;
		int rc = cimd_lookup(app, c, client_id, out, &why);
		last_error = why;
		return rc;
	}
	const struct cfg_client *sc = config_client(app->cfg, client_id);
	const char *p[] = { client_id };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res)
		return -1;
	int found = 0;
	snprintf(out->client_id, sizeof(out->client_id), "%s", client_id);
	if (sc) {
		/* Configuration is the truth for static clients; the row only
		 * carries the operator's disable switch. */
		snprintf(out->kind, sizeof(out->kind), "static");
		out->name = sc->client_name ? strdup(sc->client_name) : NULL;
		out->redirect_uris = calloc(sc->n_redirect_uris, sizeof(char *));
		for (size_t i = 0; out->redirect_uris && i < sc->n_redirect_uris; i++)
			if ((out->redirect_uris[i] = strdup(sc->redirect_uris[i])))
				out->n_redirect_uris++;
		out->confidential = sc->has_secret;
		memcpy(out->secret_hash, sc->secret_hash, sizeof(out->secret_hash));
		out->disabled = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 4), "t") == 0;
		found = out->n_redirect_uris == sc->n_redirect_uris ? 1 : -1;
	} else if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "static") != 0) {
		snprintf(out->kind, sizeof(out->kind), "%s", PQgetvalue(res, 0, 0));
		out->name = PQgetisnull(res, 0, 1) ? NULL : strdup(PQgetvalue(res, 0, 1));
		const char *hash = PQgetvalue(res, 0, 3);
		if (!PQgetisnull(res, 0, 3) && strlen(hash) == 64) {
			out->confidential = 1;
			for (size_t i = 0; i < 32; i++) {
				unsigned v = 0;
				sscanf(hash + 2 * i, "%2x", &v); /* database hex, fixed length */
				out->secret_hash[i] = (uint8_t)v;
			}
		}
		out->disabled = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
		found = uris_from_json(PQgetvalue(res, 0, 2), out) == 0 ? 1 : -1;
	}
	PQclear(res);
	if (found <= 0)
		client_free(out);
	return found;
}

int client_redirect_ok(const struct client *cl, const char *uri)
{
	for (size_t i = 0; i < cl->n_redirect_uris; i++)
		if (uri_redirect_matches(cl->redirect_uris[i], uri))
			return 1;
	return 0;
}

/* HTTP Basic credentials per RFC 6749 section 2.3.1: base64 of
 * urlencoded(id) ":" urlencoded(secret). Many clients (the MCP TypeScript
 * SDK among them) send the halves unencoded, which form decoding changes
 * when they hold '+' or '%'; so the raw halves are kept beside the decoded
 * ones and authentication tries both. */
struct basic {
	char *id, *secret;         /* form-decoded (the raw halves when undecodable) */
	char *raw_id, *raw_secret; /* as sent */
};

static void basic_free(struct basic *b)
{
	if (b->secret) {
		crypto_wipe(b->secret, strlen(b->secret));
		free(b->secret);
	}
	if (b->raw_secret) {
		crypto_wipe(b->raw_secret, strlen(b->raw_secret));
		free(b->raw_secret);
	}
	free(b->id);
	free(b->raw_id);
	memset(b, 0, sizeof(*b));
}

static int parse_basic(const char *h, struct basic *out)
{
	memset(out, 0, sizeof(*out));
	if (strncasecmp(h, "Basic ", 6) != 0)
		return -1;
	const char *b64 = h + 6;
	size_t n = strlen(b64);
	char raw[2048];
	if (n == 0 || n > 2700)
		return -1;
	long len = crypto_b64_decode(b64, n, raw, sizeof(raw) - 1);
	if (len <= 0)
		return -1;
	raw[len] = '\0';
	char *colon = memchr(raw, ':', (size_t)len);
	int rc = -1;
	json_t *o = NULL;
	if (!colon || strlen(raw) != (size_t)len)
		goto out;
	*colon = '\0';
	out->raw_id = strdup(raw);
	out->raw_secret = strdup(colon + 1);
	if (!out->raw_id || !out->raw_secret)
		goto out;
	/* Reuse the form decoder: "i=<id>&s=<secret>" decodes both halves. */
	struct buf f;
	buf_init(&f, sizeof(raw) + 8);
	f.secret = 1;
	int dup = 0;
	if (buf_adds(&f, "i=") == 0 && buf_adds(&f, raw) == 0 && buf_adds(&f, "&s=") == 0 &&
	    buf_adds(&f, colon + 1) == 0)
		o = form_parse(f.ptr, f.len, &dup);
	buf_free(&f);
	const char *di = form_get(o, "i"), *ds = form_get(o, "s");
	int decoded = o && !dup && di && ds && json_object_size(o) == 2;
	out->id = strdup(decoded ? di : out->raw_id);
	out->secret = strdup(decoded ? ds : out->raw_secret);
	rc = out->id && out->secret ? 0 : -1;
out:
	if (o) {
		const char *k;
		json_t *v;
		json_object_foreach(o, k, v)
			crypto_wipe((void *)json_string_value(v), json_string_length(v));
	}
	json_decref(o);
	crypto_wipe(raw, sizeof(raw));
	if (rc < 0)
		basic_free(out);
	return rc;
}

static int secret_matches(const struct client *cl, const char *secret)
{
	uint8_t h[CRYPTO_SHA256_LEN];
	crypto_sha256(secret, strlen(secret), h);
	int ok = crypto_ct_equal(h, sizeof(h), cl->secret_hash, sizeof(cl->secret_hash));
	crypto_wipe(h, sizeof(h));
	return ok;
}

enum client_auth clients_authenticate(struct http_req *r, struct db_conn *c, const json_t *form,
				      struct client *out)
{
	const char *hdr = http_header(r, "Authorization");
	const char *form_id = form_get(form, "client_id");
	const char *form_secret = form_get(form, "client_secret");
	struct basic bc;
	enum client_auth rc = CA_INVALID_CLIENT;
	memset(out, 0, sizeof(*out));
	memset(&bc, 0, sizeof(bc));
	if (hdr) {
		if (form_secret || parse_basic(hdr, &bc) < 0) {
			rc = form_secret ? CA_INVALID_REQUEST : CA_INVALID_CLIENT;
			goto out;
		}
		if (form_id && strcmp(form_id, bc.id) != 0 && strcmp(form_id, bc.raw_id) != 0) {
			rc = CA_INVALID_REQUEST;
			goto out;
		}
	}
	const char *id = bc.id ? bc.id : form_id;
	const char *secret = bc.id ? bc.secret : form_secret;
	/* The raw (not form-decoded) Basic secret as a second candidate, when
	 * it differs; compared without timing leaks like every secret. */
	const char *alt = bc.id && !crypto_ct_equal(bc.raw_secret, strlen(bc.raw_secret), bc.secret, strlen(bc.secret))
				  ? bc.raw_secret
				  : NULL;
	if (!id) {
		rc = CA_INVALID_CLIENT;
		goto out;
	}
	int found = clients_lookup(r->app, c, id, out);
	if (found == 0 && bc.id && strcmp(bc.raw_id, bc.id) != 0)
		found = clients_lookup(r->app, c, bc.raw_id, out);
	if (found < 0) {
		rc = CA_ERROR;
		goto out;
	}
	if (found == 0 || out->disabled)
		goto fail;
	if (out->confidential) {
		if (!secret || !(secret_matches(out, secret) || (alt && secret_matches(out, alt))))
			goto fail;
	} else if (secret && *secret) {
		goto fail; /* a public client has no secret to present */
	}
	rc = CA_OK;
	goto out;
fail:
	client_free(out);
	rc = CA_INVALID_CLIENT;
out:
	if (rc != CA_OK && rc != CA_INVALID_CLIENT)
		client_free(out);
	basic_free(&bc);
	return rc;
}

void clients_auth_error(struct http_req *r, enum client_auth rc)
{
	switch (rc) {
	case CA_INVALID_REQUEST:
		http_send_oauth_error(r, 400, "invalid_request", "use exactly one client authentication method");
		break;
	case CA_ERROR:
		http_send_oauth_unavailable(r);
		break;
	default:
		if (http_header(r, "Authorization"))
			(void)http_add_header(r, "WWW-Authenticate", "Basic realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_client", "client authentication failed");
		break;
	}
}

void clients_named_id(struct http_req *r, const json_t *form, char out[LIM_CLIENT_ID + 1])
{
	const char *hdr = http_header(r, "Authorization");
	const char *id = form_get(form, "client_id");
	struct basic bc;
	memset(&bc, 0, sizeof(bc));
	if (hdr && parse_basic(hdr, &bc) == 0)
		id = bc.id;
	/* Over-long names are no client's: they share one key per address. */
	snprintf(out, LIM_CLIENT_ID + 1, "%s", id && strlen(id) <= LIM_CLIENT_ID ? id : id ? "\x01long" : "");
	basic_free(&bc);
}

int clients_failures_check(struct http_req *r, const char *who)
{
	const struct config *cfg = r->app->cfg;
	int retry = 1;
	if (ratelimit_failures_ok(who, r->client_ip, cfg->limits.token_failures_per_client_address_per_minute,
				  cfg->limits.token_failures_per_address_per_minute, &retry))
		return 0;
	http_send_slow_down(r, retry, "too many failed requests from this address; retry later");
	return -1;
}

void clients_failures_count(struct http_req *r, const char *who)
{
	const struct config *cfg = r->app->cfg;
	long per_pair = cfg->limits.token_failures_per_client_address_per_minute;
	long per_addr = cfg->limits.token_failures_per_address_per_minute;
	int retry = 0;
	if (r->status < 400 || r->status >= 500 || r->status == 429)
		return;
	int before = ratelimit_failures_ok(who, r->client_ip, per_pair, per_addr, &retry);
	ratelimit_failure(who, r->client_ip, per_pair, per_addr);
	if (!before || ratelimit_failures_ok(who, r->client_ip, per_pair, per_addr, &retry))
		return;
	/* This failure crossed the limit: a line, at most one a minute per
	 * (client, address) however long the spraying goes on. */
	char key[LIM_CLIENT_ID + 64];
	int ignored;
	snprintf(key, sizeof(key), "%s\n%s", r->client_ip, who);
	if (ratelimit_take("fail-log", key, 1.0 / 60.0, 1.0, &ignored))
		log_event(LOG_WARN, "ratelimit.failures_exceeded", r->id,
			  json_pack("{s:s, s:s, s:s, s:i}", "client", r->client_ip, "client_id", who, "route",
				    r->route && r->route->label ? r->route->label : "", "retry_after_s", retry));
}

int clients_sync_static(struct app *app)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO clients(client_id, kind, client_name, redirect_uris, token_endpoint_auth_method) "
		"SELECT $1, 'static', $2, array(SELECT json_array_elements_text($3::json)), $4 "
		"ON CONFLICT (client_id) DO UPDATE SET kind = 'static', client_name = EXCLUDED.client_name, "
		"redirect_uris = EXCLUDED.redirect_uris, "
		"token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method");
	struct db_conn *c = NULL;
	int rc = -1;
	if (db_acquire(app->db, &c, 10000) < 0)
		return -1;
	for (size_t i = 0; i < app->cfg->n_clients; i++) {
		const struct cfg_client *cc = &app->cfg->clients[i];
		json_t *uris = json_array();
		for (size_t u = 0; u < cc->n_redirect_uris; u++)
			json_array_append_new(uris, json_string(cc->redirect_uris[u]));
		char *text = json_dumps(uris, JSON_COMPACT);
		json_decref(uris);
		const char *p[] = { cc->client_id, cc->client_name, text,
				    cc->has_secret ? "client_secret_basic" : "none" };
		PGresult *res = text ? db_exec_ok(c, &q, 4, p) : NULL;
		free(text);
		if (!res)
			goto out;
		PQclear(res);
	}
	rc = 0;
out:
	db_release(app->db, &c);
	return rc;
}

/* ---- RFC 7591 registration -------------------------------------------- */

static void reg_error(struct http_req *r, const char *error, const char *desc)
{
	http_send_oauth_error(r, 400, error, desc);
}

static int optional_string(json_t *doc, const char *k, size_t max, const char **out)
{
	json_t *v = json_object_get(doc, k);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return -1;
	*out = json_string_value(v);
	return 0;
}

/* The failure key of /register's initial access token (per address). */
#define REGISTER_FAILURE_KEY "/register"

/* 0 when the request carries the configured initial access token; -1 when
 * it was answered 401. */
static int initial_token_check(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	const char *auth = http_header(r, "Authorization");
	uint8_t h[CRYPTO_SHA256_LEN];
	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) > LIM_TOKEN) {
		(void)http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_token", "an initial access token is required");
		return -1;
	}
	crypto_sha256(auth + 7, strlen(auth + 7), h);
	int ok = crypto_ct_equal(h, sizeof(h), cfg->registration.initial_access_token_hash, sizeof(h));
	crypto_wipe(h, sizeof(h));
	if (!ok) {
		(void)http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker\", error=\"invalid_token\"");
		http_send_oauth_error(r, 401, "invalid_token", "the initial access token is not valid");
		return -1;
	}
	return 0;
}

void clients_register(struct http_req *r)
{
	/* The per-IP count and the insert are serialised per address (two-key
	 * advisory lock, first key "mcpb"): concurrent registrations must not
	 * all read the same count. The count runs as its own statement so that
	 * its snapshot is taken after the lock is held. */
	static struct db_stmt q_lock = DB_STMT("SELECT pg_advisory_xact_lock(1835233378, hashtext($1))");
	static struct db_stmt q_count = DB_STMT(
		"SELECT count(*) FROM clients WHERE kind = 'dynamic' AND registration_ip = $1::inet "
		"AND created_at > now() - interval '1 hour'");
	static struct db_stmt q_insert = DB_STMT(
		"INSERT INTO clients(client_id, kind, client_name, redirect_uris, secret_hash, "
		"token_endpoint_auth_method, grant_types, metadata, registration_ip) "
		"VALUES ($1, 'dynamic', $2, array(SELECT json_array_elements_text($3::json)), "
		"decode($4, 'hex'), $5, array(SELECT json_array_elements_text($6::json)), $7::jsonb, $8::inet) "
		"RETURNING extract(epoch FROM created_at)::bigint");
	const struct config *cfg = r->app->cfg;
	json_t *doc = NULL, *resp = NULL, *uris = NULL, *grant_types = NULL;
	struct db_conn *c = NULL;
	char client_id[48], secret[64] = "", secret_hex[65] = "";
	const char *why = NULL;
	(void)http_add_header(r, "Cache-Control", "no-store");
	(void)http_add_header(r, "Access-Control-Allow-Origin", "*"); /* cross-origin browser clients */

	if (!cfg->registration.dynamic) {
		http_send_oauth_error(r, 403, "access_denied", "dynamic client registration is disabled");
		return;
	}
	if (cfg->registration.has_initial_access_token) {
		/* Guesses at the initial access token are failures like wrong
		 * client secrets: counted per address, 429 beyond the limit. */
		if (clients_failures_check(r, REGISTER_FAILURE_KEY) < 0)
			return;
		if (initial_token_check(r) < 0) {
			clients_failures_count(r, REGISTER_FAILURE_KEY);
			return;
		}
	}
	const char *ct = http_header(r, "Content-Type");
	if (!ct || strncasecmp(ct, "application/json", 16) != 0) {
		reg_error(r, "invalid_client_metadata", "the body must be application/json");
		return;
	}
	json_error_t jerr;
	doc = json_loadb(r->body.ptr ? r->body.ptr : "", r->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(doc)) {
		reg_error(r, "invalid_client_metadata", "the body must be a JSON object");
		goto out;
	}
	/* redirect_uris: required, 1..LIM_REDIRECT_URIS, each allowed. */
	json_t *ru = json_object_get(doc, "redirect_uris");
	if (!json_is_array(ru) || json_array_size(ru) == 0 || json_array_size(ru) > LIM_REDIRECT_URIS) {
		reg_error(r, "invalid_redirect_uri", "redirect_uris must be an array of 1 to 10 URIs");
		goto out;
	}
	size_t i;
	json_t *v;
	json_array_foreach(ru, i, v) {
		why = NULL;
		int bad = !json_is_string(v) || uri_redirect_allowed(json_string_value(v), &why) < 0;
		if (!bad && !clients_redirect_policy_ok(r->app->cfg, json_string_value(v))) {
			why = "this redirect_uri kind is disabled by the server's registration policy";
			bad = 1;
		}
		if (bad) {
			reg_error(r, "invalid_redirect_uri", why ? why : "redirect_uris must be strings");
			goto out;
		}
	}
	const char *name = NULL, *method = NULL, *scope = NULL;
	if (optional_string(doc, "client_name", LIM_CLIENT_NAME, &name) < 0 ||
	    optional_string(doc, "token_endpoint_auth_method", 64, &method) < 0 ||
	    optional_string(doc, "scope", LIM_SCOPE, &scope) < 0) {
		reg_error(r, "invalid_client_metadata", "client_name, scope and token_endpoint_auth_method must be short strings");
		goto out;
	}
	if (!method)
		method = "client_secret_basic"; /* RFC 7591 section 2 default */
	if (strcmp(method, "none") != 0 && strcmp(method, "client_secret_basic") != 0 &&
	    strcmp(method, "client_secret_post") != 0) {
		reg_error(r, "invalid_client_metadata", "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post");
		goto out;
	}
	grant_types = json_object_get(doc, "grant_types");
	if (grant_types) {
		if (!json_is_array(grant_types) || json_array_size(grant_types) == 0 || json_array_size(grant_types) > 4)
			goto bad_grants;
		json_array_foreach(grant_types, i, v) {
			const char *g = json_string_value(v);
			if (!g || (strcmp(g, "authorization_code") != 0 && strcmp(g, "refresh_token") != 0))
				goto bad_grants;
		}
		json_incref(grant_types);
	} else {
		grant_types = json_pack("[s,s]", "authorization_code", "refresh_token");
	}
	json_t *rt = json_object_get(doc, "response_types");
	if (rt) {
		if (!json_is_array(rt) || json_array_size(rt) != 1 ||
		    !json_is_string(json_array_get(rt, 0)) ||
		    strcmp(json_string_value(json_array_get(rt, 0)), "code") != 0) {
			reg_error(r, "invalid_client_metadata", "response_types must be [\"code\"]");
			goto out;
		}
	}
	/* Optional informational URIs must be http(s) URLs when present. */
	static const char *const info_uris[] = { "client_uri", "logo_uri", "tos_uri", "policy_uri" };
	json_t *meta = json_object();
	for (size_t k = 0; k < sizeof(info_uris) / sizeof(info_uris[0]); k++) {
		const char *u = NULL;
		if (optional_string(doc, info_uris[k], LIM_REDIRECT_URI, &u) < 0 ||
		    (u && (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0))) {
			json_decref(meta);
			reg_error(r, "invalid_client_metadata", "client_uri, logo_uri, tos_uri and policy_uri must be http(s) URLs");
			goto out;
		}
		if (u)
			json_object_set_new(meta, info_uris[k], json_string(u));
	}
	if (scope)
		json_object_set_new(meta, "scope", json_string(scope));

	uint8_t rnd[16];
	if (crypto_random(rnd, sizeof(rnd)) < 0) {
		json_decref(meta);
		http_send_error(r, 500, "server_error");
		goto out;
	}
	memcpy(client_id, "mcpb_c_", 7);
	crypto_b64url_encode(rnd, sizeof(rnd), client_id + 7);
	int confidential = strcmp(method, "none") != 0;
	if (confidential) {
		if (crypto_token_new("mcpb_cs_", secret, sizeof(secret)) < 0) {
			json_decref(meta);
			http_send_error(r, 500, "server_error");
			goto out;
		}
		crypto_sha256_hex(secret, strlen(secret), secret_hex);
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		json_decref(meta);
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (db_begin(c) < 0) {
		json_decref(meta);
		http_send_oauth_unavailable(r);
		goto out;
	}
	if (cfg->limits.register_per_ip_per_hour > 0) {
		const char *p[] = { r->client_ip };
		PGresult *res = db_exec_ok(c, &q_lock, 1, p);
		long n = -1;
		if (res) {
			PQclear(res);
			res = db_exec_ok(c, &q_count, 1, p);
			n = res ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
		}
		PQclear(res);
		if (n < 0) {
			json_decref(meta);
			http_send_error(r, 500, "server_error");
			goto out;
		}
		if (n >= cfg->limits.register_per_ip_per_hour) {
			json_decref(meta);
			(void)http_add_header(r, "Retry-After", "3600");
			http_send_oauth_error(r, 429, "slow_down", "too many registrations from this address");
			goto out;
		}
	}
	uris = json_incref(ru);
	char *uris_text = json_dumps(uris, JSON_COMPACT);
	char *grants_text = json_dumps(grant_types, JSON_COMPACT);
	char *meta_text = json_dumps(meta, JSON_COMPACT);
	const char *p[] = { client_id, name, uris_text, confidential ? secret_hex : NULL, method,
			    grants_text, meta_text, r->client_ip };
	PGresult *res = uris_text && grants_text && meta_text ? db_exec_ok(c, &q_insert, 8, p) : NULL;
	free(uris_text);
	free(grants_text);
	free(meta_text);
	if (!res) {
		json_decref(meta);
		http_send_error(r, 500, "server_error");
		goto out;
	}
	json_int_t issued = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	struct audit a = { "client.registered", "anonymous", NULL, client_id, NULL, r->id };
	if (audit_record(c, &a, json_pack("{s:s, s:s?}", "ip", r->client_ip, "name", name)) < 0 ||
	    db_commit(c) < 0) {
		json_decref(meta);
		http_send_error(r, 500, "server_error");
		goto out;
	}

	resp = json_pack("{s:s, s:I, s:O, s:s, s:O, s:[s]}", "client_id", client_id, "client_id_issued_at",
			 issued, "redirect_uris", uris, "token_endpoint_auth_method", method, "grant_types",
			 grant_types, "response_types", "code");
	if (resp && name)
		json_object_set_new(resp, "client_name", json_string(name));
	if (resp && confidential) {
		r->secret_response = 1;
		json_object_set_new(resp, "client_secret", json_string(secret));
		json_object_set_new(resp, "client_secret_expires_at", json_integer(0));
	}
	if (resp)
		json_object_update(resp, meta);
	json_decref(meta);
	http_send_json(r, 201, resp);
	resp = NULL;
	goto out;
bad_grants:
	reg_error(r, "invalid_client_metadata", "grant_types may contain only authorization_code and refresh_token");
	grant_types = NULL;
out:
	db_release(r->app->db, &c);
	crypto_wipe(secret, sizeof(secret));
	json_decref(grant_types);
	json_decref(uris);
	json_decref(resp);
	json_decref(doc);
}
