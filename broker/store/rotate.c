#include "rotate.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "vault.h"

#define ROTATE_BATCH "100"
#define ROTATE_SKIP_BYTES (16 * 1024 * 1024) /* ids of unreadable grants, 37 bytes each */

static int exec_cmd(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	return ok ? 0 : -1;
}

enum reseal_rc { RESEAL_OK, RESEAL_UNREADABLE, RESEAL_FAILED };

/* Re-seals one sealed value under the active key; NULL in -> NULL out.
 * UNREADABLE: it does not open under the key its row names. */
static enum reseal_rc reseal(const struct config *cfg, const char *key_id, const char *gid, const char *purpose,
			     const char *in, char **out)
{
	*out = NULL;
	if (!in)
		return RESEAL_OK;
	char *pt = vault_open(cfg, key_id, gid, purpose, in);
	if (!pt)
		return RESEAL_UNREADABLE;
	const char *active = NULL;
	*out = vault_seal(cfg, gid, purpose, pt, &active);
	vault_free(pt);
	return *out ? RESEAL_OK : RESEAL_FAILED;
}

/* The sweep passes over rows another transaction holds, so that it never
 * queues behind a node; then the rows still under another key are taken one
 * by one, waiting for each (a node's upstream refresh holds its grant FOR
 * UPDATE for the length of one upstream call, and rolls back if that call
 * fails). FOR NO KEY UPDATE: the foreign key check of a token being issued
 * holds FOR KEY SHARE on its grant, which only FOR UPDATE conflicts with. */
#define ROTATE_SELECT                                                 \
	"SELECT id::text, key_id, up_access, up_refresh FROM grants " \
	"WHERE key_id <> $1 AND NOT (id = ANY(string_to_array($2, ',')::uuid[])) ORDER BY id "
static const char q_sweep[] = ROTATE_SELECT "LIMIT " ROTATE_BATCH " FOR NO KEY UPDATE SKIP LOCKED";
static const char q_wait[] = ROTATE_SELECT "LIMIT 1 FOR NO KEY UPDATE";

/* How long the waiting pass waits for one row: a refresh's upstream call
 * (the longest configured timeout_ms) plus its statements. */
static long lock_wait_ms(const struct config *cfg)
{
	long ms = 0;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (cfg->upstreams[i].timeout_ms > ms)
			ms = cfg->upstreams[i].timeout_ms;
	return ms + 2 * cfg->database.statement_timeout_ms;
}

enum row_rc { ROW_OK, ROW_DB_FAILED, ROW_NO_MEMORY };

/* Re-encrypts row i of r (*done), or counts it in *unreadable and adds its
 * id to skip when it does not open. */
static enum row_rc rotate_row(const struct config *cfg, PGconn *pg, PGresult *r, int i, struct buf *skip, long *done,
			      long *unreadable)
{
	static const char q_update[] = "UPDATE grants SET key_id = $2, up_access = $3::bytea, up_refresh = $4::bytea, "
				       "updated_at = now() WHERE id = $1::uuid";
	const char *gid = PQgetvalue(r, i, 0), *kid = PQgetvalue(r, i, 1);
	char *a = NULL, *b = NULL;
	enum row_rc rc = ROW_NO_MEMORY;
	enum reseal_rc ra = reseal(cfg, kid, gid, "access", PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2), &a);
	enum reseal_rc rb = ra != RESEAL_OK ? ra
					    : reseal(cfg, kid, gid, "refresh",
						     PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3), &b);
	if (rb == RESEAL_FAILED)
		goto out;
	if (rb == RESEAL_UNREADABLE) {
		(*unreadable)++;
		log_msg(LOG_ERROR, "rotate.unreadable", NULL,
			"grant %s: its key \"%s\" is not configured or the data is damaged", gid, kid);
		/* Skipped by id from now on, so that the loop ends. */
		if (buf_printf(skip, "%s%s", skip->len ? "," : "", gid) == 0)
			rc = ROW_OK;
		goto out;
	}
	const char *u[] = { gid, cfg->encryption_keys[0].id, a, b };
	PGresult *w = PQexecParams(pg, q_update, 4, NULL, u, NULL, NULL, 0);
	int ok = w && PQresultStatus(w) == PGRES_COMMAND_OK;
	PQclear(w);
	rc = ok ? ROW_OK : ROW_DB_FAILED;
	*done += ok;
out:
	free(a);
	free(b);
	return rc;
}

int rotate_keys(const struct config *cfg, PGconn *pg, long *done, long *unreadable)
{
	const char *active = cfg->encryption_keys[0].id;
	int waiting = 0, rc = -1, oom = 0;
	char wait_sql[64];
	struct buf skip;
	PGresult *r = NULL;
	*done = 0;
	*unreadable = 0;
	buf_init(&skip, ROTATE_SKIP_BYTES);
	snprintf(wait_sql, sizeof(wait_sql), "SET LOCAL statement_timeout = %ld", lock_wait_ms(cfg));
	for (;;) {
		if (exec_cmd(pg, "BEGIN") < 0 || (waiting && exec_cmd(pg, wait_sql) < 0))
			goto out;
		const char *p[] = { active, skip.ptr ? skip.ptr : "" };
		r = PQexecParams(pg, waiting ? q_wait : q_sweep, 2, NULL, p, NULL, NULL, 0);
		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
			goto out;
		int n = PQntuples(r);
		for (int i = 0; i < n; i++) {
			enum row_rc row = rotate_row(cfg, pg, r, i, &skip, done, unreadable);
			oom = row == ROW_NO_MEMORY;
			if (row != ROW_OK)
				goto out;
		}
		PQclear(r);
		r = NULL;
		if (exec_cmd(pg, "COMMIT") < 0)
			goto out;
		if (n == 0 && waiting)
			break;
		if (n == 0)
			waiting = 1;
	}
	rc = 0;
out:
	PQclear(r);
	if (rc < 0) {
		log_msg(LOG_ERROR, "rotate.failed", NULL, "%s", oom ? "out of memory" : PQerrorMessage(pg));
		exec_cmd(pg, "ROLLBACK");
	}
	buf_free(&skip);
	return rc;
}

