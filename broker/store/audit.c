#include "audit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

void audit_log_line(const struct audit *a, json_t *detail)
{
	json_t *f = json_pack("{s:s?, s:s?, s:s?, s:s?}", "actor", a->actor, "subject", a->subject, "client_id",
			      a->client_id, "grant_id", a->grant_id);
	if (f && detail)
		json_object_set(f, "detail", detail);
	log_event(LOG_INFO, a->event, a->request_id, f);
}

int audit_record(struct db_conn *c, const struct audit *a, json_t *detail)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO audit_events(event, actor, subject, client_id, grant_id, request_id, detail) "
		"VALUES ($1, $2, $3, $4, $5::uuid, $6, coalesce($7::jsonb, '{}'::jsonb))");
	char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
	const char *p[] = { a->event, a->actor, a->subject, a->client_id, a->grant_id, a->request_id, text };
	/* Out of memory for the detail: no record rather than one without it
	 * (the caller rolls back what it describes). */
	PGresult *r = detail && !text ? NULL : db_exec_ok(c, &q, 7, p);
	free(text);
	audit_log_line(a, detail);
	json_decref(detail);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* ---- the batched writer ------------------------------------------------- */

/* The queue is a fixed ring: enqueueing is a copy under a mutex, never an
 * allocation beyond the record itself, never a database call. The writer
 * takes a batch out, writes it with its own connection wait, retries a
 * failed batch a few times and then drops it; meanwhile new records queue
 * up to AUDIT_QUEUE_MAX and are dropped beyond it. Every dropped record is
 * counted (mcpb_audit_dropped_total) and reported in an audit.dropped line
 * at most every AUDIT_DROP_LOG_S. */
#define AUDIT_QUEUE_MAX 8192
#define AUDIT_BATCH 256
#define AUDIT_DB_WAIT_MS 5000 /* the writer's wait for a pool connection */
#define AUDIT_ATTEMPTS 3      /* writes of one batch before it is dropped */
#define AUDIT_RETRY_MS 1000
#define AUDIT_DROP_LOG_S 10

struct queued {
	char *event, *actor, *subject, *client_id, *grant_id, *request_id;
	json_t *detail;
	char at[40]; /* when it happened, not when it was written */
};

static struct queued ring[AUDIT_QUEUE_MAX];
static size_t qhead, qlen;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static pthread_t writer;
static int writer_running, writer_stop;
static struct app *writer_app;

enum drop_reason { DROP_QUEUE_FULL, DROP_WRITE_FAILED, DROP_NO_MEMORY, DROP_REASONS };
static pthread_mutex_t dlock = PTHREAD_MUTEX_INITIALIZER;
static size_t dropped_pending[DROP_REASONS];
static time_t dropped_reported; /* CLOCK_MONOTONIC seconds of the last line */
static int dropped_reported_once;

static void queued_free(struct queued *q)
{
	free(q->event);
	free(q->actor);
	free(q->subject);
	free(q->client_id);
	free(q->grant_id);
	free(q->request_id);
	json_decref(q->detail);
	memset(q, 0, sizeof(*q));
}

/* Emits the pending drop counts when the last line is AUDIT_DROP_LOG_S old
 * (or force): one line per window however many records were dropped. */
static void drop_report(int force)
{
	size_t n[DROP_REASONS] = { 0 };
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&dlock);
	size_t total = dropped_pending[DROP_QUEUE_FULL] + dropped_pending[DROP_WRITE_FAILED] +
		       dropped_pending[DROP_NO_MEMORY];
	if (total > 0 && (force || !dropped_reported_once || ts.tv_sec - dropped_reported >= AUDIT_DROP_LOG_S)) {
		memcpy(n, dropped_pending, sizeof(n));
		memset(dropped_pending, 0, sizeof(dropped_pending));
		dropped_reported = ts.tv_sec;
		dropped_reported_once = 1;
	} else {
		total = 0;
	}
	pthread_mutex_unlock(&dlock);
	if (total > 0)
		log_event(LOG_ERROR, "audit.dropped", NULL,
			  json_pack("{s:I, s:I, s:I, s:I, s:s}", "dropped", (json_int_t)total, "queue_full",
				    (json_int_t)n[DROP_QUEUE_FULL], "write_failed", (json_int_t)n[DROP_WRITE_FAILED],
				    "no_memory", (json_int_t)n[DROP_NO_MEMORY], "msg",
				    "audit records dropped since the last report (see mcpb_audit_dropped_total)"));
}

