/* db.c against the throwaway PostgreSQL of tests/run.sh
 * (MCPB_TEST_DATABASE_URL): a COMMIT that PostgreSQL turns into a ROLLBACK
 * is a failure. Without a database the test is skipped (exit 77). */
#include <stdlib.h>

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

int main(void)
{
	const char *url = getenv("MCPB_TEST_DATABASE_URL");
	if (!url || !*url) {
		printf("no MCPB_TEST_DATABASE_URL: skipped\n");
		return 77;
	}
	PGconn *pg = PQconnectdb(url);
	CHECK(PQstatus(pg) == CONNECTION_OK);
	if (PQstatus(pg) == CONNECTION_OK)
		test_commit(pg);
	PQfinish(pg);
	TEST_DONE();
}
