#include "rotate.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vault.h"

#define ROTATE_BATCH "100"

static int exec_cmd(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	return ok ? 0 : -1;
}

/* Re-seals one sealed value under the active key; NULL in -> NULL out. */
static int reseal(const struct config *cfg, const char *key_id, const char *gid, const char *purpose,
		  const char *in, char **out)
{
	*out = NULL;
	if (!in)
		return 0;
	char *pt = vault_open(cfg, key_id, gid, purpose, in);
	if (!pt)
		return -1;
	const char *active = NULL;
	*out = vault_seal(cfg, gid, purpose, pt, &active);
	vault_free(pt);
	return *out ? 0 : -1;
}

/* The sweep passes over rows another transaction holds, so that it never
 * queues behind a node; then the rows still under another key are taken one
 * by one, waiting for each (a node's upstream refresh holds its grant FOR
 * UPDATE for the length of one upstream call, and rolls back if that call
 * fails). FOR NO KEY UPDATE: the foreign key check of a token being issued
 * holds FOR KEY SHARE on its grant, which only FOR UPDATE conflicts with. */
#define ROTATE_SELECT                                                   \
	"SELECT id::text, key_id, up_access, up_refresh FROM grants "   \
	"WHERE key_id <> $1 AND NOT (id = ANY($2::uuid[])) ORDER BY id "
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

long rotate_keys(const struct config *cfg, PGconn *pg, long *unreadable)
{
	const char *active = cfg->encryption_keys[0].id;
	long done = 0, rc = -1;
	int waiting = 0;
	char wait_sql[64];
	PGresult *r = NULL;
	*unreadable = 0;
	snprintf(wait_sql, sizeof(wait_sql), "SET LOCAL statement_timeout = %ld", lock_wait_ms(cfg));
	/* Rows that fail to decrypt are skipped by id so the loop ends. */
	char *skip = strdup("{}");
	for (;;) {
		if (!skip || exec_cmd(pg, "BEGIN") < 0 || (waiting && exec_cmd(pg, wait_sql) < 0))
			goto out;
		const char *p[] = { active, skip };
		r = PQexecParams(pg, waiting ? q_wait : q_sweep, 2, NULL, p, NULL, NULL, 0);
		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
			goto out;
		int n = PQntuples(r);
		for (int i = 0; i < n; i++) {
			const char *gid = PQgetvalue(r, i, 0), *kid = PQgetvalue(r, i, 1);
			char *a = NULL, *b = NULL;
			int bad = reseal(cfg, kid, gid, "access", PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2), &a) < 0 ||
				  reseal(cfg, kid, gid, "refresh", PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3), &b) < 0;
			int ok = 1;
			if (bad) {
				(*unreadable)++;
				log_msg(LOG_ERROR, "rotate.unreadable", NULL,
					"grant %s: its key \"%s\" is not configured or the data is damaged", gid, kid);
				size_t len = strlen(skip) + 40;
				char *ns = malloc(len);
				if (ns)
					snprintf(ns, len, "%.*s%s%s}", (int)(strlen(skip) - 1), skip, strlen(skip) > 2 ? "," : "", gid);
				free(skip);
				skip = ns;
			} else {
				const char *u[] = { gid, active, a, b };
				PGresult *w = PQexecParams(pg,
					"UPDATE grants SET key_id = $2, up_access = $3::bytea, up_refresh = $4::bytea, "
					"updated_at = now() WHERE id = $1::uuid", 4, NULL, u, NULL, NULL, 0);
				ok = w && PQresultStatus(w) == PGRES_COMMAND_OK;
				PQclear(w);
				done += ok;
			}
			free(a);
			free(b);
			if (!ok || !skip)
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
	rc = done;
out:
	PQclear(r);
	if (rc < 0) {
		log_msg(LOG_ERROR, "rotate.failed", NULL, "%s", skip ? PQerrorMessage(pg) : "out of memory");
		exec_cmd(pg, "ROLLBACK");
	}
	free(skip);
	return rc;
}
