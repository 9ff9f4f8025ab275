/* Audit events: a row in audit_events (inside the caller's transaction, so
 * the event commits or rolls back with what it describes) and a log line.
 * No secret ever goes into either. */
#ifndef MCPB_AUDIT_H
#define MCPB_AUDIT_H
#include <jansson.h>
#include "db.h"

struct audit {
	const char *event;
	const char *actor;   /* "client:<id>", "admin", "user:<id>", "system" */
	const char *subject; /* user id or other object */
	const char *client_id;
	const char *grant_id;
	const char *request_id;
};

/* Records a; detail is stolen (may be NULL). -1 when the insert failed. */
int audit_record(struct db_conn *c, const struct audit *a, json_t *detail) WUR;
/* The log line of a record a caller inserts itself (in a statement that
 * does more); detail is borrowed (may be NULL). */
void audit_log_line(const struct audit *a, json_t *detail);

/* High-volume records (one per proxied tool call) are not worth a database
 * round trip on the request path: audit_enqueue logs the record and queues
 * it (bounded), and a background thread writes batches (within
 * AUDIT_FLUSH_MS) and what is left at shutdown. audit_enqueue never blocks
 * on or touches the database: a full queue, a write that keeps failing
 * (database outage) or no memory drops the record, counted in
 * mcpb_audit_dropped_total and reported by a rate-limited audit.dropped
 * log line. detail is stolen (may be NULL). */
#define AUDIT_FLUSH_MS 200
struct app;
int audit_writer_start(struct app *app) WUR;
void audit_writer_stop(void);
void audit_enqueue(const struct audit *a, json_t *detail);

#endif