static void note_dropped(size_t n, enum drop_reason why)
{
	metrics_count("audit_dropped_total", NULL, (long)n);
	pthread_mutex_lock(&dlock);
	dropped_pending[why] += n;
	pthread_mutex_unlock(&dlock);
	drop_report(0);
}

/* batch[0..n) as the JSON array the INSERT reads. A record that cannot be
 * encoded is dropped (and counted) alone; NULL with everything counted when
 * the array cannot be built at all. *kept: the records in the text. */
static char *batch_json(const struct queued *batch, size_t n, size_t *kept)
{
	json_t *rows = json_array();
	char *text = NULL;
	*kept = 0;
	for (size_t i = 0; rows && i < n; i++) {
		json_t *r = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:O?}", "at", batch[i].at, "event",
				      batch[i].event, "actor", batch[i].actor, "subject", batch[i].subject, "client_id",
				      batch[i].client_id, "grant_id", batch[i].grant_id, "request_id",
				      batch[i].request_id, "detail", batch[i].detail);
		if (r && json_array_append_new(rows, r) < 0)
			goto out; /* r is released by the failed append */
	}
	if (rows && json_array_size(rows) > 0)
		text = json_dumps(rows, JSON_COMPACT);
	if (text)
		*kept = json_array_size(rows);
out:
	json_decref(rows);
	if (*kept < n)
		note_dropped(n - *kept, DROP_NO_MEMORY);
	return text;
}

/* One INSERT ... SELECT FROM json_to_recordset of a batch: one statement,
 * one round trip, all or nothing. 0 written; -1 not. */
static int insert_batch(const char *text)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO audit_events(at, event, actor, subject, client_id, grant_id, request_id, detail) "
		"SELECT at, event, actor, subject, client_id, grant_id, request_id, coalesce(detail, '{}'::jsonb) "
		"FROM json_to_recordset($1::json) AS x(at timestamptz, event text, actor text, subject text, "
		"client_id text, grant_id uuid, request_id text, detail jsonb)");
	struct db_conn *c = NULL;
	PGresult *res = NULL;
	int rc = -1;
	if (db_acquire(writer_app->db, &c, AUDIT_DB_WAIT_MS) < 0)
		goto out;
	const char *p[] = { text };
	if (!(res = db_exec_ok(c, &q, 1, p)))
		goto out;
	rc = 0;
out:
	PQclear(res);
	db_release(writer_app->db, &c);
	return rc;
}

/* Moves up to AUDIT_BATCH records from the ring into batch. qlock held. */
static size_t take_batch(struct queued *batch)
{
	size_t n = qlen < AUDIT_BATCH ? qlen : AUDIT_BATCH;
	for (size_t i = 0; i < n; i++)
		batch[i] = ring[(qhead + i) % AUDIT_QUEUE_MAX];
	qhead = (qhead + n) % AUDIT_QUEUE_MAX;
	qlen -= n;
	return n;
}

/* Waits ms, or until a stop (or, with until_batch, a full batch is
 * queued); qlock held. 1 when stopping. */
static int pause_locked(long ms, int until_batch)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (!writer_stop && !(until_batch && qlen >= AUDIT_BATCH) &&
	       pthread_cond_timedwait(&qcond, &qlock, &ts) == 0)
		;
	return writer_stop;
}

/* Writes one batch: retried after a pause, dropped (and counted) after
 * AUDIT_ATTEMPTS failures, or after one while stopping. Writer thread only,
 * without qlock. 0 written (or nothing to write); -1 the database refused
 * it (all of it counted as dropped). */
