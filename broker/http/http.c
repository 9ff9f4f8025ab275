#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "crypto.h"
#include "hdr.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"

/* Daemons per worker. libmicrohttpd (0.9.75, and upstream still) walks a
 * daemon's whole list of suspended connections each time it resumes one;
 * with thousands of idle streams parked, that walk was a tenth of the
 * node's CPU. Each worker accepts its connections itself and deals them
 * out to HTTP_SHARDS daemons, filling one to HTTP_SHARD_FILL connections
 * before the next (past that, to the least loaded), and runs only those
 * that have something to do: a resume walks at most about
 * HTTP_SHARD_FILL connections, and a node with few connections keeps them
 * on one daemon, run once per round for all of them. */
#define HTTP_SHARDS LIM_HTTP_SHARDS
#define HTTP_SHARD_FILL 128
#define HTTP_ACCEPT_BATCH 32             /* connections one round accepts at most */
#define HTTP_ACCEPT_PAUSE_NS 100000000LL /* out of descriptors: accepting resumes after 100 ms */

/* Which daemon of which worker a connection is on: its socket context (the
 * low bit set: it came in over the node's connection limit). */
struct http_shard {
	struct http_worker *w;
	int i;
	int conns; /* open on this daemon (worker thread) */
};

/* A worker: one thread running one event loop over its own daemons (and
 * the loop hooks' descriptors). */
struct http_worker {
	struct http_server *s;
	struct http_shard sh[HTTP_SHARDS];
	struct MHD_Daemon *d[HTTP_SHARDS];
	long long due[HTTP_SHARDS]; /* when each daemon wants to run (ns; -1: on events only) */
	unsigned dirty;             /* daemons to run this round, a bit each (atomic) */
	int listening;              /* the listener is in the loop's epoll set */
	long long accept_at;        /* accepting paused until then (ns; 0: not paused) */
	int epfd, cmdfd;            /* the loop's epoll set; the eventfd that wakes it */
	pthread_t thread;
	int started;
	void *ctx;        /* the loop hooks' */
	int quiesced;     /* worker thread only */
	int want_quiesce; /* asked by http_drain (atomic) */
	int want_stop;    /* asked by http_stop (atomic) */
	/* Under s->lock, told by the worker: */
	int ready, failed, quiesce_done;
};

struct http_server {
	struct app *app;
	const struct http_route *routes;
	size_t nroutes;
	int port;
	MHD_socket listen_fd; /* shared by every daemon; closed by http_stop */
	struct http_worker *w;
	int nw;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int own_pool; /* this server started the handler pool (offload.h) */
};

#define HTTP_DRAIN_SETTLE_NS (2000ull * 1000000ull)
#define HTTP_STREAM_BLOCK 2048 /* a streamed answer's own buffer (HTTP/1.0 clients only) */
#define HTTP_HANDSHAKE_SETTLE_US 50000
#define HTTP_STOP_ROUNDS 8 /* rounds a stopping worker still runs while it has work at once */

static long in_flight;
static int draining;

/* Connections: up to max_connections are served; a connection accepted
 * beyond that (within the headroom) gets one 503 + Retry-After and closes;
 * beyond the headroom the accept policy closes it at once. Either way a
 * client learns in milliseconds, instead of waiting in the listen backlog
 * that libmicrohttpd stops draining at its own limit (set higher still). */
#define HTTP_CONN_HEADROOM 64
static long live_conns, conn_limit = 4096;
static uint64_t conn_warned_ns;

/* One warning line per 10 s at most, whatever the number of refusals. */
static void conn_refused(const char *how)
{
	metrics_count("http_connections_refused_total", how, 1);
	uint64_t now = http_now_ns(), last = __atomic_load_n(&conn_warned_ns, __ATOMIC_RELAXED);
	if ((last && now - last < 10000000000ull) ||
	    !__atomic_compare_exchange_n(&conn_warned_ns, &last, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		return;
	log_msg(LOG_WARN, "http.connection_limit", NULL, "%ld connections open, limit %ld: refusing new ones (%s)",
		__atomic_load_n(&live_conns, __ATOMIC_RELAXED), conn_limit, how);
}

/* TCP keep-alive on client sockets: a client that vanished without a FIN
 * from a parked stream is found out (after about 2 min) like one that
 * hung up. */
static void keepalive(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!ci)
		return;
	int on = 1, idle = 60, intvl = 10, cnt = 6;
	(void)setsockopt(ci->connect_fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static struct http_shard *shard_of(void *socket_context)
{
	return (struct http_shard *)((uintptr_t)socket_context & ~(uintptr_t)1);
}

static void conn_notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
			   enum MHD_ConnectionNotificationCode toe)
{
	struct http_shard *sh = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		int over = __atomic_add_fetch(&live_conns, 1, __ATOMIC_ACQ_REL) > conn_limit;
		*socket_context = (void *)((uintptr_t)sh | (uintptr_t)over);
		sh->conns++;
		keepalive(conn);
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		__atomic_sub_fetch(&live_conns, 1, __ATOMIC_ACQ_REL);
		sh->conns--;
	}
}

static enum MHD_Result accept_cb(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	(void)cls;
	(void)addr;
	(void)addrlen;
	if (__atomic_load_n(&live_conns, __ATOMIC_ACQUIRE) < conn_limit + HTTP_CONN_HEADROOM)
		return MHD_YES;
	conn_refused("closed");
	return MHD_NO;
}

static int conn_is_over(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci && ((uintptr_t)ci->socket_context & 1);
}
/* Request body bytes buffered on the node, in two pools: bodies of routes
 * that authenticate when the headers arrive (the proxied resources), and
 * bodies nobody has authenticated yet (the OAuth endpoints), which may hold
 * a quarter of the budget at most, so that anonymous uploads can never
 * starve authenticated ones. Bytes are charged as they arrive: an upload
 * that announces a length and stalls holds nothing. */
struct budget {
	long long used, cap;
};
static struct budget authed = { 0, 64ll * 1024 * 1024 }, anon = { 0, 16ll * 1024 * 1024 };

long long http_body_bytes_in_flight(void)
{
	return __atomic_load_n(&authed.used, __ATOMIC_RELAXED) + __atomic_load_n(&anon.used, __ATOMIC_RELAXED);
}

static struct budget *budget_of(const struct http_req *r)
{
	return r->route && r->route->on_headers ? &authed : &anon;
}

static int budget_spent(const struct http_req *r)
{
	const struct budget *b = budget_of(r);
	return __atomic_load_n(&b->used, __ATOMIC_RELAXED) >= b->cap;
}

/* Takes n bytes of r's pool; -1 when it is spent. */
static int budget_take(struct http_req *r, size_t n)
{
	struct budget *b = budget_of(r);
	if (n > (size_t)b->cap)
		return -1;
	long long now = __atomic_add_fetch(&b->used, (long long)n, __ATOMIC_ACQ_REL);
	if (now > b->cap) {
		__atomic_sub_fetch(&b->used, (long long)n, __ATOMIC_ACQ_REL);
		return -1;
	}
	r->reserved += n;
	return 0;
}

void http_body_release(struct http_req *r)
{
	if (r->reserved)
		__atomic_sub_fetch(&budget_of(r)->used, (long long)r->reserved, __ATOMIC_ACQ_REL);
	r->reserved = 0;
}

uint64_t http_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

long http_in_flight(void)
{
	return __atomic_load_n(&in_flight, __ATOMIC_ACQUIRE);
}

static enum http_method method_id(const char *m)
{
	static const struct {
		const char *name;
		enum http_method id;
	} tab[] = {
		{ "GET", HM_GET },         { "POST", HM_POST }, { "PUT", HM_PUT },     { "DELETE", HM_DELETE },
		{ "OPTIONS", HM_OPTIONS }, { "HEAD", HM_HEAD }, { "PATCH", HM_PATCH },
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(m, tab[i].name) == 0)
			return tab[i].id;
	return 0;
}

/* Finds the route for path and method. *path_known collects the methods of
 * routes that had the path (so the answer is 405 rather than 404). */
static const struct http_route *route_find(const struct http_server *s, const char *path, enum http_method m,
					   unsigned *path_known)
{
	*path_known = 0;
	enum http_method want = m == HM_HEAD ? HM_GET : m;
	for (size_t i = 0; i < s->nroutes; i++) {
		const struct http_route *rt = &s->routes[i];
		size_t n = strlen(rt->path);
		int hit = rt->match == MATCH_EXACT
				  ? strcmp(path, rt->path) == 0
				  : strncmp(path, rt->path, n) == 0 && (path[n] == '\0' || path[n] == '/');
		if (!hit)
			continue;
		*path_known |= rt->methods;
		if (rt->methods & (unsigned)want)
			return rt;
	}
	return NULL;
}

static void request_id(struct http_req *r)
{
	const char *given = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
	if (given) {
		size_t n = strlen(given);
		int ok = n > 0 && n <= LIM_REQUEST_ID;
		for (size_t i = 0; ok && i < n; i++) {
			char c = given[i];
			ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
			     c == '_' || c == '.';
		}
		if (ok) {
			memcpy(r->id, given, n + 1);
			return;
		}
	}
	/* Random, from the CSPRNG, but drawn 64 ids at a time per thread
	 * (RAND_bytes on every request was a getpid and a DRBG round each). An
	 * id is not a secret, yet one id must not tell the next. */
	static __thread unsigned char pool[512];
	static __thread size_t left;
	if (left < 8) {
		if (crypto_random(pool, sizeof(pool)) < 0)
			memset(pool, 0, sizeof(pool));
		left = sizeof(pool);
	}
	const unsigned char *rnd = pool + sizeof(pool) - left;
	left -= 8;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < 8; i++) {
		r->id[2 * i] = hex[rnd[i] >> 4];
		r->id[2 * i + 1] = hex[rnd[i] & 15];
	}
	r->id[16] = '\0';
}

