/* http.c in process: a server on 127.0.0.1:0 with a route table of test
 * handlers, driven by libcurl. Routing (exact, prefix, 404, 405), request
 * ids, body limits with and without Content-Length, the query limit, query
 * helpers, the OAuth error shape, a handler that forgets to answer, headers
 * that cannot be kept (a 500 with none of them), draining. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "test.h"

static const char minimal_config[] =
	"{\"listen\":\"127.0.0.1:0\",\"public_url\":\"http://127.0.0.1\","
	"\"database_url\":\"postgres://unused\","
	"\"encryption_keys\":[{\"id\":\"k1\",\"key\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}],"
	"\"cookie_secret\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\","
	"\"http\":{\"threads\":2,\"connection_timeout_s\":5}}";

/* ---- handlers ---------------------------------------------------------- */

static void h_exact(struct http_req *r)
{
	http_send_json(r, 200, json_pack("{s:s, s:s}", "route", "exact", "method", r->method));
}

static void h_prefix(struct http_req *r)
{
	http_send_json(r, 200, json_pack("{s:s, s:s}", "route", "prefix", "path", r->path));
}

static void h_echo(struct http_req *r)
{
	http_send_json(r, 200, json_pack("{s:I}", "len", (json_int_t)r->body.len));
}

static void h_query(struct http_req *r)
{
	const char *a = http_query(r, "a");
	http_send_json(r, 200,
		       json_pack("{s:i, s:i, s:s?}", "count", http_query_count(r, "a"), "count_b",
				 http_query_count(r, "b"), "a", a));
}

static void h_oauth_error(struct http_req *r)
{
	http_send_oauth_error(r, 400, "invalid_request", "the request is missing a parameter");
}

static void h_oauth_error_bare(struct http_req *r)
{
	http_send_oauth_error(r, 401, "invalid_client", NULL);
}

static void h_silent(struct http_req *r)
{
	(void)r; /* forgets to answer: the server must send 500 */
}

static void h_headers(struct http_req *r)
{
	const char *t = http_header(r, "X-Test");
	(void)http_add_header(r, "X-Reply", "yes");
	http_send(r, 201, "text/plain", t ? t : "none", strlen(t ? t : "none"));
	http_send(r, 500, "text/plain", "second", 6); /* ignored: one response only */
}

/* n response headers X-H0.. with values that must never reach the log. */
static void add_numbered(struct http_req *r, int n)
{
	for (int i = 0; i < n; i++) {
		char name[16], value[32];
		snprintf(name, sizeof(name), "X-H%d", i);
		snprintf(value, sizeof(value), "hidden-value-%d", i);
		(void)http_add_header(r, name, value);
	}
}

static void h_16_headers(struct http_req *r)
{
	add_numbered(r, 16);
	http_send(r, 200, "text/plain", "ok", 2);
}

static void h_17_headers(struct http_req *r)
{
	add_numbered(r, 17);
	http_send(r, 200, "text/plain", "ok", 2);
}

/* libmicrohttpd refuses a value with a line break when the answer is built. */
static void h_bad_value(struct http_req *r)
{
	(void)http_add_header(r, "X-H0", "fine");
	(void)http_add_header(r, "X-Split", "a\r\nX-Injected: 1");
	http_send_json(r, 200, json_pack("{s:s}", "route", "bad_value"));
}

static int stream_freed;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= 2 || max < 2)
		return MHD_CONTENT_READER_END_OF_STREAM;
	memcpy(buf, "ok", 2);
	return 2;
}

static void stream_free(void *cls)
{
	(void)cls;
	__atomic_add_fetch(&stream_freed, 1, __ATOMIC_ACQ_REL);
}

static void h_stream_17(struct http_req *r)
{
	static const char *const pass[] = { "X-Passed", "yes" };
	add_numbered(r, 17);
	http_send_stream(r, 200, stream_reader, NULL, stream_free, pass, 1);
}

static int ctx_freed;

static void ctx_release(void *p)
{
	free(p);
	__atomic_add_fetch(&ctx_freed, 1, __ATOMIC_ACQ_REL);
}

static void h_ctx(struct http_req *r)
{
	r->ctx = malloc(32);
	r->ctx_free = ctx_release;
	http_send(r, 204, NULL, "", 0);
}

