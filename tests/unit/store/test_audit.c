/* audit.c's batched writer against the real PostgreSQL
 * (MCPB_TEST_DATABASE_URL): every one of N enqueued records lands, with
 * its fields, and they are written in batches (one INSERT, so one
 * transaction, per batch of up to AUDIT_BATCH records: the rows share a
 * handful of xmin values, not one each). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "audit.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "test.h"

#define N 1000

static char *one_value(PGconn *pg, const char *sql, const char *p1)
{
	const char *p[] = { p1 };
	PGresult *r = PQexecParams(pg, sql, 1, NULL, p, NULL, NULL, 0);
	char *v = NULL;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = strdup(PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "  %s: %s\n", sql, PQerrorMessage(pg));
	PQclear(r);
	return v;
}

int main(void)
{
	const char *url = getenv("MCPB_TEST_DATABASE_URL");
	if (!url || !*url) {
		printf("no MCPB_TEST_DATABASE_URL: skipped\n");
		return 77;
	}
	static struct config cfg;
	cfg.database_url = (char *)url;
	cfg.database.pool_size = 2;
	cfg.database.statement_timeout_ms = 10000;
	cfg.database.connect_timeout_s = 5;
	log_init(LOG_WARN, NULL);

	PGconn *pg = db_connect_one(&cfg, "test_audit");
	CHECK(pg != NULL);
	if (!pg)
		TEST_DONE();
	int applied = 0;
	CHECK(migrate_run(pg, &applied) == 0);

	static struct app app;
	app.cfg = &cfg;
	app.db = db_open(&cfg);
	CHECK(app.db != NULL);
	if (!app.db) {
		PQfinish(pg);
		TEST_DONE();
	}
	char run[64];
	snprintf(run, sizeof(run), "test_audit-%ld-%d", (long)time(NULL), (int)(clock() & 0xffff));
	CHECK(audit_writer_start(&app) == 0);
	for (int i = 0; i < N; i++) {
		char rid[96];
		snprintf(rid, sizeof(rid), "%s-%04d", run, i);
		struct audit a = { "tool.called", "client:c1", "user-1", "c1", NULL, rid };
		audit_enqueue(&a, json_pack("{s:s, s:i}", "tool", "get_file", "i", i));
	}
	audit_writer_stop(); /* writes what is queued */

	char like[80];
	snprintf(like, sizeof(like), "%s-%%", run);
	char *count = one_value(pg, "SELECT count(*) FROM audit_events WHERE request_id LIKE $1", like);
	CHECK_STR(count, "1000");
	/* Fields as enqueued, and the detail's i matches the request id's. */
	char *wrong =
		one_value(pg,
			  "SELECT count(*) FROM audit_events WHERE request_id LIKE $1 AND NOT (event = 'tool.called' "
			  "AND actor = 'client:c1' AND subject = 'user-1' AND client_id = 'c1' AND grant_id IS NULL "
			  "AND detail->>'tool' = 'get_file' AND right(request_id, 4)::int = (detail->>'i')::int)",
			  like);
	CHECK_STR(wrong, "0");
	char *distinct = one_value(pg, "SELECT count(DISTINCT request_id) FROM audit_events WHERE request_id LIKE $1",
				   like);
	CHECK_STR(distinct, "1000");
	/* Batches: one transaction per INSERT. N/AUDIT_BATCH rounded up is 4;
	 * a slow enqueue may cut a few more at AUDIT_FLUSH_MS, never ~N. */
	char *txs = one_value(pg, "SELECT count(DISTINCT xmin::text) FROM audit_events WHERE request_id LIKE $1", like);
	CHECK(txs != NULL);
	if (txs) {
		fprintf(stderr, "  %d records in %s transactions\n", N, txs);
		long n = strtol(txs, NULL, 10);
		CHECK(n >= 1 && n <= 20);
	}
	free(count);
	free(wrong);
	free(distinct);
	free(txs);
	db_close(&app.db);
	PQfinish(pg);
	TEST_DONE();
}
