#include "resource.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "audit.h"
#include "cache.h"
#include "crypto.h"
#include "grant.h"
#include "hdr.h"
#include "log.h"
#include "metadata.h"
#include "proxy.h"
#include "ratelimit.h"
#include "resources.h"
#include "rpc.h"
#include "scope.h"
#include "token.h"
#include "upstream_token.h"
#include "vault.h"

#define DB_WAIT_MS 2000
#define MAX_TOOLS_PER_BATCH 64

static void jsonrpc_error(struct http_req *r, int status, int code, const char *message)
{
	if (status == 503)
		(void)http_add_header(r, "Retry-After", "1");
	http_send_json(r, status, json_pack("{s:s, s:{s:i, s:s}, s:n}", "jsonrpc", "2.0", "error", "code", code,
					    "message", message, "id"));
}

static int origin_allowed(const struct cfg_resource *res, const char *origin)
{
	for (size_t i = 0; i < res->n_allowed_origins; i++)
		if (strcasecmp(res->allowed_origins[i], origin) == 0 || strcmp(res->allowed_origins[i], "*") == 0)
			return 1;
	return 0;
}

/* The scopes that allow tool (each scope's list names it, or "*"). */
static void scopes_for_tool(const struct cfg_resource *res, const char *tool, struct scopes *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t s = 0; s < res->n_scopes; s++)
		for (size_t t = 0; t < res->scopes[s].n_tools; t++)
			if (strcmp(res->scopes[s].tools[t], "*") == 0 || strcmp(res->scopes[s].tools[t], tool) == 0) {
				if (scopes_add(out, res->scopes[s].scope) < 0)
					return;
				break;
			}
}

/* Checks every tools/call of a JSON-RPC body against the token's scopes.
 * 0 allowed; -1 answered (403 insufficient_scope, or 400). tools[] gets the
 * called tool names for the audit. */
static int check_policy(struct http_req *r, const struct cfg_resource *res, const struct token_info *ti,
			json_t *body, json_t *tools)
{
	struct scopes have = { 0 };
	if (scopes_parse(ti->scope, &have) < 0) {
		jsonrpc_error(r, 500, -32603, "internal error");
		return -1;
	}
	size_t n = rpc_count(body);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *tool = NULL;
		int call = rpc_tool_call(rpc_message(body, i), &tool);
		if (call == 0)
			continue;
		if (call < 0) {
			jsonrpc_error(r, 400, -32602, "tools/call needs params.name");
			rc = -1;
			break;
		}
		/* Every forwarded call is audited: a batch with more than the
		 * audit keeps is refused rather than partly unrecorded. */
		if (json_array_size(tools) >= MAX_TOOLS_PER_BATCH ||
		    json_array_append_new(tools, json_string(tool)) < 0) {
			jsonrpc_error(r, 400, -32600, "too many tools/call in one batch");
			rc = -1;
			break;
		}
		struct scopes allow;
		scopes_for_tool(res, tool, &allow);
		int ok = 0;
		for (size_t k = 0; k < allow.n && !ok; k++)
			ok = scopes_has(&have, allow.v[k]);
		if (!ok) {
			/* Step-up: ask for what the token has plus one scope that allows the tool. */
			struct scopes want = { 0 };
			int bad = 0;
			for (size_t k = 0; k < have.n && !bad; k++)
				bad = scopes_add(&want, have.v[k]) < 0;
			if (allow.n && !bad)
				bad = scopes_add(&want, allow.v[0]) < 0;
			char *joined = scopes_join(&want);
			json_t *f = json_pack("{s:s, s:s, s:s}", "tool", tool, "grant_id", ti->grant_id, "client_id", ti->client_id);
			log_event(LOG_INFO, "proxy.insufficient_scope", r->id, f);
			metadata_challenge(r, res, 403, "insufficient_scope", joined ? joined : "");
			free(joined);
			scopes_free(&want);
			rc = -1;
		}
		scopes_free(&allow);
	}
	scopes_free(&have);
	return rc;
}