/* A handler that blocks (a slow database or upstream). */
static void h_slow(struct http_req *r)
{
	usleep(1500 * 1000);
	http_send(r, 200, "text/plain", "slow", 4);
}

/* The last field: where each handler runs; those on the pool (answers
 * kept, queued by the worker after the resume: streamed, broken, missing
 * and with their request's headers and body alike). */
static const struct http_route routes[] = {
	{ HM_GET, "/exact", MATCH_EXACT, 0, h_exact, "exact", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET | HM_POST, "/mcp", MATCH_PREFIX, 1024, h_prefix, "mcp", NULL, NULL, HTTP_ON_LOOP },
	{ HM_POST, "/echo", MATCH_EXACT, 1024, h_echo, "echo", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/query", MATCH_EXACT, 0, h_query, "query", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/oauth-error", MATCH_EXACT, 0, h_oauth_error, "oauth_error", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/oauth-error-bare", MATCH_EXACT, 0, h_oauth_error_bare, "oauth_error_bare", NULL, NULL,
	  HTTP_ON_LOOP },
	{ HM_GET, "/silent", MATCH_EXACT, 0, h_silent, "silent", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/headers", MATCH_EXACT, 0, h_headers, "headers", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/ctx", MATCH_EXACT, 0, h_ctx, "ctx", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/h16", MATCH_EXACT, 0, h_16_headers, "h16", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/h17", MATCH_EXACT, 0, h_17_headers, "h17", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/bad-value", MATCH_EXACT, 0, h_bad_value, "bad_value", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/stream17", MATCH_EXACT, 0, h_stream_17, "stream17", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/slow", MATCH_EXACT, 0, h_slow, "slow", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/slow-inline", MATCH_EXACT, 0, h_slow, "slow", NULL, NULL, HTTP_ON_LOOP },
};

/* ---- client ------------------------------------------------------------ */

static int port;

struct resp {
	long status;
	CURLcode rc;
	struct buf body;
	char request_id[128];
	char content_type[128];
	char cache_control[128];
	char pragma[64];
	char allow[64];
	char nosniff[64];
	char reply[64];
	int n_numbered; /* X-H<n> headers received */
	int injected;   /* an X-Injected or X-Passed header was received */
	json_t *json;
};

