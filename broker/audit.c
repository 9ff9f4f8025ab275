#include "audit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"

#include "log.h"

int audit_record(struct db_conn *c, const struct audit *a, json_t *detail)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO audit_events(event, actor, subject, client_id, grant_id, request_id, detail) "
		"VALUES ($1, $2, $3, $4, $5::uuid, $6, coalesce($7::jsonb, '{}'::jsonb))");
	char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
	const char *p[] = { a->event, a->actor, a->subject, a->client_id, a->grant_id, a->request_id, text };
	PGresult *r = db_exec_ok(c, &q, 7, p);
	free(text);
	json_t *f = json_pack("{s:s?, s:s?, s:s?, s:s?}", "actor", a->actor, "subject", a->subject,
			      "client_id", a->client_id, "grant_id", a->grant_id);
	if (f && detail)
		json_object_set(f, "detail", detail);
	log_event(LOG_INFO, a->event, a->request_id, f);
	json_decref(detail);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* ---- the batched writer ------------------------------------------------- */

#define AUDIT_QUEUE_MAX 8192
#define AUDIT_BATCH 256

struct queued {
	char *event, *actor, *subject, *client_id, *grant_id, *request_id;
	json_t *detail;
	char at[40]; /* when it happened, not when it was written */
};

static struct queued queue[AUDIT_QUEUE_MAX];
static size_t qlen;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static pthread_t writer;
static int writer_running, writer_stop;
static struct app *writer_app;

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

static char *dup0(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Writes up to AUDIT_BATCH queued records in one INSERT ... SELECT FROM
 * json_to_recordset, so the batch is one statement and one round trip. */
static void flush_batch(struct queued *batch, size_t n)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO audit_events(at, event, actor, subject, client_id, grant_id, request_id, detail) "
		"SELECT at, event, actor, subject, client_id, grant_id, request_id, coalesce(detail, '{}'::jsonb) "
		"FROM json_to_recordset($1::json) AS x(at timestamptz, event text, actor text, subject text, "
		"client_id text, grant_id uuid, request_id text, detail jsonb)");
	json_t *rows = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *r = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:O?}", "at", batch[i].at, "event",
				      batch[i].event, "actor", batch[i].actor, "subject", batch[i].subject, "client_id",
				      batch[i].client_id, "grant_id", batch[i].grant_id, "request_id",
				      batch[i].request_id, "detail", batch[i].detail);
		if (r)
			json_array_append_new(rows, r);
	}
	char *text = json_dumps(rows, JSON_COMPACT);
	json_decref(rows);
	struct db_conn *c = NULL;
	int ok = 0;
	if (text && db_acquire(writer_app->db, &c, 5000) == 0) {
		const char *p[] = { text };
		PGresult *res = db_exec_ok(c, &q, 1, p);
		ok = res != NULL;
		PQclear(res);
		db_release(writer_app->db, &c);
	}
	if (!ok)
		log_msg(LOG_ERROR, "audit.write_failed", NULL, "%zu audit records could not be written", n);
	free(text);
}

static void *writer_loop(void *arg)
{
	(void)arg;
	static struct queued batch[AUDIT_BATCH];
	pthread_mutex_lock(&qlock);
	for (;;) {
		if (qlen == 0 && !writer_stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += AUDIT_FLUSH_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&qcond, &qlock, &ts);
		}
		if (qlen == 0) {
			if (writer_stop)
				break;
			continue;
		}
		size_t n = qlen < AUDIT_BATCH ? qlen : AUDIT_BATCH;
		memcpy(batch, queue, n * sizeof(queue[0]));
		memmove(queue, queue + n, (qlen - n) * sizeof(queue[0]));
		qlen -= n;
		pthread_mutex_unlock(&qlock);
		flush_batch(batch, n);
		for (size_t i = 0; i < n; i++)
			queued_free(&batch[i]);
		pthread_mutex_lock(&qlock);
	}
	pthread_mutex_unlock(&qlock);
	return NULL;
}

int audit_writer_start(struct app *app)
{
	writer_app = app;
	if (pthread_create(&writer, NULL, writer_loop, NULL) != 0)
		return -1;
	writer_running = 1;
	return 0;
}

void audit_writer_stop(void)
{
	if (!writer_running)
		return;
	pthread_mutex_lock(&qlock);
	writer_stop = 1;
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	pthread_join(writer, NULL); /* drains the queue first */
	writer_running = 0;
}

void audit_enqueue(const struct audit *a, json_t *detail)
{
	struct queued q = { 0 };
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t w = strftime(q.at, sizeof(q.at), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(q.at + w, sizeof(q.at) - w, ".%06ldZ", ts.tv_nsec / 1000);
	json_t *f = json_pack("{s:s?, s:s?, s:s?, s:s?}", "actor", a->actor, "subject", a->subject,
			      "client_id", a->client_id, "grant_id", a->grant_id);
	if (f && detail)
		json_object_set(f, "detail", detail);
	log_event(LOG_INFO, a->event, a->request_id, f);
	q.event = dup0(a->event);
	q.actor = dup0(a->actor);
	q.subject = dup0(a->subject);
	q.client_id = dup0(a->client_id);
	q.grant_id = dup0(a->grant_id);
	q.request_id = dup0(a->request_id);
	q.detail = detail;
	pthread_mutex_lock(&qlock);
	int queued = writer_running && !writer_stop && qlen < AUDIT_QUEUE_MAX;
	if (queued) {
		queue[qlen++] = q;
		if (qlen >= AUDIT_BATCH)
			pthread_cond_signal(&qcond);
	}
	pthread_mutex_unlock(&qlock);
	if (!queued) {
		/* No writer (or it is far behind): write this one now. */
		if (writer_app)
			flush_batch(&q, 1);
		queued_free(&q);
	}
}
