#include "register.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app_type.h"
#include "audit.h"
#include "client.h"
#include "client_auth.h"
#include "clients.h"
#include "crypto.h"
#include "db.h"
#include "jparse.h"
#include "lim.h"
#include "uri.h"

/* The failure key of /register's initial access token (per address). */
#define REGISTER_FAILURE_KEY "/register"
#define INVALID_METADATA "invalid_client_metadata"

/* ---- parse: metadata JSON -> struct register_request ------------------- */

static enum register_parse refuse(struct register_refusal *why, const char *error, const char *description)
{
	why->error = error;
	why->description = description;
	return REGISTER_INVALID;
}

/* An optional member: absent or null (*out NULL), or a string of at most
 * max bytes without NUL; -1 for anything else. */
static int optional_string(const json_t *doc, const char *k, size_t max, const char **out)
{
	json_t *v = json_object_get(doc, k);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v))
		return -1;
	*out = json_string_value(v);
	return 0;
}

/* redirect_uris: required, 1..LIM_REDIRECT_URIS, each a URI the broker
 * accepts (uri_redirect_allowed) of a kind the policy allows. */
static enum register_parse check_redirect_uris(const struct config *cfg, const json_t *ru, struct register_refusal *why)
{
	if (!json_is_array(ru) || json_array_size(ru) == 0 || json_array_size(ru) > LIM_REDIRECT_URIS)
		return refuse(why, "invalid_redirect_uri", "redirect_uris must be an array of 1 to 10 URIs");
	for (size_t i = 0; i < json_array_size(ru); i++) {
		const char *uri = json_string_value(json_array_get(ru, i)), *reason = NULL;
		if (!uri)
			return refuse(why, "invalid_redirect_uri", "redirect_uris must be strings");
		if (uri_redirect_allowed(uri, &reason) < 0)
			return refuse(why, "invalid_redirect_uri", reason ? reason : "redirect_uris must be strings");
		if (!client_redirect_policy_ok(cfg, uri))
			return refuse(why, "invalid_redirect_uri",
				      "this redirect_uri kind is disabled by the server's registration policy");
	}
	return REGISTER_OK;
}

/* application_type (SEP-837): "web" or "native", each with the redirect
 * URIs it allows (app_type.h); inferred from them when absent. */
static enum register_parse check_application_type(const json_t *doc, const json_t *uris, const char **type,
						  struct register_refusal *why)
{
	switch (app_type_check(json_object_get(doc, "application_type"), uris, type)) {
	case APP_TYPE_OK: return REGISTER_OK;
	case APP_TYPE_BAD_VALUE: return refuse(why, INVALID_METADATA, "application_type must be web or native");
	default:
		return refuse(why, "invalid_redirect_uri",
			      "a web application_type allows only https redirect_uris that are not on localhost");
	}
}

/* token_endpoint_auth_method: RFC 7591 section 2's default when absent. */
static enum register_parse check_auth_method(const char *method, struct register_request *out,
					     struct register_refusal *why)
{
	if (!method)
		method = "client_secret_basic";
	if (strcmp(method, "none") != 0 && strcmp(method, "client_secret_basic") != 0 &&
	    strcmp(method, "client_secret_post") != 0)
		return refuse(why, INVALID_METADATA,
			      "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post");
	out->auth_method = method;
	out->confidential = strcmp(method, "none") != 0;
	return REGISTER_OK;
}

/* grant_types: 1..4 of authorization_code and refresh_token; both when absent. */
static enum register_parse take_grant_types(const json_t *doc, json_t **out, struct register_refusal *why)
{
	json_t *gt = json_object_get(doc, "grant_types");
	if (!gt) {
		*out = json_pack("[s,s]", "authorization_code", "refresh_token");
		return *out ? REGISTER_OK : REGISTER_NOMEM;
	}
	int ok = json_is_array(gt) && json_array_size(gt) > 0 && json_array_size(gt) <= 4;
	for (size_t i = 0; ok && i < json_array_size(gt); i++) {
		const char *g = json_string_value(json_array_get(gt, i));
		ok = g && (strcmp(g, "authorization_code") == 0 || strcmp(g, "refresh_token") == 0);
	}
	if (!ok)
		return refuse(why, INVALID_METADATA,
			      "grant_types may contain only authorization_code and refresh_token");
	*out = json_incref(gt);
	return REGISTER_OK;
}

/* response_types: absent or exactly ["code"]. */
static enum register_parse check_response_types(const json_t *doc, struct register_refusal *why)
{
	json_t *rt = json_object_get(doc, "response_types");
	if (!rt)
		return REGISTER_OK;
	const char *t = json_string_value(json_array_get(rt, 0));
	if (!json_is_array(rt) || json_array_size(rt) != 1 || !t || strcmp(t, "code") != 0)
		return refuse(why, INVALID_METADATA, "response_types must be [\"code\"]");
	return REGISTER_OK;
}

/* The metadata kept and echoed: the informational URIs (http(s) URLs when
 * present) and scope. */