/* Request headers that never travel downstream. */
static int strip_header(const struct cfg_resource *res, const char *name, const char *connection)
{
	static const char *const drop[] = {
		"authorization", "cookie", "host", "connection", "keep-alive", "proxy-authenticate",
		"proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
		"expect", "accept-encoding", "proxy-connection", "x-mcp-user", "x-mcp-client",
		"x-mcp-scopes", "x-mcp-grant", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
		"forwarded", "x-request-id", "content-type", "content-encoding",
		/* What the broker decided must not be re-decided downstream: who the
		 * client is (what only a trusted proxy may say), which URL and which
		 * method the request has (override headers some frameworks honour). */
		"x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip", "x-cluster-client-ip",
		"x-forwarded-port", "x-forwarded-server", "x-forwarded-prefix", "x-forwarded-uri",
		"x-original-url", "x-rewrite-url", "x-original-uri", "x-original-method",
		"x-http-method-override", "x-http-method", "x-method-override",
	};
	/* Families of names through which front proxies and frameworks say who
	 * the user is or where the request came from (oauth2-proxy, ALB, IAP,
	 * Cloudflare, Envoy, ...): none is the client's to say. */
	static const char *const drop_prefix[] = {
		"x-forwarded-", "x-mcp-", "x-auth-request-", "x-remote-", "remote-", "x-real-",
		"true-client-", "cf-", "x-original-", "x-rewrite-", "x-amzn-oidc-", "x-goog-authenticated-",
		"x-goog-iap-", "x-ms-client-principal", "x-pomerium-", "x-envoy-", "x-client-", "client-ip",
		"x-cluster-client-", "x-http-method", "x-method-override", "x-userinfo", "x-authenticated-",
	};
	/* CGI/WSGI servers map '_' and '-' to the same variable
	 * (X_MCP_User is HTTP_X_MCP_USER): names with '_' are dropped, as
	 * nginx does by default. */
	if (strchr(name, '_'))
		return 1;
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strcasecmp(name, drop[i]) == 0)
			return 1;
	for (size_t i = 0; i < sizeof(drop_prefix) / sizeof(drop_prefix[0]); i++)
		if (strncasecmp(name, drop_prefix[i], strlen(drop_prefix[i])) == 0)
			return 1;
	if (strcasecmp(name, res->inject.header) == 0)
		return 1;
	/* Headers the client listed in Connection are hop-by-hop too. */
	for (const char *p = connection; p && *p;) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		size_t n = strcspn(p, ", \t");
		if (n && n == strlen(name) && strncasecmp(p, name, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

struct hdr_ctx {
	const struct cfg_resource *res;
	const char *connection;
	int drop_session; /* an initialize with a session id nobody opened */
	struct curl_slist *list;
	int failed;
};

/* A field value without the optional whitespace around it (RFC 9110 5.5):
 * libmicrohttpd keeps trailing SP/HTAB, every other parser drops it, so
 * the broker judges and forwards the trimmed value. */
static struct str ows_trim(const char *v)
{
	struct str t = { v, strlen(v) };
	while (t.len && (t.p[0] == ' ' || t.p[0] == '\t')) {
		t.p++;
		t.len--;
	}
	while (t.len && (t.p[t.len - 1] == ' ' || t.p[t.len - 1] == '\t'))
		t.len--;
	return t;
}

/* Field values travel downstream verbatim: a bare CR, a LF or another
 * control character could end a header line for some parser there and
 * smuggle one (an identity header, say). Only visible ASCII, SP and HTAB
 * are forwarded (RFC 9110 5.5, obs-text refused). */
static int field_ok(const char *s)
{
	return hdr_value_ok(s, strlen(s), 0);
}

/* Names are RFC 9110 tokens (http.c refuses any other request); values
 * must be ASCII here, as they are forwarded. */
static enum MHD_Result check_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	int *bad = cls;
	if (!key || !hdr_token_ok(key, strlen(key)) || (value && !field_ok(value)))
		*bad = 1;
	return MHD_YES;
}

static enum MHD_Result copy_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct hdr_ctx *h = cls;
	char line[8192];
	if (!key || !value || strip_header(h->res, key, h->connection) ||
	    (h->drop_session && strcasecmp(key, "Mcp-Session-Id") == 0))
		return MHD_YES;
	struct str v = ows_trim(value);
	if ((size_t)snprintf(line, sizeof(line), "%s: %.*s", key, (int)v.len, v.p) >= sizeof(line))
		return MHD_YES;
	struct curl_slist *l = curl_slist_append(h->list, line);
	if (!l)
		h->failed = 1;
	else
		h->list = l;
	return MHD_YES;
}

struct query_ctx {
	struct buf *b;
	int failed;
};

