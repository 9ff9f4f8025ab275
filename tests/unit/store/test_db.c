/* db.c against the throwaway PostgreSQL of tests/run.sh
 * (MCPB_TEST_DATABASE_URL): a COMMIT that PostgreSQL turns into a ROLLBACK
 * is a failure; the pipelined BEGIN + statement and statement + COMMIT
 * commit exactly what they should and leave a failed transaction to be
 * rolled back; with a handler pool, the threads that yield never take the
 * workers' reserve, and a worker waiting behind one of them is served.
 * Without a database the test is skipped (exit 77). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "test.h"

static void test_commit(PGconn *pg)
{
	struct db_conn c = { .pg = pg };
	CHECK(db_begin(&c) == 0 && c.in_tx);
	CHECK(db_command(&c, "SET application_name = 'test_db'") == 0);
	CHECK(db_commit(&c) == 0 && !c.in_tx);

	/* A statement fails inside the transaction: the transaction is
	 * aborted, COMMIT answers "ROLLBACK" with a command-ok status. */
	CHECK(db_begin(&c) == 0);
	PGresult *r = PQexec(pg, "SELECT 1/0");
	CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
	PQclear(r);
	CHECK(db_commit(&c) == -1 && !c.in_tx);
	/* The connection is usable again afterwards. */
	CHECK(db_command(&c, "SET application_name = 'test_db'") == 0);
}

static long count_rows(PGconn *pg)
{
	PGresult *r = PQexec(pg, "SELECT count(*) FROM test_db_pipe");
	long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	return n;
}

static void test_pipeline(PGconn *pg)
{
	struct db_conn c = { .pg = pg };
	static struct db_stmt ins = DB_STMT("INSERT INTO test_db_pipe(v) VALUES ($1::int) RETURNING v * 2");
	static struct db_stmt sel = DB_STMT(
		"SELECT count(*) FROM (SELECT v FROM test_db_pipe WHERE v = $1::int FOR UPDATE) t");
	static struct db_stmt bad = DB_STMT("SELECT 1 / $1::int");
	PQclear(PQexec(pg, "DROP TABLE IF EXISTS test_db_pipe"));
	PQclear(PQexec(pg, "CREATE TABLE test_db_pipe (v int NOT NULL CHECK (v < 100))"));

	/* BEGIN + statement, then statement + COMMIT: two round trips, committed. */
	const char *one[] = { "1" }, *two[] = { "21" };
	PGresult *r = db_begin_exec_ok(&c, &sel, 1, one);
	CHECK(r && c.in_tx && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "0") == 0);
	PQclear(r);
	r = NULL;
	CHECK(db_exec_commit(&c, &ins, 1, two, &r) == 0 && !c.in_tx);
	CHECK(r && strcmp(PQgetvalue(r, 0, 0), "42") == 0);
	PQclear(r);
	CHECK(count_rows(pg) == 1);
	CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);

	/* The statement fails (a constraint): nothing is committed, the
	 * transaction stays for the rollback, the connection is usable. */
	const char *big[] = { "500" };
	r = db_begin_exec_ok(&c, &sel, 1, one);
	CHECK(r != NULL);
	PQclear(r);
	r = (PGresult *)1;
	CHECK(db_exec_commit(&c, &ins, 1, big, &r) == -1 && c.in_tx && r == NULL);
	db_rollback(&c);
	CHECK(!c.in_tx && count_rows(pg) == 1);

	/* A failed transaction: COMMIT answers ROLLBACK, which is a failure. */
	const char *zero[] = { "0" };
	CHECK(db_begin(&c) == 0);
	CHECK(db_exec_ok(&c, &bad, 1, zero) == NULL);
	CHECK(db_exec_commit(&c, &ins, 1, two, NULL) == -1);
	db_rollback(&c);
	CHECK(count_rows(pg) == 1);

	/* BEGIN + a failing statement: NULL, and the transaction to roll back. */
	CHECK(db_begin_exec_ok(&c, &bad, 1, zero) == NULL && c.in_tx);
	db_rollback(&c);
	CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);
	CHECK(count_rows(pg) == 1);
	/* The statement succeeds and COMMIT fails (a deferred constraint):
	 * -1, nothing committed. */
	static struct db_stmt dup = DB_STMT("INSERT INTO test_db_pipe2(u) VALUES ($1::int)");
	PQclear(PQexec(pg, "CREATE TABLE test_db_pipe2 (u int UNIQUE DEFERRABLE INITIALLY DEFERRED)"));
	const char *seven[] = { "7" };
	r = db_begin_exec_ok(&c, &sel, 1, one);
	CHECK(r != NULL);
	PQclear(r);
	r = db_exec(&c, &dup, 1, seven);
	CHECK(r != NULL);
	PQclear(r);
	r = (PGresult *)1;
	CHECK(db_exec_commit(&c, &dup, 1, seven, &r) == -1 && r == NULL && c.in_tx);
	db_rollback(&c);
	PGresult *n2 = PQexec(pg, "SELECT count(*) FROM test_db_pipe2");
	CHECK(PQresultStatus(n2) == PGRES_TUPLES_OK && strcmp(PQgetvalue(n2, 0, 0), "0") == 0);
	PQclear(n2);
	CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);
	PQclear(PQexec(pg, "DROP TABLE test_db_pipe2"));
	PQclear(PQexec(pg, "DROP TABLE test_db_pipe"));
}