static enum register_parse take_metadata(const json_t *doc, const char *scope, json_t **out,
					 struct register_refusal *why)
{
	static const char *const info_uris[] = { "client_uri", "logo_uri", "tos_uri", "policy_uri" };
	enum register_parse rc = REGISTER_NOMEM;
	json_t *meta = json_object();
	if (!meta)
		goto out;
	for (size_t k = 0; k < sizeof(info_uris) / sizeof(info_uris[0]); k++) {
		const char *u = NULL;
		if (optional_string(doc, info_uris[k], LIM_REDIRECT_URI, &u) < 0 ||
		    (u && strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)) {
			rc = refuse(why, INVALID_METADATA,
				    "client_uri, logo_uri, tos_uri and policy_uri must be http(s) URLs");
			goto out;
		}
		if (u && json_object_set_new(meta, info_uris[k], json_string(u)) < 0)
			goto out;
	}
	if (scope && json_object_set_new(meta, "scope", json_string(scope)) < 0)
		goto out;
	*out = meta;
	meta = NULL;
	rc = REGISTER_OK;
out:
	json_decref(meta);
	return rc;
}

enum register_parse register_parse(const struct config *cfg, const char *content_type, const char *body, size_t len,
				   struct register_request *out, struct register_refusal *why)
{
	const char *method = NULL, *scope = NULL;
	enum register_parse rc;
	memset(out, 0, sizeof(*out));
	why->error = why->description = NULL;
	if (!content_type || strncasecmp(content_type, "application/json", 16) != 0) {
		rc = refuse(why, INVALID_METADATA, "the body must be application/json");
		goto out;
	}
	out->doc = jparse(body ? body : "", len, 0, LIM_JSON_DEPTH);
	if (!json_is_object(out->doc)) {
		rc = refuse(why, INVALID_METADATA, "the body must be a JSON object");
		goto out;
	}
	out->redirect_uris = json_object_get(out->doc, "redirect_uris");
	if ((rc = check_redirect_uris(cfg, out->redirect_uris, why)) != REGISTER_OK)
		goto out;
	if (optional_string(out->doc, "client_name", LIM_CLIENT_NAME, &out->name) < 0 ||
	    optional_string(out->doc, "token_endpoint_auth_method", 64, &method) < 0 ||
	    optional_string(out->doc, "scope", LIM_SCOPE, &scope) < 0) {
		rc = refuse(why, INVALID_METADATA,
			    "client_name, scope and token_endpoint_auth_method must be short strings");
		goto out;
	}
	if ((rc = check_application_type(out->doc, out->redirect_uris, &out->application_type, why)) != REGISTER_OK ||
	    (rc = check_auth_method(method, out, why)) != REGISTER_OK ||
	    (rc = take_grant_types(out->doc, &out->grant_types, why)) != REGISTER_OK ||
	    (rc = check_response_types(out->doc, why)) != REGISTER_OK ||
	    (rc = take_metadata(out->doc, scope, &out->metadata, why)) != REGISTER_OK)
		goto out;
	if (json_object_set_new(out->metadata, "application_type", json_string(out->application_type)) < 0)
		rc = REGISTER_NOMEM;
out:
	if (rc != REGISTER_OK)
		register_request_free(out);
	return rc;
}

void register_request_free(struct register_request *rq)
{
	json_decref(rq->metadata);
	json_decref(rq->grant_types);
	json_decref(rq->doc);
	memset(rq, 0, sizeof(*rq));
}

/* ---- the endpoint -------------------------------------------------------- */

/* 0 when the request carries the configured initial access token; -1 when
 * it was answered 401. */
static int initial_token_check(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	const char *auth = http_header(r, "Authorization");
	uint8_t h[CRYPTO_SHA256_LEN];
	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) > LIM_TOKEN) {
		http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_token", "an initial access token is required");
		return -1;
	}
	crypto_sha256(auth + 7, strlen(auth + 7), h);
	int ok = crypto_ct_equal(h, sizeof(h), cfg->registration.initial_access_token_hash, sizeof(h));
	crypto_wipe(h, sizeof(h));
	if (!ok) {
		http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker\", error=\"invalid_token\"");
		http_send_oauth_error(r, 401, "invalid_token", "the initial access token is not valid");
		return -1;
	}
	return 0;
}

/* 0 when the request may register; -1 when it was answered. Guesses at the
 * initial access token are failures like wrong client secrets: counted per
 * address, 429 beyond the limit. */
static int initial_access_ok(struct http_req *r)
{
	if (!r->app->cfg->registration.has_initial_access_token)
		return 0;
	if (client_auth_failures_check(r, REGISTER_FAILURE_KEY) < 0)
		return -1;
	if (initial_token_check(r) == 0)
		return 0;
	client_auth_failures_count(r, REGISTER_FAILURE_KEY);
	return -1;
}

/* A new client's credentials; the secret and its hash only for a
 * confidential one. */
struct credentials {
	char client_id[48];
	char secret[64];
	char secret_hex[65];
};