static int trusted(const struct config *cfg, const char *ip)
{
	int fam;
	uint8_t a[16];
	struct cidr c;
	if (ip_parse(ip, &fam, a) < 0)
		return 0;
	for (size_t i = 0; i < cfg->http.n_trusted_proxies; i++)
		if (cidr_parse(cfg->http.trusted_proxies[i], &c) == 0 && cidr_contains(&c, fam, a))
			return 1;
	return 0;
}

struct join_ctx {
	const char *name;
	char *out;
	size_t len, cap;
	int overflow;
};

/* Joins every line of a header into one list, in order, with ", " (RFC
 * 9110 5.3): a load balancer that appends its own X-Forwarded-For line must
 * be read after the client's, not ignored. */
static enum MHD_Result join_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct join_ctx *j = cls;
	if (!key || !value || strcasecmp(key, j->name) != 0)
		return MHD_YES;
	size_t n = strlen(value), sep = j->len ? 2 : 0;
	if (j->len + sep + n + 1 > j->cap) {
		j->overflow = 1;
		return MHD_NO;
	}
	if (sep) {
		memcpy(j->out + j->len, ", ", 2);
		j->len += 2;
	}
	memcpy(j->out + j->len, value, n + 1);
	j->len += n;
	return MHD_YES;
}

static void client_from_xff(struct http_req *r, const char *xff, size_t len);

/* Behind a trusted load balancer the client is the right-most
 * X-Forwarded-For entry that is not itself a trusted proxy (entries to its
 * left were written by the client and prove nothing). */
static void forwarded_for(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	if (!cfg->http.n_trusted_proxies || !trusted(cfg, r->client_ip))
		return;
	/* All the lines fit: libmicrohttpd holds a request's head in
	 * LIM_HEADER_BYTES * 2 (MHD_OPTION_CONNECTION_MEMORY_LIMIT). Only the
	 * right-hand end is read, so a long client-written part cannot push
	 * the load balancer's entry out. */
	size_t cap = LIM_HEADER_BYTES * 2;
	char *xff = malloc(cap);
	if (!xff)
		return;
	struct join_ctx jc = { "X-Forwarded-For", xff, 0, cap, 0 };
	xff[0] = '\0';
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, join_iter, &jc);
	if (!jc.overflow && jc.len)
		client_from_xff(r, xff, jc.len);
	free(xff);
}

static void client_from_xff(struct http_req *r, const char *xff, size_t len)
{
	const struct config *cfg = r->app->cfg;
	const char *end = xff + len;
	while (end > xff) {
		const char *start = end;
		while (start > xff && start[-1] != ',')
			start--;
		const char *a = start, *b = end;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		char ip[48];
		size_t n = (size_t)(b - a);
		int fam;
		uint8_t raw[16];
		if (n == 0 || n >= sizeof(ip))
			return;
		memcpy(ip, a, n);
		ip[n] = '\0';
		if (ip_parse(ip, &fam, raw) < 0)
			return; /* garbage: keep the peer address */
		if (!trusted(cfg, ip)) {
			memcpy(r->client_ip, ip, n + 1);
			return;
		}
		end = start > xff ? start - 1 : xff;
	}
}

static void client_ip(struct http_req *r)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(r->client_ip, sizeof(r->client_ip), "unknown");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, r->client_ip,
			  sizeof(r->client_ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, r->client_ip,
			  sizeof(r->client_ip));
}

const char *http_header(struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct count_ctx {
	const char *name;
	int n;
};

static enum MHD_Result count_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct count_ctx *c = cls;
	if (key && strcmp(key, c->name) == 0)
		c->n++;
	return MHD_YES;
}

static enum MHD_Result count_iter_ci(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct count_ctx *c = cls;
	if (key && strcasecmp(key, c->name) == 0)
		c->n++;
	return MHD_YES;
}

int http_header_count(struct http_req *r, const char *name)
{
	struct count_ctx c = { name, 0 };
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_iter_ci, &c);
	return c.n;
}

int http_query_count(struct http_req *r, const char *name)
{
	struct count_ctx c = { name, 0 };
	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, count_iter, &c);
	return c.n;
}

/* Remembers the first header that could not be kept; the response becomes
 * a 500 when it is sent. */
static void header_failed(struct http_req *r, const char *name)
{
	if (r->broken)
		return;
	r->broken = 1;
	snprintf(r->broken_header, sizeof(r->broken_header), "%s", name ? name : "");
}

void http_add_header(struct http_req *r, const char *name, const char *value)
{
	if (r->broken)
		return; /* the answer is a 500 anyway */
	if (r->nheaders >= LIM_RESP_HEADERS || !name || !value) {
		header_failed(r, name);
		return;
	}
	char *n = strdup(name), *v = strdup(value);
	if (!n || !v) {
		free(n);
		if (v)
			crypto_wipe(v, strlen(v));
		free(v);
		header_failed(r, name);
		return;
	}
	r->headers[r->nheaders].name = n;
	r->headers[r->nheaders].value = v;
	r->nheaders++;
}

