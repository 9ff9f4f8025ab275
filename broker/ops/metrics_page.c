#include "metrics_page.h"

#include "app.h"
#include "buf.h"
#include "db.h"
#include "metrics.h"
#include "migrate.h"
#include "offload.h"

/* The largest page the node renders (label sets are bounded by metrics.c). */
#define METRICS_PAGE_MAX (4 * 1024 * 1024)

/* The gauges that live outside core/metrics: the HTTP server's, the handler
 * pool's (requests queued or running) and the database pool's. */
static int render_gauges(struct buf *b, struct db *db)
{
	int size = 0, in_use = 0;
	long waits = 0, reconnects = 0;
	db_stats(db, &size, &in_use, &waits, &reconnects);
	return buf_printf(b,
			  "# TYPE mcpb_http_in_flight gauge\nmcpb_http_in_flight %ld\n"
			  "# TYPE mcpb_http_body_bytes_in_flight gauge\nmcpb_http_body_bytes_in_flight %lld\n"
			  "# TYPE mcpb_http_handler_pool_pending gauge\nmcpb_http_handler_pool_pending %ld\n"
			  "# TYPE mcpb_db_pool_size gauge\nmcpb_db_pool_size %d\n"
			  "# TYPE mcpb_db_pool_in_use gauge\nmcpb_db_pool_in_use %d\n"
			  "# TYPE mcpb_db_pool_waits_total counter\nmcpb_db_pool_waits_total %ld\n"
			  "# TYPE mcpb_db_reconnects_total counter\nmcpb_db_reconnects_total %ld\n"
			  "# TYPE mcpb_build_info gauge\nmcpb_build_info{version=\"%s\",schema=\"%d\"} 1\n",
			  http_in_flight(), http_body_bytes_in_flight(), offload_pending(), size, in_use, waits,
			  reconnects, MCPB_VERSION, migrate_latest());
}

void metrics_page_get(struct http_req *r)
{
	struct buf b;
	buf_init(&b, METRICS_PAGE_MAX);
	if (metrics_render(&b) < 0 || render_gauges(&b, r->app->db) < 0) {
		http_send_error(r, 500, "server_error");
		goto out;
	}
	http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.ptr, b.len);
out:
	buf_free(&b);
}
