/* The HTTP server: libmicrohttpd glue, a route table, request size limits,
 * request ids, response helpers, access log and metrics. Handlers run on
 * libmicrohttpd's worker threads, once per request, after the body (bounded
 * by the route's max_body) has been read.
 *
 * Limits applied to every request before any handler runs: the framing
 * rules (400/411/501), the header lines (LIM_HEADER_BYTES in all, 431), the
 * path (LIM_PATH) and the raw query string (LIM_QUERY_BYTES), both 414
 * uri_too_long, the route's max_body (413) and the node's body budget (503).
 *
 * Building a response cannot half-fail: a header that cannot be kept (more
 * than LIM_RESP_HEADERS, out of memory, a value libmicrohttpd refuses)
 * marks the response under construction as broken, and whatever the
 * handler then sends goes out as a bare 500 server_error instead (logged
 * with the header's name, never its value). */
#ifndef MCPB_HTTP_H
#define MCPB_HTTP_H
#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>
#include "buf.h"
#include "lim.h"
#include "offload.h"

struct app;
struct http_req;

typedef void (*http_handler)(struct http_req *r);

enum http_method {
	HM_GET = 1,
	HM_POST = 2,
	HM_PUT = 4,
	HM_DELETE = 8,
	HM_OPTIONS = 16,
	HM_HEAD = 32,
	HM_PATCH = 64,
	HM_ANY = 127
};
enum http_match { MATCH_EXACT, MATCH_PREFIX };

struct http_route {
	unsigned methods;
	const char *path;
	enum http_match match;
	size_t max_body;
	http_handler handler;
	const char *label; /* metrics/log label, static */
	const void *data;  /* handler data (e.g. the resource), available as r->route->data */
	/* Called once the request headers have arrived, before any body byte
	 * is read (NULL: none). It may answer (an unauthenticated request gets
	 * its 401 without its body being read or buffered); the handler then
	 * never runs. */
	http_handler on_headers;
	/* Where the handler runs (enum http_run). */
	int offload;
};

/* HTTP_ON_LOOP: on the worker's loop (answers from memory, or must answer
 * while the pool is full: /readyz). HTTP_ON_POOL: the handler may block (the
 * database, an upstream, a fetch) and runs on the handler pool
 * (http.handler_threads); a full pool answers 503 at once. HTTP_ON_POOL_OR_LOOP:
 * on the pool when a thread is free, else on the loop at once, so a flooded
 * pool never turns an operator away (the admin API). A handler off the loop
 * must not suspend the connection. */
enum http_run { HTTP_ON_LOOP = 0, HTTP_ON_POOL = 1, HTTP_ON_POOL_OR_LOOP = 2 };

/* An oversized chunked body is read and dropped up to this many bytes (to
 * answer 413), then the connection is closed. */
#define HTTP_DISCARD_MAX (8 * 1024 * 1024)
/* An answer decided at the headers waits for a body this small (read and
 * dropped) and keeps the connection; a larger one is answered at once and
 * the connection closed. */
#define HTTP_EARLY_ANSWER_WAIT (64 * 1024)

struct http_req {
	struct MHD_Connection *conn;
	struct app *app;
	const struct http_route *route;
	char id[LIM_REQUEST_ID + 1];
	const char *method;
	enum http_method method_id;
	const char *path;
	struct buf body;
	int body_too_large;
	size_t discarded; /* bytes of an oversized chunked body thrown away */
	int responded;
	int status;
	uint64_t start_ns;
	char client_ip[48];
	struct {
		char *name, *value;
	} headers[LIM_RESP_HEADERS];
	int nheaders;
	/* The first response header that could not be kept (its name, cut to
	 * fit): the answer will be a 500 (see above). */
	int broken;
	char broken_header[64];
	int deferred;                 /* the handler suspended the connection and will answer later */
	int secret_response;          /* the body carries secrets: its copies are wiped */
	int body_expected;            /* the headers announce a body (Content-Length > 0 or chunked) */
	int body_unread;              /* ... of which not all has been read: an answer now closes */
	size_t reserved;              /* bytes of the node-wide body budget this request holds */
	int must_close;               /* the framing cannot be trusted: close after answering */
	uint64_t announced;           /* Content-Length given (0: none) */
	struct MHD_Response *pending; /* an early answer kept until the small body is in */
	/* Handler-owned state, freed by ctx_free when the request completes. */
	void *ctx;
	void (*ctx_free)(void *ctx);
	/* Run on the handler pool: its answer is kept (pending) and queued by
	 * the worker once the connection is resumed. */
	int offloaded;
	struct offload_job job;
};

struct http_server;

/* The event loop of each worker thread: libmicrohttpd's daemons of that
 * worker (external epoll mode) and whatever else the worker drives in the
 * same epoll set (the proxy's engine: its downstream transfers), so that a
 * request never crosses a thread. Every hook runs on the worker's own
 * thread. Event data with the top 16 bits HTTP_LOOP_TAG are the loop's. */
