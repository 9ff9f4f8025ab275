#include "migrate.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "num.h"

/* pg_advisory_lock key: "mcpb" "migr" */
#define MIGRATE_LOCK_KEY "7881707912358893426"

int migrate_latest(void)
{
	int v = 0;
	for (size_t i = 0; i < migrations_count; i++)
		if (migrations[i].version > v)
			v = migrations[i].version;
	return v;
}

static int exec_ok(PGconn *pg, const char *sql, const char *what)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
		msg[strcspn(msg, "\n")] = '\0';
		log_msg(LOG_ERROR, "migrate.failed", NULL, "%s: %s", what, msg);
	}
	PQclear(r);
	return ok ? 0 : -1;
}

int migrate_current(PGconn *pg, int *version)
{
	PGresult *r = PQexec(pg, "SELECT coalesce(max(version), 0) FROM schema_migrations");
	long long v = 0;
	int rc = -1;
	if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		if (num_parse(PQgetvalue(r, 0, 0), 0, INT_MAX, &v) < 0)
			goto out;
	} else {
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		if (!state || strcmp(state, "42P01") != 0) /* undefined_table: version 0 */
			goto out;
	}
	*version = (int)v;
	rc = 0;
out:
	PQclear(r);
	return rc;
}

int migrate_run(PGconn *pg, int *applied)
{
	int rc = -1, current = 0;
	*applied = 0;
	if (exec_ok(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", "lock") < 0)
		return -1;
	if (exec_ok(pg, "SET client_min_messages = warning", "setup") < 0 ||
	    exec_ok(pg,
		    "CREATE TABLE IF NOT EXISTS schema_migrations ("
		    "version integer PRIMARY KEY, name text NOT NULL, "
		    "applied_at timestamptz NOT NULL DEFAULT now())",
		    "schema table") < 0)
		goto out;
	if (migrate_current(pg, &current) < 0)
		goto out;
	if (current > migrate_latest()) {
		log_msg(LOG_ERROR, "migrate.newer_schema", NULL,
			"database schema version %d is newer than this binary knows (%d): refusing", current,
			migrate_latest());
		goto out;
	}
	for (size_t i = 0; i < migrations_count; i++) {
		const struct migration *m = &migrations[i];
		if (m->version <= current)
			continue;
		if (exec_ok(pg, "BEGIN", "begin") < 0)
			goto out;
		if (exec_ok(pg, m->sql, m->name) < 0) {
			exec_ok(pg, "ROLLBACK", "rollback");
			goto out;
		}
		char v[16];
		snprintf(v, sizeof(v), "%d", m->version);
		const char *params[] = { v, m->name };
		PGresult *r = PQexecParams(pg, "INSERT INTO schema_migrations(version, name) VALUES ($1::int, $2)", 2,
					   NULL, params, NULL, NULL, 0);
		int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
		PQclear(r);
		if (!ok || exec_ok(pg, "COMMIT", "commit") < 0) {
			exec_ok(pg, "ROLLBACK", "rollback");
			goto out;
		}
		(*applied)++;
		log_msg(LOG_INFO, "migrate.applied", NULL, "applied migration %04d %s", m->version, m->name);
	}
	rc = 0;
out:
	if (exec_ok(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", "unlock") < 0)
		rc = -1;
	return rc;
}
