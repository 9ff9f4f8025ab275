#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdint.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "hdr.h"
#include "log.h"
#include "metrics.h"

#define ENGINE_BUFFER (256 * 1024) /* downstream bytes held per transfer */
#define ENGINE_MAX_HEADERS 48
#define ENGINE_HEADER_BYTES (32 * 1024)
#define ENGINE_SWEEP_MS 1000           /* how often idle transfers are looked for */
#define ENGINE_KEEP_BUFFER (16 * 1024) /* a drained buffer above this is freed */
#define ENGINE_SPARE_EASY 64           /* reset easy handles a worker keeps */
/* Revocations remembered for requests still on their way to a transfer
 * (power of two); a request older than all of them is ended (fail closed). */
#define ENGINE_RECENT 1024

struct engine_xfer {
	pthread_mutex_t lock;
	int refs;
	CURL *easy;
	char *url;
	struct curl_slist *req_headers;
	struct buf body;
	struct MHD_Connection *conn;

	long status;
	char *hdr_name[ENGINE_MAX_HEADERS], *hdr_value[ENGINE_MAX_HEADERS];
	int nhdrs;
	char *connection; /* the downstream's Connection header, for its listed names */
	size_t hdr_bytes;
	int headers_ready;

	struct buf out;
	size_t out_off;
	int done;
	CURLcode result;
	int paused, want_unpause;
	int suspended;
	int client_gone;
	int in_multi;
	int discard;         /* the answer is not wanted (replay after a 401) */
	int client_fd;       /* watched while the connection is parked */
	int hangup;          /* the client closed its side while parked */
	long idle_ms;        /* abort when nothing arrives from the downstream this long */
	long stream_idle_ms; /* ... once an SSE answer's headers are in (0: never) */
	int is_get, is_head;
	int hold;      /* a complete answer is awaited before the client is woken */
	int is_stream; /* a GET answered with text/event-stream (the standalone stream) */
	long long last_rx_ms;
	int watching;   /* client_fd is in the engine's epoll (hang-up) */
	int queued;     /* on eng->attn: its engine looks at it */
	int engine_ref; /* the engine still holds its reference */
	struct engine_xfer *attn_next;
	struct engine *eng; /* the worker's engine that drives it */
	char grant_id[37];
	char *const *resp_headers; /* extra response headers allowed through */
	size_t n_resp_headers;
	struct engine_xfer *next;                /* eng->release */
	struct engine_xfer *act_prev, *act_next; /* eng->active or eng->quiet */
	int quiet;                               /* on eng->quiet (worker thread) */

	/* What a revocation may name (immutable once registered). */
	char token_hash[65];
	char client_id[LIM_CLIENT_ID + 1];
	char subject[300];
	char upstream[65];
	uint64_t start_ns; /* the request's start (http_now_ns) */
	int revoked;       /* ended by engine_end_matching: nothing more goes out */
	int registered;
	/* Events the broker adds to a standalone stream (engine_inject): they
	 * go out where the downstream's stream is between two events. */
	int sse_breaks;                            /* line ends at the end of what came so far (2: between events) */
	char sse_last;                             /* the last byte that came (a CR before LF is one line end) */
	int sse_seen;                              /* the downstream's first stream bytes came */
	int sse_spliced;                           /* an event of the broker's went out before them */
	struct buf injected;                       /* waiting for the next boundary */
	struct engine_xfer *live_prev, *live_next; /* under reg.lock */
};

/* Two keep-alive pools (curl shares of connections) per engine, one for
 * standalone GET event streams and one for everything else. libcurl 7.88
 * walks every connection of a handle's pool each time a finished transfer
 * leaves the multi handle (the CONNECT_ONLY check of
 * curl_multi_remove_handle): with thousands of parked streams in the same
 * pool, every proxied POST paid for all of them. */
enum { POOL_CALLS, POOL_STREAMS, POOLS };

struct pool {
	CURLSH *share;
	pthread_mutex_t lock[CURL_LOCK_DATA_LAST];
};

/* One engine per HTTP worker, driven by the worker's event loop (struct
 * http_loop): the worker's libmicrohttpd daemon and its downstream
 * transfers share one epoll set and one thread, so a request never crosses
 * a thread. Other threads (revocations, injected events) only queue a
 * transfer on e->attn and wake the loop. */
struct engine {
	CURLM *multi;
	struct pool pool[POOLS];
	int epfd;   /* the worker's */
	int wakefd; /* ours, in epfd */
	pthread_mutex_t lock;
	struct engine_xfer *attn; /* what other threads asked the engine to look at */
	int closed;               /* under lock: nothing is queued any more */
	/* The worker's thread only. */
	struct engine_xfer *active;     /* in the multi handle (doubly linked) */
	struct engine_xfer *quiet;      /* ... streams the sweep has no need to see */
	struct engine_xfer *release;    /* finished in this round: released after it */
	long long timer_at;             /* libcurl's timer, absolute in ns (-1: none) */
	int resumed;                    /* a connection was resumed: libmicrohttpd runs again at once */
	CURL *spare[ENGINE_SPARE_EASY]; /* reset easy handles, ready for the next transfers */
	int nspare;
	long long sweep_at; /* the next look for idle transfers */
};

#define ENGINE_MAX 256 /* engines (http.threads is at most 256) */

static struct {
	pthread_mutex_t lock;
	struct engine *all[ENGINE_MAX];
	int n;
	int running, stop; /* atomic */
	long max_connects;
} engines = { .lock = PTHREAD_MUTEX_INITIALIZER };

static __thread struct engine *self; /* the engine of this worker thread */

/* Every transfer alive on the node (from engine_begin until its last
 * reference is gone), and the latest revocations, so that a revocation
 * finds the transfers it covers wherever they are: waiting for the
 * downstream, streaming, or finished with bytes still buffered. Lock order:
 * reg.lock before a transfer's lock. */
struct recent {
	uint64_t at_ns;
	struct engine_match m;
	char *block; /* holds m's strings */
};