static void free_headers(struct http_req *r)
{
	/* Values may carry codes (Location) or cookies: wiped, all of them. */
	for (int i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		crypto_wipe(r->headers[i].value, strlen(r->headers[i].value));
		free(r->headers[i].value);
	}
	r->nheaders = 0;
}

struct wiped {
	size_t len;
	char data[];
};

static void free_wiped(void *p)
{
	struct wiped *w = (struct wiped *)((char *)p - offsetof(struct wiped, data));
	crypto_wipe(w->data, w->len);
	free(w);
}

/* The response object for a body (a wiped copy when it carries secrets). */
static struct MHD_Response *body_response(const struct http_req *r, const char *body, size_t len)
{
	if (!r->secret_response)
		return MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	/* A body with secrets (tokens, client secrets): our own copy, wiped
	 * when libmicrohttpd is done with it. */
	struct wiped *w = malloc(sizeof(*w) + len + 1);
	if (!w)
		return NULL;
	w->len = len;
	memcpy(w->data, body, len);
	struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, w->data, free_wiped);
	if (!resp)
		free_wiped(w->data);
	return resp;
}

/* An answer decided before a small body has arrived (a 401 at the headers)
 * waits for that body, which is read and dropped, never buffered: answering
 * and closing at once would leave it unread, and a close with unread data
 * resets the connection, which can destroy the answer on its way to the
 * client (RFC 9293 3.6). */
static int waits_for_body(struct http_req *r)
{
	return r->body_unread && !r->must_close && r->announced <= HTTP_EARLY_ANSWER_WAIT &&
	       !http_header(r, MHD_HTTP_HEADER_EXPECT); /* a client that asked first sent nothing */
}

/* Close after an answer sent before the body was read (what follows on the
 * connection is not a request we have framed), when the framing was bad, or
 * while draining. */
static int closes_after(const struct http_req *r, int wait_body)
{
	return __atomic_load_n(&draining, __ATOMIC_ACQUIRE) || (r->body_unread && !wait_body) || r->must_close;
}

/* Adds the headers every answer carries, then r's own; -1 (the name
 * recorded in r) when one of them cannot be added. */
static int add_one(struct http_req *r, struct MHD_Response *resp, const char *name, const char *value)
{
	if (MHD_add_response_header(resp, name, value) == MHD_YES)
		return 0;
	header_failed(r, name);
	return -1;
}

static int add_headers(struct http_req *r, struct MHD_Response *resp, const char *content_type, int close)
{
	if (content_type && add_one(r, resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) < 0)
		return -1;
	if (add_one(r, resp, "X-Request-Id", r->id) < 0 || add_one(r, resp, "X-Content-Type-Options", "nosniff") < 0)
		return -1;
	for (int i = 0; i < r->nheaders; i++)
		if (add_one(r, resp, r->headers[i].name, r->headers[i].value) < 0)
			return -1;
	if (close && add_one(r, resp, MHD_HTTP_HEADER_CONNECTION, "close") < 0)
		return -1;
	return 0;
}

static void queue(struct http_req *r, int status, struct MHD_Response *resp)
{
	r->status = status;
	if (r->offloaded) {
		/* Off the loop: the worker queues it once it resumes the connection. */
		r->pending = resp;
		return;
	}
	if (MHD_queue_response(r->conn, (unsigned)status, resp) != MHD_YES)
		r->status = 500;
	MHD_destroy_response(resp);
}

/* Queues resp now, or keeps it until the small body has arrived. */
static void queue_or_keep(struct http_req *r, int status, struct MHD_Response *resp, int wait_body)
{
	if (wait_body) {
		r->status = status;
		r->pending = resp;
		return;
	}
	queue(r, status, resp);
}

/* The answer to a response that could not be built whole: a bare 500 with
 * none of the handler's headers. */
static void send_broken(struct http_req *r)
{
	static const char body[] = "{\"error\":\"server_error\"}";
	log_msg(LOG_ERROR, "http.response_incomplete", r->id, "response header %s could not be added: answering 500",
		r->broken_header);
	free_headers(r);
	r->status = 500;
	int wait_body = waits_for_body(r);
	struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body,
								    MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return; /* MHD closes the connection */
	if (add_headers(r, resp, "application/json", closes_after(r, wait_body)) < 0) {
		MHD_destroy_response(resp);
		return;
	}
	queue_or_keep(r, 500, resp, wait_body);
}

void http_send(struct http_req *r, int status, const char *content_type, const char *body, size_t len)
{
	if (r->responded)
		return;
	r->responded = 1;
	if (r->broken) {
		send_broken(r);
		return;
	}
	struct MHD_Response *resp = body_response(r, body, len);
	if (!resp) {
		r->status = 500;
		free_headers(r);
		return; /* MHD closes the connection */
	}
	int wait_body = waits_for_body(r);
	if (add_headers(r, resp, content_type, closes_after(r, wait_body)) < 0) {
		MHD_destroy_response(resp);
		send_broken(r);
		return;
	}
	free_headers(r);
	queue_or_keep(r, status, resp, wait_body);
}

/* The answer kept until the (dropped) body had arrived. */
static void send_pending(struct http_req *r)
{
	struct MHD_Response *resp = r->pending;
	r->pending = NULL;
	if (MHD_queue_response(r->conn, (unsigned)r->status, resp) != MHD_YES)
		r->status = 500;
	MHD_destroy_response(resp);
}

void http_suspend(struct http_req *r)
{
	if (r->offloaded) {
		/* Not from the pool (the route says offload): answered now. */
		log_msg(LOG_ERROR, "http.suspend_offloaded", r->id, "handler %s suspended off the loop",
			r->route->label);
		http_send_error(r, 500, "server_error");
		return;
	}
	r->deferred = 1;
	MHD_suspend_connection(r->conn);
}

/* Queues resp with the passed-through headers (the downstream's: one
 * libmicrohttpd refuses is left out, as a proxy drops a malformed field)
 * and the handler's. */
static void send_passed(struct http_req *r, int status, struct MHD_Response *resp, const char *const *headers,
			size_t nheaders)
{
	for (size_t i = 0; i + 1 < nheaders * 2; i += 2)
		(void)MHD_add_response_header(resp, headers[i], headers[i + 1]);
	if (add_headers(r, resp, NULL, 0) < 0) {
		MHD_destroy_response(resp); /* frees a reader's cls */
		send_broken(r);
		return;
	}
	free_headers(r);
	queue(r, status, resp);
}

void http_send_stream(struct http_req *r, int status, MHD_ContentReaderCallback reader, void *cls,
		      MHD_ContentReaderFreeCallback free_cls, const char *const *headers, size_t nheaders)
{
	if (r->responded) {
		if (free_cls)
			free_cls(cls);
		return;
	}
	r->responded = 1;
	if (r->broken) {
		if (free_cls)
			free_cls(cls);
		send_broken(r);
		return;
	}
	/* libmicrohttpd callocs block_size with every response, and uses it
	 * only for a client without chunked encoding (HTTP/1.0): a chunked
	 * answer is read straight into the connection's write buffer. 16 KiB
	 * here was 6 KiB of every parked stream's memory. */
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, reader, cls,
								      free_cls);
	if (!resp) {
		if (free_cls)
			free_cls(cls);
		r->status = 500;
		free_headers(r);
		return;
	}
	send_passed(r, status, resp, headers, nheaders);
}

