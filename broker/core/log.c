#include "log.h"

#include <ctype.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

/* ---- the queue and its writer ------------------------------------------ */

/* A caller formats its line on its own thread and appends it to a list under
 * qlock (a pointer swap, never a write); one writer thread takes the whole
 * list at once and writes it with one fwrite per LOG_STAGE bytes. Queued
 * bytes are capped: past LOG_QUEUE_MAX a line is dropped and counted, and
 * the writer reports the count in one log.dropped line once it has written
 * what it had; a line that must not be lost (node.*, error) may go on up to
 * LOG_QUEUE_HARD. Without a writer (it could not start, or after
 * log_shutdown) a line is written on the caller's thread, as before. */
#define LOG_QUEUE_MAX (4u << 20)
#define LOG_QUEUE_HARD (8u << 20)
#define LOG_STAGE (64u << 10)
#define LOG_SHUTDOWN_WAIT_MS 2000

struct line {
	struct line *next;
	size_t len;
	char text[];
};

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qwake = PTHREAD_COND_INITIALIZER; /* the writer: a line, a stop */
static pthread_cond_t qdone = PTHREAD_COND_INITIALIZER; /* log_flush: lines written */
static struct line *qhead, **qtail = &qhead;
static size_t qbytes;
static unsigned long long enq_seq, done_seq; /* lines queued, lines written (or dropped) */
static size_t dropped_pending;
static unsigned long long dropped_total;
static FILE *log_out; /* qlock */
static pthread_t writer;
static int writer_running, writer_stop, atexit_done;
static int busy;                                              /* qlock: a batch or a line is being written */
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER; /* writes without a writer */

static FILE *out_or_stderr(FILE *f)
{
	return f ? f : stderr;
}

/* Now, as a line's "time" (UTC, milliseconds). */
static void time_now(char when[40])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t w = strftime(when, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + w, 40 - w, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The log.dropped line, built without an allocation (the writer makes none). */
static size_t dropped_line(char *buf, size_t cap, size_t n)
{
	char when[40];
	time_now(when);
	int k = snprintf(buf, cap,
			 "{\"time\":\"%s\",\"level\":\"warn\",\"event\":\"log.dropped\",\"dropped\":%zu,"
			 "\"msg\":\"log lines dropped: the log output is not keeping up\"}\n",
			 when, n);
	return k > 0 && (size_t)k < cap ? (size_t)k : 0;
}

/* Writes the list to out: lines are gathered into stage and written one
 * fwrite per stage-full (a longer line alone), then flushed once. */
static void write_lines(FILE *out, struct line *l, size_t *nlines)
{
	static char stage[LOG_STAGE]; /* writer thread only */
	size_t used = 0;
	*nlines = 0;
	while (l) {
		struct line *next = l->next;
		if (used > 0 && used + l->len > sizeof(stage)) {
			fwrite(stage, 1, used, out);
			used = 0;
		}
		if (l->len > sizeof(stage)) {
			fwrite(l->text, 1, l->len, out);
		} else {
			memcpy(stage + used, l->text, l->len);
			used += l->len;
		}
		free(l);
		(*nlines)++;
		l = next;
	}
	if (used > 0)
		fwrite(stage, 1, used, out);
	fflush(out);
}

static void *writer_loop(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&qlock);
	for (;;) {
		while ((!qhead && !dropped_pending && !writer_stop) || busy)
			pthread_cond_wait(&qwake, &qlock);
		if (!qhead && !dropped_pending)
			break; /* stopping, all written */
		struct line *batch = qhead;
		size_t bytes = qbytes;
		qhead = NULL;
		qtail = &qhead;
		FILE *out = out_or_stderr(log_out);
		busy = 1;
		pthread_mutex_unlock(&qlock);
		size_t n = 0;
		write_lines(out, batch, &n);
		pthread_mutex_lock(&qlock);
		busy = 0;
		qbytes -= bytes;
		done_seq += n;
		if (dropped_pending && !qhead) {
			/* Caught up: the count of what was dropped meanwhile. */
			size_t d = dropped_pending;
			dropped_pending = 0;
			pthread_mutex_unlock(&qlock);
			char buf[256];
			size_t len = dropped_line(buf, sizeof(buf), d);
			if (len) {
				fwrite(buf, 1, len, out);
				fflush(out);
			}
			pthread_mutex_lock(&qlock);
		}
		pthread_cond_broadcast(&qdone);
	}
	pthread_mutex_unlock(&qlock);
	return NULL;
}

/* A forked child has no writer: what the parent had queued is the
 * parent's to write. */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&qlock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&qlock);
}