static struct {
	pthread_mutex_t lock;
	struct engine_xfer *live;
	struct recent ring[ENGINE_RECENT];
	unsigned head, n; /* next slot; slots used */
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Easy handles are reused (curl_easy_reset keeps their buffers): a
 * worker keeps up to ENGINE_SPARE_EASY, touched on its own thread only. */
static void easy_put(struct engine *e, CURL *h)
{
	if (e && self == e && e->multi && e->nspare < ENGINE_SPARE_EASY) {
		curl_easy_reset(h);
		e->spare[e->nspare++] = h;
	} else {
		curl_easy_cleanup(h);
	}
}

static CURL *easy_get(struct engine *e)
{
	return e->nspare ? e->spare[--e->nspare] : curl_easy_init();
}

static void easy_spares_free(struct engine *e)
{
	while (e->nspare)
		curl_easy_cleanup(e->spare[--e->nspare]);
}

static void unregister(struct engine_xfer *x)
{
	if (!x->registered)
		return;
	pthread_mutex_lock(&reg.lock);
	if (x->live_prev)
		x->live_prev->live_next = x->live_next;
	else
		reg.live = x->live_next;
	if (x->live_next)
		x->live_next->live_prev = x->live_prev;
	pthread_mutex_unlock(&reg.lock);
	x->registered = 0;
}

static void xfer_release(struct engine_xfer *x)
{
	pthread_mutex_lock(&x->lock);
	int left = --x->refs;
	pthread_mutex_unlock(&x->lock);
	if (left > 0)
		return;
	unregister(x);
	if (x->easy)
		easy_put(x->eng, x->easy);
	/* The request headers hold the injected upstream credential. */
	for (struct curl_slist *l = x->req_headers; l; l = l->next)
		crypto_wipe(l->data, strlen(l->data));
	curl_slist_free_all(x->req_headers);
	free(x->url);
	buf_free(&x->body);
	buf_free(&x->out);
	buf_free(&x->injected);
	for (int i = 0; i < x->nhdrs; i++) {
		free(x->hdr_name[i]);
		free(x->hdr_value[i]);
	}
	free(x->connection);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long long now_ms(void)
{
	return now_ns() / 1000000;
}

static void kick(struct engine *e)
{
	uint64_t one = 1;
	ssize_t w = write(e->wakefd, &one, sizeof(one));
	(void)w; /* a full counter already wakes the loop */
}

/* Under x->lock: wake the client connection if it is parked. A daemon in
 * external mode has no wake-up of its own: the resumed connection is
 * served when the worker's loop runs libmicrohttpd next, at once on the
 * worker's thread (a zero timeout), woken from another. */
static void wake_client(struct engine_xfer *x)
{
	if (x->suspended && !x->client_gone) {
		x->suspended = 0;
		http_resume(x->conn);
		if (self == x->eng)
			x->eng->resumed = 1;
	}
}

/* ---- libcurl callbacks (engine thread) --------------------------------- */

/* Downstream response headers reach the client only by allow-list: a
 * downstream must not plant cookies on the broker's origin, speak for the
 * broker's CORS or authentication, or pass hop-by-hop fields along. */
static int resp_header_allowed(const struct engine_xfer *x, const char *name, size_t n)
{
	static const char *const allow[] = {
		"content-type", "cache-control", "mcp-session-id", "mcp-protocol-version", "retry-after",
		"vary",         "etag",          "last-modified",  "content-language"
	};
	static const char *const never[] = { "set-cookie", "set-cookie2" };
	if (hdr_hop_by_hop(name, n))
		return 0;
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
		if (strlen(never[i]) == n && strncasecmp(name, never[i], n) == 0)
			return 0;
	for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]); i++)
		if (strlen(allow[i]) == n && strncasecmp(name, allow[i], n) == 0)
			return 1;
	for (size_t i = 0; i < x->n_resp_headers; i++)
		if (strlen(x->resp_headers[i]) == n && strncasecmp(name, x->resp_headers[i], n) == 0)
			return 1;
	return 0;
}

static int is_event_stream(const struct engine_xfer *x)
{
	static const char sse[] = "text/event-stream";
	for (int i = 0; i < x->nhdrs; i++)
		if (strcasecmp(x->hdr_name[i], "content-type") == 0)
			return strncasecmp(x->hdr_value[i], sse, sizeof(sse) - 1) == 0;
	return 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *cls)
{
	struct engine_xfer *x = cls;
	size_t len = size * n;
	pthread_mutex_lock(&x->lock);
	x->last_rx_ms = now_ms();
	if (x->headers_ready) {
		/* Trailers of a chunked answer: the headers were handed out. */
		pthread_mutex_unlock(&x->lock);
		return len;
	}
	x->hdr_bytes += len;
	if (x->hdr_bytes > ENGINE_HEADER_BYTES) {
		pthread_mutex_unlock(&x->lock);
		return 0; /* aborts: the downstream sent absurd headers */
	}
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new status line (after 1xx answers): forget earlier headers. */
		for (int i = 0; i < x->nhdrs; i++) {
			free(x->hdr_name[i]);
			free(x->hdr_value[i]);
		}
		x->nhdrs = 0;
		free(x->connection);
		x->connection = NULL;
	} else if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) {
		long code = 0;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200) {
			x->status = code;
			x->headers_ready = 1;
			x->is_stream = x->is_get && is_event_stream(x);
			/* An answer that is not an event stream is held until it is
			 * complete (or fills the buffer): the client is woken once
			 * and gets it in one write. */
			x->hold = !x->is_head && !is_event_stream(x);
			if (!x->hold)
				wake_client(x);
		}
	} else {
		const char *colon = memchr(data, ':', len);
		if (colon && (size_t)(colon - data) == 10 && strncasecmp(data, "connection", 10) == 0) {
			const char *v = colon + 1, *end = data + len;
			while (end > v && (end[-1] == '\r' || end[-1] == '\n'))
				end--;
			free(x->connection);
			x->connection = strndup(v, (size_t)(end - v));
		} else if (colon && x->nhdrs < ENGINE_MAX_HEADERS &&
			   resp_header_allowed(x, data, (size_t)(colon - data))) {
			const char *v = colon + 1;
			const char *end = data + len;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
				end--;
			x->hdr_name[x->nhdrs] = strndup(data, (size_t)(colon - data));
			x->hdr_value[x->nhdrs] = strndup(v, (size_t)(end - v));
			if (x->hdr_name[x->nhdrs] && x->hdr_value[x->nhdrs])
				x->nhdrs++;
			else {
				free(x->hdr_name[x->nhdrs]);
				free(x->hdr_value[x->nhdrs]);
			}
		}
	}
	pthread_mutex_unlock(&x->lock);
	return len;
}