static int write_batch(const struct queued *batch, size_t n)
{
	static time_t last_warning; /* writer thread only */
	size_t kept = 0;
	int rc = 0;
	char *text = batch_json(batch, n, &kept);
	for (int attempt = 1; text; attempt++) {
		if (insert_batch(text) == 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (!last_warning || ts.tv_sec - last_warning >= AUDIT_DROP_LOG_S) {
			last_warning = ts.tv_sec;
			log_msg(LOG_WARN, "audit.write_failed", NULL,
				"%zu audit records could not be written (attempt %d of %d); retrying", kept, attempt,
				AUDIT_ATTEMPTS);
		}
		pthread_mutex_lock(&qlock);
		int stop = attempt >= AUDIT_ATTEMPTS || writer_stop || pause_locked(AUDIT_RETRY_MS, 0);
		pthread_mutex_unlock(&qlock);
		if (stop) {
			note_dropped(kept, DROP_WRITE_FAILED);
			rc = -1;
			break;
		}
	}
	free(text);
	return rc;
}

static void *writer_loop(void *arg)
{
	(void)arg;
	db_thread_yields(); /* background work: the pool's reserve is the workers' */
	static struct queued batch[AUDIT_BATCH];
	pthread_mutex_lock(&qlock);
	for (;;) {
		if (qlen < AUDIT_BATCH && !writer_stop)
			(void)pause_locked(AUDIT_FLUSH_MS, 1);
		if (qlen == 0) {
			if (writer_stop)
				break;
			pthread_mutex_unlock(&qlock);
			drop_report(0); /* the last window's count, once it is due */
			pthread_mutex_lock(&qlock);
			continue;
		}
		size_t n = take_batch(batch);
		pthread_mutex_unlock(&qlock);
		int failed = write_batch(batch, n) < 0;
		for (size_t i = 0; i < n; i++)
			queued_free(&batch[i]);
		pthread_mutex_lock(&qlock);
		if (failed && writer_stop) {
			/* Stopping with the database unwritable: the rest cannot be
			 * written either, and the drain must not wait for it. */
			size_t rest = 0;
			while (qlen > 0) {
				size_t m = take_batch(batch);
				for (size_t i = 0; i < m; i++)
					queued_free(&batch[i]);
				rest += m;
			}
			pthread_mutex_unlock(&qlock);
			note_dropped(rest, DROP_WRITE_FAILED);
			pthread_mutex_lock(&qlock);
		}
	}
	pthread_mutex_unlock(&qlock);
	drop_report(1);
	return NULL;
}

int audit_writer_start(struct app *app)
{
	writer_app = app;
	metrics_count("audit_dropped_total", NULL, 0); /* exposed from the start, at 0 */
	pthread_mutex_lock(&qlock);
	writer_stop = 0;
	int rc = pthread_create(&writer, NULL, writer_loop, NULL) == 0 ? 0 : -1;
	writer_running = rc == 0;
	pthread_mutex_unlock(&qlock);
	return rc;
}

void audit_writer_stop(void)
{
	pthread_mutex_lock(&qlock);
	if (!writer_running) {
		pthread_mutex_unlock(&qlock);
		return;
	}
	writer_stop = 1;
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	pthread_join(writer, NULL); /* writes (or counts) what is queued first */
	pthread_mutex_lock(&qlock);
	writer_running = 0;
	pthread_mutex_unlock(&qlock);
}

static int dup_field(char **out, const char *s)
{
	*out = s ? strdup(s) : NULL;
	return s && !*out ? -1 : 0;
}

void audit_enqueue(const struct audit *a, json_t *detail)
{
	struct queued q;
	struct timespec ts;
	struct tm tm;
	memset(&q, 0, sizeof(q));
	q.detail = detail;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t w = strftime(q.at, sizeof(q.at), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(q.at + w, sizeof(q.at) - w, ".%06ldZ", ts.tv_nsec / 1000);
	/* A proxied call's record is its row (and its http.request access
	 * line): it is not logged a second time but at debug level. */
	enum log_level lvl = a->event && strcmp(a->event, "tool.called") == 0 ? LOG_DEBUG : LOG_INFO;
	if (log_enabled(lvl)) {
		json_t *f = json_pack("{s:s?, s:s?, s:s?, s:s?}", "actor", a->actor, "subject", a->subject, "client_id",
				      a->client_id, "grant_id", a->grant_id);
		if (f && detail)
			json_object_set(f, "detail", detail);
		log_event(lvl, a->event, a->request_id, f);
	}
	if (!a->event || dup_field(&q.event, a->event) < 0 || dup_field(&q.actor, a->actor) < 0 ||
	    dup_field(&q.subject, a->subject) < 0 || dup_field(&q.client_id, a->client_id) < 0 ||
	    dup_field(&q.grant_id, a->grant_id) < 0 || dup_field(&q.request_id, a->request_id) < 0) {
		queued_free(&q);
		note_dropped(1, DROP_NO_MEMORY);
		return;
	}
	pthread_mutex_lock(&qlock);
	int queued = writer_running && !writer_stop && qlen < AUDIT_QUEUE_MAX;
	if (queued) {
		ring[(qhead + qlen) % AUDIT_QUEUE_MAX] = q;
		qlen++;
		if (qlen == AUDIT_BATCH)
			pthread_cond_signal(&qcond);
	}
	pthread_mutex_unlock(&qlock);
	if (!queued) {
		/* Never a write on this thread: the record is dropped, counted
		 * and reported (its log line above stays). */
		queued_free(&q);
		note_dropped(1, DROP_QUEUE_FULL);
	}
}
