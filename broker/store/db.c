#include "db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"

struct db {
	const struct config *cfg;
	pthread_mutex_t lock;
	pthread_cond_t freed;
	struct db_conn *conns;
	int *busy; /* 0 free, 1 taken, 2 taken by a thread that yields */
	int size, in_use;
	int reserve, yielding; /* connections kept from yielding threads; those they hold */
	long waits, reconnects;
};

static pthread_mutex_t stmt_lock = PTHREAD_MUTEX_INITIALIZER;
static int stmt_next;
static __thread int thread_yields; /* db_thread_yields() was called here */

void db_thread_yields(void)
{
	thread_yields = 1;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

PGconn *db_connect_one(const struct config *cfg, const char *application_name)
{
	char timeout[16], options[64];
	snprintf(timeout, sizeof(timeout), "%ld", cfg->database.connect_timeout_s);
	snprintf(options, sizeof(options), "-c statement_timeout=%ld", cfg->database.statement_timeout_ms);
	/* The URL comes first so that our safety settings override it. */
	const char *const keys[] = { "dbname",
				     "connect_timeout",
				     "options",
				     "application_name",
				     "keepalives",
				     "keepalives_idle",
				     "keepalives_interval",
				     "keepalives_count",
				     NULL };
	const char *const vals[] = { cfg->database_url, timeout, options, application_name, "1", "10", "5", "3", NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);
	if (!pg)
		return NULL;
	if (PQstatus(pg) != CONNECTION_OK) {
		char msg[256];
		/* libpq's message names host and port, never the password. */
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
		msg[strcspn(msg, "\n")] = '\0';
		log_msg(LOG_WARN, "db.connect_failed", NULL, "%s", msg);
		PQfinish(pg);
		return NULL;
	}
	return pg;
}

struct db *db_open(const struct config *cfg)
{
	struct db *db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	db->cfg = cfg;
	db->size = (int)cfg->database.pool_size;
	/* With a handler pool, a quarter of the connections (at least one, at
	 * most one a worker) stays for the workers' cache misses. */
	if (cfg->http.handler_threads > 0 && db->size >= 2) {
		db->reserve = db->size / 4 > 1 ? db->size / 4 : 1;
		if (db->reserve > cfg->http.threads)
			db->reserve = (int)cfg->http.threads;
	}
	db->conns = calloc((size_t)db->size, sizeof(*db->conns));
	db->busy = calloc((size_t)db->size, sizeof(*db->busy));
	if (!db->conns || !db->busy) {
		free(db->conns);
		free(db->busy);
		free(db);
		return NULL;
	}
	pthread_mutex_init(&db->lock, NULL);
	pthread_cond_init(&db->freed, NULL);
	return db;
}

void db_close(struct db **dbp)
{
	struct db *db = dbp ? *dbp : NULL;
	if (!db)
		return;
	for (int i = 0; i < db->size; i++)
		if (db->conns[i].pg)
			PQfinish(db->conns[i].pg);
	pthread_mutex_destroy(&db->lock);
	pthread_cond_destroy(&db->freed);
	free(db->conns);
	free(db->busy);
	free(db);
	*dbp = NULL;
}

/* A pooled connection whose server went away looks healthy until used; its
 * socket has become readable (EOF or an error message), which is cheap to
 * notice before handing it out. */
static int conn_healthy(struct db_conn *c)
{
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK)
		return 0;
	struct pollfd pfd = { .fd = PQsocket(c->pg), .events = POLLIN };
	int r = poll(&pfd, 1, 0);
	if (r < 0)
		return 0;
	if (r > 0) {
		if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
			return 0;
		PGnotify *n;
		while ((n = PQnotifies(c->pg)) != NULL)
			PQfreemem(n);
	}
	return 1;
}

int db_acquire(struct db *db, struct db_conn **out, int timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	int idx = -1;
	pthread_mutex_lock(&db->lock);
	for (;;) {
		int may = !thread_yields || db->yielding < db->size - db->reserve;
		/* Prefer a connection that is already open. */
		for (int i = 0; may && i < db->size && idx < 0; i++)
			if (!db->busy[i] && db->conns[i].pg)
				idx = i;
		for (int i = 0; may && i < db->size && idx < 0; i++)
			if (!db->busy[i])
				idx = i;
		if (idx >= 0)
			break;
		db->waits++;
		if (pthread_cond_timedwait(&db->freed, &db->lock, &deadline) == ETIMEDOUT) {
			pthread_mutex_unlock(&db->lock);
			log_msg(LOG_WARN, "db.pool_exhausted", NULL, "no free connection within %d ms", timeout_ms);
			return -1;
		}
	}
	db->busy[idx] = thread_yields ? 2 : 1;
	db->yielding += thread_yields;
	db->in_use++;
	pthread_mutex_unlock(&db->lock);

	struct db_conn *c = &db->conns[idx];
	if (!conn_healthy(c)) {
		int had = c->pg != NULL;
		if (c->pg)
			PQfinish(c->pg);
		memset(c->prepared, 0, sizeof(c->prepared));
		c->in_tx = 0;
		c->pg = db_connect_one(db->cfg, "mcp-broker");
		if (had) {
			pthread_mutex_lock(&db->lock);
			db->reconnects++;
			pthread_mutex_unlock(&db->lock);
		}
		if (!c->pg) {
			db_release(db, &c);
			return -1;
		}
		if (had)
			log_msg(LOG_INFO, "db.reconnected", NULL, "pool connection %d re-established", idx);
	}
	c->last_used_ms = now_ms();
	*out = c;
	return 0;
}