static void atfork_child(void)
{
	for (struct line *l = qhead, *next; l; l = next) {
		next = l->next;
		free(l);
	}
	qhead = NULL;
	qtail = &qhead;
	qbytes = 0;
	enq_seq = done_seq = 0;
	dropped_pending = 0;
	writer_running = writer_stop = 0;
	pthread_mutex_unlock(&qlock);
}

/* Waits until every line queued before the call is written, at most
 * wait_ms (< 0: no bound). qlock held. 0 done; -1 timed out. */
static int flush_locked(long wait_ms)
{
	unsigned long long target = enq_seq;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (wait_ms >= 0) {
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
	}
	while (writer_running && (done_seq < target || dropped_pending)) {
		if (wait_ms < 0)
			pthread_cond_wait(&qdone, &qlock);
		else if (pthread_cond_timedwait(&qdone, &qlock, &ts) != 0)
			return -1;
	}
	return 0;
}

void log_flush(void)
{
	pthread_mutex_lock(&qlock);
	(void)flush_locked(-1);
	pthread_mutex_unlock(&qlock);
}

void log_shutdown(void)
{
	pthread_mutex_lock(&qlock);
	if (!writer_running) {
		pthread_mutex_unlock(&qlock);
		return;
	}
	int flushed = flush_locked(LOG_SHUTDOWN_WAIT_MS) == 0;
	writer_stop = 1;
	pthread_cond_signal(&qwake);
	pthread_mutex_unlock(&qlock);
	/* A writer stuck on an output nobody reads is left behind rather than
	 * holding up the exit. */
	if (flushed)
		pthread_join(writer, NULL);
	else
		pthread_detach(writer);
	pthread_mutex_lock(&qlock);
	writer_running = 0;
	writer_stop = 0;
	pthread_mutex_unlock(&qlock);
}

unsigned long long log_dropped_total(void)
{
	pthread_mutex_lock(&qlock);
	unsigned long long n = dropped_total;
	pthread_mutex_unlock(&qlock);
	return n;
}