void http_send_complete(struct http_req *r, int status, const char *body, size_t len, const char *const *headers,
			size_t nheaders)
{
	if (r->responded)
		return;
	r->responded = 1;
	if (r->broken) {
		send_broken(r);
		return;
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp) {
		r->status = 500;
		free_headers(r);
		return;
	}
	send_passed(r, status, resp, headers, nheaders);
}

void http_send_json(struct http_req *r, int status, json_t *json)
{
	char *text = json ? json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(json);
	if (!text) {
		http_send(r, 500, "application/json", "{\"error\":\"server_error\"}", 24);
		return;
	}
	http_send(r, status, "application/json", text, strlen(text));
	crypto_wipe(text, strlen(text));
	free(text);
}

void http_send_oauth_error(struct http_req *r, int status, const char *error, const char *description)
{
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Pragma", "no-cache");
	json_t *o = json_pack("{s:s}", "error", error);
	if (o && description && json_object_set_new(o, "error_description", json_string(description)) < 0) {
		json_decref(o); /* not half an error: http_send_json answers 500 */
		o = NULL;
	}
	json_t *f = json_pack("{s:s, s:i, s:s?}", "error", error, "status", status, "description", description);
	log_event(LOG_INFO, "oauth.error", r->id, f);
	http_send_json(r, status, o);
}

void http_send_oauth_unavailable(struct http_req *r)
{
	http_add_header(r, "Retry-After", "1");
	http_send_oauth_error(r, 503, "temporarily_unavailable", "try again later");
}

void http_send_slow_down(struct http_req *r, int retry_after_s, const char *description)
{
	char ra[16];
	snprintf(ra, sizeof(ra), "%d", retry_after_s > 0 ? retry_after_s : 1);
	http_add_header(r, "Retry-After", ra);
	http_send_oauth_error(r, 429, "slow_down", description);
}

void http_send_error(struct http_req *r, int status, const char *msg)
{
	http_send_json(r, status, json_pack("{s:s}", "error", msg));
}

/* What the request headers say about framing, gathered in one pass. */
struct framing {
	int bad_name, bad_value;
	int n_cl, n_te, n_host;
	const char *cl;
	char te[512];
	size_t te_len;
	int te_overflow;
	size_t head_bytes; /* the header lines as sent: "name: value\r\n" each */
};

/* With sizes: a NUL inside a name or value (which the C-string accessors
 * would silently cut) is seen as the control byte it is. */
static enum MHD_Result framing_iter(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
				    const char *value, size_t value_size)
{
	struct framing *f = cls;
	if (!hdr_token_ok(key, key ? key_size : 0))
		f->bad_name = 1; /* "Name\t:", "Name :", empty names, control bytes */
	if (value && !hdr_value_ok(value, value_size, 1))
		f->bad_value = 1;
	f->head_bytes += (key ? key_size : 0) + (value ? value_size : 0) + 4;
	if (!key)
		return MHD_YES;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->n_cl++;
		f->cl = value;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		size_t n = value ? strlen(value) : 0, sep = f->n_te ? 2 : 0;
		f->n_te++;
		if (f->te_len + sep + n + 1 > sizeof(f->te)) {
			f->te_overflow = 1;
		} else {
			memcpy(f->te + f->te_len, ", ", sep);
			memcpy(f->te + f->te_len + sep, value ? value : "", n + 1);
			f->te_len += sep + n;
		}
	} else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->n_host++;
	}
	return MHD_YES;
}

static void framing_error(struct http_req *r, int status, const char *why)
{
	r->must_close = 1;
	log_msg(LOG_INFO, "http.bad_framing", r->id, "%s", why);
	http_send_json(r, status, json_pack("{s:s, s:s}", "error", "invalid_request", "error_description", why));
}

/* RFC 9110 field syntax and RFC 9112 message framing, for every route,
 * before anything else reads the request: where libmicrohttpd is lenient,
 * a second parser (a load balancer, the downstream) could frame or name
 * the same bytes differently. 0 fine (*cl set when present); -1 answered and
 * the connection closes. */
static int framing_check(struct http_req *r, const char *version, uint64_t *cl, int *cl_present)
{
	struct framing f;
	memset(&f, 0, sizeof(f));
	*cl = 0;
	*cl_present = 0;
	MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, framing_iter, &f);
	if (f.head_bytes > LIM_HEADER_BYTES) {
		/* libmicrohttpd's own bound is the connection's memory, twice this. */
		r->must_close = 1;
		log_msg(LOG_INFO, "http.headers_too_large", r->id, "request headers of %zu bytes", f.head_bytes);
		http_send_error(r, 431, "request_header_fields_too_large");
		return -1;
	}
	if (f.bad_name) {
		framing_error(r, 400, "a header name is not a token (whitespace before the colon, control bytes?)");
		return -1;
	}
	if (f.bad_value) {
		framing_error(r, 400, "a header value contains control characters");
		return -1;
	}
	int http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
	if (f.n_host > 1 || (f.n_host == 0 && !http10)) {
		framing_error(r, 400, "exactly one Host header is required");
		return -1;
	}
	if (f.n_te && (f.n_cl || http10)) {
		framing_error(r, 400, "Transfer-Encoding with Content-Length (or in HTTP/1.0)");
		return -1;
	}
	if (f.n_cl > 1) {
		framing_error(r, 400, "more than one Content-Length");
		return -1;
	}
	if (f.n_cl) {
		if (hdr_content_length(f.cl, cl) < 0) {
			framing_error(r, 400, "Content-Length is not a number");
			return -1;
		}
		*cl_present = 1;
	}
	if (f.n_te) {
		enum hdr_te te = f.te_overflow ? HDR_TE_INVALID : hdr_transfer_encoding(f.te);
		if (te == HDR_TE_UNSUPPORTED) {
			framing_error(r, 501, "only the chunked transfer coding is supported");
			return -1;
		}
		if (te != HDR_TE_CHUNKED) {
			framing_error(r, 400, "Transfer-Encoding must end with chunked");
			return -1;
		}
		/* Chunked request bodies are refused (RFC 9110 15.5.12): every
		 * client of these endpoints sends Content-Length, and
		 * libmicrohttpd reads chunk lines leniently (a bare LF ends one),
		 * where a front proxy could frame the same bytes otherwise. */
		framing_error(r, 411, "a request body needs a Content-Length (chunked uploads are not accepted)");
		return -1;
	}
	return 0;
}

/* The query string is measured on the raw request target, which only this
 * callback sees (libmicrohttpd decodes the arguments in place before the
 * access callback runs). Its answer becomes the request's *con_cls: NULL, or
 * this marker for a query over LIM_QUERY_BYTES, answered 414 by
 * request_start. */
static const char query_too_long = 1;

static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	(void)cls;
	(void)conn;
	const char *q = uri ? strchr(uri, '?') : NULL;
	if (q && strnlen(q + 1, LIM_QUERY_BYTES + 1) > LIM_QUERY_BYTES)
		return (void *)&query_too_long;
	return NULL;
}

static int is_marker(const void *p)
{
	return p == (const void *)&query_too_long;
}

static struct http_req *request_new(struct http_server *s, struct MHD_Connection *conn, const char *url,
				    const char *method)
{
	struct http_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	__atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
	r->conn = conn;
	r->app = s->app;
	r->start_ns = http_now_ns();
	r->method = method;
	r->method_id = method_id(method);
	r->path = url;
	request_id(r);
	client_ip(r);
	forwarded_for(r);
	return r;
}