/* Follows the event stream's line ends (CRLF, LF or CR, WHATWG's event
 * stream grammar): two in a row end an event. */
static size_t sse_track(struct engine_xfer *x, const char *data, size_t len)
{
	size_t cut = SIZE_MAX;
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (c == '\n' && x->sse_last == '\r')
			; /* the LF of a CRLF: counted with its CR */
		else if (c == '\n' || c == '\r') {
			if (x->sse_breaks < 2 && ++x->sse_breaks == 2)
				cut = i + 1 + (c == '\r' && i + 1 < len && data[i + 1] == '\n');
		} else {
			x->sse_breaks = 0;
		}
		x->sse_last = c;
	}
	return cut;
}

/* Appends a stream's bytes to x->out, with the events waiting to be
 * spliced in (x->injected) after the last event that ends in them. -1 when
 * the buffer cannot take them (it is gone: the stream ends). */
static int stream_add(struct engine_xfer *x, const char *data, size_t len)
{
	if (!x->sse_seen) {
		x->sse_seen = 1;
		/* A BOM is a stream's first bytes or nothing: after an event the
		 * broker put first, it would be read as part of a field name. */
		if (x->sse_spliced && len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
			data += 3;
			len -= 3;
		}
	}
	size_t cut = sse_track(x, data, len);
	if (!x->injected.len || cut == SIZE_MAX)
		return buf_add(&x->out, data, len);
	if (buf_add(&x->out, data, cut) < 0 || buf_add(&x->out, x->injected.ptr, x->injected.len) < 0 ||
	    buf_add(&x->out, data + cut, len - cut) < 0)
		return -1;
	buf_reset(&x->injected);
	return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *cls)
{
	struct engine_xfer *x = cls;
	size_t len = size * n;
	pthread_mutex_lock(&x->lock);
	x->last_rx_ms = now_ms();
	if (x->client_gone || x->revoked) {
		pthread_mutex_unlock(&x->lock);
		return 0; /* abort */
	}
	if (x->discard) {
		pthread_mutex_unlock(&x->lock);
		return len;
	}
	if (x->out.len + len > ENGINE_BUFFER && x->out.len > 0) {
		x->paused = 1; /* backpressure: the client is slower than the downstream */
		x->hold = 0;   /* too big to hold: it streams */
		wake_client(x);
		pthread_mutex_unlock(&x->lock);
		return CURL_WRITEFUNC_PAUSE;
	}
	if ((x->is_stream ? stream_add(x, data, len) : buf_add(&x->out, data, len)) < 0) {
		x->out_off = 0; /* buf_add freed the buffer on failure */
		pthread_mutex_unlock(&x->lock);
		return 0;
	}
	if (!x->headers_ready) {
		long code = 0;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		x->status = code;
		x->headers_ready = 1;
	}
	if (!x->hold)
		wake_client(x);
	pthread_mutex_unlock(&x->lock);
	return len;
}

/* ---- the engine (the worker's thread) ----------------------------------- */

/* The worker's epoll set holds, beside libmicrohttpd's, libcurl's sockets
 * (CURLMOPT_SOCKETFUNCTION), the client sockets of live transfers (hang-up
 * only) and the engine's eventfd, written by other threads when they ask
 * for something (abort, a wake-up). The engine only ever looks at what an
 * event names: an idle stream costs no CPU. What an event's data holds: */
#define EV_CURL 0xC0DE000000000000ull /* | a libcurl socket */
#define EV_WAKE 0xF00D000000000000ull /* the eventfd */
/* ... or else a struct engine_xfer * (a client socket). */

/* Under x->lock, any thread: x's engine will look at x (the queue holds a
 * reference). */
static void attend(struct engine_xfer *x)
{
	struct engine *e = x->eng;
	if (x->queued || !x->engine_ref)
		return;
	pthread_mutex_lock(&e->lock);
	if (!e->closed) {
		x->queued = 1;
		x->refs++;
		x->attn_next = e->attn;
		__atomic_store_n(&e->attn, x, __ATOMIC_RELEASE); /* read unlocked by loop_event */
		if (self != e)
			kick(e); /* on its own thread the loop looks after this round */
	}
	pthread_mutex_unlock(&e->lock);
}

/* Under x->lock, worker thread: the client socket joins the epoll set, for
 * its hang-up only (edge-triggered, no EPOLLIN: pipelined bytes do not
 * wake the loop). */
static void watch(struct engine_xfer *x)
{
	if (x->watching || x->client_gone || x->client_fd < 0)
		return;
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLET, .data.ptr = x };
	if (epoll_ctl(x->eng->epfd, EPOLL_CTL_ADD, x->client_fd, &ev) == 0)
		x->watching = 1;
}

/* Under x->lock, worker thread; before libmicrohttpd closes the socket (its
 * number may be taken by the next connection at once). */
static void unwatch(struct engine_xfer *x)
{
	if (!x->watching)
		return;
	(void)epoll_ctl(x->eng->epfd, EPOLL_CTL_DEL, x->client_fd, NULL);
	x->watching = 0;
}

/* A transfer in the multi handle is on one of two lists: e->active, which
 * the sweep looks at, or e->quiet: standalone streams under way that no
 * timeout covers (stream_idle_timeout_ms 0) and whose client is watched,
 * which the sweep never needs to see again (9,000 idle streams cost it
 * nothing). */
static struct engine_xfer **list_of(struct engine *e, const struct engine_xfer *x)
{
	return x->quiet ? &e->quiet : &e->active;
}