struct reqopt {
	const char *method; /* default GET, or POST when a body is given */
	const char *body;
	size_t body_len;
	size_t chunked_len; /* > 0: stream this many bytes chunked, no Content-Length */
	int no_expect;      /* suppress Expect: 100-continue */
	const char *headers[4];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	return buf_add(&r->body, p, sz * n) == 0 ? sz * n : 0;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return;
	const char *v = line + nl + 1;
	size_t vl = len - nl - 1;
	while (vl && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
		vl--;
	snprintf(out, cap, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n;
	header_value(p, len, "X-Request-Id", r->request_id, sizeof(r->request_id));
	header_value(p, len, "Content-Type", r->content_type, sizeof(r->content_type));
	header_value(p, len, "Cache-Control", r->cache_control, sizeof(r->cache_control));
	header_value(p, len, "Pragma", r->pragma, sizeof(r->pragma));
	header_value(p, len, "Allow", r->allow, sizeof(r->allow));
	header_value(p, len, "X-Content-Type-Options", r->nosniff, sizeof(r->nosniff));
	header_value(p, len, "X-Reply", r->reply, sizeof(r->reply));
	if (len > 3 && strncasecmp(p, "X-H", 3) == 0 && p[3] >= '0' && p[3] <= '9')
		r->n_numbered++;
	if ((len > 11 && strncasecmp(p, "X-Injected:", 11) == 0) || (len > 9 && strncasecmp(p, "X-Passed:", 9) == 0))
		r->injected = 1;
	return len;
}

struct chunk_src {
	size_t left;
};

static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
	struct chunk_src *c = ud;
	size_t take = sz * n < c->left ? sz * n : c->left;
	memset(p, 'x', take);
	c->left -= take;
	return take;
}

static void request(const char *path, struct reqopt o, struct resp *r)
{
	char url[LIM_QUERY_BYTES * 2];
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, 1024 * 1024);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	struct chunk_src src = { o.chunked_len };
	if (!c) {
		r->rc = CURLE_FAILED_INIT;
		return;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	for (size_t i = 0; i < 4 && o.headers[i]; i++)
		h = curl_slist_append(h, o.headers[i]);
	if (o.no_expect)
		h = curl_slist_append(h, "Expect:");
	if (o.chunked_len) {
		h = curl_slist_append(h, "Transfer-Encoding: chunked");
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &src);
	} else if (o.body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, o.body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o.body_len);
	}
	if (o.method && strcmp(o.method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (o.method)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, o.method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	r->rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (r->body.len)
		r->json = json_loadb(r->body.ptr, r->body.len, 0, NULL);
}

static void resp_free(struct resp *r)
{
	buf_free(&r->body);
	json_decref(r->json);
	r->json = NULL;
}

static const char *jstr(const struct resp *r, const char *key)
{
	return json_string_value(json_object_get(r->json, key));
}

static long jint(const struct resp *r, const char *key)
{
	json_t *v = json_object_get(r->json, key);
	return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* GET path must answer status. */
static void expect_status(int line, const char *path, const char *method, long status)
{
	struct resp r;
	request(path, (struct reqopt){ .method = method }, &r);
	test_checks++;
	if (r.rc != CURLE_OK || r.status != status) {
		test_failures++;
		fprintf(stderr, "%s:%d: %s %s: got %ld (curl %d), want %ld\n", __FILE__, line, method ? method : "GET",
			path, r.status, (int)r.rc, status);
	}
	resp_free(&r);
}
#define STATUS(path, method, st) expect_status(__LINE__, (path), (method), (st))

/* ---- tests ------------------------------------------------------------- */

static void test_routing(void)
{
	struct resp r;
	request("/exact", (struct reqopt){ 0 }, &r);
	CHECK(r.rc == CURLE_OK && r.status == 200);
	CHECK_STR(jstr(&r, "route"), "exact");
	CHECK_STR(r.content_type, "application/json");
	CHECK_STR(r.nosniff, "nosniff");
	resp_free(&r);

	request("/mcp", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200);
	CHECK_STR(jstr(&r, "route"), "prefix");
	CHECK_STR(jstr(&r, "path"), "/mcp");
	resp_free(&r);
	request("/mcp/x/y", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200);
	CHECK_STR(jstr(&r, "path"), "/mcp/x/y");
	resp_free(&r);
	request("/mcp/", (struct reqopt){ .method = "POST", .body = "{}", .body_len = 2 }, &r);
	CHECK(r.status == 200);
	CHECK_STR(jstr(&r, "route"), "prefix");
	resp_free(&r);

	STATUS("/mcpx", NULL, 404);
	STATUS("/mc", NULL, 404);
	STATUS("/exact/", NULL, 404);
	STATUS("/exactly", NULL, 404);
	STATUS("/nope", NULL, 404);
	STATUS("/", NULL, 404);
	STATUS("/EXACT", NULL, 404);

	request("/nope", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 404);
	CHECK_STR(jstr(&r, "error"), "not_found");
	resp_free(&r);

	/* The path is known but not for this method. */
	request("/exact", (struct reqopt){ .method = "POST", .body = "", .body_len = 0 }, &r);
	CHECK(r.status == 405);
	CHECK_STR(jstr(&r, "error"), "method_not_allowed");
	CHECK(r.allow[0] != '\0');
	resp_free(&r);
	STATUS("/exact", "DELETE", 405);
	STATUS("/mcp/deep", "PUT", 405);
	STATUS("/echo", NULL, 405);
	STATUS("/exact", "BREW", 405); /* unknown method */
	/* HEAD rides on GET routes. */
	STATUS("/exact", "HEAD", 200);

	/* The path excludes the query. */
	request("/exact?x=1", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200);
	resp_free(&r);

	/* Paths longer than LIM_PATH: 414 (or an earlier refusal by the server). */
	char *longp = malloc(LIM_PATH + 16);
	longp[0] = '/';
	memset(longp + 1, 'a', LIM_PATH + 8);
	longp[LIM_PATH + 9] = '\0';
	request(longp, (struct reqopt){ 0 }, &r);
	CHECK(r.status == 414 || r.status == 431);
	resp_free(&r);
	free(longp);
}

static int is_hex16(const char *s)
{
	if (strlen(s) != 16)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

static void test_request_id(void)
{
	struct resp r;
	request("/exact", (struct reqopt){ .headers = { "X-Request-Id: abc-123_X.y" } }, &r);
	CHECK(r.status == 200);
	CHECK_STR(r.request_id, "abc-123_X.y");
	resp_free(&r);

	/* None given: a fresh 16-hex id, different each time. */
	char first[128];
	request("/exact", (struct reqopt){ 0 }, &r);
	CHECK(is_hex16(r.request_id));
	snprintf(first, sizeof(first), "%s", r.request_id);
	resp_free(&r);
	request("/exact", (struct reqopt){ 0 }, &r);
	CHECK(is_hex16(r.request_id) && strcmp(first, r.request_id) != 0);
	resp_free(&r);

	/* Exactly 64 characters: kept. */
	char hdr[200], id64[65];
	memset(id64, 'a', 64);
	id64[64] = '\0';
	snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", id64);
	request("/exact", (struct reqopt){ .headers = { hdr } }, &r);
	CHECK_STR(r.request_id, id64);
	resp_free(&r);

	/* Invalid ones are replaced, never echoed. */
	static const char *const bad[] = {
		"X-Request-Id: has space",
		"X-Request-Id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
		"X-Request-Id: <script>",
		"X-Request-Id: a\"b",
		"X-Request-Id: id;drop",
		"X-Request-Id:",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		request("/exact", (struct reqopt){ .headers = { bad[i] } }, &r);
		CHECK(r.status == 200);
		if (!is_hex16(r.request_id))
			fprintf(stderr, "  %s -> id \"%s\"\n", bad[i], r.request_id);
		CHECK(is_hex16(r.request_id));
		resp_free(&r);
	}
	/* Also on error answers. */
	request("/nope", (struct reqopt){ .headers = { "X-Request-Id: err-1" } }, &r);
	CHECK(r.status == 404);
	CHECK_STR(r.request_id, "err-1");
	resp_free(&r);
}

static void test_body_limits(void)
{
	char *body = malloc(1025);
	memset(body, 'b', 1025);
	struct resp r;

	request("/echo", (struct reqopt){ .body = body, .body_len = 1024, .no_expect = 1 }, &r);
	CHECK(r.rc == CURLE_OK && r.status == 200);
	CHECK(jint(&r, "len") == 1024);
	resp_free(&r);
	request("/echo", (struct reqopt){ .body = body, .body_len = 0 }, &r);
	CHECK(r.status == 200 && jint(&r, "len") == 0);
	resp_free(&r);
	request("/echo", (struct reqopt){ .body = body, .body_len = 1 }, &r);
	CHECK(r.status == 200 && jint(&r, "len") == 1);
	resp_free(&r);

	/* One byte over, announced by Content-Length: refused before reading. */
	request("/echo", (struct reqopt){ .body = body, .body_len = 1025, .no_expect = 1 }, &r);
	if (r.rc != CURLE_OK || r.status != 413)
		fprintf(stderr, "  1025 bytes: curl %d status %ld\n", (int)r.rc, r.status);
	CHECK(r.status == 413);
	CHECK_STR(jstr(&r, "error"), "request_too_large");
	resp_free(&r);
	/* The same with Expect: 100-continue, so the body is never sent. */
	request("/echo", (struct reqopt){ .body = body, .body_len = 1025, .headers = { "Expect: 100-continue" } }, &r);
	CHECK(r.status == 413);
	resp_free(&r);
	STATUS("/exact", NULL, 200);

	/* A body on a route that takes none. */
	request("/mcp", (struct reqopt){ .method = "POST", .body = body, .body_len = 1024, .no_expect = 1 }, &r);
	CHECK(r.status == 200);
	resp_free(&r);
	request("/exact", (struct reqopt){ .method = "GET", .body = body, .body_len = 5 }, &r);
	CHECK(r.status == 413);
	resp_free(&r);

	/* Chunked uploads: 411, whatever their size (a Content-Length is
	 * required; libmicrohttpd reads chunk lines leniently). */
	request("/echo", (struct reqopt){ .chunked_len = 1024 }, &r);
	CHECK(r.status == 411);
	resp_free(&r);
	request("/echo", (struct reqopt){ .chunked_len = 4 * 1024 * 1024 }, &r);
	if (r.status != 411)
		fprintf(stderr, "  4 MB chunked: curl %d status %ld\n", (int)r.rc, r.status);
	CHECK(r.status == 411);
	resp_free(&r);
	/* The server is still there. */
	STATUS("/exact", NULL, 200);
	request("/echo", (struct reqopt){ .body = body, .body_len = 10 }, &r);
	CHECK(r.status == 200 && jint(&r, "len") == 10);
	resp_free(&r);
	free(body);
}

static void test_query(void)
{
	struct resp r;
	request("/query?a=1&a=2&b=3", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200);
	CHECK(jint(&r, "count") == 2);
	CHECK(jint(&r, "count_b") == 1);
	resp_free(&r);
	request("/query?a=x%20y", (struct reqopt){ 0 }, &r);
	CHECK(jint(&r, "count") == 1);
	CHECK_STR(jstr(&r, "a"), "x y");
	resp_free(&r);
	request("/query", (struct reqopt){ 0 }, &r);
	CHECK(jint(&r, "count") == 0 && jint(&r, "count_b") == 0);
	CHECK(json_is_null(json_object_get(r.json, "a"))); /* s? packs NULL as null */
	resp_free(&r);
	request("/query?a&a=&a=3&ab=1", (struct reqopt){ 0 }, &r);
	CHECK(jint(&r, "count") == 3);
	resp_free(&r);
}

/* The raw query string is bounded by LIM_QUERY_BYTES (percent-escapes
 * counted as sent), before any handler runs. */
static void test_query_limit(void)
{
	char *path = malloc(LIM_QUERY_BYTES + 64);
	struct resp r;
	/* "/query?a=" then a value filling the query to exactly the limit. */
	memcpy(path, "/query?a=", 9);
	memset(path + 9, 'v', LIM_QUERY_BYTES - 2);
	path[9 + LIM_QUERY_BYTES - 2] = '\0';
	request(path, (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200 && jint(&r, "count") == 1);
	resp_free(&r);
	/* One byte more: 414, from the http layer. */
	memcpy(path + 9 + LIM_QUERY_BYTES - 2, "v", 2);
	request(path, (struct reqopt){ .headers = { "X-Request-Id: long-query" } }, &r);
	CHECK(r.status == 414);
	CHECK_STR(jstr(&r, "error"), "uri_too_long");
	CHECK_STR(r.request_id, "long-query");
	resp_free(&r);
	/* Escapes count as sent: 2731 x "%41" decodes to 2731 bytes but is 8193 raw. */
	memcpy(path, "/query?a=", 9);
	size_t o = 9;
	while (o - 7 <= LIM_QUERY_BYTES) {
		memcpy(path + o, "%41", 3);
		o += 3;
	}
	path[o] = '\0';
	CHECK(strlen(strchr(path, '?') + 1) > LIM_QUERY_BYTES);
	request(path, (struct reqopt){ 0 }, &r);
	CHECK(r.status == 414);
	resp_free(&r);
	/* On a path no route has, the query limit still answers first. */
	memcpy(path, "/nope?", 6);
	memset(path + 6, 'q', LIM_QUERY_BYTES + 1);
	path[6 + LIM_QUERY_BYTES + 1] = '\0';
	request(path, (struct reqopt){ 0 }, &r);
	CHECK(r.status == 414);
	resp_free(&r);
	/* The connection's next request is judged on its own. */
	STATUS("/query?a=1", NULL, 200);
	free(path);
}

/* The request's header lines: LIM_HEADER_BYTES in all ("name: value\r\n"
 * each), 431 beyond, although libmicrohttpd would take twice as much. */
static void test_header_limit(void)
{
	size_t fixed = strlen("Host: 127.0.0.1:00000\r\nAccept: */*\r\nX-Big: \r\n");
	char *hdr = malloc(LIM_HEADER_BYTES + 64);
	struct resp r;
	memcpy(hdr, "X-Big: ", 7);
	memset(hdr + 7, 'h', LIM_HEADER_BYTES - fixed - 64);
	hdr[7 + LIM_HEADER_BYTES - fixed - 64] = '\0';
	request("/exact", (struct reqopt){ .headers = { hdr } }, &r);
	CHECK(r.status == 200);
	resp_free(&r);
	memset(hdr + 7, 'h', LIM_HEADER_BYTES);
	hdr[7 + LIM_HEADER_BYTES] = '\0';
	request("/exact", (struct reqopt){ .headers = { hdr } }, &r);
	CHECK(r.status == 431);
	CHECK_STR(jstr(&r, "error"), "request_header_fields_too_large");
	resp_free(&r);
	/* Counted over all the lines: 3 x 4200 bytes pass, 4 do not. */
	char line[LIM_HEADER_BYTES / 4 + 100];
	memset(line, 'l', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	memcpy(line, "X-Line: ", 8);
	request("/exact", (struct reqopt){ .headers = { line, line, line } }, &r);
	CHECK(r.status == 200);
	resp_free(&r);
	request("/exact", (struct reqopt){ .headers = { line, line, line, line } }, &r);
	CHECK(r.status == 431);
	resp_free(&r);
	free(hdr);
}

/* A header that cannot be kept turns the whole answer into a 500 with none
 * of the handler's headers; the log names the header, never a value. */
static void test_sticky_header_failure(void)
{
	struct resp r;
	request("/h16", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 200 && r.n_numbered == 16); /* LIM_RESP_HEADERS fit */
	CHECK(r.body.len == 2 && memcmp(r.body.ptr, "ok", 2) == 0);
	resp_free(&r);

	request("/h17", (struct reqopt){ .headers = { "X-Request-Id: h17" } }, &r);
	CHECK(r.status == 500);
	CHECK(r.n_numbered == 0);
	CHECK_STR(r.content_type, "application/json");
	CHECK_STR(jstr(&r, "error"), "server_error");
	CHECK_STR(r.request_id, "h17");
	CHECK_STR(r.nosniff, "nosniff");
	resp_free(&r);

	/* Refused by libmicrohttpd when the response is built: the same. */
	request("/bad-value", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 500);
	CHECK(r.n_numbered == 0 && !r.injected);
	CHECK_STR(jstr(&r, "error"), "server_error");
	resp_free(&r);

	/* A streamed answer too; the reader's state is freed all the same. */
	int freed = __atomic_load_n(&stream_freed, __ATOMIC_ACQUIRE);
	request("/stream17", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 500);
	CHECK(r.n_numbered == 0 && !r.injected);
	CHECK_STR(jstr(&r, "error"), "server_error");
	CHECK(__atomic_load_n(&stream_freed, __ATOMIC_ACQUIRE) == freed + 1);
	resp_free(&r);
	STATUS("/exact", NULL, 200);
}

static void test_responses(void)
{
	struct resp r;
	request("/oauth-error", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 400);
	CHECK_STR(r.content_type, "application/json");
	CHECK_STR(r.cache_control, "no-store");
	CHECK_STR(r.pragma, "no-cache");
	CHECK(json_is_object(r.json) && json_object_size(r.json) == 2);
	CHECK_STR(jstr(&r, "error"), "invalid_request");
	CHECK_STR(jstr(&r, "error_description"), "the request is missing a parameter");
	resp_free(&r);

	request("/oauth-error-bare", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 401);
	CHECK_STR(r.cache_control, "no-store");
	CHECK(json_is_object(r.json) && json_object_size(r.json) == 1);
	CHECK_STR(jstr(&r, "error"), "invalid_client");
	resp_free(&r);

	/* A handler that sends nothing gets a 500 for it. */
	request("/silent", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 500);
	CHECK_STR(jstr(&r, "error"), "server_error");
	resp_free(&r);

	/* Request headers in, extra response headers out, one response only. */
	request("/headers", (struct reqopt){ .headers = { "X-Test: hello" } }, &r);
	CHECK(r.status == 201);
	CHECK_STR(r.content_type, "text/plain");
	CHECK_STR(r.reply, "yes");
	CHECK(r.body.len == 5 && memcmp(r.body.ptr, "hello", 5) == 0);
	resp_free(&r);

	request("/ctx", (struct reqopt){ 0 }, &r);
	CHECK(r.status == 204);
	resp_free(&r);
}

struct slow_call {
	const char *path;
	struct resp r;
	uint64_t ms;
};

static void *slow_call_run(void *arg)
{
	struct slow_call *c = arg;
	uint64_t t0 = http_now_ns();
	request(c->path, (struct reqopt){ 0 }, &c->r);
	c->ms = (http_now_ns() - t0) / 1000000;
	return NULL;
}

/* With one worker, a handler that blocks on the pool leaves the worker
 * free: a request beside it is answered at once. The same handler on the
 * loop (the control) holds that request until it is done. */
static void test_offload(void)
{
	static const char *const paths[] = { "/slow", "/slow-inline" };
	for (int i = 0; i < 2; i++) {
		struct slow_call c = { paths[i], { 0 }, 0 };
		pthread_t t;
		CHECK(pthread_create(&t, NULL, slow_call_run, &c) == 0);
		usleep(200 * 1000); /* the slow request is in its handler */
		uint64_t t0 = http_now_ns();
		STATUS("/exact", NULL, 200);
		uint64_t ms = (http_now_ns() - t0) / 1000000;
		pthread_join(t, NULL);
		CHECK(c.r.status == 200 && c.r.body.len == 4 && c.ms >= 1400);
		if (i == 0)
			CHECK(ms < 800);
		else
			CHECK(ms >= 1000);
		if ((i == 0) != (ms < 800))
			fprintf(stderr, "  beside %s: /exact took %llu ms\n", paths[i], (unsigned long long)ms);
		resp_free(&c.r);
	}
}

/* Draining right after a response must never crash: the worker is then
 * still in its event loop as the listen socket is withdrawn. Repeated for
 * about a second, in a child, as libmicrohttpd aborts the process on an
 * internal error. A race: against a broken server this fails often, not
 * always. */
static void test_drain_cycles(struct app *app)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		uint64_t until = http_now_ns() + 1000000000ull;
		for (int n = 0; n < 5000 && http_now_ns() < until; n++) {
			struct http_server *s = http_start(app, "127.0.0.1", 0, routes, 1);
			if (!s)
				_exit(2);
			port = http_port(s);
			struct resp r;
			request("/exact", (struct reqopt){ 0 }, &r);
			if (r.status != 200)
				_exit(3);
			resp_free(&r);
			http_drain(s, 1);
			http_stop(&s);
		}
		_exit(0);
	}
	int st = 0;
	CHECK(waitpid(pid, &st, 0) == pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "  start/request/drain cycles: child %s %d\n",
			WIFSIGNALED(st) ? "killed by signal" : "exited",
			WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	FILE *logf = tmpfile();
	log_init(LOG_INFO, logf); /* keep the access log off the test output */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	struct cfg_errors errs;
	struct config *cfg = config_parse(minimal_config, strlen(minimal_config), &errs);
	CHECK(cfg != NULL);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "config: %s\n", errs.msg[i]);
	config_errors_free(&errs);
	if (!cfg)
		TEST_DONE();
	struct app app = { .cfg = cfg, .db = NULL, .draining = 0 };
	cfg->http.threads = 1;                  /* every request on one worker's loop (test_offload) */
	CHECK(cfg->http.handler_threads == 16); /* the default */

	struct http_server *s = http_start(&app, "127.0.0.1", 0, routes, sizeof(routes) / sizeof(routes[0]));
	CHECK(s != NULL);
	if (s) {
		port = http_port(s);
		CHECK(port > 0);
		test_routing();
		test_request_id();
		test_body_limits();
		test_query();
		test_query_limit();
		test_header_limit();
		test_responses();
		test_sticky_header_failure();
		test_offload();
		http_drain(s, 2);
		CHECK(http_in_flight() == 0);
		http_stop(&s);
		CHECK(s == NULL);
		CHECK(__atomic_load_n(&ctx_freed, __ATOMIC_ACQUIRE) == 1);
	}
	http_drain(NULL, 1); /* NULL is fine */
	http_stop(&s);
	http_stop(NULL);
	test_drain_cycles(&app);

	/* The access log has a line per request. */
	if (logf) {
		long n = ftell(logf);
		char *all = calloc(1, (size_t)n + 1);
		rewind(logf);
		CHECK(all && fread(all, 1, (size_t)n, logf) == (size_t)n);
		CHECK(all && strstr(all, "\"event\":\"http.request\"") != NULL);
		CHECK(all && strstr(all, "\"status\":413") != NULL);
		CHECK(all && strstr(all, "http.no_response") != NULL);
		/* Sticky header failures: logged with the name, never a value. */
		CHECK(all && strstr(all, "\"event\":\"http.response_incomplete\"") != NULL);
		CHECK(all && strstr(all, "response header X-H16 could not be added") != NULL);
		CHECK(all && strstr(all, "response header X-Split could not be added") != NULL);
		CHECK(all && strstr(all, "hidden-value") == NULL && strstr(all, "X-Injected") == NULL);
		free(all);
	}
	log_init(LOG_INFO, NULL);
	if (logf)
		fclose(logf);
	config_free(&cfg);
	curl_global_cleanup();
	TEST_DONE();
}