void db_release(struct db *db, struct db_conn **cp)
{
	struct db_conn *c = cp ? *cp : NULL;
	if (!c)
		return;
	if (c->in_tx)
		db_rollback(c);
	int idx = (int)(c - db->conns);
	pthread_mutex_lock(&db->lock);
	db->yielding -= db->busy[idx] == 2;
	db->busy[idx] = 0;
	db->in_use--;
	/* All waiters: the one woken might be a yielding thread still kept out. */
	pthread_cond_broadcast(&db->freed);
	pthread_mutex_unlock(&db->lock);
	*cp = NULL;
}

int db_conn_broken(const struct db_conn *c)
{
	return !c->pg || PQstatus(c->pg) != CONNECTION_OK;
}

const char *db_sqlstate(const PGresult *res)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	return s ? s : "";
}

static void log_failure(const char *what, PGconn *pg, const PGresult *res)
{
	char msg[256];
	/* The primary message only: it never carries parameter values. */
	const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	snprintf(msg, sizeof(msg), "%s", prim ? prim : PQerrorMessage(pg));
	msg[strcspn(msg, "\n")] = '\0';
	json_t *o = json_pack("{s:s, s:s, s:s}", "what", what, "sqlstate", db_sqlstate(res), "msg", msg);
	log_event(LOG_ERROR, "db.error", NULL, o);
}