static void active_add(struct engine *e, struct engine_xfer *x)
{
	struct engine_xfer **head = list_of(e, x);
	x->act_prev = NULL;
	x->act_next = *head;
	if (*head)
		(*head)->act_prev = x;
	*head = x;
}

static void active_remove(struct engine *e, struct engine_xfer *x)
{
	if (x->act_prev)
		x->act_prev->act_next = x->act_next;
	else
		*list_of(e, x) = x->act_next;
	if (x->act_next)
		x->act_next->act_prev = x->act_prev;
	x->act_prev = x->act_next = NULL;
}

/* The engine's reference goes at the end of the round, as an event of this
 * round may still name x. */
static void finish(struct engine *e, struct engine_xfer *x, CURLcode rc)
{
	if (x->in_multi) {
		curl_multi_remove_handle(e->multi, x->easy);
		active_remove(e, x);
	}
	pthread_mutex_lock(&x->lock);
	x->in_multi = 0;
	x->done = 1;
	x->result = rc;
	x->engine_ref = 0;
	unwatch(x);
	wake_client(x);
	pthread_mutex_unlock(&x->lock);
	x->next = e->release;
	e->release = x;
}

static void release_round(struct engine *e)
{
	while (e->release) {
		struct engine_xfer *x = e->release;
		e->release = x->next;
		xfer_release(x);
	}
}

/* What was asked for: abort (client gone, hang-up, revoked) or unpause
 * (the client drained the buffer). */
static void look_at(struct engine *e, struct engine_xfer *x)
{
	pthread_mutex_lock(&x->lock);
	x->queued = 0;
	int live = x->engine_ref && x->in_multi;
	int revoked = x->revoked, gone = x->client_gone || x->hangup || revoked;
	int unpause = !gone && x->want_unpause && x->paused;
	if (unpause)
		x->want_unpause = x->paused = 0;
	pthread_mutex_unlock(&x->lock);
	if (live && gone)
		finish(e, x, revoked ? CURLE_ABORTED_BY_CALLBACK : CURLE_WRITE_ERROR);
	else if (live && unpause)
		curl_easy_pause(x->easy, CURLPAUSE_CONT);
	xfer_release(x); /* the queue's reference */
}

static void look_at_queue(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	struct engine_xfer *attn = e->attn;
	__atomic_store_n(&e->attn, NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&e->lock);
	while (attn) {
		struct engine_xfer *next = attn->attn_next;
		look_at(e, attn);
		attn = next;
	}
}

/* A client socket's hang-up. A parked (suspended) connection is not
 * watched by libmicrohttpd, so a client leaving an idle SSE stream would
 * go unnoticed until the downstream writes twice. */