/* Connected accounts, and the revocations still to tell their upstream:
 * rows keyed by column 0 (a grant id, a revocation id) and upstream, whose
 * tokens are sealed under "<upstream>:<kind>". Each batch waits for the
 * rows it takes (a connection's refresh holds its row for one upstream
 * call); an unreadable row is skipped by key from then on. */
struct sealed_table {
	const char *select, *update;
};
static const struct sealed_table connection_tables[] = {
	{ "SELECT grant_id::text, upstream, key_id, up_access, up_refresh, grant_id::text FROM grant_connections WHERE key_id <> $1 "
	  "AND NOT (grant_id::text || ':' || upstream = ANY(string_to_array($2, ','))) ORDER BY grant_id, upstream "
	  "LIMIT " ROTATE_BATCH " FOR NO KEY UPDATE",
	  "UPDATE grant_connections SET key_id = $3, up_access = $4::bytea, up_refresh = $5::bytea, "
	  "updated_at = now() WHERE grant_id = $1::uuid AND upstream = $2" },
	{ "SELECT id::text, upstream, key_id, up_access, up_refresh, grant_id::text FROM connection_revocations WHERE done_at IS NULL "
	  "AND key_id <> $1 AND NOT (id::text || ':' || upstream = ANY(string_to_array($2, ','))) ORDER BY id "
	  "LIMIT " ROTATE_BATCH " FOR NO KEY UPDATE",
	  "UPDATE connection_revocations SET key_id = $3, up_access = $4::bytea, up_refresh = $5::bytea "
	  "WHERE id = $1::bigint AND upstream = $2" },
};

/* Row i of r (key, upstream, key_id, access, refresh, grant id) under the
 * active key. */
static enum row_rc reseal_connection(const struct config *cfg, PGconn *pg, const struct sealed_table *t, PGresult *r,
				     int i, struct buf *skip, long *done, long *unreadable)
{
	const char *key = PQgetvalue(r, i, 0), *up = PQgetvalue(r, i, 1), *kid = PQgetvalue(r, i, 2);
	const char *gid = PQgetvalue(r, i, 5);
	char pa[96], pr[96], *a = NULL, *b = NULL;
	enum row_rc rc = ROW_NO_MEMORY;
	vault_connection_purpose(pa, up, "access");
	vault_connection_purpose(pr, up, "refresh");
	enum reseal_rc ra = reseal(cfg, kid, gid, pa, PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3), &a);
	enum reseal_rc rb = ra != RESEAL_OK
				    ? ra
				    : reseal(cfg, kid, gid, pr, PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4), &b);
	if (rb == RESEAL_FAILED)
		goto out;
	if (rb == RESEAL_UNREADABLE) {
		(*unreadable)++;
		log_msg(LOG_ERROR, "rotate.unreadable", NULL,
			"grant %s, connected account %s: its key \"%s\" is not configured or the data is damaged", gid,
			up, kid);
		if (buf_printf(skip, "%s%s:%s", skip->len ? "," : "", key, up) == 0)
			rc = ROW_OK;
		goto out;
	}
	const char *u[] = { key, up, cfg->encryption_keys[0].id, a, b };
	PGresult *w = PQexecParams(pg, t->update, 5, NULL, u, NULL, NULL, 0);
	int ok = w && PQresultStatus(w) == PGRES_COMMAND_OK;
	PQclear(w);
	rc = ok ? ROW_OK : ROW_DB_FAILED;
	*done += ok;
out:
	free(a);
	free(b);
	return rc;
}

int rotate_connections(const struct config *cfg, PGconn *pg, long *done, long *unreadable)
{
	const char *active = cfg->encryption_keys[0].id;
	char wait_sql[64];
	struct buf skip;
	PGresult *r = NULL;
	int rc = -1, oom = 0;
	*done = 0;
	*unreadable = 0;
	buf_init(&skip, ROTATE_SKIP_BYTES);
	snprintf(wait_sql, sizeof(wait_sql), "SET LOCAL statement_timeout = %ld", lock_wait_ms(cfg));
	for (size_t t = 0; t < sizeof(connection_tables) / sizeof(connection_tables[0]); t++) {
		buf_reset(&skip);
		for (int n = 1; n > 0;) {
			if (exec_cmd(pg, "BEGIN") < 0 || exec_cmd(pg, wait_sql) < 0)
				goto out;
			const char *p[] = { active, skip.ptr ? skip.ptr : "" };
			r = PQexecParams(pg, connection_tables[t].select, 2, NULL, p, NULL, NULL, 0);
			if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
				goto out;
			n = PQntuples(r);
			for (int i = 0; i < n; i++) {
				enum row_rc row = reseal_connection(cfg, pg, &connection_tables[t], r, i, &skip, done,
								    unreadable);
				oom = row == ROW_NO_MEMORY;
				if (row != ROW_OK)
					goto out;
			}
			PQclear(r);
			r = NULL;
			if (exec_cmd(pg, "COMMIT") < 0)
				goto out;
		}
	}
	rc = 0;
out:
	PQclear(r);
	if (rc < 0) {
		log_msg(LOG_ERROR, "rotate.failed", NULL, "%s", oom ? "out of memory" : PQerrorMessage(pg));
		exec_cmd(pg, "ROLLBACK");
	}
	buf_free(&skip);
	return rc;
}
