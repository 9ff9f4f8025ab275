#include "health.h"

#include <string.h>

#include "app.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"

/* How long /readyz waits for a pooled connection before answering 503. */
#define READYZ_ACQUIRE_MS 1000

void health_healthz(struct http_req *r)
{
	(void)http_add_header(r, "Cache-Control", "no-store");
	http_send_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void health_readyz(struct http_req *r)
{
	static struct db_stmt q_version = DB_STMT("SELECT coalesce(max(version), 0) FROM schema_migrations");
	struct app *app = r->app;
	struct db_conn *c = NULL;
	const char *why = NULL;
	int version = -1;
	(void)http_add_header(r, "Cache-Control", "no-store");
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
	version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	/* A newer schema is fine for a running node (migrations are additive,
	 * and a rolling upgrade migrates before replacing old nodes); an older
	 * one means this node's queries may fail. */
	if (version < migrate_latest())
		why = "schema not current";
out:
	db_release(app->db, &c);
	if (why) {
		(void)http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s, s:s, s:i, s:i}", "status", "unavailable", "reason", why,
						 "schema", version, "expected", migrate_latest()));
	} else {
		http_send_json(r, 200, json_pack("{s:s, s:i}", "status", "ready", "schema", version));
	}
}

void health_metrics(struct http_req *r)
{
	struct buf b;
	buf_init(&b, 4 * 1024 * 1024);
	int size = 0, in_use = 0;
	long waits = 0, reconnects = 0;
	db_stats(r->app->db, &size, &in_use, &waits, &reconnects);
	if (metrics_render(&b) < 0 ||
	    buf_printf(&b,
		       "# TYPE mcpb_http_in_flight gauge\nmcpb_http_in_flight %ld\n"
		       "# TYPE mcpb_http_body_bytes_in_flight gauge\nmcpb_http_body_bytes_in_flight %lld\n"
		       "# TYPE mcpb_db_pool_size gauge\nmcpb_db_pool_size %d\n"
		       "# TYPE mcpb_db_pool_in_use gauge\nmcpb_db_pool_in_use %d\n"
		       "# TYPE mcpb_db_pool_waits_total counter\nmcpb_db_pool_waits_total %ld\n"
		       "# TYPE mcpb_db_reconnects_total counter\nmcpb_db_reconnects_total %ld\n"
		       "# TYPE mcpb_build_info gauge\nmcpb_build_info{version=\"%s\",schema=\"%d\"} 1\n",
		       http_in_flight(), http_body_bytes_in_flight(), size, in_use, waits, reconnects, MCPB_VERSION,
		       migrate_latest()) < 0) {
		buf_free(&b);
		http_send_error(r, 500, "server_error");
		return;
	}
	http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.ptr, b.len);
	buf_free(&b);
}