static void client_event(struct engine *e, struct engine_xfer *x, uint32_t events)
{
	pthread_mutex_lock(&x->lock);
	int gone = 0;
	if (x->watching && x->engine_ref) {
		char c;
		ssize_t got = recv(x->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		/* Readable bytes before the FIN: a pipelined request that
		 * libmicrohttpd will read, and a request still awaiting its
		 * answer goes on; an event stream under way has nothing to
		 * wait for, and ends (or a FIN after one byte would hold it
		 * for ever). */
		gone = got == 0 || (events & (EPOLLERR | EPOLLHUP)) ||
		       (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
		       (x->headers_ready && x->is_stream);
		if (gone)
			x->hangup = 1;
	}
	int live = gone && x->in_multi;
	pthread_mutex_unlock(&x->lock);
	if (live)
		finish(e, x, CURLE_WRITE_ERROR);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	struct engine *e = userp;
	struct epoll_event ev = { .events = 0, .data.u64 = EV_CURL | (uint64_t)(uint32_t)s };
	if (what == CURL_POLL_REMOVE) {
		(void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(e->multi, s, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	/* socketp marks a socket already in the set. A failure is not told
	 * to libcurl (-1 would end every transfer of the multi handle): the
	 * transfer's own timeouts end it. */
	int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(e->epfd, op, s, &ev) < 0) {
		int again = errno == EEXIST ? EPOLL_CTL_MOD : errno == ENOENT ? EPOLL_CTL_ADD : -1;
		if (again < 0 || epoll_ctl(e->epfd, again, s, &ev) < 0) {
			log_msg(LOG_ERROR, "proxy.engine_epoll", NULL, "a downstream socket cannot be watched");
			return 0;
		}
	}
	curl_multi_assign(e->multi, s, e);
	return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	struct engine *e = userp;
	/* In ns: fired a fraction of a millisecond early, the timer would do
	 * nothing, and libcurl does not set an unchanged deadline again. */
	e->timer_at = timeout_ms < 0 ? -1 : now_ns() + (long long)timeout_ms * 1000000;
	return 0;
}

static void read_done(struct engine *e)
{
	CURLMsg *m;
	int q;
	while ((m = curl_multi_info_read(e->multi, &q))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct engine_xfer *x = NULL;
		CURL *easy = m->easy_handle;
		CURLcode rc = m->data.result;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
		if (x && x->in_multi)
			finish(e, x, rc);
	}
}

/* Once a second: a transfer that heard nothing from the downstream for
 * its idle_ms is ended (a paused one waits on its client, not the
 * downstream); a GET's SSE stream under way, after stream_idle_ms (0: never:
 * the client leaving, the downstream closing, TCP keep-alive or a
 * revocation end it). */
static void sweep_idle(struct engine *e, long long now)
{
	if (now < e->sweep_at)
		return;
	e->sweep_at = now + ENGINE_SWEEP_MS;
	for (struct engine_xfer *x = e->active, *next; x; x = next) {
		next = x->act_next;
		pthread_mutex_lock(&x->lock);
		watch(x);
		int streaming = x->headers_ready && x->is_stream;
		long limit = streaming ? x->stream_idle_ms : x->idle_ms;
		int idle = limit > 0 && !x->paused && now - x->last_rx_ms > limit;
		int quiet = streaming && limit <= 0 && (x->watching || x->client_fd < 0);
		pthread_mutex_unlock(&x->lock);
		if (idle) {
			finish(e, x, CURLE_OPERATION_TIMEDOUT);
		} else if (quiet) {
			active_remove(e, x);
			x->quiet = 1;
			active_add(e, x);
		}
	}
}

/* Fails what is left and takes nothing more. */
static void close_engine(struct engine *e)
{
	while (e->active || e->quiet)
		finish(e, e->active ? e->active : e->quiet, CURLE_ABORTED_BY_CALLBACK);
	pthread_mutex_lock(&e->lock);
	e->closed = 1;
	pthread_mutex_unlock(&e->lock);
	look_at_queue(e); /* what was queued before */
	release_round(e);
}

/* A pool is used by one worker, but a handle may leave it on another
 * thread (the last reference of a transfer): libcurl locks what it shares
 * through these. */
static void pool_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *cls)
{
	(void)h;
	(void)access;
	struct pool *p = cls;
	if (data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&p->lock[data]);
}

static void pool_unlock(CURL *h, curl_lock_data data, void *cls)
{
	(void)h;
	struct pool *p = cls;
	if (data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&p->lock[data]);
}

static int pools_init(struct engine *e)
{
	for (int i = 0; i < POOLS; i++) {
		struct pool *p = &e->pool[i];
		for (int d = 0; d < CURL_LOCK_DATA_LAST; d++)
			pthread_mutex_init(&p->lock[d], NULL);
		p->share = curl_share_init();
		if (!p->share || curl_share_setopt(p->share, CURLSHOPT_LOCKFUNC, pool_lock) != CURLSHE_OK ||
		    curl_share_setopt(p->share, CURLSHOPT_UNLOCKFUNC, pool_unlock) != CURLSHE_OK ||
		    curl_share_setopt(p->share, CURLSHOPT_USERDATA, p) != CURLSHE_OK ||
		    curl_share_setopt(p->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK)
			return -1;
	}
	return 0;
}

/* After the multi handle: its connections close with the pools. */
static void pools_free(struct engine *e)
{
	for (int i = 0; i < POOLS; i++) {
		struct pool *p = &e->pool[i];
		if (!p->share)
			continue;
		if (curl_share_cleanup(p->share) != CURLSHE_OK)
			continue; /* a handle still holds it: leaked, safely */
		p->share = NULL;
		for (int d = 0; d < CURL_LOCK_DATA_LAST; d++)
			pthread_mutex_destroy(&p->lock[d]);
	}
}

/* ---- the worker's loop hooks (struct http_loop) ------------------------- */

static void *loop_start(int epfd)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	pthread_mutex_init(&e->lock, NULL);
	e->epfd = epfd;
	e->timer_at = -1;
	e->sweep_at = now_ms() + ENGINE_SWEEP_MS;
	e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	e->multi = curl_multi_init();
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EV_WAKE };
	pthread_mutex_lock(&engines.lock);
	int room = engines.n < ENGINE_MAX;
	if (room)
		engines.all[engines.n++] = e; /* freed by engine_free */
	pthread_mutex_unlock(&engines.lock);
	if (!room || e->wakefd < 0 || !e->multi || epoll_ctl(epfd, EPOLL_CTL_ADD, e->wakefd, &ev) < 0 ||
	    pools_init(e) < 0) {
		if (!room) {
			if (e->wakefd >= 0)
				close(e->wakefd);
			if (e->multi)
				curl_multi_cleanup(e->multi);
			pools_free(e);
			free(e);
		}
		return NULL; /* a registered engine is freed by engine_free */
	}
	curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
	/* Keep-alive connections to downstreams, as many as the node takes
	 * connections: a proxied POST beside thousands of parked GET streams
	 * still finds one. libcurl applies the limit to each pool: the stream
	 * pool's connections are mostly those of live streams, so idle ones
	 * stay near one limit's worth in all. */
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, engines.max_connects > 0 ? engines.max_connects : 256L);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
	self = e;
	return e;
}

static void loop_event(void *ctx, uint64_t d, uint32_t events)
{
	struct engine *e = ctx;
	if (d == EV_WAKE) {
		uint64_t v;
		ssize_t got = read(e->wakefd, &v, sizeof(v));
		(void)got;
	} else if ((d & 0xFFFF000000000000ull) == EV_CURL) {
		int mask = 0, running = 0;
		/* What other threads queued (a revocation) goes first: libcurl
		 * must not move one more byte of a revoked transfer. */
		if (__atomic_load_n(&e->attn, __ATOMIC_ACQUIRE))
			look_at_queue(e);
		if (events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(e->multi, (curl_socket_t)(uint32_t)d, mask, &running);
		read_done(e); /* its client is woken before libmicrohttpd runs */
	} else {
		client_event(e, (struct engine_xfer *)(uintptr_t)d, events);
	}
}

static int loop_timeout(void *ctx)
{
	struct engine *e = ctx;
	int queued = __atomic_load_n(&e->attn, __ATOMIC_ACQUIRE) != NULL; /* no lock each round */
	if (queued || e->release || e->resumed) {
		e->resumed = 0;
		return 0;
	}
	long long now = now_ns(), until = e->sweep_at * 1000000;
	if (e->timer_at >= 0 && e->timer_at < until)
		until = e->timer_at;
	return until <= now ? 0 : (int)((until - now + 999999) / 1000000); /* rounded up */
}

static void loop_after(void *ctx)
{
	struct engine *e = ctx;
	look_at_queue(e);
	if (__atomic_load_n(&engines.stop, __ATOMIC_ACQUIRE) && !e->closed)
		close_engine(e);
	long long now = now_ms();
	if (e->timer_at >= 0 && now_ns() >= e->timer_at) {
		int running = 0;
		e->timer_at = -1;
		curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	read_done(e);
	sweep_idle(e, now);
	release_round(e);
}

/* The worker ends: its daemon stopped, every request completed. */
static void loop_stop(void *ctx)
{
	struct engine *e = ctx;
	close_engine(e);
	easy_spares_free(e);
	curl_multi_cleanup(e->multi);
	e->multi = NULL;
	pools_free(e);
	self = NULL;
}

/* The worker's loop ends: every transfer fails, its connection woken. */
static void loop_quit(void *ctx)
{
	close_engine(ctx);
}

static const struct http_loop engine_loop = { loop_start, loop_event, loop_timeout, loop_after, loop_quit, loop_stop };

int engine_start(long max_connects)
{
	engines.max_connects = max_connects;
	__atomic_store_n(&engines.stop, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&engines.running, 1, __ATOMIC_RELEASE);
	http_set_loop(&engine_loop);
	return 0;
}

void engine_stop(void)
{
	if (!__atomic_load_n(&engines.running, __ATOMIC_ACQUIRE))
		return;
	__atomic_store_n(&engines.stop, 1, __ATOMIC_RELEASE);
	/* Every worker fails what it still drives, waking its connections;
	 * waited for a moment (a worker blocked in a handler comes later). */
	for (int tries = 0; tries < 400; tries++) {
		int open = 0;
		pthread_mutex_lock(&engines.lock);
		for (int i = 0; i < engines.n; i++) {
			struct engine *e = engines.all[i];
			pthread_mutex_lock(&e->lock);
			open |= !e->closed && e->multi;
			pthread_mutex_unlock(&e->lock);
			kick(e);
		}
		pthread_mutex_unlock(&engines.lock);
		if (!open)
			break;
		usleep(5000);
	}
}

void engine_free(void)
{
	/* After the HTTP server: no worker runs, no transfer is left. */
	pthread_mutex_lock(&engines.lock);
	for (int i = 0; i < engines.n; i++) {
		struct engine *e = engines.all[i];
		if (e->multi)
			curl_multi_cleanup(e->multi);
		pools_free(e);
		if (e->wakefd >= 0)
			close(e->wakefd);
		pthread_mutex_destroy(&e->lock);
		free(e);
		engines.all[i] = NULL;
	}
	engines.n = 0;
	pthread_mutex_unlock(&engines.lock);
	__atomic_store_n(&engines.running, 0, __ATOMIC_RELEASE);
	http_set_loop(NULL);
	pthread_mutex_lock(&reg.lock);
	for (unsigned i = 0; i < ENGINE_RECENT; i++) {
		free(reg.ring[i].block);
		memset(&reg.ring[i], 0, sizeof(reg.ring[i]));
	}
	reg.head = reg.n = 0;
	pthread_mutex_unlock(&reg.lock);
}

/* ---- revocation (any thread) -------------------------------------------- */

static int field_covers(const char *want, const char *have)
{
	return !want || strcmp(want, have) == 0;
}

static int covers(const struct engine_match *m, const struct engine_xfer *x)
{
	return field_covers(m->grant_id, x->grant_id) && field_covers(m->token_hash, x->token_hash) &&
	       field_covers(m->client_id, x->client_id) && field_covers(m->subject, x->subject) &&
	       field_covers(m->upstream, x->upstream);
}

/* Under reg.lock: a copy of m joins the ring, stamped now. Without memory
 * for the copy the entry covers everything (fail closed). */
static void remember(const struct engine_match *m)
{
	struct recent *e = &reg.ring[reg.head];
	const char *src[5] = { m->grant_id, m->token_hash, m->client_id, m->subject, m->upstream };
	size_t len = 0;
	for (int i = 0; i < 5; i++)
		len += src[i] ? strlen(src[i]) + 1 : 0;
	free(e->block);
	memset(e, 0, sizeof(*e));
	char *p = len ? malloc(len) : NULL;
	if (p) {
		const char **dst[5] = { &e->m.grant_id, &e->m.token_hash, &e->m.client_id, &e->m.subject,
					&e->m.upstream };
		e->block = p;
		for (int i = 0; i < 5; i++) {
			if (!src[i])
				continue;
			size_t n = strlen(src[i]) + 1;
			memcpy(p, src[i], n);
			*dst[i] = p;
			p += n;
		}
	}
	e->at_ns = http_now_ns();
	reg.head = (reg.head + 1) & (ENGINE_RECENT - 1);
	if (reg.n < ENGINE_RECENT)
		reg.n++;
}

/* Under reg.lock: was x's request overtaken by a revocation that covers it
 * (validated before the revocation reached this node, started after)? */
static int overtaken(const struct engine_xfer *x)
{
	for (unsigned i = 0; i < reg.n; i++) {
		const struct recent *e = &reg.ring[(reg.head - 1 - i) & (ENGINE_RECENT - 1)];
		if (e->at_ns < x->start_ns)
			return 0; /* the request began after it: its validation saw it */
		if (covers(&e->m, x))
			return 1;
	}
	/* Older revocations were forgotten: one of them might cover it. */
	return reg.n == ENGINE_RECENT;
}

/* Makes x alive for revocations; 1 (and x revoked) when a remembered one
 * overtook its request. */
static int enlist(struct engine_xfer *x)
{
	pthread_mutex_lock(&reg.lock);
	int late = overtaken(x);
	x->revoked = late;
	x->live_next = reg.live;
	if (reg.live)
		reg.live->live_prev = x;
	reg.live = x;
	x->registered = 1;
	pthread_mutex_unlock(&reg.lock);
	return late;
}

/* Under reg.lock. */
static void end_xfer(struct engine_xfer *x)
{
	pthread_mutex_lock(&x->lock);
	x->revoked = 1;
	x->out.len = x->out_off = 0; /* not one more buffered byte goes out */
	wake_client(x);
	attend(x); /* the engine aborts the downstream transfer */
	pthread_mutex_unlock(&x->lock);
}

void engine_end_matching(const struct engine_match *m)
{
	long ended = 0;
	pthread_mutex_lock(&reg.lock);
	remember(m);
	for (struct engine_xfer *x = reg.live; x; x = x->live_next)
		if (covers(m, x)) {
			end_xfer(x);
			ended++;
		}
	pthread_mutex_unlock(&reg.lock);
	if (ended) {
		metrics_count("proxy_revoked_total", NULL, ended);
		json_t *f = json_pack("{s:I}", "transfers", (json_int_t)ended);
		if (f && m->grant_id)
			json_object_set_new(f, "grant_id", json_string(m->grant_id));
		log_event(LOG_INFO, "proxy.revoked", NULL, f);
	}
}

void engine_inject(const char *grant_id, const char *event, size_t len)
{
	long n = 0, dropped = 0;
	pthread_mutex_lock(&reg.lock);
	for (struct engine_xfer *x = reg.live; x; x = x->live_next) {
		if (strcmp(x->grant_id, grant_id) != 0)
			continue;
		pthread_mutex_lock(&x->lock);
		if (x->is_stream && !x->done && !x->revoked && !x->client_gone) {
			/* Between two events: at once; else after the one under way
			 * (bounded: a stream that never ends an event gets no more). */
			int now = x->sse_breaks >= 2 && x->injected.len == 0 && x->out.len + len <= ENGINE_BUFFER;
			if (buf_add(now ? &x->out : &x->injected, event, len) == 0) {
				n++;
				x->sse_spliced |= now && !x->sse_seen;
				if (now)
					wake_client(x);
			} else {
				dropped++; /* the queue is full (and emptied): those wait no more */
			}
		}
		pthread_mutex_unlock(&x->lock);
	}
	pthread_mutex_unlock(&reg.lock);
	if (n)
		metrics_count("proxy_injected_events_total", NULL, n);
	if (dropped) {
		metrics_count("proxy_injected_dropped_total", NULL, dropped);
		log_event(LOG_WARN, "proxy.inject_dropped", NULL,
			  json_pack("{s:s, s:I}", "grant_id", grant_id, "streams", (json_int_t)dropped));
	}
}

int engine_revoked(struct engine_xfer *x)
{
	pthread_mutex_lock(&x->lock);
	int v = x->revoked;
	pthread_mutex_unlock(&x->lock);
	return v;
}

void engine_each_live(void (*fn)(const char *grant_id, const char *token_hash, void *ctx), void *ctx)
{
	pthread_mutex_lock(&reg.lock);
	for (struct engine_xfer *x = reg.live; x; x = x->live_next) {
		pthread_mutex_lock(&x->lock);
		int ended = x->revoked;
		pthread_mutex_unlock(&x->lock);
		if (!ended)
			fn(x->grant_id, x->token_hash, ctx);
	}
	pthread_mutex_unlock(&reg.lock);
}

/* ---- the request side (the worker's thread, in libmicrohttpd) ---------- */

void engine_request_done(struct engine_xfer *x)
{
	if (!x)
		return;
	pthread_mutex_lock(&x->lock);
	x->client_gone = 1;
	unwatch(x); /* libmicrohttpd closes the socket next */
	attend(x);
	pthread_mutex_unlock(&x->lock);
	xfer_release(x);
}

/* A transfer for r's connection, holding the request's and the engine's
 * references; NULL when memory or a curl handle is lacking. */
static struct engine_xfer *xfer_new(struct http_req *r, struct engine *e)
{
	struct engine_xfer *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->eng = e;
	pthread_mutex_init(&x->lock, NULL);
	x->refs = 2; /* the request and the engine */
	x->engine_ref = 1;
	x->conn = r->conn;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	x->client_fd = ci ? (int)ci->connect_fd : -1;
	buf_init(&x->out, ENGINE_BUFFER + 64 * 1024);
	buf_init(&x->injected, ENGINE_INJECT_BYTES);
	x->sse_breaks = 2; /* a stream starts between events */
	x->easy = easy_get(e);
	if (!x->easy) {
		x->refs = 1;
		xfer_release(x);
		return NULL;
	}
	return x;
}

static void copy_id(char *dst, const char *src, size_t size)
{
	memcpy(dst, src, size);
	dst[size - 1] = '\0';
}

/* Moves what pr owns into x and copies what a revocation may name. */
static void xfer_take(struct engine_xfer *x, struct engine_request *pr, uint64_t start_ns)
{
	x->url = pr->url;
	pr->url = NULL;
	x->req_headers = pr->headers;
	pr->headers = NULL;
	x->body = pr->body;
	buf_init(&pr->body, 0);
	copy_id(x->grant_id, pr->grant_id, sizeof(x->grant_id));
	copy_id(x->token_hash, pr->token_hash, sizeof(x->token_hash));
	copy_id(x->client_id, pr->client_id, sizeof(x->client_id));
	copy_id(x->subject, pr->subject, sizeof(x->subject));
	copy_id(x->upstream, pr->upstream, sizeof(x->upstream));
	x->start_ns = start_ns;
	x->resp_headers = pr->resp_headers;
	x->n_resp_headers = pr->n_resp_headers;
	/* The idle timeout is enforced by the engine (last byte received). */
	x->idle_ms = pr->idle_timeout_ms;
	x->stream_idle_ms = pr->stream_idle_timeout_ms;
	x->is_get = strcmp(pr->method, "GET") == 0;
	x->is_head = strcmp(pr->method, "HEAD") == 0;
	x->last_rx_ms = now_ms();
}

static void set_method(CURL *h, const char *method, const struct buf *body)
{
	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		if (body->len || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
		    strcmp(method, "PATCH") == 0) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->ptr ? body->ptr : "");
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
		}
	}
}

