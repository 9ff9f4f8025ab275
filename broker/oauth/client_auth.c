#include "client_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client_assertion.h"
#include "client_resolve.h"
#include "crypto.h"
#include "form.h"
#include "jose.h"
#include "log.h"
#include "ratelimit.h"

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
		json_object_foreach(o, k, v) crypto_wipe((void *)json_string_value(v), json_string_length(v));
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

/* 1 when what the request presented suits the client: a confidential one
 * needs its secret (secret, or the raw Basic half alt); a public one has no
 * secret to present. */
static int credentials_ok(const struct client *cl, const char *secret, const char *alt)
{
	if (!cl->confidential)
		return !cl->private_key_jwt && (!secret || !*secret);
	return secret && (secret_matches(cl, secret) || (alt && secret_matches(cl, alt)));
}

/* private_key_jwt (RFC 7523 2.2): the assertion is the only credential of
 * the request, and both of its parameters are there. */
static enum client_auth by_assertion(struct http_req *r, struct db_conn *c, const json_t *form, struct client *out)
{
	const char *type = form_get(form, "client_assertion_type");
	const char *assertion = form_get(form, "client_assertion");
	if (http_header(r, "Authorization") || form_get(form, "client_secret") || !type || !assertion)
		return CA_INVALID_REQUEST;
	if (strcmp(type, CLIENT_ASSERTION_TYPE) != 0)
		return CA_INVALID_CLIENT;
	switch (client_assertion_verify(r, c, assertion, form_get(form, "client_id"), out)) {
	case CLA_OK: return CA_OK;
	case CLA_UNAVAILABLE: return CA_ERROR;
	default: return CA_INVALID_CLIENT;
	}
}

enum client_auth client_auth_verify(struct http_req *r, struct db_conn *c, const json_t *form, struct client *out)
{
	if (form_get(form, "client_assertion_type") || form_get(form, "client_assertion")) {
		memset(out, 0, sizeof(*out));
		return by_assertion(r, c, form, out);
	}
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
	if (!id)
		goto out;
	const char *why; /* a CIMD refusal's reason: not told to a client that failed to authenticate */
	enum client_find found = client_resolve(r->app, c, id, out, &why);
	if (found == CLIENT_UNKNOWN && bc.id && strcmp(bc.raw_id, bc.id) != 0)
		found = client_resolve(r->app, c, bc.raw_id, out, &why);
	if (found == CLIENT_UNAVAILABLE)
		rc = CA_ERROR;
	else if (found == CLIENT_FOUND && !out->disabled && credentials_ok(out, secret, alt))
		rc = CA_OK;
out:
	if (rc != CA_OK)
		client_free(out);
	basic_free(&bc);
	return rc;
}

void client_auth_error(struct http_req *r, enum client_auth rc)
{
	switch (rc) {
	case CA_INVALID_REQUEST:
		http_send_oauth_error(r, 400, "invalid_request", "use exactly one client authentication method");
		break;
	case CA_ERROR: http_send_oauth_unavailable(r); break;
	default:
		if (http_header(r, "Authorization"))
			http_add_header(r, "WWW-Authenticate", "Basic realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_client", "client authentication failed");
		break;
	}
}

void client_auth_named_id(struct http_req *r, const json_t *form, char out[LIM_CLIENT_ID + 1])
{
	const char *hdr = http_header(r, "Authorization");
	const char *id = form_get(form, "client_id");
	struct basic bc;
	memset(&bc, 0, sizeof(bc));
	const char *assertion = form_get(form, "client_assertion");
	struct jws j;
	memset(&j, 0, sizeof(j));
	if (hdr && parse_basic(hdr, &bc) == 0)
		id = bc.id;
	/* An assertion names its client by iss (unverified: a bucket key only). */
	else if (!id && assertion && jose_parse(assertion, strlen(assertion), &j) == 0)
		id = json_string_value(json_object_get(j.payload, "iss"));
	/* Over-long names are no client's: they share one key per address. */
	snprintf(out, LIM_CLIENT_ID + 1, "%s", id && strlen(id) <= LIM_CLIENT_ID ? id : id ? "\x01long" : "");
	jose_free(&j);
	basic_free(&bc);
}

int client_auth_failures_check(struct http_req *r, const char *who)
{
	const struct config *cfg = r->app->cfg;
	int retry = 1;
	if (ratelimit_failures_ok(who, r->client_ip, cfg->limits.token_failures_per_client_address_per_minute,
				  cfg->limits.token_failures_per_address_per_minute, &retry))
		return 0;
	http_send_slow_down(r, retry, "too many failed requests from this address; retry later");
	return -1;
}

void client_auth_failures_count(struct http_req *r, const char *who)
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
