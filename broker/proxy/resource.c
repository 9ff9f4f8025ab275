#include "resource.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "audit.h"
#include "bearer.h"
#include "cache.h"
#include "connection.h"
#include "crypto.h"
#include "dpop.h"
#include "engine.h"
#include "forward.h"
#include "hdr.h"
#include "log.h"
#include "resources.h"
#include "policy.h"
#include "ratelimit.h"
#include "rpc.h"
#include "session.h"
#include "upstream_token.h"

/* What one step of the handler did: the request goes on to the next, or
 * the step has answered it (a refusal or an error). */
enum step { STEP_CONTINUE, STEP_ANSWERED };

/* Per-request state while the downstream answers. */
struct resource_ctx {
	struct app *app;
	const struct cfg_resource *res;
	struct engine_xfer *x;
	/* The token's grant: held until the answer streams (a replay after a
	 * 401 rebuilds the request from it), then freed, so that a parked
	 * stream keeps only what its audit records name. */
	struct token_info *ti;
	char grant_id[37], user_id[37];
	char *client_id;
	char token_hash[65]; /* the access token's SHA-256 hex (revocations name it) */
	char *resource_url;
	char request_id[LIM_REQUEST_ID + 1];
	json_t *tools;
	int has_body;     /* a JSON-RPC body is forwarded (as application/json) */
	int drop_session; /* the request's Mcp-Session-Id is not forwarded */
	uint64_t started;
	long status;
	int retried;               /* one forced upstream refresh after a downstream 401 */
	int dpop;                  /* the token came in the DPoP scheme */
	struct dpop_pending proof; /* its proof, checked; recorded after the rate limit */
	int refused;               /* the answer is being discarded; 503 when the transfer ends */
	int acts;                  /* the body holds a request that needs the connected accounts */
	int no_signin;             /* forwarded without the sign-in upstream's token (an ID-JAG grant's) */
};

/* The upstream tokens of one downstream request: [0] the sign-in
 * upstream's, [1 + k] connect upstream k's (NULL: not connected, and the
 * request does not need it). Wiped and freed by tokens_free. */
struct tokens {
	char *t[LIM_CONNECT_UPSTREAMS + 1];
};

/* An error answer naming the request's id (NULL: null). */
static void jsonrpc_error_id(struct http_req *r, int status, int code, const char *message, json_t *id)
{
	if (status == 503)
		http_add_header(r, "Retry-After", "1");
	http_send_json(r, status,
		       json_pack("{s:s, s:{s:i, s:s}, s:O?}", "jsonrpc", "2.0", "error", "code", code, "message",
				 message, "id", id));
}

static void jsonrpc_error(struct http_req *r, int status, int code, const char *message)
{
	jsonrpc_error_id(r, status, code, message, NULL);
}

