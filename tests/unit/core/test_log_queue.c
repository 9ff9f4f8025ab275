/* log.c's queue and writer thread: lines of each thread keep their order
 * and their redaction; with an output nobody reads (a pipe left full) the
 * callers do not wait, lines past the cap are dropped and the drops are
 * counted in log.dropped lines; error and node.* lines queued over the cap
 * still come out. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

#define THREADS 2
#define ORDER_LINES 3000
#define FLOOD_LINES 20000 /* x THREADS x ~300 bytes: well past the 4 MiB cap */

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct worker {
	int t, lines;
	long long worst_ns, total_ns;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char pad[200];
	memset(pad, 'p', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	for (int i = 0; i < w->lines; i++) {
		long long a = now_ns();
		log_event(LOG_INFO, "q.line", "rid",
			  json_pack("{s:i, s:i, s:s, s:{s:s}, s:s}", "t", w->t, "i", i, "access_token", "SECRET_Q",
				    "nested", "client_secret", "SECRET_Q", "pad", pad));
		long long d = now_ns() - a;
		w->total_ns += d;
		if (d > w->worst_ns)
			w->worst_ns = d;
	}
	return NULL;
}

struct tally {
	int lines[THREADS], out_of_order, leaked, unredacted, bad;
	long long dropped_reported;
	int kept_error, kept_node;
};

/* Checks every line of text (one JSON object a line). */
static void tally(char *text, struct tally *y)
{
	int last[THREADS];
	for (int t = 0; t < THREADS; t++)
		last[t] = -1;
	memset(y, 0, sizeof(*y));
	if (strstr(text, "SECRET_Q"))
		y->leaked = 1;
	for (char *p = text, *nl; *p; p = nl + 1) {
		nl = strchr(p, '\n');
		if (!nl) {
			y->bad++; /* a cut line */
			break;
		}
		json_t *l = json_loadb(p, (size_t)(nl - p), 0, NULL);
		const char *ev = json_string_value(json_object_get(l, "event"));
		if (!ev) {
			y->bad++;
		} else if (strcmp(ev, "q.line") == 0) {
			int t = (int)json_integer_value(json_object_get(l, "t"));
			int i = (int)json_integer_value(json_object_get(l, "i"));
			if (t < 0 || t >= THREADS) {
				y->bad++;
			} else {
				y->out_of_order += i <= last[t];
				last[t] = i;
				y->lines[t]++;
			}
			const char *tok = json_string_value(json_object_get(l, "access_token"));
			const char *cs = json_string_value(
				json_object_get(json_object_get(l, "nested"), "client_secret"));
			y->unredacted += !tok || strcmp(tok, "[redacted]") != 0 || !cs || strcmp(cs, "[redacted]") != 0;
		} else if (strcmp(ev, "log.dropped") == 0) {
			y->dropped_reported += json_integer_value(json_object_get(l, "dropped"));
		} else if (strcmp(ev, "q.error") == 0) {
			y->kept_error++;
		} else if (strcmp(ev, "node.stopped") == 0) {
			y->kept_node++;
		}
		json_decref(l);
	}
}

static void flood(int lines, struct worker *w)
{
	pthread_t th[THREADS];
	for (int t = 0; t < THREADS; t++) {
		w[t] = (struct worker){ .t = t, .lines = lines };
		CHECK(pthread_create(&th[t], NULL, work, &w[t]) == 0);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
}

static char *read_file(FILE *f)
{
	fflush(f);
	long end = ftell(f);
	char *s = calloc(1, (size_t)end + 1);
	if (!s)
		return NULL;
	fseek(f, 0, SEEK_SET);
	if (fread(s, 1, (size_t)end, f) != (size_t)end)
		s[0] = '\0';
	return s;
}

static void test_order_and_redaction(void)
{
	FILE *f = tmpfile();
	CHECK(f != NULL);
	if (!f)
		return;
	log_init(LOG_INFO, f);
	unsigned long long before = log_dropped_total();
	struct worker w[THREADS];
	flood(ORDER_LINES, w);
	log_flush();
	char *text = read_file(f);
	CHECK(text != NULL);
	struct tally y;
	if (text) {
		tally(text, &y);
		CHECK(y.leaked == 0 && y.unredacted == 0 && y.bad == 0);
		CHECK(y.out_of_order == 0);
		for (int t = 0; t < THREADS; t++)
			CHECK(y.lines[t] == ORDER_LINES); /* nothing dropped below the cap */
	}
	CHECK(log_dropped_total() == before);
	free(text);
	log_init(LOG_INFO, NULL);
	fclose(f);
}

struct sink {
	int fd;
	char *buf;
	size_t len, cap;
};

static void *drain_pipe(void *arg)
{
	struct sink *s = arg;
	char chunk[65536];
	ssize_t n;
	while ((n = read(s->fd, chunk, sizeof(chunk))) > 0) {
		if (s->len + (size_t)n + 1 > s->cap) {
			size_t cap = (s->cap ? s->cap * 2 : 1 << 20) + (size_t)n;
			char *b = realloc(s->buf, cap);
			if (!b)
				break;
			s->buf = b;
			s->cap = cap;
		}
		memcpy(s->buf + s->len, chunk, (size_t)n);
		s->len += (size_t)n;
		s->buf[s->len] = '\0';
	}
	return NULL;
}

static void test_blocked_output_drops(void)
{
	int fds[2];
	CHECK(pipe(fds) == 0);
	FILE *wf = fdopen(fds[1], "w");
	CHECK(wf != NULL);
	if (!wf)
		return;
	log_init(LOG_INFO, wf);
	unsigned long long before = log_dropped_total();
	struct worker w[THREADS];
	long long t0 = now_ns();
	flood(FLOOD_LINES, w); /* nobody reads the pipe: the writer is stuck in its first write */
	long long took = now_ns() - t0;
	/* Queued over the cap: these must not be lost. */
	log_msg(LOG_ERROR, "q.error", NULL, "kept");
	log_msg(LOG_INFO, "node.stopped", NULL, "kept");
	unsigned long long dropped = log_dropped_total() - before;
	fprintf(stderr, "  flood: %d lines in %.1f ms, worst call %.2f ms, mean %.0f ns, %llu dropped\n",
		THREADS * FLOOD_LINES, (double)took / 1e6,
		(double)(w[0].worst_ns > w[1].worst_ns ? w[0].worst_ns : w[1].worst_ns) / 1e6,
		(double)(w[0].total_ns + w[1].total_ns) / (THREADS * FLOOD_LINES), dropped);
	CHECK(dropped > 0);
	for (int t = 0; t < THREADS; t++)
		CHECK(w[t].worst_ns < 1000LL * 1000000LL); /* no caller waited on the pipe */

	struct sink s = { .fd = fds[0] };
	pthread_t rd;
	CHECK(pthread_create(&rd, NULL, drain_pipe, &s) == 0);
	log_flush();
	log_init(LOG_INFO, NULL);
	fclose(wf); /* EOF for the reader */
	pthread_join(rd, NULL);
	close(fds[0]);
	CHECK(s.buf != NULL);
	if (s.buf) {
		struct tally y;
		tally(s.buf, &y);
		CHECK(y.leaked == 0 && y.unredacted == 0 && y.bad == 0);
		CHECK(y.out_of_order == 0);
		CHECK(y.kept_error == 1 && y.kept_node == 1);
		/* Every line is either written or counted in a log.dropped line. */
		CHECK((unsigned long long)y.dropped_reported == dropped);
		CHECK((long long)y.lines[0] + y.lines[1] + y.dropped_reported == (long long)THREADS * FLOOD_LINES);
		CHECK(y.lines[0] > 0 && y.lines[1] > 0);
	}
	free(s.buf);
}

/* After log_shutdown a line is written at once, on the caller's thread. */
static void test_shutdown(void)
{
	FILE *f = tmpfile();
	CHECK(f != NULL);
	if (!f)
		return;
	log_init(LOG_INFO, f);
	log_msg(LOG_INFO, "node.stopped", NULL, "queued");
	log_shutdown(); /* writes it */
	char *text = read_file(f);
	CHECK(text && strstr(text, "\"msg\":\"queued\""));
	free(text);
	fseek(f, 0, SEEK_END);
	log_msg(LOG_ERROR, "after.shutdown", NULL, "sync");
	text = read_file(f);
	CHECK(text && strstr(text, "after.shutdown"));
	free(text);
	log_init(LOG_INFO, NULL);
	fclose(f);
}

int main(void)
{
	test_order_and_redaction();
	test_blocked_output_drops();
	test_shutdown();
	TEST_DONE();
}
