/* The engine of the streaming reverse proxy to downstream MCP servers.
 *
 * Design: one engine per HTTP worker, run by the worker's event loop
 * (struct http_loop): a libcurl multi handle on curl_multi_socket_action in
 * the worker's epoll set, beside its libmicrohttpd daemon, the client
 * sockets (for hang-ups) and a wake-up eventfd, so a request never crosses
 * a thread. Client connections are suspended in libmicrohttpd
 * while they wait (for the downstream's headers, or for the next bytes of an
 * SSE stream), so an idle stream holds a socket and a small buffer but no
 * thread. Bytes flow downstream -> bounded buffer -> libmicrohttpd's content
 * reader; a full buffer pauses the libcurl transfer (backpressure) and a
 * drained one unpauses it. A client disconnect aborts the downstream
 * transfer; a downstream disconnect ends the client's stream; a revocation
 * (engine_end_matching) ends both, wherever the transfer is. */
#ifndef MCPB_ENGINE_H
#define MCPB_ENGINE_H
#include <curl/curl.h>
#include "buf.h"
#include "http.h"
#include "lim.h"

struct engine_xfer;

/* Before http_start: every HTTP worker gets an engine. max_connects:
 * keep-alive connections kept to downstreams per worker and pool (the
 * node's connection limit split among the workers). */
int engine_start(long max_connects) WUR;
/* Fails every transfer still running (each worker does, woken); new
 * transfers are refused from then on. */
void engine_stop(void);
/* Frees what the engine used; after the HTTP server has stopped. */
void engine_free(void);

struct engine_request {
	const char *method;
	char *url;                  /* moved into the transfer */
	struct curl_slist *headers; /* moved */
	struct buf body;            /* moved */
	long connect_timeout_ms;
	long idle_timeout_ms;        /* nothing from the downstream this long: abort */
	long stream_idle_timeout_ms; /* the same once an SSE answer is under way (0: never) */
	const char *client_cert, *client_key, *ca_file;
	char grant_id[37]; /* the grant the transfer serves (revocation ends it) */
	/* Beside the grant, what else a revocation may name (as in struct
	 * token_info; "" when unknown): the access token's SHA-256 hex, the
	 * client, the user's subject and the grant's upstream. */
	char token_hash[65];
	char client_id[LIM_CLIENT_ID + 1];
	char subject[300];
	char upstream[65];
	/* Response headers passed to the client beside the built-in allow-list
	 * (content type, cache control, MCP session and version, ...): names,
	 * compared case-insensitively; the array must outlive the transfer. */
	char *const *resp_headers;
	size_t n_resp_headers;
};

/* Starts a transfer for r and suspends r until the downstream's headers
 * (or a failure) are known. NULL on failure to start (nothing was sent).
 * The caller keeps the returned reference and gives it back with
 * engine_request_done() when the request completes. */
struct engine_xfer *engine_begin(struct http_req *r, struct engine_request *pr) WUR;
void engine_request_done(struct engine_xfer *x);

enum engine_state { ENGINE_WAITING, ENGINE_HEADERS, ENGINE_FAILED };
/* On the handler's re-entry: what is known (WAITING suspends r again).
 * On ENGINE_FAILED, *curl_rc says why. */
enum engine_state engine_poll(struct http_req *r, struct engine_xfer *x, CURLcode *curl_rc);
/* Sends the downstream's status and headers and streams the body. */
void engine_respond(struct http_req *r, struct engine_xfer *x);
/* Valid once engine_poll said ENGINE_HEADERS. */
long engine_status(struct engine_xfer *x);
const char *engine_response_header(struct engine_xfer *x, const char *name);

/* Discards the rest of the answer and suspends r until the transfer has
 * finished; 1 when it has. */
int engine_wait_done(struct http_req *r, struct engine_xfer *x) WUR;
/* Moves the request body back out of a finished transfer (for a replay). */
struct buf engine_take_body(struct engine_xfer *x);

/* What a revocation covers: every field that is set must equal the
 * transfer's (NULL: any); with none set, every transfer. */
struct engine_match {
	const char *grant_id, *token_hash, *client_id, *subject, *upstream;
};

/* Ends every transfer m covers: the downstream transfer is aborted and the
 * client's answer ends with an error at once (nothing more of a stream is
 * sent, buffered bytes included; a client still waiting for the headers
 * gets ENGINE_FAILED). A request that began before this call and starts its
 * transfer later (it was validated before the revocation reached this
 * node) is ended as it starts. Any thread; never blocks on I/O; costs
 * O(transfers alive on the node). */
void engine_end_matching(const struct engine_match *m);
/* Adds one SSE event (complete, ending in a blank line) to every
 * standalone stream of grant_id under way on this node: at once where the
 * downstream's stream is between two events, else after the event under
 * way (at most ENGINE_INJECT_BYTES wait per stream). Any thread; never
 * blocks on I/O. */
#define ENGINE_INJECT_BYTES 8192
void engine_inject(const char *grant_id, const char *event, size_t len);
/* 1 when x was ended by engine_end_matching. */
int engine_revoked(struct engine_xfer *x);
/* Calls fn(grant_id, token_hash, ctx) for every transfer alive and not yet
 * ended, under the registry's lock: fn must not block or call back into
 * the proxy. */
void engine_each_live(void (*fn)(const char *grant_id, const char *token_hash, void *ctx), void *ctx);

#endif