static int credentials_new(struct credentials *cr, int confidential)
{
	uint8_t rnd[16];
	if (crypto_random(rnd, sizeof(rnd)) < 0)
		return -1;
	memcpy(cr->client_id, "mcpb_c_", 7);
	crypto_b64url_encode(rnd, sizeof(rnd), cr->client_id + 7);
	if (!confidential)
		return 0;
	if (crypto_token_new("mcpb_cs_", cr->secret, sizeof(cr->secret)) < 0)
		return -1;
	crypto_sha256_hex(cr->secret, strlen(cr->secret), cr->secret_hex);
	return 0;
}

/* Drops the answer, wiping the client secret it may hold. */
static void response_free(json_t **resp)
{
	const char *secret = json_string_value(json_object_get(*resp, "client_secret"));
	if (secret)
		crypto_wipe((void *)secret, strlen(secret));
	json_decref(*resp);
	*resp = NULL;
}

/* The RFC 7591 section 3.2.1 answer, built before anything is stored so
 * that a stored client is always answered; client_id_issued_at is 0 until
 * store() sets it. NULL when out of memory. */
static json_t *response_new(const struct register_request *rq, const struct credentials *cr)
{
	json_t *resp = json_pack("{s:s, s:I, s:O, s:s, s:O, s:[s]}", "client_id", cr->client_id, "client_id_issued_at",
				 (json_int_t)0, "redirect_uris", rq->redirect_uris, "token_endpoint_auth_method",
				 rq->auth_method, "grant_types", rq->grant_types, "response_types", "code");
	int bad = !resp;
	if (!bad && rq->name)
		bad = json_object_set_new(resp, "client_name", json_string(rq->name)) < 0;
	if (!bad && rq->confidential)
		bad = json_object_set_new(resp, "client_secret", json_string(cr->secret)) < 0 ||
		      json_object_set_new(resp, "client_secret_expires_at", json_integer(0)) < 0;
	if (!bad)
		bad = json_object_update(resp, rq->metadata) < 0;
	if (bad)
		response_free(&resp);
	return resp;
}

/* Stores the client and its audit event in one transaction and sets the
 * answer's client_id_issued_at. 0, or -1 when r was answered. */
static int store(struct http_req *r, const struct register_request *rq, const struct credentials *cr, json_t *resp)
{
	const struct clients_new n = {
		.client_id = cr->client_id,
		.name = rq->name,
		.secret_hash_hex = rq->confidential ? cr->secret_hex : NULL,
		.auth_method = rq->auth_method,
		.registration_ip = r->client_ip,
		.redirect_uris = rq->redirect_uris,
		.grant_types = rq->grant_types,
		.metadata = rq->metadata,
	};
	const struct audit a = { "client.registered", "anonymous", NULL, cr->client_id, NULL, r->id };
	struct db_conn *c = NULL;
	long long issued = 0;
	int rc = -1;
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0 || db_begin(c) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	switch (clients_create_dynamic(c, &n, r->app->cfg->limits.register_per_ip_per_hour, &issued)) {
	case CLIENTS_CREATED: break;
	case CLIENTS_OVER_LIMIT: http_send_slow_down(r, 3600, "too many registrations from this address"); goto out;
	default: http_send_error(r, 500, "server_error"); goto out;
	}
	if (json_integer_set(json_object_get(resp, "client_id_issued_at"), (json_int_t)issued) < 0 ||
	    audit_record(c, &a, json_pack("{s:s, s:s?}", "ip", r->client_ip, "name", rq->name)) < 0 ||
	    db_commit(c) < 0) {
		http_send_error(r, 500, "server_error");
		goto out;
	}
	rc = 0;
out:
	db_release(r->app->db, &c);
	return rc;
}

void register_endpoint(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	struct register_request rq;
	struct register_refusal why;
	struct credentials cr;
	json_t *resp = NULL;
	memset(&rq, 0, sizeof(rq));
	memset(&cr, 0, sizeof(cr));
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Access-Control-Allow-Origin", "*"); /* cross-origin browser clients */
	if (!cfg->registration.dynamic) {
		http_send_oauth_error(r, 403, "access_denied", "dynamic client registration is disabled");
		goto out;
	}
	if (initial_access_ok(r) < 0)
		goto out;
	enum register_parse parsed = register_parse(cfg, http_header(r, "Content-Type"), r->body.ptr, r->body.len, &rq,
						    &why);
	if (parsed == REGISTER_INVALID) {
		http_send_oauth_error(r, 400, why.error, why.description);
		goto out;
	}
	if (parsed != REGISTER_OK || credentials_new(&cr, rq.confidential) < 0 || !(resp = response_new(&rq, &cr))) {
		http_send_error(r, 500, "server_error");
		goto out;
	}
	if (store(r, &rq, &cr, resp) < 0)
		goto out;
	if (rq.confidential)
		r->secret_response = 1;
	http_send_json(r, 201, json_incref(resp));
out:
	response_free(&resp);
	register_request_free(&rq);
	crypto_wipe(&cr, sizeof(cr));
}