static enum MHD_Result copy_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct query_ctx *q = cls;
	char *k = curl_easy_escape(NULL, key, 0);
	char *v = value ? curl_easy_escape(NULL, value, 0) : NULL;
	if (!k || (value && !v) ||
	    buf_adds(q->b, q->b->len ? "&" : "?") < 0 || buf_adds(q->b, k) < 0 ||
	    (v && (buf_add(q->b, "=", 1) < 0 || buf_adds(q->b, v) < 0)))
		q->failed = 1;
	curl_free(k);
	curl_free(v);
	return MHD_YES;
}

/* Appends the request path below the resource, segment by segment,
 * re-encoded (libmicrohttpd has decoded it). Dot segments are refused: the
 * downstream must never see a path outside the resource's prefix. */
static int append_suffix(struct buf *b, const char *rest)
{
	while (*rest) {
		if (*rest != '/')
			return -1; /* the route matched a prefix: the suffix starts with '/' */
		rest++;
		size_t n = strcspn(rest, "/");
		if ((n == 1 && rest[0] == '.') || (n == 2 && rest[0] == '.' && rest[1] == '.'))
			return -1;
		char *seg = curl_easy_escape(NULL, rest, (int)n);
		int rc = !seg || buf_add(b, "/", 1) < 0 || buf_adds(b, seg) < 0;
		curl_free(seg);
		if (rc)
			return -1;
		rest += n;
	}
	return 0;
}

static char *downstream_url(struct http_req *r, const struct cfg_resource *res)
{
	struct buf b, q;
	buf_init(&b, 16384);
	buf_init(&q, 8192);
	const char *rest = r->path + strlen(res->path);
	struct query_ctx qc = { &q, 0 };
	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, copy_arg, &qc);
	if (qc.failed || buf_adds(&b, res->downstream) < 0 || append_suffix(&b, rest) < 0 ||
	    (q.len && buf_add(&b, q.ptr, q.len) < 0)) {
		buf_free(&b);
		buf_free(&q);
		return NULL;
	}
	buf_free(&q);
	return buf_take(&b, NULL);
}

static int path_has_dot_segment(const char *rest)
{
	for (const char *p = rest; *p;) {
		if (*p == '/')
			p++;
		size_t n = strcspn(p, "/");
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return 1;
		p += n;
		if (!n && !*p)
			break;
	}
	return 0;
}

static int need_db(struct http_req *r, struct db_conn **c)
{
	if (*c)
		return 0;
	if (db_acquire(r->app->db, c, DB_WAIT_MS) < 0) {
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		return -1;
	}
	return 0;
}

/* Session binding, per downstream (the session id is the downstream's):
 * a session id that no grant of this user opened there — bound to another
 * user, or bound to nobody — is unknown to this user (404), and never
 * reaches the downstream. The one exception is an initialize request,
 * which opens a new session (a client re-initialising may still send its
 * expired id); the answer's new id is then bound. 0 pass, -1 answered. */
static int session_check(struct http_req *r, struct db_conn **c, const struct cfg_resource *res,
			 const struct token_info *ti, int initialize, int *drop)
{
	static struct db_stmt q = DB_STMT(
		"SELECT user_id::text FROM mcp_session_bindings WHERE downstream = $1 AND session_hash = $2::bytea");
	const char *raw = http_header(r, "Mcp-Session-Id");
	*drop = 0;
	if (!raw)
		return 0;
	struct str t = ows_trim(raw);
	char sid[1025];
	if (t.len > 1024 || t.len == 0) {
		jsonrpc_error(r, 400, -32600, "Mcp-Session-Id is empty or too long");
		return -1;
	}
	memcpy(sid, t.p, t.len);
	sid[t.len] = '\0';
	char hash[67], key[65], bound[37];
	vault_hash_hex(sid, hash);
	struct buf kb;
	buf_init(&kb, 4096);
	if (buf_printf(&kb, "%s|%s", sid, res->downstream) < 0) {
		jsonrpc_error(r, 500, -32603, "internal error");
		return -1;
	}
	crypto_sha256_hex(kb.ptr, kb.len, key);
	buf_free(&kb);
	int known, mine;
	if (cache_session_get(key, bound)) {
		known = 1;
		mine = strcmp(bound, ti->user_id) == 0;
	} else {
		if (need_db(r, c) < 0)
			return -1;
		const char *p[] = { res->downstream, hash };
		PGresult *res_ = db_exec_ok(*c, &q, 2, p);
		if (!res_) {
			jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
			return -1;
		}
		known = PQntuples(res_) == 1;
		mine = known && strcmp(PQgetvalue(res_, 0, 0), ti->user_id) == 0;
		if (known)
			cache_session_put(key, PQgetvalue(res_, 0, 0));
		PQclear(res_);
	}
	if (mine)
		return 0;
	if (!known && initialize) {
		/* It opens a new session: the id nobody opened is not passed on,
		 * so that no downstream reads it as someone's live session. */
		*drop = 1;
		return 0;
	}
	json_t *f = json_pack("{s:s, s:s, s:b}", "grant_id", ti->grant_id, "resource", res->path, "bound", known);
	log_event(known ? LOG_WARN : LOG_INFO, known ? "proxy.session_hijack_refused" : "proxy.session_unknown", r->id, f);
	jsonrpc_error(r, 404, -32001, "session not found");
	return -1;
}