/* The downstream request: HTTP/1.1 over http or https only, no redirects,
 * verified TLS (optionally mutual), x's headers and body. */
static void set_options(struct engine_xfer *x, const struct engine_request *pr)
{
	CURL *h = x->easy;
	curl_easy_setopt(h, CURLOPT_URL, x->url);
	curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)x);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, pr->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	/* No TLS session cache: a handle is reused across resources, and a
	 * session resumed from another resource's trust (ca_file, client
	 * certificate) must never stand in for a verified handshake. */
	curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	if (pr->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, pr->ca_file);
	if (pr->client_cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, pr->client_cert);
	if (pr->client_key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, pr->client_key);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->req_headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_SHARE, x->eng->pool[x->is_get ? POOL_STREAMS : POOL_CALLS].share);
	/* A GET is a stream that mostly waits: its receive buffer is held for
	 * its whole life (16 KiB by default). */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, x->is_get ? 4096L : 16384L);
	set_method(h, pr->method, &x->body);
}

struct engine_xfer *engine_begin(struct http_req *r, struct engine_request *pr)
{
	struct engine *e = self;
	if (!e || e->closed || __atomic_load_n(&engines.stop, __ATOMIC_ACQUIRE))
		return NULL; /* shutting down (or no engine): nothing would drive the transfer */
	struct engine_xfer *x = xfer_new(r, e);
	if (!x)
		return NULL;
	xfer_take(x, pr, r->start_ns);
	set_options(x, pr);
	/* Alive from now on for revocations; one that overtook the request
	 * ends it before a byte reaches the downstream. */
	if (enlist(x)) {
		metrics_count("proxy_revoked_total", NULL, 1);
		log_msg(LOG_INFO, "proxy.revoked", r->id, "revoked while the request was on its way: not sent");
	}
	/* Park the client until the engine has something to say. */
	pthread_mutex_lock(&x->lock);
	x->suspended = 1;
	http_suspend(r);
	int revoked = x->revoked;
	/* A standalone stream's client is watched for its hang-up at once;
	 * a call's from the sweep on, once it waited a second (most calls
	 * are answered sooner: two epoll_ctl saved on each). */
	if (!revoked && x->is_get)
		watch(x);
	pthread_mutex_unlock(&x->lock);
	if (revoked || curl_multi_add_handle(e->multi, x->easy) != CURLM_OK) {
		finish(e, x, revoked ? CURLE_ABORTED_BY_CALLBACK : CURLE_FAILED_INIT);
	} else {
		x->in_multi = 1;
		active_add(e, x);
	}
	return x;
}

