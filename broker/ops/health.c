#include "health.h"

#include <limits.h>

#include "app.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "num.h"

/* How long /readyz waits for a pooled connection before answering 503. */
#define READYZ_ACQUIRE_MS 1000

void health_healthz(struct http_req *r)
{
	http_add_header(r, "Cache-Control", "no-store");
	http_send_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void health_readyz(struct http_req *r)
{
	static struct db_stmt q_version = DB_STMT("SELECT coalesce(max(version), 0) FROM schema_migrations");
	struct app *app = r->app;
	struct db_conn *c = NULL;
	const char *why = NULL;
	int version = -1;
	http_add_header(r, "Cache-Control", "no-store");
	if (__atomic_load_n(&app->draining, __ATOMIC_ACQUIRE)) {
		why = "draining";
		goto out;
	}
	if (db_acquire(app->db, &c, READYZ_ACQUIRE_MS) < 0) {
		why = "database unreachable";
		goto out;
	}
	PGresult *res = db_exec_ok(c, &q_version, 0, NULL);
	if (!res || PQntuples(res) != 1) {
		why = "database unreachable";
		PQclear(res);
		goto out;
	}
	long long v = -1;
	/* An unreadable version is judged as an old schema. */
	if (num_parse(PQgetvalue(res, 0, 0), 0, INT_MAX, &v) == 0)
		version = (int)v;
	PQclear(res);
	/* A newer schema is fine for a running node (migrations are additive,
	 * and a rolling upgrade migrates before replacing old nodes); an older
	 * one means this node's queries may fail. */
	if (version < migrate_latest())
		why = "schema not current";
out:
	db_release(app->db, &c);
	if (why) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503,
			       json_pack("{s:s, s:s, s:i, s:i}", "status", "unavailable", "reason", why, "schema",
					 version, "expected", migrate_latest()));
	} else {
		http_send_json(r, 200, json_pack("{s:s, s:i}", "status", "ready", "schema", version));
	}
}