/* Per-request state while the downstream answers. */
struct resource_ctx {
	struct app *app;
	const struct cfg_resource *res;
	struct proxy_xfer *x;
	struct token_info ti;
	char resource_url[2048];
	char request_id[LIM_REQUEST_ID + 1];
	json_t *tools;
	int has_body; /* a JSON-RPC body is forwarded (as application/json) */
	int drop_session; /* the request's Mcp-Session-Id is not forwarded */
	uint64_t started;
	long status;
	int retried; /* one forced upstream refresh after a downstream 401 */
	int refused; /* the answer is being discarded; 503 when the transfer ends */
};

/* Binds a new session id to the user; -1 when it could not be recorded
 * (then the answer is refused: an unbound session would be open to anyone). */
static int record_session(struct http_req *r, struct resource_ctx *rc)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO mcp_session_bindings(downstream, session_hash, user_id) VALUES ($1, $2::bytea, $3::uuid) "
		"ON CONFLICT (downstream, session_hash) DO NOTHING");
	const char *sid = proxy_response_header(rc->x, "Mcp-Session-Id");
	const char *asked = http_header(r, "Mcp-Session-Id");
	struct str a = asked ? ows_trim(asked) : (struct str){ NULL, 0 };
	if (!sid || (a.p && !rc->drop_session && a.len == strlen(sid) && memcmp(a.p, sid, a.len) == 0))
		return 0; /* the session the request was checked against */
	if (strlen(sid) > 1024 || !field_ok(sid))
		return -1;
	struct db_conn *c = NULL;
	char hash[67];
	vault_hash_hex(sid, hash);
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0)
		return -1;
	const char *p[] = { rc->res->downstream, hash, rc->ti.user_id };
	PGresult *res = db_exec_ok(c, &q, 3, p);
	db_release(r->app->db, &c);
	if (!res) {
		log_msg(LOG_ERROR, "proxy.session_unbound", r->id, "a new MCP session could not be bound: refused");
		return -1;
	}
	PQclear(res);
	return 0;
}

/* Request completed (libmicrohttpd thread): audit the tool calls it
 * carried, then give back the transfer. */
static void ctx_free(void *p)
{
	struct resource_ctx *rc = p;
	if (rc->x && rc->tools && json_array_size(rc->tools) > 0) {
		double ms = (double)(http_now_ns() - rc->started) / 1e6;
		char actor[LIM_CLIENT_ID + 8];
		snprintf(actor, sizeof(actor), "client:%s", rc->ti.client_id);
		size_t i;
		json_t *t;
		json_array_foreach(rc->tools, i, t) {
			struct audit a = { "tool.called", actor, rc->ti.user_id, rc->ti.client_id, rc->ti.grant_id,
					   rc->request_id };
			audit_enqueue(&a, json_pack("{s:s, s:s, s:i, s:s, s:f}", "tool", json_string_value(t), "resource",
						    rc->resource_url, "status", (int)rc->status, "outcome",
						    rc->status >= 200 && rc->status < 300 ? "ok" : "error", "latency_ms", ms));
		}
	}
	json_decref(rc->tools);
	proxy_request_done(rc->x);
	free(rc);
}

/* Builds the downstream request (client headers filtered, upstream token
 * injected, identity headers added) and starts it. body is moved. */