/* 405 with Allow when the path is known for other methods, else 404. */
static void answer_unrouted(struct http_req *r, unsigned known)
{
	if (!known) {
		http_send_error(r, 404, "not_found");
		return;
	}
	char allow[64] = "";
	static const char *const names[] = { "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH" };
	for (unsigned i = 0; i < 7; i++)
		if (known & (1u << i))
			snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s", allow[0] ? ", " : "",
				 names[i]);
	http_add_header(r, "Allow", allow);
	http_send_error(r, 405, "method_not_allowed");
}

/* Once the route is known: the announced body against the route's limit,
 * the route's own look at the headers, then the node's body budget. Either
 * answers r or readies its body buffer. */
static void request_admit(struct http_req *r, uint64_t cl, int cl_present)
{
	r->body_expected = cl_present && cl > 0;
	r->announced = cl;
	r->body_unread = r->body_expected;
	if (cl_present && cl > r->route->max_body) {
		/* A body of a size a client may well be sending is read and
		 * dropped, and the 413 goes out once it is in: closing with it
		 * unread would reset the connection, and the reset can destroy
		 * the answer before the client reads it. A bigger one (or one
		 * the client waits to be asked for) is answered at once, and the
		 * connection closes. */
		if (cl <= HTTP_DISCARD_MAX && !http_header(r, MHD_HTTP_HEADER_EXPECT)) {
			r->body_too_large = 1;
			return;
		}
		http_send_error(r, 413, "request_too_large");
		return;
	}
	if (r->route->on_headers) {
		r->route->on_headers(r);
		if (r->responded)
			return;
	}
	/* The node holds a bounded total of request bodies: a crowd of
	 * uploads gets 503 instead of the node's memory. */
	if (r->body_expected && budget_spent(r)) {
		http_add_header(r, "Retry-After", "1");
		log_msg(LOG_WARN, "http.body_budget_spent", r->id, "body budget spent: %lld of %lld bytes",
			__atomic_load_n(&budget_of(r)->used, __ATOMIC_RELAXED), budget_of(r)->cap);
		http_send_error(r, 503, "busy");
		return;
	}
	buf_init(&r->body, r->route->max_body);
	r->body.secret = 1; /* bodies carry codes, secrets and tokens */
}

/* The first call for a request: its context, then every check that needs
 * only the request line and headers, in order. */
static enum MHD_Result request_start(struct http_server *s, struct MHD_Connection *conn, const char *url,
				     const char *method, const char *version, void **con_cls)
{
	int long_query = is_marker(*con_cls);
	struct http_req *r = request_new(s, conn, url, method);
	*con_cls = r;
	if (!r)
		return MHD_NO;
	uint64_t cl = 0;
	int cl_present = 0;
	if (framing_check(r, version, &cl, &cl_present) < 0)
		return MHD_YES;
	if (long_query || strlen(url) > LIM_PATH) {
		http_send_error(r, 414, "uri_too_long");
		return MHD_YES;
	}
	unsigned known = 0;
	r->route = route_find(s, url, r->method_id, &known);
	if (!r->route) {
		answer_unrouted(r, known);
		return MHD_YES;
	}
	request_admit(r, cl, cl_present);
	return MHD_YES;
}

/* A piece of the body. Without a Content-Length the excess can only be seen
 * as it comes: it is discarded and answered 413 at the end (libmicrohttpd
 * cannot answer in the middle of an upload), up to a bound past which the
 * connection is simply closed. */
static enum MHD_Result request_body(struct http_req *r, const char *data, size_t *size)
{
	size_t n = *size;
	*size = 0;
	if (!r->body_too_large && budget_take(r, n) < 0)
		return MHD_NO; /* past the node's budget mid-body: close */
	if (!r->body_too_large && buf_add(&r->body, data, n) < 0)
		r->body_too_large = 1;
	if (r->body_too_large) {
		r->discarded += n;
		if (r->discarded > HTTP_DISCARD_MAX)
			return MHD_NO;
	}
	return MHD_YES;
}

/* On the handler pool: the handler, then the worker is told (after which
 * r is the worker's again: it queues the answer and may free r). */
static void offloaded_run(void *arg, int refused)
{
	struct http_req *r = arg;
	if (refused) {
		/* The queue is full, the request waited too long, or the node stops. */
		metrics_count("http_handler_pool_refused_total", NULL, 1);
		http_send_oauth_unavailable(r);
	} else {
		r->route->handler(r);
	}
	if (!r->responded) {
		log_msg(LOG_ERROR, "http.no_response", r->id, "handler %s sent no response", r->route->label);
		http_send_error(r, 500, "server_error");
	}
	http_resume(r->conn);
}

/* The whole body is in: the handler runs (or the 413 goes out), on the
 * handler pool when it may block. */
static enum MHD_Result request_run(struct http_req *r)
{
	r->body_unread = 0;
	if (r->body_too_large) {
		http_send_error(r, 413, "request_too_large");
		return MHD_YES;
	}
	if (r->route->offload != HTTP_ON_LOOP && offload_running()) {
		r->offloaded = 1;
		r->deferred = 1;
		MHD_suspend_connection(r->conn);
		/* A full queue (or a pool that stops) is answered at once, unless
		 * the route must be served however busy the pool is: then, with no
		 * thread free, here; a pool gone meanwhile, here too. */
		int must = r->route->offload == HTTP_ON_POOL_OR_LOOP;
		int rc = must ? offload_push_idle(&r->job, offloaded_run, r) : offload_push(&r->job, offloaded_run, r);
		if (rc == -2 && !must)
			offloaded_run(r, 1);
		else if (rc < 0)
			offloaded_run(r, 0);
		return MHD_YES;
	}
	r->deferred = 0;
	r->route->handler(r);
	if (!r->responded && !r->deferred) {
		log_msg(LOG_ERROR, "http.no_response", r->id, "handler %s sent no response", r->route->label);
		http_send_error(r, 500, "server_error");
	}
	return MHD_YES;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				 const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_req *r = *con_cls;
	if ((!r || is_marker(r)) && conn_is_over(conn)) {
		/* Past max_connections: answered at once, and the connection
		 * closes (whatever body follows is not read). */
		if (!(r = request_new(cls, conn, url, method)))
			return MHD_NO;
		*con_cls = r;
		r->must_close = 1;
		conn_refused("503");
		http_add_header(r, "Retry-After", "1");
		http_send_error(r, 503, "temporarily_unavailable");
		return MHD_YES;
	}
	if (!r || is_marker(r))
		return request_start(cls, conn, url, method, version, con_cls);
	if (r->responded) {
		/* Answered early: what follows is dropped; a kept answer goes out
		 * once the body has all arrived. */
		if (*upload_data_size == 0 && r->pending) {
			r->body_unread = 0;
			send_pending(r);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size)
		return request_body(r, upload_data, upload_data_size);
	return request_run(r);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;
	*con_cls = NULL;
	if (!r || is_marker(r))
		return; /* the connection ended before the request was taken in */
	double secs = (double)(http_now_ns() - r->start_ns) / 1e9;
	int status = r->status ? r->status : 499;
	const char *label = r->route ? r->route->label : "unmatched";
	metrics_observe(label, status, secs);
	if (log_enabled(LOG_INFO)) {
		char path[257];
		snprintf(path, sizeof(path), "%s", r->path ? r->path : "");
		struct log_request_line q = { r->method,
					      label,
					      path,
					      r->client_ip,
					      status,
					      secs * 1000.0,
					      toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? (int)toe : -1 };
		log_request(status >= 500 ? LOG_WARN : LOG_INFO, r->id, &q);
	}
	if (r->ctx_free)
		r->ctx_free(r->ctx);
	if (r->pending)
		MHD_destroy_response(r->pending); /* the client left before its body was in */
	buf_free(&r->body);
	http_body_release(r);
	free_headers(r);
	free(r);
	__atomic_sub_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
}

/* Raises the soft RLIMIT_NOFILE to the hard one (a proxied connection holds
 * two descriptors: the client's and the downstream's), and warns when
 * max_connections asks for more than that allows. */
static void fd_limit_raise(long max_connections, int workers)
{
	long need = max_connections * 2 + 256 + (long)workers * (HTTP_SHARDS + 6);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need > rl.rlim_cur)
		log_msg(LOG_WARN, "http.fd_limit", NULL,
			"http.max_connections %ld needs about %ld file descriptors, the limit is %llu", max_connections,
			need, (unsigned long long)rl.rlim_cur);
}