#define HTTP_LOOP_TAG 0xD00D000000000000ull
struct http_loop {
	/* A worker starts: ctx for the other hooks; NULL fails the start. The
	 * hook adds its descriptors to epfd itself. */
	void *(*start)(int epfd);
	/* An event of the hook's descriptors. */
	void (*event)(void *ctx, uint64_t data, uint32_t events);
	/* Milliseconds the loop may sleep for the hook (-1: no limit). */
	int (*timeout_ms)(void *ctx);
	/* Each round, after libmicrohttpd ran. */
	void (*after)(void *ctx);
	/* The loop ends: end what the hook drives (its connections resumed)
	 * before the daemon stops. */
	void (*quit)(void *ctx);
	/* The worker ends (its daemon stopped: every request is complete). */
	void (*stop)(void *ctx);
};
/* Set before http_start (NULL: the daemons alone). */
void http_set_loop(const struct http_loop *loop);
/* Resumes a suspended connection (MHD_resume_connection) and marks its
 * daemon to run: in the next round when called on that worker's thread,
 * else the worker is woken. Any thread. */
void http_resume(struct MHD_Connection *conn);

/* Starts listening on host:port with the given routes (copied pointer: the
 * table must outlive the server). NULL on failure (logged). */
struct http_server *http_start(struct app *app, const char *host, int port, const struct http_route *routes,
			       size_t nroutes) WUR;
/* Port actually bound (useful with port 0). */
int http_port(const struct http_server *s);
/* Stops accepting and waits for in-flight requests (at most timeout_s). */
void http_drain(struct http_server *s, int timeout_s);
/* Stops the server (closing what is left) and frees it. */
void http_stop(struct http_server **s);
long http_in_flight(void);
/* Request body bytes currently buffered on the node (gauge). */
long long http_body_bytes_in_flight(void);
/* Gives back r's share of the node's body budget (its body is no longer
 * held); done anyway when the request completes. */
void http_body_release(struct http_req *r);

/* Request accessors. */
const char *http_header(struct http_req *r, const char *name);
const char *http_query(struct http_req *r, const char *name);
/* How many times a query argument appears (duplicates are an error in OAuth). */
int http_query_count(struct http_req *r, const char *name);
/* How many times a request header appears (names compared case-insensitively). */
int http_header_count(struct http_req *r, const char *name);

/* Adds a response header (copied) to the response about to be sent. When it
 * cannot be kept the failure sticks to r: the response sent will be a 500
 * with none of the added headers. */
void http_add_header(struct http_req *r, const char *name, const char *value);
/* Sends a response; exactly one per request. Copies body. A 500 instead
 * when a header could not be added (before or now); a response that cannot
 * be built at all leaves r->status 500 and libmicrohttpd closes the
 * connection. */
void http_send(struct http_req *r, int status, const char *content_type, const char *body, size_t len);
/* Sends json (stolen) as application/json. */
void http_send_json(struct http_req *r, int status, json_t *json);
/* RFC 6749 JSON error {"error","error_description"} with no-store. */
void http_send_oauth_error(struct http_req *r, int status, const char *error, const char *description);
/* 503 temporarily_unavailable with Retry-After (database or upstream trouble). */
void http_send_oauth_unavailable(struct http_req *r);
/* 429 slow_down with Retry-After (a rate limit of an OAuth endpoint). */
void http_send_slow_down(struct http_req *r, int retry_after_s, const char *description);
/* Plain JSON error {"error": msg} for non-OAuth endpoints. */
void http_send_error(struct http_req *r, int status, const char *msg);

uint64_t http_now_ns(void);

/* Deferred answers (the proxy): the handler suspends the connection and
 * returns; http_resume (any thread; never MHD_resume_connection itself: a
 * daemon in external mode has no wake-up of its own, and the loop runs
 * only the daemons marked to run) makes libmicrohttpd call the route's
 * handler again on the connection's worker thread, where it answers. */
void http_suspend(struct http_req *r);

/* Streams a response: reader is libmicrohttpd's content reader (it may
 * suspend the connection and return 0 when no data is ready yet); free_cls
 * (cls) is called in every case once the reader is no longer needed.
 * headers holds nheaders name/value pairs passed through from elsewhere
 * (the downstream), each added if libmicrohttpd accepts it; the headers of
 * http_add_header follow the sticky rule above. */
void http_send_stream(struct http_req *r, int status, MHD_ContentReaderCallback reader, void *cls,
		      MHD_ContentReaderFreeCallback free_cls, const char *const *headers, size_t nheaders);
/* The same for an answer already complete: body (copied) goes out with its
 * Content-Length, in the write of the headers where it fits. */
void http_send_complete(struct http_req *r, int status, const char *body, size_t len, const char *const *headers,
			size_t nheaders);

#endif