enum engine_state engine_poll(struct http_req *r, struct engine_xfer *x, CURLcode *curl_rc)
{
	enum engine_state st;
	pthread_mutex_lock(&x->lock);
	if (x->revoked) {
		st = ENGINE_FAILED;
		*curl_rc = CURLE_ABORTED_BY_CALLBACK;
	} else if (x->headers_ready)
		st = ENGINE_HEADERS;
	else if (x->done) {
		st = ENGINE_FAILED;
		*curl_rc = x->result;
	} else {
		st = ENGINE_WAITING;
		x->suspended = 1;
		http_suspend(r);
	}
	pthread_mutex_unlock(&x->lock);
	return st;
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max)
{
	struct engine_xfer *x = cls;
	(void)pos;
	ssize_t rc;
	pthread_mutex_lock(&x->lock);
	size_t avail = x->out.len - x->out_off;
	if (x->revoked) {
		/* Cut: the client must not take the answer for complete. */
		rc = MHD_CONTENT_READER_END_WITH_ERROR;
	} else if (avail) {
		size_t n = avail < max ? avail : max;
		memcpy(out, x->out.ptr + x->out_off, n);
		x->out_off += n;
		if (x->out_off == x->out.len) {
			x->out.len = x->out_off = 0;
			/* An idle stream keeps no big buffer: it comes back with
			 * the next burst. */
			if (x->out.cap > ENGINE_KEEP_BUFFER)
				buf_free(&x->out);
		}
		if (x->paused && !x->want_unpause) {
			x->want_unpause = 1;
			attend(x);
		}
		rc = (ssize_t)n;
	} else if (x->done) {
		rc = x->result == CURLE_OK ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
	} else {
		/* Nothing yet: park the connection; the engine resumes it. */
		x->suspended = 1;
		MHD_suspend_connection(x->conn);
		rc = 0;
	}
	pthread_mutex_unlock(&x->lock);
	return rc;
}