/* ---- the workers' event loops ------------------------------------------ */

static const struct http_loop *loop_hooks;

void http_set_loop(const struct http_loop *loop)
{
	loop_hooks = loop;
}

#define LOOP_CMD (HTTP_LOOP_TAG | 1)     /* the worker's command eventfd */
#define LOOP_LISTEN (HTTP_LOOP_TAG | 2)  /* the shared listening socket */
#define LOOP_MHD (HTTP_LOOP_TAG | 0x100) /* + i: daemon i's own epoll set */
#define LOOP_EVENTS 128

/* The monotonic clock in ns, signed (the loop's deadlines use -1 for none). */
static long long loop_now(void)
{
	return (long long)http_now_ns();
}

static void worker_kick(struct http_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->cmdfd, &one, sizeof(one));
	(void)n; /* a full counter already wakes the loop */
}

/* When daemon i wants to run next (w->due[i], ns; -1: on events only),
 * asked right after it ran: one that did not run has not changed it (what
 * changes a daemon from outside, an added or resumed connection, marks it
 * dirty). */
static void shard_due(struct http_worker *w, int i)
{
	MHD_UNSIGNED_LONG_LONG t;
	w->due[i] = -1;
	if (MHD_get_timeout(w->d[i], &t) == MHD_YES)
		w->due[i] = loop_now() + (t > INT_MAX ? INT_MAX : (long long)t) * 1000000;
}

/* The loop's sleep (ms, -1: none): the nearest of what each daemon and the
 * hooks want. */
static int worker_timeout(struct http_worker *w, long long now)
{
	if (__atomic_load_n(&w->dirty, __ATOMIC_ACQUIRE))
		return 0;
	long long until = w->accept_at ? w->accept_at : -1;
	for (int i = 0; i < HTTP_SHARDS; i++)
		if (w->due[i] >= 0 && (until < 0 || w->due[i] < until))
			until = w->due[i];
	long long ms = until < 0 ? -1 : until <= now ? 0 : (until - now + 999999) / 1000000;
	if (ms > INT_MAX)
		ms = INT_MAX;
	if (w->ctx && loop_hooks) {
		int h = loop_hooks->timeout_ms(w->ctx);
		if (h >= 0 && (ms < 0 || h < ms))
			ms = h;
	}
	return (int)ms;
}

/* The daemon a new connection goes to: the first with room, else the
 * least loaded. */
static int worker_pick(const struct http_worker *w)
{
	int best = 0;
	for (int i = 0; i < HTTP_SHARDS; i++) {
		if (w->sh[i].conns < HTTP_SHARD_FILL)
			return i;
		if (w->sh[i].conns < w->sh[best].conns)
			best = i;
	}
	return best;
}

/* Accepts up to max connections from the listener and deals them out to
 * the worker's daemons (libmicrohttpd applies accept_cb, the node's
 * limit). Out of descriptors, accepting pauses a moment (the
 * listener stays readable: the loop would spin). The number taken. */
static int worker_accept(struct http_worker *w, int max)
{
	int taken = 0;
	while (taken < max) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int cfd = accept(w->s->listen_fd, (struct sockaddr *)&ss, &sl); /* made non-blocking by libmicrohttpd */
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				conn_refused("descriptors");
				if (w->listening && epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->s->listen_fd, NULL) == 0)
					w->listening = 0;
				w->accept_at = loop_now() + HTTP_ACCEPT_PAUSE_NS;
			}
			break;
		}
		taken++;
		(void)fcntl(cfd, F_SETFD, FD_CLOEXEC);
		int i = worker_pick(w);
		/* Closed by libmicrohttpd when refused. Served this round. */
		(void)MHD_add_connection(w->d[i], cfd, (struct sockaddr *)&ss, sl);
		__atomic_or_fetch(&w->dirty, 1u << i, __ATOMIC_ACQ_REL);
	}
	return taken;
}

static void worker_listen(struct http_worker *w)
{
	/* Every idle worker is woken and they race for the connection: with
	 * EPOLLEXCLUSIVE the kernel would hand nearly all to the same one. */
	struct epoll_event lev = { .events = EPOLLIN, .data.u64 = LOOP_LISTEN };
	if (!w->listening && !w->quiesced && epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->s->listen_fd, &lev) == 0)
		w->listening = 1;
}

/* On the worker: it stops accepting; what the kernel already queued
 * (handshakes completed while the workers were busy) is taken in, as
 * closing the listener would reset them after the client may have sent a
 * request. Every worker takes the queue after its own quiesce, so the last
 * one to quiesce empties it. */
static void worker_quiesce(struct http_worker *w)
{
	if (w->quiesced)
		return;
	w->quiesced = 1;
	if (w->listening)
		(void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->s->listen_fd, NULL);
	w->listening = 0;
	w->accept_at = 0;
	(void)worker_accept(w, 4096);
}

static void worker_ack(struct http_worker *w, int *flag)
{
	pthread_mutex_lock(&w->s->lock);
	*flag = 1;
	pthread_cond_broadcast(&w->s->cond);
	pthread_mutex_unlock(&w->s->lock);
}

static __thread struct http_worker *cur_worker; /* the worker whose loop runs on this thread */

/* The daemons with something to do: events on their epoll sets, a
 * connection resumed or added, their own timeout due. */
static void worker_run(struct http_worker *w)
{
	long long now = -1;
	if (w->accept_at) {
		now = loop_now();
		if (now >= w->accept_at) {
			w->accept_at = 0;
			worker_listen(w);
		}
	}
	unsigned run = __atomic_exchange_n(&w->dirty, 0u, __ATOMIC_ACQ_REL);
	for (int i = 0; i < HTTP_SHARDS; i++) {
		if (w->due[i] < 0 || (run & (1u << i)))
			continue;
		if (now < 0)
			now = loop_now();
		if (w->due[i] <= now)
			run |= 1u << i;
	}
	for (int i = 0; run && i < HTTP_SHARDS; i++) {
		if (run & (1u << i)) {
			(void)MHD_run(w->d[i]);
			shard_due(w, i);
		}
	}
}

/* 1 when a daemon of w has work now (marked, or its timeout is due). */
static int worker_busy(struct http_worker *w)
{
	if (__atomic_load_n(&w->dirty, __ATOMIC_ACQUIRE))
		return 1;
	long long now = loop_now();
	for (int i = 0; i < HTTP_SHARDS; i++)
		if (w->due[i] >= 0 && w->due[i] <= now)
			return 1;
	return 0;
}