static void wipe_free(char **s)
{
	if (*s) {
		crypto_wipe(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void tokens_free(struct tokens *tk)
{
	for (size_t i = 0; i < sizeof(tk->t) / sizeof(tk->t[0]); i++)
		wipe_free(&tk->t[i]);
}

/* Request completed (libmicrohttpd thread): audit the tool calls it
 * carried, then give back the transfer. NULL-safe. */
static void ctx_free(void *p)
{
	struct resource_ctx *rc = p;
	if (!rc)
		return;
	if (rc->x && rc->client_id && rc->tools && json_array_size(rc->tools) > 0) {
		double ms = (double)(http_now_ns() - rc->started) / 1e6;
		char actor[LIM_CLIENT_ID + 8];
		snprintf(actor, sizeof(actor), "client:%s", rc->client_id);
		size_t i;
		json_t *t;
		json_array_foreach(rc->tools, i, t)
		{
			struct audit a = { "tool.called", actor,        rc->user_id,
					   rc->client_id, rc->grant_id, rc->request_id };
			audit_enqueue(&a, json_pack("{s:s, s:s, s:i, s:s, s:f}", "tool", json_string_value(t),
						    "resource", rc->resource_url, "status", (int)rc->status, "outcome",
						    rc->status >= 200 && rc->status < 300 ? "ok" : "error",
						    "latency_ms", ms));
		}
	}
	json_decref(rc->tools);
	engine_request_done(rc->x);
	free(rc->ti);
	free(rc->client_id);
	free(rc->resource_url);
	free(rc);
}

static struct resource_ctx *ctx_new(struct http_req *r, const struct cfg_resource *res)
{
	struct resource_ctx *rc = calloc(1, sizeof(*rc));
	if (!rc)
		return NULL;
	rc->app = r->app;
	rc->res = res;
	rc->started = r->start_ns;
	snprintf(rc->request_id, sizeof(rc->request_id), "%s", r->id);
	char url[2048];
	if (resources_url(r->app->cfg, res, url, sizeof(url)) < 0 || !(rc->resource_url = strdup(url)) ||
	    !(rc->ti = malloc(sizeof(*rc->ti))) || !(rc->tools = json_array())) {
		ctx_free(rc);
		return NULL;
	}
	return rc;
}

/* ---- before the body: resource_headers' steps -------------------------- */

/* scheme, host and port of an absolute http(s) URL, lower-cased and with
 * the scheme's default port filled in; refuses userinfo, and (origin) any
 * path but "/", a query or a fragment: an Origin header is
 * scheme://host[:port] and nothing more. 0 or -1. */
static int origin_parts(const char *url, int origin, char **scheme, char **host, char **port)
{
	CURLU *u = curl_url();
	char *user = NULL, *path = NULL, *query = NULL, *frag = NULL;
	int rc = -1;
	*scheme = *host = *port = NULL;
	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_NO_USER)
		goto out;
	if (origin && (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_NO_QUERY ||
		       curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) != CURLUE_NO_FRAGMENT ||
		       curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || strcmp(path, "/") != 0))
		goto out;
	if (strcasecmp(*scheme, "http") != 0 && strcasecmp(*scheme, "https") != 0)
		goto out;
	rc = 0;
out:
	if (rc < 0) {
		curl_free(*scheme);
		curl_free(*host);
		curl_free(*port);
		*scheme = *host = *port = NULL;
	}
	curl_free(user);
	curl_free(path);
	curl_free(query);
	curl_free(frag);
	curl_url_cleanup(u);
	return rc;
}

/* The Origin is the broker's own public origin (same-origin): scheme, host
 * and port of public_url, after default ports and case are normalised.
 * An Origin carrying anything more than scheme://host[:port] is not. */
static int same_origin(const char *public_url, const char *origin)
{
	char *s1, *h1, *p1, *s2, *h2, *p2;
	if (!public_url || origin_parts(public_url, 0, &s1, &h1, &p1) < 0)
		return 0;
	int same = 0;
	if (origin_parts(origin, 1, &s2, &h2, &p2) == 0) {
		same = strcasecmp(s1, s2) == 0 && strcasecmp(h1, h2) == 0 && strcmp(p1, p2) == 0;
		curl_free(s2);
		curl_free(h2);
		curl_free(p2);
	}
	curl_free(s1);
	curl_free(h1);
	curl_free(p1);
	return same;
}

static int origin_allowed(const struct app *app, const struct cfg_resource *res, const char *origin)
{
	/* The configured list first: the URL parses of same_origin only when
	 * it does not answer. */
	for (size_t i = 0; i < res->n_allowed_origins; i++)
		if (strcasecmp(res->allowed_origins[i], origin) == 0 || strcmp(res->allowed_origins[i], "*") == 0)
			return 1;
	return same_origin(app->cfg->public_url, origin);
}

/* An allowed browser origin: CORS on every answer, and preflights are
 * answered before authentication (they carry no token). */
static enum step cors(struct http_req *r, const struct cfg_resource *res)
{
	const char *origin = http_header(r, "Origin");
	if (!origin)
		return STEP_CONTINUE;
	if (!origin_allowed(r->app, res, origin)) {
		jsonrpc_error(r, 403, -32001, "origin not allowed");
		return STEP_ANSWERED;
	}
	http_add_header(r, "Access-Control-Allow-Origin", origin);
	http_add_header(r, "Vary", "Origin");
	http_add_header(r, "Access-Control-Expose-Headers",
			"Mcp-Session-Id, WWW-Authenticate, MCP-Protocol-Version, DPoP-Nonce");
	if (r->method_id != HM_OPTIONS)
		return STEP_CONTINUE;
	http_add_header(r, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
	http_add_header(r, "Access-Control-Allow-Headers",
			"Authorization, DPoP, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, "
			"Last-Event-ID, Mcp-Method, Mcp-Name");
	http_add_header(r, "Access-Control-Max-Age", "600");
	http_send(r, 204, NULL, "", 0);
	return STEP_ANSWERED;
}

/* What the broker judges must read the same downstream: one copy of each
 * header it interprets, field values it can forward verbatim, no dot
 * segment in the path. */
static enum step screen(struct http_req *r, const struct cfg_resource *res)
{
	static const char *const single[] = {
		"Authorization",        "DPoP",         "Mcp-Session-Id",   "Mcp-Method",   "Mcp-Name",
		"MCP-Protocol-Version", "Content-Type", "Content-Encoding", "Last-Event-ID"
	};
	for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
		if (http_header_count(r, single[i]) > 1) {
			jsonrpc_error(r, 400, -32600, "a header the broker checks was given more than once");
			return STEP_ANSWERED;
		}
	if (!forward_fields_ok(r)) {
		jsonrpc_error(r, 400, -32600, "a header contains control or non-ASCII characters");
		return STEP_ANSWERED;
	}
	if (forward_has_dot_segment(r->path + strlen(res->path))) {
		jsonrpc_error(r, 400, -32600, "the path must not contain . or .. segments");
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

/* The access token of the Authorization header into *token, *dpop 1 when
 * it came in the DPoP scheme. */
static enum step find_token(struct http_req *r, const struct cfg_resource *res, const char **token, int *dpop)
{
	if (http_query(r, "access_token")) {
		/* RFC 6750 2.3 is not supported: tokens in URLs leak into logs. */
		bearer_challenge(r, res, 401, "invalid_request", NULL);
		return STEP_ANSWERED;
	}
	const char *auth = http_header(r, "Authorization");
	if (!auth) {
		bearer_challenge(r, res, 401, NULL, NULL);
		return STEP_ANSWERED;
	}
	if (!(*token = bearer_token(auth, dpop))) {
		bearer_challenge(r, res, 401, "invalid_token", NULL);
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

static enum step authenticate(struct http_req *r, struct db_conn **c, struct resource_ctx *rc, const char *token)
{
	enum bearer_rc v = bearer_validate(r->app, c, token, rc->ti, rc->token_hash);
	if (v == BEARER_UNAVAILABLE) {
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		return STEP_ANSWERED;
	}
	if (v != BEARER_VALID || strcmp(rc->ti->resource, rc->resource_url) != 0) {
		/* Unknown, expired, revoked, or issued for another resource. */
		bearer_challenge(r, rc->res, 401, "invalid_token", NULL);
		return STEP_ANSWERED;
	}
	snprintf(rc->grant_id, sizeof(rc->grant_id), "%s", rc->ti->grant_id);
	snprintf(rc->user_id, sizeof(rc->user_id), "%s", rc->ti->user_id);
	if (!(rc->client_id = strdup(rc->ti->client_id))) {
		jsonrpc_error(r, 500, -32603, "internal error");
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

/* RFC 9449 section 7: a DPoP-bound token only in the DPoP scheme with a
 * valid proof of its key for this request (method, URL, this token); a
 * Bearer token not in the DPoP scheme, and not at all where the resource
 * requires DPoP. No database: the proof's jti is remembered by the node. */
static enum step dpop_gate(struct http_req *r, struct resource_ctx *rc, const char *token)
{
	const struct config *cfg = r->app->cfg;
	const char *why = NULL;
	char htu[4096], jkt[DPOP_JKT_LEN + 1];
	if (!rc->ti->jkt[0]) {
		if (rc->dpop)
			bearer_dpop_refused(r, rc->res, "invalid_token", "the access token is not DPoP-bound");
		else if (rc->res->require_dpop)
			bearer_dpop_refused(r, rc->res, "invalid_token",
					    "this resource accepts DPoP-bound tokens only");
		return rc->dpop || rc->res->require_dpop ? STEP_ANSWERED : STEP_CONTINUE;
	}
	if (!rc->dpop) {
		bearer_dpop_refused(r, rc->res, "invalid_token", "a DPoP-bound token must be presented as DPoP");
		return STEP_ANSWERED;
	}
	if (!http_header(r, "DPoP")) {
		bearer_dpop_refused(r, rc->res, "invalid_dpop_proof", "a DPoP proof is required");
		return STEP_ANSWERED;
	}
	int n = snprintf(htu, sizeof(htu), "%s%s", cfg->public_url, r->path);
	struct dpop_expect e = dpop_expect_for(cfg, DPOP_SPACE_RESOURCE, r->method, htu);
	e.access_token = token;
	e.jkt = rc->ti->jkt;
	e.pending = &rc->proof;
	enum dpop_rc v = n < 0 || (size_t)n >= sizeof(htu) ? DPOP_INVALID
							   : dpop_verify(http_header(r, "DPoP"), &e, jkt, &why);
	if (v == DPOP_OK)
		return STEP_CONTINUE;
	log_event(LOG_INFO, "proxy.dpop_refused", r->id,
		  json_pack("{s:s, s:s, s:s}", "grant_id", rc->ti->grant_id, "client_id", rc->ti->client_id, "reason",
			    why ? why : "url too long"));
	bearer_dpop_refused(r, rc->res, v == DPOP_NONCE ? "use_dpop_nonce" : "invalid_dpop_proof",
			    why ? why : "the request's URL is too long");
	return STEP_ANSWERED;
}

/* The checked proof's jti, remembered: refused when it was recorded
 * meanwhile (a concurrent replay) or the node's memory has no room. */
static enum step dpop_record_step(struct http_req *r, struct resource_ctx *rc)
{
	const struct config *cfg = r->app->cfg;
	const char *why = NULL;
	char nonce[DPOP_NONCE_LEN + 1];
	if (!rc->proof.set)
		return STEP_CONTINUE;
	if (dpop_record(&rc->proof, &why) < 0) {
		bearer_dpop_refused(r, rc->res, "invalid_dpop_proof", why);
		return STEP_ANSWERED;
	}
	/* RFC 9449 section 8.2: a fresh nonce rides on the answer, so the
	 * client's next proof has one before the current one goes stale. */
	if (dpop_current_nonce(cfg, nonce) == 0)
		http_add_header(r, "DPoP-Nonce", nonce);
	return STEP_CONTINUE;
}

/* A body the broker forwards is judged as exactly what the downstream
 * will parse: application/json (charset utf-8 at most), no content
 * coding; else 415. */
static enum step media_type(struct http_req *r)
{
	if (hdr_json_content_type(http_header(r, "Content-Type")) &&
	    hdr_identity_encoding(http_header(r, "Content-Encoding")))
		return STEP_CONTINUE;
	http_add_header(r, "Accept-Encoding", "identity");
	jsonrpc_error(r, 415, -32600, "the body must be application/json (charset utf-8) without content coding");
	return STEP_ANSWERED;
}

static enum step rate_limit(struct http_req *r, const struct resource_ctx *rc)
{
	const struct cfg_resource *res = rc->res;
	const struct token_info *ti = rc->ti;
	long per_grant = res->rate_per_grant ? res->rate_per_grant : r->app->cfg->limits.proxy_per_grant_per_second;
	int retry = 1;
	/* The client's bucket first: a request it refuses costs the grant nothing. */
	if ((res->rate_per_client > 0 && !ratelimit_take("client", ti->client_id, (double)res->rate_per_client,
							 (double)res->rate_per_client * 2, &retry)) ||
	    (per_grant > 0 &&
	     !ratelimit_take("grant", ti->grant_id, (double)per_grant, (double)per_grant * 2, &retry))) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", retry);
		http_add_header(r, "Retry-After", ra);
		jsonrpc_error(r, 429, -32000, "rate limit exceeded");
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

/* ---- with the body: resource_handler's steps --------------------------- */

static enum step apply_policy(struct http_req *r, struct resource_ctx *rc, json_t *body)
{
	struct policy_verdict v;
	enum step st = STEP_ANSWERED;
	switch (policy_check(rc->res, rc->ti->scope, body, rc->tools, &v)) {
	case POLICY_ALLOW: st = STEP_CONTINUE; break;
	case POLICY_NO_NAME: jsonrpc_error(r, 400, -32602, "tools/call needs params.name"); break;
	case POLICY_TOO_MANY: jsonrpc_error(r, 400, -32600, "too many tools/call in one batch"); break;
	case POLICY_INSUFFICIENT:
		log_event(LOG_INFO, "proxy.insufficient_scope", r->id,
			  json_pack("{s:s, s:s, s:s}", "tool", v.tool, "grant_id", rc->ti->grant_id, "client_id",
				    rc->ti->client_id));
		bearer_challenge(r, rc->res, 403, "insufficient_scope", v.want);
		break;
	case POLICY_ERROR: jsonrpc_error(r, 500, -32603, "internal error"); break;
	}
	policy_verdict_free(&v);
	return st;
}

/* Any method with a body is inspected: a forbidden call must not pass as
 * PUT, PATCH or DELETE, nor an unparsed body at all. *body gets the parse. */
static enum step judge_body(struct http_req *r, struct resource_ctx *rc, json_t **body)
{
	const char *mcp_method = http_header(r, "Mcp-Method"), *mcp_name = http_header(r, "Mcp-Name");
	if (r->body.len == 0 && r->method_id != HM_POST) {
		if (!mcp_method && !mcp_name)
			return STEP_CONTINUE;
		/* They name the message of a body: without one they name nothing
		 * the broker could check, and a header-routing hop would trust them. */
		jsonrpc_error(r, 400, RPC_HEADER_MISMATCH, "Mcp-Method/Mcp-Name headers disagree with the body");
		return STEP_ANSWERED;
	}
	if (media_type(r) == STEP_ANSWERED)
		return STEP_ANSWERED;
	if (rpc_parse(r->body.ptr, r->body.len, body) < 0) {
		jsonrpc_error(r, 400, -32700, "the body must be one JSON-RPC message or batch (strict UTF-8 JSON)");
		return STEP_ANSWERED;
	}
	json_t *bad = NULL;
	if (!rpc_headers_agree(*body, mcp_method, mcp_name,
			       rpc_wire_requires_headers(http_header(r, "MCP-Protocol-Version")), &bad)) {
		jsonrpc_error_id(r, 400, RPC_HEADER_MISMATCH, "Mcp-Method/Mcp-Name headers disagree with the body",
				 json_object_get(bad, "id"));
		return STEP_ANSWERED;
	}
	if (rc->res->n_scopes > 0 && apply_policy(r, rc, *body) == STEP_ANSWERED)
		return STEP_ANSWERED;
	rc->has_body = 1;
	return STEP_CONTINUE;
}

/* A lone initialize request (it opens a session). */
static int is_initialize(json_t *body)
{
	const char *m = json_string_value(json_object_get(body, "method"));
	return json_is_object(body) && m && strcmp(m, "initialize") == 0;
}

static enum step bind_session(struct http_req *r, struct db_conn **c, struct resource_ctx *rc, json_t *body)
{
	const struct cfg_resource *res = rc->res;
	enum step st = STEP_ANSWERED;
	enum session_rc s = session_check(r->app, c, res->downstream, rc->ti->user_id, http_header(r, "Mcp-Session-Id"),
					  is_initialize(body));
	switch (s) {
	case SESSION_DROP:
		rc->drop_session = 1;
		/* fall through */
	case SESSION_PASS: st = STEP_CONTINUE; break;
	case SESSION_BAD_ID: jsonrpc_error(r, 400, -32600, "Mcp-Session-Id is empty or too long"); break;
	case SESSION_FOREIGN:
	case SESSION_UNKNOWN: {
		int known = s == SESSION_FOREIGN;
		json_t *f = json_pack("{s:s, s:s, s:b}", "grant_id", rc->ti->grant_id, "resource", res->path, "bound",
				      known);
		log_event(known ? LOG_WARN : LOG_INFO, known ? "proxy.session_hijack_refused" : "proxy.session_unknown",
			  r->id, f);
		jsonrpc_error(r, 404, -32001, "session not found");
		break;
	}
	case SESSION_UNAVAILABLE: jsonrpc_error(r, 503, -32603, "service temporarily unavailable"); break;
	case SESSION_ERROR: jsonrpc_error(r, 500, -32603, "internal error"); break;
	}
	return st;
}

/* One message's answer that asks the client to have its user connect
 * upstream (the URL elicitation of the request's wire), or NULL. */
static json_t *connect_answer(int modern, json_t *id, const char *upstream, const char *url, const char *elicitation_id)
{
	char message[160];
	snprintf(message, sizeof(message), "Connect your %s account to continue: open the link, sign in, and retry.",
		 upstream);
	if (modern) {
		/* 2026-07-28 (SEP-2322): an input_required result embedding the
		 * URL-mode elicitation; the client retries once its user is done. */
		char key[96];
		snprintf(key, sizeof(key), "mcpb-connect-%s", upstream);
		return json_pack("{s:s, s:O, s:{s:s, s:{s:{s:s, s:{s:s, s:s, s:s}}}}}", "jsonrpc", "2.0", "id", id,
				 "result", "resultType", "input_required", "inputRequests", key, "method",
				 "elicitation/create", "params", "mode", "url", "message", message, "url", url);
	}
	/* 2025-11-25 (SEP-1036): URLElicitationRequiredError. */
	return json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:[{s:s, s:s, s:s, s:s}]}}}", "jsonrpc", "2.0", "id", id, "error",
			 "code", -32042, "message", message, "data", "elicitations", "mode", "url", "elicitationId",
			 elicitation_id, "url", url, "message", message);
}

/* The grant has no live account at connect upstream and the request needs
 * one: a one-time ticket, and each request of the body answered with the
 * URL elicitation (nothing is forwarded). The client's user opens the URL
 * on any node, proves to be the grant's user, connects the account, and
 * the client retries. */
static void elicit_connect(struct http_req *r, struct db_conn *c, struct resource_ctx *rc, const char *upstream,
			   json_t *body)
{
	char ticket[CONNECT_TICKET_MAX], eid[37], url[2200];
	int modern = rpc_wire_requires_headers(http_header(r, "MCP-Protocol-Version"));
	json_t *out = NULL;
	if (connect_ticket_new(c, rc->ti->grant_id, upstream, ticket, eid) < 0) {
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		return;
	}
	snprintf(url, sizeof(url), "%s/connect?ticket=%s", r->app->cfg->public_url, ticket);
	crypto_wipe(ticket, sizeof(ticket));
	if (json_is_array(body)) {
		out = json_array();
		for (size_t i = 0; out && i < rpc_count(body); i++) {
			json_t *m = rpc_message(body, i);
			/* Nothing of the batch is forwarded: every request in it
			 * (not only those that act) is answered, so none waits. */
			json_t *id = json_object_get(m, "id");
			if (id && json_object_get(m, "method") &&
			    json_array_append_new(out, connect_answer(modern, id, upstream, url, eid)) < 0)
				break;
		}
	} else {
		json_t *id = body ? json_object_get(body, "id") : NULL;
		out = connect_answer(modern, id ? id : json_null(), upstream, url, eid);
	}
	crypto_wipe(url, sizeof(url));
	log_event(LOG_INFO, "proxy.connect_required", r->id,
		  json_pack("{s:s, s:s, s:s, s:s}", "grant_id", rc->ti->grant_id, "client_id", rc->ti->client_id,
			    "upstream", upstream, "elicitation_id", eid));
	if (!out) {
		jsonrpc_error(r, 500, -32603, "internal error");
	} else if (json_is_array(out) && json_array_size(out) == 0) {
		json_decref(out); /* notifications only: nothing to answer (JSON-RPC) */
		http_send(r, 202, "text/plain", "", 0);
	} else {
		http_send_json(r, 200, out);
	}
}

/* The upstream token could not be had: the broker's challenge when the
 * grant is dead, else 502/503/504 (the grant lives on), a 503 carrying the
 * upstream's Retry-After where it gave one. */
static void upstream_token_failed(struct http_req *r, const struct cfg_resource *res, const char *grant_id,
				  enum upstream_token_rc ut, long retry_after)
{
	char ra[24];
	int status = upstream_token_http_status(ut);
	if (ut == UT_REVOKED) {
		cache_evict_grant(grant_id);
		bearer_challenge(r, res, 401, "invalid_token", NULL);
		return;
	}
	if (status == 503) {
		snprintf(ra, sizeof(ra), "%ld", retry_after > 0 ? retry_after : 1L);
		http_add_header(r, "Retry-After", ra);
	}
	if (ut == UT_NOT_CONNECTED) {
		jsonrpc_error(r, 403, -32603, "an upstream account the request needs is not connected");
		return;
	}
	http_send_json(r, status,
		       json_pack("{s:s, s:{s:i, s:s}, s:n}", "jsonrpc", "2.0", "error", "code", -32603, "message",
				 status == 502 ? "the upstream identity provider failed; try again later"
					       : "the upstream identity provider is unavailable; try again",
				 "id"));
}

/* The grant's upstream token into *upstream (malloc'd; the caller wipes
 * it): from the node's cache unless force, else through the database
 * (refreshed when due, or always when force). A grant that holds no
 * sign-in session yet (an ID-JAG's) leaves it NULL, unless the request
 * needs it: then the client is asked to connect the account (body as for
 * connected_accounts). *c is released here. */
static enum step upstream_credential(struct http_req *r, struct db_conn **c, struct resource_ctx *rc, int force,
				     char **upstream, json_t *body)
{
	long wait_s = 0;
	enum upstream_token_rc ut = force ? UT_UNAVAILABLE : upstream_token_cached(r->app, rc->ti->grant_id, upstream);
	if (ut != UT_OK) {
		if (!*c && db_acquire(r->app->db, c, DB_WAIT_MS) < 0) {
			jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
			return STEP_ANSWERED;
		}
		ut = upstream_token_get(r->app, *c, rc->ti->grant_id, force, r->id, upstream, &wait_s);
	}
	if (ut == UT_NOT_CONNECTED && rc->acts)
		elicit_connect(r, *c, rc, rc->res->upstream, body);
	rc->no_signin = ut == UT_NOT_CONNECTED;
	db_release(r->app->db, c);
	if (ut == UT_NOT_CONNECTED)
		return rc->acts ? STEP_ANSWERED : STEP_CONTINUE;
	if (ut != UT_OK) {
		upstream_token_failed(r, rc->res, rc->ti->grant_id, ut, wait_s);
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

/* The tokens of the resource's connected accounts into tk->t[1 + k]. One
 * the grant has not connected is left NULL, unless the request needs it:
 * then the client is asked to connect it (answered). body may be NULL (a
 * replay: the first pass found every account). *c is acquired as needed. */
static enum step connected_accounts(struct http_req *r, struct db_conn **c, struct resource_ctx *rc, json_t *body,
				    struct tokens *tk)
{
	const struct cfg_resource *res = rc->res;
	for (size_t k = 0; k < res->n_connect; k++) {
		long wait_s = 0;
		if (!*c && db_acquire(r->app->db, c, DB_WAIT_MS) < 0) {
			jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
			return STEP_ANSWERED;
		}
		enum upstream_token_rc ut = connection_token_get(r->app, *c, rc->ti->grant_id, res->connect[k], r->id,
								 &tk->t[1 + k], &wait_s);
		if (ut == UT_OK || (ut == UT_NOT_CONNECTED && !rc->acts))
			continue;
		if (ut == UT_NOT_CONNECTED)
			elicit_connect(r, *c, rc, res->connect[k], body);
		else
			upstream_token_failed(r, res, rc->ti->grant_id, ut, wait_s);
		return STEP_ANSWERED;
	}
	return STEP_CONTINUE;
}

/* The token of inject entry i among tk's. */
static const char *inject_token(const struct cfg_resource *res, size_t i, const struct tokens *tk)
{
	const char *name = res->inject[i].connect;
	if (!name)
		return tk->t[0];
	for (size_t k = 0; k < res->n_connect; k++)
		if (res->connect[k] == name)
			return tk->t[1 + k];
	return NULL;
}

/* Builds the downstream request (client headers filtered, upstream token
 * injected, identity headers added) and starts it. body is moved. */
static int start_transfer(struct http_req *r, struct resource_ctx *rc, const struct tokens *tk, struct buf *body)
{
	const char *inject[LIM_CONNECT_UPSTREAMS + 1];
	const struct cfg_resource *res = rc->res;
	const struct token_info *ti = rc->ti;
	const struct forward_identity id = { ti->user_ns, ti->subject, ti->client_id, ti->scope };
	struct engine_request er;
	int rv = -1;
	memset(&er, 0, sizeof(er));
	er.method = r->method;
	er.connect_timeout_ms = res->connect_timeout_ms;
	er.idle_timeout_ms = res->idle_timeout_ms;
	er.stream_idle_timeout_ms = res->stream_idle_timeout_ms;
	er.client_cert = res->client_cert;
	er.client_key = res->client_key;
	er.ca_file = res->ca_file;
	/* Whom the transfer serves: a revocation naming any of these ends it. */
	snprintf(er.grant_id, sizeof(er.grant_id), "%s", ti->grant_id);
	snprintf(er.token_hash, sizeof(er.token_hash), "%s", rc->token_hash);
	snprintf(er.client_id, sizeof(er.client_id), "%s", ti->client_id);
	snprintf(er.subject, sizeof(er.subject), "%s", ti->subject);
	snprintf(er.upstream, sizeof(er.upstream), "%s", ti->upstream);
	er.resp_headers = res->response_headers;
	er.n_resp_headers = res->n_response_headers;
	er.body = *body;
	buf_init(body, 0);
	for (size_t i = 0; i < res->n_inject && i < LIM_CONNECT_UPSTREAMS + 1; i++)
		inject[i] = inject_token(res, i, tk);
	if (!(er.url = forward_url(r, res)) ||
	    forward_headers(r, res, &id, inject, rc->drop_session, rc->has_body, &er.headers) < 0 ||
	    !(rc->x = engine_begin(r, &er)))
		goto out;
	rv = 0;
out:
	/* engine_begin moved out what it took; on failure it took nothing (the
	 * list holds the token). */
	forward_headers_free(&er.headers);
	free(er.url);
	buf_free(&er.body);
	return rv;
}

/* ---- the downstream's answer: the handler's later entries -------------- */

/* The downstream refused the injected upstream token: refresh it once
 * (forced) and replay the request, or, for a token that cannot be renewed,
 * ask the upstream whether it still holds; revoke the grant only when the
 * upstream refuses it definitively. Replayed (suspended again) or answered. */
static void retry_after_401(struct http_req *r, struct resource_ctx *rc)
{
	struct db_conn *c = NULL;
	struct tokens tk = { { NULL } };
	struct buf body;
	rc->retried = 1;
	body = engine_take_body(rc->x);
	engine_request_done(rc->x);
	rc->x = NULL;
	if (connected_accounts(r, &c, rc, NULL, &tk) == STEP_ANSWERED ||
	    upstream_credential(r, &c, rc, 1, &tk.t[0], NULL) == STEP_ANSWERED)
		goto out;
	if (start_transfer(r, rc, &tk, &body) < 0)
		jsonrpc_error(r, 500, -32603, "internal error");
out:
	buf_free(&body);
	tokens_free(&tk);
	db_release(r->app->db, &c);
}

static void downstream_failed(struct http_req *r, struct resource_ctx *rc, CURLcode cc)
{
	if (engine_revoked(rc->x)) {
		/* The grant was revoked before the downstream answered. */
		rc->status = 401;
		bearer_challenge(r, rc->res, 401, "invalid_token", NULL);
	} else {
		int timeout = cc == CURLE_OPERATION_TIMEDOUT;
		rc->status = timeout ? 504 : 502;
		json_t *f = json_pack("{s:s, s:s}", "resource", rc->resource_url, "curl", curl_easy_strerror(cc));
		log_event(LOG_WARN, "proxy.downstream_failed", r->id, f);
		jsonrpc_error(r, (int)rc->status, -32603,
			      timeout ? "the MCP server did not answer in time" : "the MCP server is unreachable");
	}
}

/* The downstream refused a request forwarded without the sign-in
 * upstream's token: the URL elicitation for it, answering the body's
 * request (its id; null when it has none), or each request of a batch. */
static void elicit_after_refusal(struct http_req *r, struct resource_ctx *rc)
{
	struct db_conn *c = NULL;
	struct buf body = engine_take_body(rc->x);
	json_t *msg = NULL;
	rc->status = 200;
	if (body.len && rpc_parse(body.ptr, body.len, &msg) < 0)
		msg = NULL; /* parsed when it came in: this cannot fail */
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0)
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
	else
		elicit_connect(r, c, rc, rc->res->upstream, msg);
	json_decref(msg);
	buf_free(&body);
	db_release(r->app->db, &c);
}

/* Wait for the (small) 401 answer to finish, then replay once with a
 * refreshed upstream token. A second refusal is answered with the broker's
 * own challenge: the downstream's means nothing to an MCP client, and
 * re-authorising is the one thing it can do. */
static void downstream_refused(struct http_req *r, struct resource_ctx *rc)
{
	if (!engine_wait_done(r, rc->x))
		return; /* back when the transfer ends */
	if (rc->no_signin) {
		/* Sent without the account it has not connected yet, and refused
		 * for it: ask for the account rather than for a new token. */
		elicit_after_refusal(r, rc);
		return;
	}
	if (!rc->retried) {
		log_msg(LOG_INFO, "proxy.downstream_401", r->id,
			"downstream refused the upstream token: forcing a refresh");
		retry_after_401(r, rc);
	} else {
		bearer_challenge(r, rc->res, 401, "invalid_token", NULL);
	}
}

/* A final answer other than 401: its new session is bound, then it is
 * streamed to the client; one that cannot be bound is discarded (503). */
static void downstream_answered(struct http_req *r, struct resource_ctx *rc)
{
	/* The budget bounds bodies being received and waiting for an answer;
	 * once answered, a body's share goes back, so that a long stream does
	 * not hold it. (The bytes stay with the transfer until it ends:
	 * libcurl may still be sending them.) */
	http_body_release(r);
	const char *asked = rc->drop_session ? NULL : http_header(r, "Mcp-Session-Id");
	if (!rc->refused && session_record(r->app, rc->res->downstream, rc->user_id, asked,
					   engine_response_header(rc->x, "Mcp-Session-Id"), r->id) == 0) {
		engine_respond(r, rc->x);
		free(rc->ti); /* never replayed now */
		rc->ti = NULL;
		return;
	}
	rc->refused = 1;
	if (!engine_wait_done(r, rc->x))
		return; /* discarding the answer; back when the transfer ends */
	rc->status = 503;
	jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
}

/* The downstream has answered (or failed). */
static void resume(struct http_req *r, struct resource_ctx *rc)
{
	CURLcode cc = CURLE_OK;
	enum engine_state st = engine_poll(r, rc->x, &cc);
	if (st == ENGINE_WAITING)
		return;
	if (st == ENGINE_FAILED) {
		downstream_failed(r, rc, cc);
		return;
	}
	rc->status = engine_status(rc->x);
	if (rc->status < 200) {
		/* A 1xx is never a final answer (101 without an Upgrade asked). */
		if (engine_wait_done(r, rc->x)) {
			rc->status = 502;
			jsonrpc_error(r, 502, -32603, "the MCP server sent an invalid answer");
		}
	} else if (rc->status == 401) {
		downstream_refused(r, rc);
	} else {
		downstream_answered(r, rc);
	}
}

/* ---- the route's callbacks --------------------------------------------- */

/* The headers have arrived, no body byte has been read: everything that
 * needs no body is decided here, so an unauthenticated or refused request
 * is answered without its body ever being buffered. */
void resource_headers(struct http_req *r)
{
	const struct cfg_resource *res = r->route->data;
	struct db_conn *c = NULL;
	struct resource_ctx *rc = NULL;
	const char *token = NULL;
	int dpop = 0;

	if (cors(r, res) == STEP_ANSWERED || screen(r, res) == STEP_ANSWERED ||
	    find_token(r, res, &token, &dpop) == STEP_ANSWERED)
		goto out;
	if (!(rc = ctx_new(r, res))) {
		jsonrpc_error(r, 500, -32603, "internal error");
		goto out;
	}
	rc->dpop = dpop;
	/* The proof is checked before the grant's buckets (a thief of a bound
	 * token without its key cannot spend them) and its jti recorded after
	 * them (a client over its rate adds nothing to the node's memory). */
	if (authenticate(r, &c, rc, token) == STEP_ANSWERED || dpop_gate(r, rc, token) == STEP_ANSWERED ||
	    (r->body_expected && media_type(r) == STEP_ANSWERED) || rate_limit(r, rc) == STEP_ANSWERED ||
	    dpop_record_step(r, rc) == STEP_ANSWERED)
		goto out;
	r->ctx = rc;
	r->ctx_free = ctx_free;
	rc = NULL;
out:
	ctx_free(rc);
	db_release(r->app->db, &c);
}

/* The whole request has arrived (or, later, the downstream answered). */
void resource_handler(struct http_req *r)
{
	struct resource_ctx *rc = r->ctx; /* belongs to the request (ctx_free) */
	struct db_conn *c = NULL;
	struct tokens tk = { { NULL } };
	json_t *body = NULL;

	if (!rc) {
		jsonrpc_error(r, 500, -32603, "internal error"); /* resource_headers answers or sets it */
		goto out;
	}
	if (rc->x) {
		resume(r, rc);
		goto out;
	}
	if (judge_body(r, rc, &body) == STEP_ANSWERED || bind_session(r, &c, rc, body) == STEP_ANSWERED)
		goto out;
	for (size_t i = 0; body && i < rpc_count(body); i++)
		rc->acts |= rpc_acts(rpc_message(body, i));
	if (connected_accounts(r, &c, rc, body, &tk) == STEP_ANSWERED ||
	    upstream_credential(r, &c, rc, 0, &tk.t[0], body) == STEP_ANSWERED)
		goto out;
	if (start_transfer(r, rc, &tk, &r->body) < 0)
		jsonrpc_error(r, 500, -32603, "internal error");
out:
	tokens_free(&tk);
	json_decref(body);
	db_release(r->app->db, &c);
}
