/* Audit events: a row in audit_events (inside the caller's transaction, so
 * the event commits or rolls back with what it describes) and a log line.
 * No secret ever goes into either. */
#ifndef MCPB_AUDIT_H
#define MCPB_AUDIT_H
#include <jansson.h>
#include "db.h"

struct audit {
	const char *event;
	const char *actor;     /* "client:<id>", "admin", "user:<id>", "system" */
	const char *subject;   /* user id or other object */
	const char *client_id;
	const char *grant_id;
	const char *request_id;
};

/* Records a; detail is stolen (may be NULL). -1 when the insert failed. */
int audit_record(struct db_conn *c, const struct audit *a, json_t *detail) WUR;

#endif
