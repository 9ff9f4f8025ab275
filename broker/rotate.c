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

long rotate_keys(const struct config *cfg, PGconn *pg, long *unreadable)
{
	const char *active = cfg->encryption_keys[0].id;
	long done = 0;
	*unreadable = 0;
	/* Rows that fail to decrypt are skipped by id so the loop ends. */
	char *skip = strdup("{}");
	for (;;) {
		if (!skip || exec_cmd(pg, "BEGIN") < 0)
			goto fail;
		const char *p[] = { active, skip };
		PGresult *r = PQexecParams(pg,
			"SELECT id::text, key_id, up_access, up_refresh FROM grants "
			"WHERE key_id <> $1 AND NOT (id = ANY($2::uuid[])) "
			"ORDER BY id LIMIT " ROTATE_BATCH " FOR UPDATE SKIP LOCKED",
			2, NULL, p, NULL, NULL, 0);
		if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
			PQclear(r);
			goto fail;
		}
		int n = PQntuples(r);
		for (int i = 0; i < n; i++) {
			const char *gid = PQgetvalue(r, i, 0), *kid = PQgetvalue(r, i, 1);
			char *a = NULL, *b = NULL;
			int bad = reseal(cfg, kid, gid, "access", PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2), &a) < 0 ||
				  reseal(cfg, kid, gid, "refresh", PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3), &b) < 0;
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
				int ok = w && PQresultStatus(w) == PGRES_COMMAND_OK;
				PQclear(w);
				if (!ok) {
					free(a);
					free(b);
					PQclear(r);
					goto fail;
				}
				done++;
			}
			free(a);
			free(b);
		}
		PQclear(r);
		if (exec_cmd(pg, "COMMIT") < 0)
			goto fail;
		if (n == 0)
			break;
	}
	free(skip);
	return done;
fail:
	log_msg(LOG_ERROR, "rotate.failed", NULL, "%s", PQerrorMessage(pg));
	exec_cmd(pg, "ROLLBACK");
	free(skip);
	return -1;
}