static int stmt_ensure(struct db_conn *c, struct db_stmt *st)
{
	if (st->id < 0) {
		pthread_mutex_lock(&stmt_lock);
		if (st->id < 0) {
			if (stmt_next >= DB_MAX_STMTS) {
				pthread_mutex_unlock(&stmt_lock);
				return -1;
			}
			__atomic_store_n(&st->id, stmt_next++, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&stmt_lock);
	}
	int id = __atomic_load_n(&st->id, __ATOMIC_ACQUIRE);
	if (c->prepared[id / 8] & (1u << (id % 8)))
		return 0;
	char name[16];
	snprintf(name, sizeof(name), "s%d", id);
	PGresult *r = PQprepare(c->pg, name, st->sql, 0, NULL);
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		log_failure("prepare", c->pg, r);
	PQclear(r);
	if (!ok)
		return -1;
	c->prepared[id / 8] |= (unsigned char)(1u << (id % 8));
	return 0;
}

PGresult *db_exec(struct db_conn *c, struct db_stmt *st, int n, const char *const *params)
{
	if (stmt_ensure(c, st) < 0)
		return NULL;
	char name[16];
	snprintf(name, sizeof(name), "s%d", st->id);
	PGresult *r = PQexecPrepared(c->pg, name, n, params, NULL, NULL, 0);
	if (!r || PQresultStatus(r) == PGRES_FATAL_ERROR) {
		log_failure("exec", c->pg, r);
		PQclear(r);
		return NULL;
	}
	return r;
}

PGresult *db_exec_ok(struct db_conn *c, struct db_stmt *st, int n, const char *const *params)
{
	PGresult *r = db_exec(c, st, n, params);
	if (r && PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		log_failure("exec", c->pg, r);
		PQclear(r);
		return NULL;
	}
	return r;
}

int db_command(struct db_conn *c, const char *sql)
{
	PGresult *r = PQexec(c->pg, sql);
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		log_failure(sql, c->pg, r);
	PQclear(r);
	return ok ? 0 : -1;
}

int db_begin(struct db_conn *c)
{
	if (db_command(c, "BEGIN") < 0)
		return -1;
	c->in_tx = 1;
	return 0;
}

int db_commit(struct db_conn *c)
{
	c->in_tx = 0;
	/* COMMIT of a transaction that already failed succeeds as a command
	 * and answers "ROLLBACK": nothing was written, so that is a failure. */
	PGresult *r = PQexec(c->pg, "COMMIT");
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
	if (!ok)
		log_failure("COMMIT", c->pg, r);
	PQclear(r);
	return ok ? 0 : -1;
}

/* Sends [before], st, [after] as one pipeline and one Sync, and reads every
 * result: 0 when all of them succeeded (COMMIT must answer COMMIT), with
 * st's result in *res; -1 after logging the first failure. */
static int pipeline(struct db_conn *c, const char *before, struct db_stmt *st, int n, const char *const *params,
		    const char *after, PGresult **res)
{
	*res = NULL;
	if (stmt_ensure(c, st) < 0)
		return -1;
	char name[16];
	snprintf(name, sizeof(name), "s%d", st->id);
	if (!PQenterPipelineMode(c->pg)) {
		log_failure("pipeline", c->pg, NULL);
		return -1;
	}
	int sent = 1, queued = 0;
	if (before) {
		sent = PQsendQueryParams(c->pg, before, 0, NULL, NULL, NULL, NULL, 0);
		queued++;
	}
	if (sent) {
		sent = PQsendQueryPrepared(c->pg, name, n, params, NULL, NULL, 0);
		queued++;
	}
	if (sent && after) {
		sent = PQsendQueryParams(c->pg, after, 0, NULL, NULL, NULL, NULL, 0);
		queued++;
	}
	sent = sent && PQpipelineSync(c->pg);
	int ok = sent, synced = 0;
	/* Every query's result, each followed by a NULL, then the Sync's. */
	for (int i = 0; sent && i < queued; i++) {
		PGresult *r = PQgetResult(c->pg);
		if (!r) {
			log_failure("pipeline", c->pg, NULL);
			ok = 0;
			break;
		}
		ExecStatusType stt = PQresultStatus(r);
		const char *what = i == 0 && before ? before : i == queued - 1 && after ? after : "exec";
		int good = stt == PGRES_COMMAND_OK || stt == PGRES_TUPLES_OK;
		if (good && what == after && strcmp(PQcmdStatus(r), "COMMIT") != 0)
			good = 0; /* the transaction had failed: COMMIT answered ROLLBACK */
		if (!good && ok && stt != PGRES_PIPELINE_ABORTED)
			log_failure(what, c->pg, r);
		ok = ok && good;
		if (what == before || what == after || !good)
			PQclear(r);
		else
			*res = r;
		while ((r = PQgetResult(c->pg)) != NULL) { /* the NULL that ends this query */
			if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
				synced = 1;
			PQclear(r);
			if (synced)
				break;
		}
	}
	/* Up to the Sync; two NULLs in a row mean libpq has nothing more to
	 * give (the connection failed): the exit below then fails and the
	 * connection is dropped. */
	for (int nulls = 0; sent && !synced && nulls < 2;) {
		PGresult *r = PQgetResult(c->pg);
		nulls = r ? 0 : nulls + 1;
		if (r && PQresultStatus(r) == PGRES_PIPELINE_SYNC)
			synced = 1;
		PQclear(r);
	}
	if (!sent)
		log_failure("pipeline", c->pg, NULL);
	if (!PQexitPipelineMode(c->pg) && PQstatus(c->pg) == CONNECTION_OK) {
		/* Results still pending: the connection is of no further use. */
		PQfinish(c->pg);
		c->pg = NULL;
		ok = 0;
	}
	if (!ok) {
		PQclear(*res);
		*res = NULL;
	}
	return ok ? 0 : -1;
}

PGresult *db_begin_exec_ok(struct db_conn *c, struct db_stmt *st, int n, const char *const *params)
{
	PGresult *res;
	c->in_tx = 1;
	return pipeline(c, "BEGIN", st, n, params, NULL, &res) == 0 ? res : NULL;
}

int db_exec_commit(struct db_conn *c, struct db_stmt *st, int n, const char *const *params, PGresult **out)
{
	PGresult *res;
	int rc = pipeline(c, NULL, st, n, params, "COMMIT", &res);
	/* Failed: a ROLLBACK follows (harmless when COMMIT already ended it). */
	c->in_tx = rc < 0;
	if (out)
		*out = res;
	else
		PQclear(res);
	return rc;
}

void db_rollback(struct db_conn *c)
{
	c->in_tx = 0;
	if (c->pg && PQstatus(c->pg) == CONNECTION_OK) {
		PGresult *r = PQexec(c->pg, "ROLLBACK");
		PQclear(r);
	}
}

void db_stats(struct db *db, int *size, int *in_use, long *waits, long *reconnects)
{
	pthread_mutex_lock(&db->lock);
	*size = db->size;
	*in_use = db->in_use;
	*waits = db->waits;
	*reconnects = db->reconnects;
	pthread_mutex_unlock(&db->lock);
}