void log_init(enum log_level min, FILE *out)
{
	min_level = min;
	pthread_mutex_lock(&qlock);
	if (!atexit_done) {
		atexit_done = 1;
		(void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
		(void)atexit(log_shutdown); /* node.stopped and errors are written before exit */
	}
	(void)flush_locked(-1); /* what was logged before goes to the old output */
	log_out = out;
	if (!writer_running) {
		writer_stop = 0;
		writer_running = pthread_create(&writer, NULL, writer_loop, NULL) == 0;
	}
	pthread_mutex_unlock(&qlock);
}

/* Queues text[0..n) (a whole line, newline included), or writes it here
 * when there is no writer. Never waits for the output. */
/* The caller writes its line itself when that cannot block: nothing is
 * queued or being written (the order stays), the line is no longer than
 * what a pipe takes atomically, and the output has room for it now. Else
 * the writer thread writes it. */
static int write_now(FILE *out, const char *text, size_t n)
{
	struct pollfd p = { .fd = fileno(out), .events = POLLOUT, .revents = 0 };
	if (n > PIPE_BUF || p.fd < 0 || poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0)
		return 0;
	fwrite(text, 1, n, out);
	fflush(out);
	return 1;
}

static void emit(const char *text, size_t n, int must_keep)
{
	pthread_mutex_lock(&qlock);
	if (writer_running && !qhead && !busy && !dropped_pending) {
		FILE *out = out_or_stderr(log_out);
		busy = 1;
		pthread_mutex_unlock(&qlock);
		int done = write_now(out, text, n);
		pthread_mutex_lock(&qlock);
		busy = 0;
		/* The writer waits for this write only when it has lines to
		 * write meanwhile: waking it for nothing was a context switch
		 * per line. */
		if (qhead || dropped_pending || writer_stop)
			pthread_cond_signal(&qwake);
		if (done) {
			pthread_mutex_unlock(&qlock);
			return;
		}
	}
	pthread_mutex_unlock(&qlock);
	struct line *l = malloc(sizeof(*l) + n);
	pthread_mutex_lock(&qlock);
	if (!writer_running) {
		FILE *out = out_or_stderr(log_out);
		pthread_mutex_unlock(&qlock);
		pthread_mutex_lock(&sync_lock);
		fwrite(text, 1, n, out);
		fflush(out);
		pthread_mutex_unlock(&sync_lock);
		free(l);
		return;
	}
	if (!l || qbytes + n > (must_keep ? LOG_QUEUE_HARD : LOG_QUEUE_MAX)) {
		dropped_pending++;
		dropped_total++;
		pthread_cond_signal(&qwake); /* the writer reports it once it has caught up */
		pthread_mutex_unlock(&qlock);
		free(l);
		return;
	}
	l->next = NULL;
	l->len = n;
	memcpy(l->text, text, n);
	*qtail = l;
	qtail = &l->next;
	qbytes += n;
	enq_seq++;
	pthread_cond_signal(&qwake);
	pthread_mutex_unlock(&qlock);
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

int log_enabled(enum log_level lvl)
{
	return lvl >= min_level;
}

int log_is_secret_key(const char *key)
{
	static const char *const parts[] = { "token",  "secret",     "password",  "passwd", "verifier", "authorization",
					     "cookie", "credential", "assertion", "nonce",  "csrf" };
	char low[64];
	size_t n = strlen(key);
	if (n >= sizeof(low))
		return 1; /* absurdly long names are not ours: hide them */
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)tolower((unsigned char)key[i]);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (strstr(low, parts[i]))
			return 1;
	if (strcmp(low, "code") == 0 || strcmp(low, "key") == 0 || strcmp(low, "state") == 0)
		return 1;
	if (n > 5 && strcmp(low + n - 5, "_code") == 0)
		return 1;
	if (n > 4 && strcmp(low + n - 4, "_key") == 0)
		return 1;
	return 0;
}

/* Below LOG_REDACT_DEPTH a container is replaced whole: what cannot be
 * inspected is not printed. */
#define LOG_REDACT_DEPTH 8

static int too_deep(const json_t *v, int depth)
{
	return depth >= LOG_REDACT_DEPTH && (json_is_object(v) || json_is_array(v));
}

/* -1 when a value could not be replaced (no memory for the string): it is
 * still in obj, which must not be printed. */
static int redact(json_t *obj, int depth)
{
	const char *k;
	json_t *v;
	size_t i;
	if (json_is_object(obj)) {
		json_object_foreach(obj, k, v)
		{
			if (log_is_secret_key(k) || too_deep(v, depth)) {
				if (json_object_set_new(obj, k, json_string("[redacted]")) < 0)
					return -1;
			} else if (redact(v, depth + 1) < 0) {
				return -1;
			}
		}
	} else if (json_is_array(obj)) {
		json_array_foreach(obj, i, v)
		{
			if (too_deep(v, depth)) {
				if (json_array_set_new(obj, i, json_string("[redacted]")) < 0)
					return -1;
			} else if (redact(v, depth + 1) < 0) {
				return -1;
			}
		}
	}
	return 0;
}

void log_event(enum log_level lvl, const char *event, const char *request_id, json_t *obj)
{
	/* A node's lifecycle (node.started, node.draining, node.stopped) is
	 * printed whatever the level: operators and supervisors wait for it. */
	if (lvl < min_level && strncmp(event, "node.", 5) != 0) {
		json_decref(obj);
		return;
	}
	json_t *line = json_object();
	if (!line) {
		json_decref(obj);
		return;
	}
	char when[40];
	time_now(when);
	json_object_set_new(line, "time", json_string(when));
	json_object_set_new(line, "level", json_string(level_names[lvl]));
	json_object_set_new(line, "event", json_string(event));
	if (request_id)
		json_object_set_new(line, "request_id", json_string(request_id));
	/* A line whose fields could not all be redacted is dropped whole. */
	int printable = 1;
	if (json_is_object(obj)) {
		printable = redact(obj, 0) == 0;
		if (printable)
			json_object_update_missing(line, obj);
	}
	json_decref(obj);
	char *text = NULL;
	if (printable)
		text = json_dumps(line,
				  JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
	json_decref(line);
	if (!text)
		return;
	size_t n = strlen(text);
	text[n] = '\n'; /* over the NUL: emit takes a length */
	emit(text, n + 1, lvl == LOG_ERROR || strncmp(event, "node.", 5) == 0);
	free(text);
}

/* Appends text as it is (the line's own JSON punctuation). */
static size_t esc_raw(char *out, size_t at, size_t cap, const char *text)
{
	for (; *text; text++) {
		if (at >= cap)
			return cap;
		out[at++] = *text;
	}
	return at;
}

/* Appends s as a JSON string body (no quotes) as jansson writes it with
 * JSON_ENSURE_ASCII: a \u escape of four upper-case hex digits for controls and non-ASCII (UTF-16 surrogate
 * pairs above U+FFFF), U+FFFD for a byte that is not UTF-8; at most the
 * first max bytes of s (a whole character at most 3 bytes past them).
 * Returns the new length, or cap when it does not fit. */
static size_t esc(char *out, size_t at, size_t cap, const char *str, size_t max)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)str, *stop = p + max;
	while (*p && p < stop && at < cap) {
		unsigned c = *p, cp;
		size_t n = 1;
		if (c < 0x80) {
			cp = c;
		} else {
			n = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
			cp = n == 4 ? c & 7 : n == 3 ? c & 15 : c & 31;
			for (size_t i = 1; i < n; i++) {
				if ((p[i] & 0xC0) != 0x80) {
					n = 0;
					break;
				}
				cp = cp << 6 | (p[i] & 63);
			}
			if (n == 0 || (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
			    (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
				cp = 0xFFFD;
				n = 1;
			}
		}
		p += n;
		char u[13];
		size_t k = 0;
		if (cp == '"' || cp == '\\') {
			u[k++] = '\\';
			u[k++] = (char)cp;
		} else if (cp >= 0x20 && cp < 0x80) {
			u[k++] = (char)cp;
		} else if (cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f') {
			u[k++] = '\\';
			u[k++] = (char)(cp == '\n'   ? 'n'
					: cp == '\r' ? 'r'
					: cp == '\t' ? 't'
					: cp == '\b' ? 'b'
						     : 'f');
		} else {
			unsigned units[2] = { cp, 0 };
			int nu = 1;
			if (cp > 0xFFFF) {
				units[0] = 0xD800 | ((cp - 0x10000) >> 10);
				units[1] = 0xDC00 | ((cp - 0x10000) & 0x3FF);
				nu = 2;
			}
			for (int i = 0; i < nu; i++) {
				u[k++] = '\\';
				u[k++] = 'u';
				for (int sh = 12; sh >= 0; sh -= 4)
					u[k++] = hex[(units[i] >> sh) & 15];
			}
		}
		if (at + k >= cap)
			return cap;
		memcpy(out + at, u, k);
		at += k;
	}
	return at;
}

void log_request(enum log_level lvl, const char *request_id, const struct log_request_line *q)
{
	if (lvl < min_level)
		return;
	char buf[4096], when[40], num[40];
	time_now(when);
	/* A real as jansson prints it (JSON_REAL_PRECISION(6)): %.6g, a ".0"
	 * when it would read as an integer, no '+' or leading zeros in the
	 * exponent. */
	int k = snprintf(num, sizeof(num), "%.6g", q->duration_ms);
	if (k <= 0 || (size_t)k >= sizeof(num) - 2)
		return;
	char *e = strchr(num, 'e');
	if (e) {
		char *d = e + 1, *src = e + 1;
		if (*src == '+')
			src++;
		else if (*src == '-')
			*d++ = *src++;
		while (*src == '0' && src[1])
			src++;
		memmove(d, src, strlen(src) + 1);
	} else if (!strchr(num, '.')) {
		size_t l = strlen(num); /* k < sizeof(num) - 2: room for ".0" */
		num[l] = '.';
		num[l + 1] = '0';
		num[l + 2] = '\0';
	}
	size_t at = 0, cap = sizeof(buf) - 1;
	const char *parts[] = { "{\"time\":\"", when, "\",\"level\":\"", level_names[lvl],
				"\",\"event\":\"http.request\"" };
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		at = i == 1 || i == 3 ? esc(buf, at, cap, parts[i], 64) : esc_raw(buf, at, cap, parts[i]);
	if (request_id) {
		at = esc_raw(buf, at, cap, ",\"request_id\":\"");
		at = esc(buf, at, cap, request_id, 64);
		at = esc_raw(buf, at, cap, "\"");
	}
	const char *names[] = { "method", "route", "path" }, *vals[] = { q->method, q->route, q->path };
	const size_t maxes[] = { 32, 64, 256 }; /* each field bounded: the line always fits */
	for (int i = 0; i < 3; i++) {
		at = esc_raw(buf, at, cap, ",\"");
		at = esc_raw(buf, at, cap, names[i]);
		at = esc_raw(buf, at, cap, "\":\"");
		at = esc(buf, at, cap, vals[i] ? vals[i] : "", maxes[i]);
		at = esc_raw(buf, at, cap, "\"");
	}
	char tail[96];
	snprintf(tail, sizeof(tail), ",\"status\":%d,\"duration_ms\":%s,\"client\":\"", q->status, num);
	at = esc_raw(buf, at, cap, tail);
	at = esc(buf, at, cap, q->client ? q->client : "", 64);
	at = esc_raw(buf, at, cap, "\"");
	if (q->terminated >= 0) {
		snprintf(tail, sizeof(tail), ",\"terminated\":%d", q->terminated);
		at = esc_raw(buf, at, cap, tail);
	}
	at = esc_raw(buf, at, cap, "}\n");
	if (at >= cap)
		return; /* cannot happen: every field is bounded (at most 12 bytes out per input byte) */
	emit(buf, at, 0);
}

void log_msg(enum log_level lvl, const char *event, const char *request_id, const char *fmt, ...)
{
	if (lvl < min_level && strncmp(event, "node.", 5) != 0)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap); /* truncation is acceptable for a message */
	va_end(ap);
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "msg", json_string(msg));
	log_event(lvl, event, request_id, o);
}