static int start_transfer(struct http_req *r, struct resource_ctx *rc, const char *upstream, struct buf *body)
{
	const struct cfg_resource *res = rc->res;
	struct proxy_request pr;
	memset(&pr, 0, sizeof(pr));
	pr.method = r->method;
	pr.url = downstream_url(r, res);
	pr.connect_timeout_ms = res->connect_timeout_ms;
	pr.idle_timeout_ms = res->idle_timeout_ms;
	pr.client_cert = res->client_cert;
	pr.client_key = res->client_key;
	pr.ca_file = res->ca_file;
	/* Whom the transfer serves: a revocation naming any of these ends it. */
	snprintf(pr.grant_id, sizeof(pr.grant_id), "%s", rc->ti.grant_id);
	snprintf(pr.client_id, sizeof(pr.client_id), "%s", rc->ti.client_id);
	snprintf(pr.subject, sizeof(pr.subject), "%s", rc->ti.subject);
	snprintf(pr.upstream, sizeof(pr.upstream), "%s", rc->ti.upstream);
	const char *bearer = http_header(r, "Authorization");
	if (bearer && strlen(bearer) > 7) {
		char th[67];
		vault_hash_hex(bearer + 7, th);
		memcpy(pr.token_hash, th + 2, sizeof(pr.token_hash));
	}
	struct hdr_ctx hc = { res, http_header(r, "Connection"), rc->drop_session, NULL, 0 };
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, copy_header, &hc);
	struct buf line;
	buf_init(&line, 16384);
	line.secret = 1;
	const char *tpl = res->inject.value, *at = strstr(tpl, "{upstream_token}");
	/* What the upstream issued goes into a header: printable ASCII only. */
	int ok = !hc.failed && pr.url && at && field_ok(upstream) && field_ok(rc->ti.subject) &&
		 buf_printf(&line, "%s: %.*s%s%s", res->inject.header, (int)(at - tpl), tpl, upstream,
			    at + strlen("{upstream_token}")) == 0;
	char tmp[2300];
	const struct token_info *ti = &rc->ti;
	if (ok)
		ok = (hc.list = curl_slist_append(hc.list, line.ptr)) != NULL;
	buf_free(&line);
	if (ok && res->identity_headers) {
		snprintf(tmp, sizeof(tmp), "X-MCP-User: %s:%s", ti->upstream, ti->subject);
		ok = (hc.list = curl_slist_append(hc.list, tmp)) != NULL;
		snprintf(tmp, sizeof(tmp), "X-MCP-Client: %s", ti->client_id);
		ok = ok && (hc.list = curl_slist_append(hc.list, tmp)) != NULL;
		snprintf(tmp, sizeof(tmp), "X-MCP-Scopes: %s", ti->scope);
		ok = ok && (hc.list = curl_slist_append(hc.list, tmp)) != NULL;
	}
	snprintf(tmp, sizeof(tmp), "X-Forwarded-For: %s", r->client_ip);
	ok = ok && (hc.list = curl_slist_append(hc.list, tmp)) != NULL;
	snprintf(tmp, sizeof(tmp), "X-Request-Id: %s", r->id);
	ok = ok && (hc.list = curl_slist_append(hc.list, tmp)) != NULL;
	ok = ok && (hc.list = curl_slist_append(hc.list, "Expect:")) != NULL;
	/* The body goes as parsed, under the one media type it was judged as. */
	if (rc->has_body)
		ok = ok && (hc.list = curl_slist_append(hc.list, "Content-Type: application/json")) != NULL;
	pr.resp_headers = res->response_headers;
	pr.n_resp_headers = res->n_response_headers;
	pr.headers = hc.list;
	pr.body = *body;
	buf_init(body, 0);
	if (ok)
		rc->x = proxy_begin(r, &pr);
	if (!ok || !rc->x) {
		/* proxy_begin took nothing on failure: the list holds the token. */
		for (struct curl_slist *l = pr.headers; l; l = l->next)
			crypto_wipe(l->data, strlen(l->data));
		curl_slist_free_all(pr.headers);
		free(pr.url);
		buf_free(&pr.body);
		return -1;
	}
	return 0;
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
		metadata_challenge(r, res, 401, "invalid_token", NULL);
		return;
	}
	if (status == 503) {
		snprintf(ra, sizeof(ra), "%ld", retry_after > 0 ? retry_after : 1L);
		(void)http_add_header(r, "Retry-After", ra);
	}
	http_send_json(r, status, json_pack("{s:s, s:{s:i, s:s}, s:n}", "jsonrpc", "2.0", "error", "code", -32603,
					    "message", status == 502 ? "the upstream identity provider failed; try again later"
							  : "the upstream identity provider is unavailable; try again",
					    "id"));
}

