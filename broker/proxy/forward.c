#include "forward.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "hdr.h"

#define URL_MAX 16384
#define QUERY_MAX 8192
#define INJECT_PLACEHOLDER "{upstream_token"

struct str forward_ows_trim(const char *v)
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

static int field_ok(const char *s)
{
	return hdr_value_ok(s, strlen(s), 0);
}

/* Names are RFC 9110 tokens (http.c refuses any other request); values
 * must be ASCII here, as they are forwarded. */
static enum MHD_Result check_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	int *bad = cls;
	(void)kind;
	if (!key || !hdr_token_ok(key, strlen(key)) || (value && !field_ok(value)))
		*bad = 1;
	return MHD_YES;
}

int forward_fields_ok(struct http_req *r)
{
	int bad = 0;
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, check_field, &bad);
	return !bad;
}

int forward_has_dot_segment(const char *rest)
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

/* 1 when the Connection value lists name (split at SP, HTAB and ','). */
static int connection_lists(const char *connection, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = connection; p && *p;) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		size_t n = strcspn(p, ", \t");
		if (n && n == nl && strncasecmp(p, name, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

int forward_dropped(const char *name, const char *inject_header, const char *connection)
{
	static const char *const drop[] = {
		"authorization",
		"dpop", /* the client's proof is for the broker, as its token is */
		"cookie",
		"host",
		"expect",
		"accept-encoding",
		"x-mcp-user",
		"x-mcp-client",
		"x-mcp-scopes",
		"x-mcp-grant",
		"x-forwarded-for",
		"x-forwarded-host",
		"x-forwarded-proto",
		"forwarded",
		"x-request-id",
		"content-type",
		"content-encoding",
		/* What the broker decided must not be re-decided downstream: who the
		 * client is (what only a trusted proxy may say), which URL and which
		 * method the request has (override headers some frameworks honour). */
		"x-real-ip",
		"x-client-ip",
		"true-client-ip",
		"cf-connecting-ip",
		"x-cluster-client-ip",
		"x-forwarded-port",
		"x-forwarded-server",
		"x-forwarded-prefix",
		"x-forwarded-uri",
		"x-original-url",
		"x-rewrite-url",
		"x-original-uri",
		"x-original-method",
		"x-http-method-override",
		"x-http-method",
		"x-method-override",
	};
	/* Families of names through which front proxies and frameworks say who
	 * the user is or where the request came from (oauth2-proxy, ALB, IAP,
	 * Cloudflare, Envoy, ...): none is the client's to say. */
	static const char *const drop_prefix[] = {
		"x-forwarded-",      "x-mcp-",
		"x-auth-request-",   "x-remote-",
		"remote-",           "x-real-",
		"true-client-",      "cf-",
		"x-original-",       "x-rewrite-",
		"x-amzn-oidc-",      "x-goog-authenticated-",
		"x-goog-iap-",       "x-ms-client-principal",
		"x-pomerium-",       "x-envoy-",
		"x-client-",         "client-ip",
		"x-cluster-client-", "x-http-method",
		"x-method-override", "x-userinfo",
		"x-authenticated-",
	};
	/* CGI/WSGI servers map '_' and '-' to the same variable
	 * (X_MCP_User is HTTP_X_MCP_USER): names with '_' are dropped, as
	 * nginx does by default. */
	if (strchr(name, '_') || hdr_hop_by_hop(name, strlen(name)))
		return 1;
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strcasecmp(name, drop[i]) == 0)
			return 1;
	for (size_t i = 0; i < sizeof(drop_prefix) / sizeof(drop_prefix[0]); i++)
		if (strncasecmp(name, drop_prefix[i], strlen(drop_prefix[i])) == 0)
			return 1;
	if (inject_header && strcasecmp(name, inject_header) == 0)
		return 1;
	/* Headers the client listed in Connection are hop-by-hop too. */
	return connection_lists(connection, name);
}

struct query_ctx {
	struct buf *b;
	int failed;
};

static enum MHD_Result copy_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct query_ctx *q = cls;
	(void)kind;
	char *k = curl_easy_escape(NULL, key, 0);
	char *v = value ? curl_easy_escape(NULL, value, 0) : NULL;
	if (!k || (value && !v) || buf_adds(q->b, q->b->len ? "&" : "?") < 0 || buf_adds(q->b, k) < 0 ||
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

char *forward_url(struct http_req *r, const struct cfg_resource *res)
{
	struct buf b, q;
	char *url = NULL;
	buf_init(&b, URL_MAX);
	buf_init(&q, QUERY_MAX);
	struct query_ctx qc = { &q, 0 };
	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, copy_arg, &qc);
	if (qc.failed || buf_adds(&b, res->downstream) < 0 || append_suffix(&b, r->path + strlen(res->path)) < 0 ||
	    (q.len && buf_add(&b, q.ptr, q.len) < 0))
		goto out;
	url = buf_take(&b, NULL);
out:
	buf_free(&b);
	buf_free(&q);
	return url;
}

/* Appends one printf-built line; -1 when it does not fit or memory lacks. */
static int add_line(struct curl_slist **l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_line(struct curl_slist **l, const char *fmt, ...)
{
	char line[FORWARD_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	struct curl_slist *nl = n < 0 || (size_t)n >= sizeof(line) ? NULL : curl_slist_append(*l, line);
	if (nl)
		*l = nl;
	return nl ? 0 : -1;
}

/* 1 when the broker injects a header of that name (the client's is dropped). */
static int injected(const struct cfg_resource *res, const char *name)
{
	for (size_t i = 0; i < res->n_inject; i++)
		if (strcasecmp(name, res->inject[i].header) == 0)
			return 1;
	return 0;
}

struct copy_ctx {
	const struct cfg_resource *res;
	const char *connection;
	int drop_session; /* an initialize with a session id nobody opened */
	struct curl_slist *list;
	int failed;
};

static enum MHD_Result copy_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct copy_ctx *h = cls;
	char line[FORWARD_LINE_MAX];
	(void)kind;
	if (!key || !value || forward_dropped(key, NULL, h->connection) || injected(h->res, key) ||
	    (h->drop_session && strcasecmp(key, "Mcp-Session-Id") == 0))
		return MHD_YES;
	struct str v = forward_ows_trim(value);
	if ((size_t)snprintf(line, sizeof(line), "%s: %.*s", key, (int)v.len, v.p) >= sizeof(line))
		return MHD_YES;
	struct curl_slist *l = curl_slist_append(h->list, line);
	if (!l)
		h->failed = 1;
	else
		h->list = l;
	return MHD_YES;
}

/* An upstream credential in its inject template (the one placeholder,
 * {upstream_token} or {upstream_token:NAME}, replaced). What an upstream
 * issued goes into a header: printable ASCII only. */
static int add_credential(struct curl_slist **l, const struct cfg_inject *inject, const char *token)
{
	struct buf line;
	const char *tpl = inject->value, *at = strstr(tpl, INJECT_PLACEHOLDER);
	const char *end = at ? strchr(at, '}') : NULL;
	int rc = -1;
	buf_init(&line, 2 * FORWARD_LINE_MAX);
	line.secret = 1;
	if (!end || !field_ok(token) ||
	    buf_printf(&line, "%s: %.*s%s%s", inject->header, (int)(at - tpl), tpl, token, end + 1) < 0)
		goto out;
	struct curl_slist *nl = curl_slist_append(*l, line.ptr);
	if (!nl)
		goto out;
	*l = nl;
	rc = 0;
out:
	buf_free(&line);
	return rc;
}

/* The lines the broker adds after the client's. */
static int add_broker_lines(struct curl_slist **l, const struct cfg_resource *res, const struct forward_identity *id,
			    const char *const *tokens, const char *client_ip, const char *request_id, int has_body)
{
	if (!field_ok(id->subject))
		return -1;
	for (size_t i = 0; i < res->n_inject; i++)
		if (tokens[i] && add_credential(l, &res->inject[i], tokens[i]) < 0)
			return -1;
	if (res->identity_headers &&
	    (add_line(l, "X-MCP-User: %s:%s", id->upstream, id->subject) < 0 ||
	     add_line(l, "X-MCP-Client: %s", id->client_id) < 0 || add_line(l, "X-MCP-Scopes: %s", id->scope) < 0))
		return -1;
	if (add_line(l, "X-Forwarded-For: %s", client_ip) < 0 || add_line(l, "X-Request-Id: %s", request_id) < 0 ||
	    add_line(l, "%s", "Expect:") < 0)
		return -1;
	/* The body goes as parsed, under the one media type it was judged as. */
	if (has_body && add_line(l, "%s", "Content-Type: application/json") < 0)
		return -1;
	return 0;
}

int forward_headers(struct http_req *r, const struct cfg_resource *res, const struct forward_identity *id,
		    const char *const *tokens, int drop_session, int has_body, struct curl_slist **out)
{
	struct copy_ctx cc = { res, http_header(r, "Connection"), drop_session, NULL, 0 };
	int rc = -1;
	*out = NULL;
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, copy_header, &cc);
	if (cc.failed || add_broker_lines(&cc.list, res, id, tokens, r->client_ip, r->id, has_body) < 0)
		goto out;
	*out = cc.list;
	cc.list = NULL;
	rc = 0;
out:
	forward_headers_free(&cc.list);
	return rc;
}

void forward_headers_free(struct curl_slist **l)
{
	if (!*l)
		return;
	for (struct curl_slist *p = *l; p; p = p->next)
		crypto_wipe(p->data, strlen(p->data));
	curl_slist_free_all(*l);
	*l = NULL;
}
