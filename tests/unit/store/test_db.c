/* db.c against the throwaway PostgreSQL of tests/run.sh
 * (MCPB_TEST_DATABASE_URL): a COMMIT that PostgreSQL turns into a ROLLBACK
 * is a failure; the pipelined BEGIN + statement and statement + COMMIT
 * commit exactly what they should and leave a failed transaction to be
 * rolled back. Without a database the test is skipped (exit 77). */
#include <stdlib.h>
#include <string.h>

#include "db.h"
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
	}
	PQfinish(pg);
	TEST_DONE();
}