/* The downstream refused the injected upstream token: refresh it once
 * (forced) and replay the request, or, for a token that cannot be renewed,
 * ask the upstream whether it still holds; revoke the grant only when the
 * upstream refuses it definitively. 0 replayed (suspended again), -1 answered. */
static int retry_after_401(struct http_req *r, struct resource_ctx *rc)
{
	struct db_conn *c = NULL;
	char *upstream = NULL;
	struct buf body;
	int rv = -1;
	rc->retried = 1;
	body = proxy_take_body(rc->x);
	proxy_request_done(rc->x);
	rc->x = NULL;
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		goto out;
	}
	long wait_s = 0;
	enum upstream_token_rc ut = upstream_token_get(r->app, c, rc->ti.grant_id, 1, r->id, &upstream, &wait_s);
	db_release(r->app->db, &c);
	if (ut != UT_OK) {
		upstream_token_failed(r, rc->res, rc->ti.grant_id, ut, wait_s);
		goto out;
	}
	if (start_transfer(r, rc, upstream, &body) < 0) {
		jsonrpc_error(r, 500, -32603, "internal error");
		goto out;
	}
	rv = 0;
out:
	buf_free(&body);
	if (upstream) {
		crypto_wipe(upstream, strlen(upstream));
		free(upstream);
	}
	return rv;
}

/* The handler's later entries: the downstream has answered (or failed). */
static void resume(struct http_req *r)
{
	struct resource_ctx *rc = r->ctx;
	CURLcode cc = CURLE_OK;
	enum proxy_state st = proxy_poll(r, rc->x, &cc);
	if (st == PROXY_WAITING)
		return;
	if (st == PROXY_FAILED && proxy_revoked(rc->x)) {
		/* The grant was revoked before the downstream answered. */
		rc->status = 401;
		metadata_challenge(r, rc->res, 401, "invalid_token", NULL);
		return;
	}
	if (st == PROXY_FAILED) {
		int timeout = cc == CURLE_OPERATION_TIMEDOUT;
		rc->status = timeout ? 504 : 502;
		json_t *f = json_pack("{s:s, s:s}", "resource", rc->resource_url, "curl", curl_easy_strerror(cc));
		log_event(LOG_WARN, "proxy.downstream_failed", r->id, f);
		jsonrpc_error(r, (int)rc->status, -32603,
			      timeout ? "the MCP server did not answer in time" : "the MCP server is unreachable");
		return;
	}
	rc->status = proxy_status(rc->x);
	if (rc->status < 200) {
		/* A 1xx is never a final answer (101 without an Upgrade asked). */
		if (!proxy_wait_done(r, rc->x))
			return;
		rc->status = 502;
		jsonrpc_error(r, 502, -32603, "the MCP server sent an invalid answer");
		return;
	}
	if (rc->status != 401) {
		/* The budget bounds bodies being received and waiting for an
		 * answer; once answered, a body's share goes back, so that a long
		 * stream does not hold it. (The bytes stay with the transfer until
		 * it ends: libcurl may still be sending them.) */
		http_body_release(r);
	}
	if (rc->status == 401) {
		/* Wait for the (small) 401 answer to finish, then replay once with
		 * a refreshed upstream token. A second refusal is answered with the
		 * broker's own challenge: the downstream's means nothing to an MCP
		 * client, and re-authorising is the one thing it can do. */
		if (!proxy_wait_done(r, rc->x))
			return;
		if (!rc->retried) {
			log_msg(LOG_INFO, "proxy.downstream_401", r->id, "downstream refused the upstream token: forcing a refresh");
			(void)retry_after_401(r, rc);
		} else {
			metadata_challenge(r, rc->res, 401, "invalid_token", NULL);
		}
		return;
	}
	if (rc->refused || record_session(r, rc) < 0) {
		rc->refused = 1;
		if (!proxy_wait_done(r, rc->x))
			return; /* discarding the answer; back when the transfer ends */
		rc->status = 503;
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		return;
	}
	proxy_respond(r, rc->x);
}

static int rate_limited(struct http_req *r, const struct cfg_resource *res, const struct token_info *ti)
{
	long per_grant = res->rate_per_grant ? res->rate_per_grant : r->app->cfg->limits.proxy_per_grant_per_second;
	int retry = 1;
	/* The client's bucket first: a request it refuses costs the grant nothing. */
	if ((res->rate_per_client > 0 &&
	     !ratelimit_take("client", ti->client_id, (double)res->rate_per_client, (double)res->rate_per_client * 2, &retry)) ||
	    (per_grant > 0 && !ratelimit_take("grant", ti->grant_id, (double)per_grant, (double)per_grant * 2, &retry))) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", retry);
		(void)http_add_header(r, "Retry-After", ra);
		jsonrpc_error(r, 429, -32000, "rate limit exceeded");
		return 1;
	}
	return 0;
}