static void reader_free(void *cls)
{
	xfer_release(cls);
}

long engine_status(struct engine_xfer *x)
{
	return x->status;
}

const char *engine_response_header(struct engine_xfer *x, const char *name)
{
	/* Headers are complete and no longer written once headers_ready. */
	for (int i = 0; i < x->nhdrs; i++)
		if (strcasecmp(x->hdr_name[i], name) == 0)
			return x->hdr_value[i];
	return NULL;
}

static int listed_in(const char *list, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		size_t n = strcspn(p, ", \t");
		if (n && n == nl && strncasecmp(p, name, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

void engine_respond(struct http_req *r, struct engine_xfer *x)
{
	const char *hdrs[2 * ENGINE_MAX_HEADERS];
	size_t n = 0;
	pthread_mutex_lock(&x->lock);
	x->refs++; /* the response's reference, dropped by reader_free */
	const char *connection = x->connection;
	for (int i = 0; i < x->nhdrs; i++) {
		if (connection && listed_in(connection, x->hdr_name[i]))
			continue; /* named hop-by-hop by the downstream (RFC 9110 7.6.1) */
		hdrs[2 * n] = x->hdr_name[i];
		hdrs[2 * n + 1] = x->hdr_value[i];
		n++;
	}
	long status = x->status;
	if (x->hold && x->done && x->result == CURLE_OK && !x->revoked) {
		/* Complete: one buffer response (copied), no reader. The
		 * transfer is over: nothing writes the buffer any more, and the
		 * request's reference keeps it. */
		x->refs--;
		const char *body = x->out.ptr ? x->out.ptr + x->out_off : "";
		size_t len = x->out.len - x->out_off;
		pthread_mutex_unlock(&x->lock);
		http_send_complete(r, (int)status, body, len, hdrs, n);
		return;
	}
	pthread_mutex_unlock(&x->lock);
	http_send_stream(r, (int)status, reader, x, reader_free, hdrs, n);
}

int engine_wait_done(struct http_req *r, struct engine_xfer *x)
{
	int done;
	pthread_mutex_lock(&x->lock);
	x->discard = 1;
	x->out.len = x->out_off = 0;
	if (x->paused && !x->want_unpause) {
		x->want_unpause = 1;
		attend(x);
	}
	done = x->done;
	if (!done) {
		x->suspended = 1;
		http_suspend(r);
	}
	pthread_mutex_unlock(&x->lock);
	return done;
}

struct buf engine_take_body(struct engine_xfer *x)
{
	struct buf b;
	pthread_mutex_lock(&x->lock);
	b = x->body;
	buf_init(&x->body, 0);
	pthread_mutex_unlock(&x->lock);
	return b;
}