void http_resume(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	const struct http_shard *sh = ci ? shard_of(ci->socket_context) : NULL;
	MHD_resume_connection(conn); /* sh stays: the connection is closed on its worker only */
	if (!sh)
		return;
	__atomic_or_fetch(&sh->w->dirty, 1u << sh->i, __ATOMIC_ACQ_REL);
	if (sh->w != cur_worker)
		worker_kick(sh->w);
}

/* A worker's loop: libmicrohttpd runs after every wake-up (external mode
 * has no inter-thread channel: a connection resumed by a hook is served
 * only when the daemon runs next, so a hook that resumes one asks for a
 * zero timeout, and another thread wakes the loop through the hook's own
 * descriptor). */
static void *worker_main(void *arg)
{
	struct http_worker *w = arg;
	const struct http_loop *lp = loop_hooks;
	if (lp) {
		w->ctx = lp->start(w->epfd);
		if (!w->ctx) {
			worker_ack(w, &w->failed);
			return NULL;
		}
	}
	worker_ack(w, &w->ready);
	cur_worker = w;
	struct epoll_event ev[LOOP_EVENTS];
	for (;;) {
		int n = epoll_wait(w->epfd, ev, LOOP_EVENTS, worker_timeout(w, loop_now()));
		for (int i = 0; i < n; i++) {
			uint64_t d = ev[i].data.u64;
			if (d == LOOP_CMD) {
				uint64_t v;
				ssize_t got = read(w->cmdfd, &v, sizeof(v));
				(void)got;
			} else if (d == LOOP_LISTEN) {
				(void)worker_accept(w, HTTP_ACCEPT_BATCH);
			} else if (d >= LOOP_MHD && d < LOOP_MHD + HTTP_SHARDS) {
				__atomic_or_fetch(&w->dirty, 1u << (d - LOOP_MHD), __ATOMIC_ACQ_REL);
			} else if (lp && w->ctx) {
				lp->event(w->ctx, d, ev[i].events);
			}
		}
		worker_run(w);
		if (lp && w->ctx)
			lp->after(w->ctx);
		if (__atomic_load_n(&w->want_quiesce, __ATOMIC_ACQUIRE) && !w->quiesced) {
			worker_quiesce(w);
			worker_ack(w, &w->quiesce_done);
		}
		if (__atomic_load_n(&w->want_stop, __ATOMIC_ACQUIRE))
			break;
	}
	/* What is due at once goes out before the daemons stop: an answer
	 * queued in the last round, or kept by the handler pool for a
	 * connection it resumed as it stopped (libmicrohttpd writes it a round
	 * after it is queued). */
	for (int round = 0; round < HTTP_STOP_ROUNDS && worker_busy(w); round++) {
		worker_run(w);
		if (lp && w->ctx)
			lp->after(w->ctx);
	}
	/* The hooks end what they drive first: libmicrohttpd 0.9.75 aborts
	 * when a daemon stops with a connection still suspended. */
	if (lp && w->ctx)
		lp->quit(w->ctx);
	/* The listener is the server's (closed once, by http_stop). */
	for (int i = 0; i < HTTP_SHARDS; i++) {
		MHD_stop_daemon(w->d[i]); /* every request completes (the hooks' too) */
		w->d[i] = NULL;
	}
	if (lp && w->ctx)
		lp->stop(w->ctx);
	w->ctx = NULL;
	return NULL;
}

/* Waits (server lock held) until every started worker set the flag at
 * offset off, or gave up; until the CLOCK_REALTIME deadline at most
 * (NULL: none). 0 done, -1 timed out. */
static int workers_wait(struct http_server *s, size_t off, const struct timespec *deadline)
{
	for (;;) {
		int all = 1;
		for (int i = 0; i < s->nw; i++) {
			const struct http_worker *w = &s->w[i];
			if (w->started && !w->failed && !*(const int *)(const void *)((const char *)w + off))
				all = 0;
		}
		if (all)
			return 0;
		if (!deadline)
			pthread_cond_wait(&s->cond, &s->lock);
		else if (pthread_cond_timedwait(&s->cond, &s->lock, deadline) != 0)
			return -1;
	}
}

static void workers_end(struct http_server *s)
{
	for (int i = 0; i < s->nw; i++) {
		struct http_worker *w = &s->w[i];
		if (w->started) {
			__atomic_store_n(&w->want_stop, 1, __ATOMIC_RELEASE);
			worker_kick(w);
			pthread_join(w->thread, NULL);
			w->started = 0;
		}
		for (int k = 0; k < HTTP_SHARDS; k++) {
			if (w->d[k]) { /* never run, or its loop never started */
				MHD_stop_daemon(w->d[k]);
				w->d[k] = NULL;
			}
		}
		if (w->epfd >= 0)
			close(w->epfd);
		if (w->cmdfd >= 0)
			close(w->cmdfd);
		w->epfd = w->cmdfd = -1;
	}
}

static void server_free(struct http_server *s)
{
	/* The pool first: what it still runs resumes its connections on the
	 * workers, which must still be there. */
	if (s->own_pool)
		offload_stop();
	workers_end(s);
	if (s->listen_fd != MHD_INVALID_SOCKET)
		close(s->listen_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->w);
	free(s);
}

/* The listening socket, shared by the workers (each worker's loop watches
 * it and accepts; non-blocking, as another may win); the bound port in
 * *port. */
static MHD_socket listener(const struct sockaddr_storage *ss, int *port)
{
	int v6 = ss->ss_family == AF_INET6, on = 1;
	socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return MHD_INVALID_SOCKET;
	struct sockaddr_storage got;
	socklen_t gl = sizeof(got);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
	    (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) < 0) ||
	    bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&got, &gl) < 0) {
		close(fd);
		return MHD_INVALID_SOCKET;
	}
	*port = ntohs(v6 ? ((struct sockaddr_in6 *)&got)->sin6_port : ((struct sockaddr_in *)&got)->sin_port);
	return fd;
}

/* One of a worker's daemons. It has no listening socket: the worker accepts
 * and adds the connections. */
static struct MHD_Daemon *daemon_start(struct http_server *s, struct http_shard *sh, unsigned flags, unsigned mhd_limit)
{
	const struct config *cfg = s->app->cfg;
	return MHD_start_daemon(flags | MHD_USE_NO_LISTEN_SOCKET, 0, accept_cb, s, access_cb, s,
				MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_NOTIFY_CONNECTION, conn_notify_cb,
				sh, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http.connection_timeout_s,
				MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(LIM_HEADER_BYTES * 2),
				/* Strict request syntax where libmicrohttpd has it (Host
		 * required, no bare LF, ...); framing_check does the rest. */
				MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
				MHD_OPTION_URI_LOG_CALLBACK, uri_cb, s, MHD_OPTION_END);
}

static int worker_setup(struct http_server *s, struct http_worker *w)
{
	w->s = s;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->epfd < 0 || w->cmdfd < 0)
		return -1;
	for (int i = 0; i < HTTP_SHARDS; i++) {
		const union MHD_DaemonInfo *ei = MHD_get_daemon_info(w->d[i], MHD_DAEMON_INFO_EPOLL_FD);
		struct epoll_event mev = { .events = EPOLLIN, .data.u64 = LOOP_MHD + (uint64_t)i };
		if (!ei || epoll_ctl(w->epfd, EPOLL_CTL_ADD, ei->epoll_fd, &mev) < 0)
			return -1;
		w->due[i] = -1;
	}
	struct epoll_event cev = { .events = EPOLLIN, .data.u64 = LOOP_CMD };
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->cmdfd, &cev) < 0)
		return -1;
	worker_listen(w);
	if (!w->listening)
		return -1;
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return -1;
	w->started = 1;
	return 0;
}