/* Token validation through the node's cache (evicted on every revocation). */
static int validate(struct http_req *r, struct db_conn **c, const char *token, struct token_info *ti)
{
	char hash[67];
	if (strncmp(token, TOKEN_PREFIX_ACCESS, strlen(TOKEN_PREFIX_ACCESS)) != 0)
		return 0;
	vault_hash_hex(token, hash);
	if (cache_get(hash + 2, ti))
		return 1;
	if (need_db(r, c) < 0)
		return -2; /* answered */
	unsigned long gen = cache_generation();
	int v = token_validate(r->app, *c, token, ti);
	if (v == 1)
		cache_put(hash + 2, ti, gen);
	return v;
}

/* A lone initialize request (it opens a session). */
static int is_initialize(json_t *body)
{
	const char *m = json_string_value(json_object_get(body, "method"));
	return json_is_object(body) && m && strcmp(m, "initialize") == 0;
}

/* A body the broker forwards is judged as exactly what the downstream
 * will parse: application/json (charset utf-8 at most), no content
 * coding. 0 fine, -1 answered 415. */
static int media_type_ok(struct http_req *r)
{
	if (hdr_json_content_type(http_header(r, "Content-Type")) &&
	    hdr_identity_encoding(http_header(r, "Content-Encoding")))
		return 0;
	(void)http_add_header(r, "Accept-Encoding", "identity");
	jsonrpc_error(r, 415, -32600, "the body must be application/json (charset utf-8) without content coding");
	return -1;
}

/* The headers have arrived, no body byte has been read: everything that
 * needs no body is decided here, so an unauthenticated or refused request
 * is answered without its body ever being buffered. */
void resource_headers(struct http_req *r)
{
	const struct cfg_resource *res = r->route->data;
	struct app *app = r->app;
	struct db_conn *c = NULL;
	struct resource_ctx *rc = NULL;

	const char *origin = http_header(r, "Origin");
	if (origin && !origin_allowed(res, origin)) {
		jsonrpc_error(r, 403, -32001, "origin not allowed");
		return;
	}
	if (origin) {
		/* An allowed browser origin: CORS on every answer, and preflights
		 * are answered before authentication (they carry no token). */
		(void)http_add_header(r, "Access-Control-Allow-Origin", origin);
		(void)http_add_header(r, "Vary", "Origin");
		(void)http_add_header(r, "Access-Control-Expose-Headers", "Mcp-Session-Id, WWW-Authenticate, MCP-Protocol-Version");
		if (r->method_id == HM_OPTIONS) {
			(void)http_add_header(r, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
			(void)http_add_header(r, "Access-Control-Allow-Headers",
					      "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, "
					      "Last-Event-ID, Mcp-Method, Mcp-Name");
			(void)http_add_header(r, "Access-Control-Max-Age", "600");
			http_send(r, 204, NULL, "", 0);
			return;
		}
	}
	/* Headers the broker interprets must be unambiguous: a second copy
	 * could say something else to the downstream than to the policy. */
	static const char *const single[] = { "Authorization", "Mcp-Session-Id", "Mcp-Method", "Mcp-Name",
					       "MCP-Protocol-Version", "Content-Type", "Content-Encoding",
					       "Last-Event-ID" };
	for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
		if (http_header_count(r, single[i]) > 1) {
			jsonrpc_error(r, 400, -32600, "a header the broker checks was given more than once");
			return;
		}
	int bad_field = 0;
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, check_field, &bad_field);
	if (bad_field) {
		jsonrpc_error(r, 400, -32600, "a header contains control or non-ASCII characters");
		return;
	}
	if (path_has_dot_segment(r->path + strlen(res->path))) {
		jsonrpc_error(r, 400, -32600, "the path must not contain . or .. segments");
		return;
	}
	if (http_query(r, "access_token")) {
		/* RFC 6750 2.3 is not supported: tokens in URLs leak into logs. */
		metadata_challenge(r, res, 401, "invalid_request", NULL);
		return;
	}
	const char *auth = http_header(r, "Authorization");
	if (!auth) {
		metadata_challenge(r, res, 401, NULL, NULL);
		return;
	}
	if (strncasecmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) > LIM_TOKEN || !auth[7]) {
		metadata_challenge(r, res, 401, "invalid_token", NULL);
		return;
	}
	rc = calloc(1, sizeof(*rc));
	if (!rc || resources_url(app->cfg, res, rc->resource_url, sizeof(rc->resource_url)) < 0) {
		free(rc);
		jsonrpc_error(r, 500, -32603, "internal error");
		return;
	}
	rc->app = app;
	rc->res = res;
	rc->started = r->start_ns;
	snprintf(rc->request_id, sizeof(rc->request_id), "%s", r->id);
	int v = validate(r, &c, auth + 7, &rc->ti);
	if (v == -2)
		goto out;
	if (v < 0) {
		jsonrpc_error(r, 503, -32603, "service temporarily unavailable");
		goto out;
	}
	if (v == 0 || strcmp(rc->ti.resource, rc->resource_url) != 0) {
		/* Unknown, expired, revoked, or issued for another resource. */
		metadata_challenge(r, res, 401, "invalid_token", NULL);
		goto out;
	}
	if (r->body_expected && media_type_ok(r) < 0)
		goto out;
	if (rate_limited(r, res, &rc->ti))
		goto out;
	if (!(rc->tools = json_array())) {
		jsonrpc_error(r, 500, -32603, "internal error");
		goto out;
	}
	r->ctx = rc;
	r->ctx_free = ctx_free;
	rc = NULL;