struct taker {
	struct db *db;
	int yields, timeout_ms, n, got;
	struct db_conn *c[4];
	long long waited_ms;
};

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *take(void *arg)
{
	struct taker *t = arg;
	if (t->yields)
		db_thread_yields();
	long long start = mono_ms();
	for (t->got = 0; t->got < t->n; t->got++)
		if (db_acquire(t->db, &t->c[t->got], t->timeout_ms) < 0)
			break;
	t->waited_ms = mono_ms() - start;
	return NULL;
}

static void give_back(struct taker *t)
{
	for (int i = 0; i < t->got; i++)
		db_release(t->db, &t->c[i]);
	t->got = 0;
}

static void run_taker(struct taker *t)
{
	pthread_t th;
	CHECK(pthread_create(&th, NULL, take, t) == 0);
	pthread_join(th, NULL);
}

static void test_reserve(const char *url)
{
	static struct config cfg;
	cfg.database_url = (char *)url;
	cfg.database.pool_size = 4;
	cfg.database.statement_timeout_ms = 10000;
	cfg.database.connect_timeout_s = 5;
	cfg.http.threads = 8;
	cfg.http.handler_threads = 16; /* reserve: 4 / 4 = 1 */
	struct db *db = db_open(&cfg);
	CHECK(db != NULL);
	if (!db)
		return;
	/* Threads that yield get three of the four, not the fourth. */
	struct taker pool = { db, 1, 300, 4, 0, { 0 }, 0 };
	run_taker(&pool);
	CHECK(pool.got == 3 && pool.waited_ms >= 250);
	/* A worker gets the fourth at once. */
	struct taker worker = { db, 0, 300, 1, 0, { 0 }, 0 };
	run_taker(&worker);
	CHECK(worker.got == 1 && worker.waited_ms < 250);

	/* Full: a yielding thread and a worker wait; the worker's connection
	 * comes back. Both are woken (a single signal could pick the one that
	 * may not take it); the worker gets it, the other still waits. */
	struct taker late_pool = { db, 1, 1500, 1, 0, { 0 }, 0 };
	struct taker late_worker = { db, 0, 1500, 1, 0, { 0 }, 0 };
	pthread_t a, b;
	CHECK(pthread_create(&a, NULL, take, &late_pool) == 0);
	usleep(100 * 1000); /* the yielding thread waits first */
	CHECK(pthread_create(&b, NULL, take, &late_worker) == 0);
	usleep(100 * 1000);
	give_back(&worker);
	pthread_join(b, NULL);
	CHECK(late_worker.got == 1 && late_worker.waited_ms < 1000);
	pthread_join(a, NULL);
	CHECK(late_pool.got == 0);
	give_back(&late_worker);
	/* One of the pool's connections comes back: a yielding thread may take it. */
	db_release(db, &pool.c[2]);
	pool.got = 2;
	struct taker again = { db, 1, 300, 1, 0, { 0 }, 0 };
	run_taker(&again);
	CHECK(again.got == 1 && again.waited_ms < 250);
	give_back(&again);
	give_back(&pool);

	/* Without a handler pool there is no reserve. */
	db_close(&db);
	cfg.http.handler_threads = 0;
	db = db_open(&cfg);
	CHECK(db != NULL);
	if (!db)
		return;
	struct taker all = { db, 1, 300, 4, 0, { 0 }, 0 };
	run_taker(&all);
	CHECK(all.got == 4);
	give_back(&all);
	db_close(&db);
}

int main(void)
{
	const char *url = getenv("MCPB_TEST_DATABASE_URL");
	if (!url || !*url) {
		printf("no MCPB_TEST_DATABASE_URL: skipped\n");
		return 77;
	}
	PGconn *pg = PQconnectdb(url);
	CHECK(PQstatus(pg) == CONNECTION_OK);
	if (PQstatus(pg) == CONNECTION_OK) {
		test_commit(pg);
		test_pipeline(pg);
		log_init(LOG_ERROR, NULL);
		test_reserve(url);
	}
	PQfinish(pg);
	TEST_DONE();
}