struct http_server *http_start(struct app *app, const char *host, int port, const struct http_route *routes,
			       size_t nroutes)
{
	const struct config *cfg = app->cfg;
	int nw = cfg->http.threads > 0 ? (int)cfg->http.threads : 1;
	struct http_server *s = calloc(1, sizeof(*s));
	struct http_worker *ws = calloc((size_t)nw, sizeof(*ws));
	if (!s || !ws) {
		free(s);
		free(ws);
		return NULL;
	}
	s->app = app;
	s->routes = routes;
	s->nroutes = nroutes;
	s->w = ws;
	s->listen_fd = MHD_INVALID_SOCKET;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	for (int i = 0; i < nw; i++)
		ws[i].epfd = ws[i].cmdfd = -1;
	s->nw = nw;
	__atomic_store_n(&draining, 0, __ATOMIC_RELEASE);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	/* HTTP_SHARDS daemons per worker in external epoll mode, driven by
	 * the worker's own loop (worker_main): no internal thread. */
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			goto fail;
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			goto fail;
	}
	if (cfg->http.max_body_bytes_in_flight > 0) {
		authed.cap = cfg->http.max_body_bytes_in_flight;
		anon.cap = authed.cap / 4;
	}
	fd_limit_raise(cfg->http.max_connections > 0 ? cfg->http.max_connections : 4096, nw);
	conn_limit = cfg->http.max_connections > 0 ? cfg->http.max_connections : 4096;
	__atomic_store_n(&live_conns, 0, __ATOMIC_RELEASE);
	/* Each daemon's own limit sits above the node's limit and its
	 * headroom, so that accept_cb, not a full backlog, refuses. */
	unsigned mhd_limit = (unsigned)(conn_limit + 2 * HTTP_CONN_HEADROOM);
	s->listen_fd = listener(&ss, &s->port);
	if (s->listen_fd == MHD_INVALID_SOCKET)
		goto fail;
	for (int i = 0; i < nw; i++)
		for (int k = 0; k < HTTP_SHARDS; k++) {
			ws[i].sh[k] = (struct http_shard){ &ws[i], k, 0 };
			if (!(ws[i].d[k] = daemon_start(s, &ws[i].sh[k], flags, mhd_limit)))
				goto fail;
		}
	for (int i = 0; i < nw; i++)
		if (worker_setup(s, &ws[i]) < 0)
			goto fail;
	pthread_mutex_lock(&s->lock);
	(void)workers_wait(s, offsetof(struct http_worker, ready), NULL);
	int failed = 0;
	for (int i = 0; i < nw; i++)
		failed |= ws[i].failed;
	pthread_mutex_unlock(&s->lock);
	if (failed)
		goto fail;
	/* Handlers that block run on the pool (none: on the workers). */
	if (cfg->http.handler_threads > 0 && !offload_running()) {
		if (offload_start((size_t)cfg->http.handler_threads, LIM_OFFLOAD_WAIT_MS, app->handler_thread_init) < 0)
			goto fail;
		s->own_pool = 1;
	}
	return s;
fail:
	log_msg(LOG_ERROR, "http.start_failed", NULL, "cannot listen on %s:%d", host, port);
	server_free(s);
	return NULL;
}

int http_port(const struct http_server *s)
{
	return s->port;
}

/* Stops new handshakes first: a socket filter on the listener drops pure
 * SYNs (clients retry them and, once the listener is closed, are refused,
 * so a load balancer moves them elsewhere before sending anything), while
 * handshakes already under way complete. Then the accept queue only holds
 * connections that will be served. */
static void drain_drop_syns(struct http_server *s)
{
	struct sock_filter drop_syn[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),          /* TCP flags */
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* SYN | ACK */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN alone: */
		BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop */
		BPF_STMT(BPF_RET | BPF_K, 0xFFFFFFFF),           /* else pass */
	};
	struct sock_fprog prog = { .len = sizeof(drop_syn) / sizeof(drop_syn[0]), .filter = drop_syn };
	if (setsockopt(s->listen_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0)
		usleep(HTTP_HANDSHAKE_SETTLE_US); /* in-flight handshakes land in the queue */
}

/* Refuses new connections at once, so that a load balancer retries them
 * elsewhere before sending anything: every worker stops accepting
 * (taking in what was queued), then the listening socket is replaced
 * (dup2) by an unbound one, closed by http_stop. */
static void drain_close_listener(struct http_server *s, int timeout_s)
{
	for (int i = 0; i < s->nw; i++) {
		__atomic_store_n(&s->w[i].want_quiesce, 1, __ATOMIC_RELEASE);
		worker_kick(&s->w[i]);
	}
	/* A worker held up in a handler (an upstream or a CIMD fetch) quiesces
	 * later; the listener closes by the drain deadline anyway. */
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_s > 0 ? timeout_s : 1;
	pthread_mutex_lock(&s->lock);
	int late = workers_wait(s, offsetof(struct http_worker, quiesce_done), &deadline) < 0;
	pthread_mutex_unlock(&s->lock);
	if (late)
		log_msg(LOG_WARN, "http.drain_quiesce_late", NULL, "a worker is busy: the listener closes without it");
	int dummy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (dummy < 0 || dup2(dummy, s->listen_fd) < 0) {
		/* No descriptor to spare: it stops listening, and keeps its number
		 * (a late worker still names it) until http_stop closes it. */
		(void)shutdown(s->listen_fd, SHUT_RDWR);
	}
	if (dummy >= 0)
		close(dummy);
}

/* Waits for in-flight requests, and for connections accepted before the
 * listener closed whose request has not fully arrived yet (they have no
 * request in flight, but a client already sent it): until no connection is
 * left, or none has had a request for a settle period. Returns the requests
 * still in flight. */
static long drain_wait(int timeout_s)
{
	uint64_t deadline = http_now_ns() + (uint64_t)timeout_s * 1000000000ull, quiet_since = 0;
	long left;
	for (;;) {
		left = http_in_flight();
		long conns = __atomic_load_n(&live_conns, __ATOMIC_ACQUIRE);
		uint64_t now = http_now_ns();
		if ((left == 0 && conns == 0) || now >= deadline)
			break;
		if (left > 0)
			quiet_since = 0;
		else if (!quiet_since)
			quiet_since = now;
		else if (now - quiet_since > HTTP_DRAIN_SETTLE_NS)
			break; /* only idle keep-alive connections remain */
		usleep(10000);
	}
	return left;
}

void http_drain(struct http_server *s, int timeout_s)
{
	if (!s)
		return;
	__atomic_store_n(&draining, 1, __ATOMIC_RELEASE);
	if (s->listen_fd != MHD_INVALID_SOCKET) {
		drain_drop_syns(s);
		drain_close_listener(s, timeout_s);
	}
	long left = drain_wait(timeout_s);
	if (left > 0)
		log_msg(LOG_WARN, "http.drain_timeout", NULL, "%ld requests still in flight", left);
}

void http_stop(struct http_server **sp)
{
	struct http_server *s = sp ? *sp : NULL;
	if (!s)
		return;
	server_free(s);
	*sp = NULL;
}