out:
	free(rc);
	db_release(app->db, &c);
}

/* The whole request has arrived (or, later, the downstream answered). */
void resource_handler(struct http_req *r)
{
	const struct cfg_resource *res = r->route->data;
	struct app *app = r->app;
	struct db_conn *c = NULL;
	struct resource_ctx *rc = r->ctx;
	char *upstream = NULL;
	json_t *body = NULL;

	if (!rc) {
		jsonrpc_error(r, 500, -32603, "internal error"); /* resource_headers answers or sets it */
		return;
	}
	if (rc->x) {
		resume(r);
		return;
	}
	if (r->body.len == 0 && r->method_id != HM_POST &&
	    (http_header(r, "Mcp-Method") || http_header(r, "Mcp-Name"))) {
		/* They name the message of a body: without one they name nothing
		 * the broker could check, and a header-routing hop would trust them. */
		jsonrpc_error(r, 400, -32600, "Mcp-Method/Mcp-Name headers disagree with the body");
		goto out;
	}
	if (r->body.len > 0 || r->method_id == HM_POST) {
		/* Any method with a body is inspected: a forbidden call must not
		 * pass as PUT, PATCH or DELETE, nor an unparsed body at all. */
		if (media_type_ok(r) < 0)
			goto out;
		if (rpc_parse(r->body.ptr, r->body.len, &body) < 0) {
			jsonrpc_error(r, 400, -32700, "the body must be one JSON-RPC message or batch (strict UTF-8 JSON)");
			goto out;
		}
		if (!rpc_headers_agree(body, http_header(r, "Mcp-Method"), http_header(r, "Mcp-Name"))) {
			jsonrpc_error(r, 400, -32600, "Mcp-Method/Mcp-Name headers disagree with the body");
			goto out;
		}
		if (res->n_scopes > 0 && check_policy(r, res, &rc->ti, body, rc->tools) < 0)
			goto out;
		rc->has_body = 1;
	}
	if (session_check(r, &c, res, &rc->ti, is_initialize(body), &rc->drop_session) < 0)
		goto out;
	long wait_s = 0;
	enum upstream_token_rc ut = upstream_token_cached(app, rc->ti.grant_id, &upstream);
	if (ut != UT_OK) {
		if (need_db(r, &c) < 0)
			goto out;
		ut = upstream_token_get(app, c, rc->ti.grant_id, 0, r->id, &upstream, &wait_s);
	}
	db_release(app->db, &c);
	if (ut != UT_OK) {
		upstream_token_failed(r, res, rc->ti.grant_id, ut, wait_s);
		goto out;
	}
	if (start_transfer(r, rc, upstream, &r->body) < 0) {
		jsonrpc_error(r, 500, -32603, "internal error");
		goto out;
	}
out:
	/* rc belongs to the request (ctx_free). */
	if (upstream) {
		crypto_wipe(upstream, strlen(upstream));
		free(upstream);
	}
	json_decref(body);
	db_release(app->db, &c);
}
