#include "audit.h"

#include <stdlib.h>

#include "log.h"

int audit_record(struct db_conn *c, const struct audit *a, json_t *detail)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO audit_events(event, actor, subject, client_id, grant_id, request_id, detail) "
		"VALUES ($1, $2, $3, $4, $5::uuid, $6, coalesce($7::jsonb, '{}'::jsonb))");
	char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
	const char *p[] = { a->event, a->actor, a->subject, a->client_id, a->grant_id, a->request_id, text };
	PGresult *r = db_exec_ok(c, &q, 7, p);
	free(text);
	json_t *f = json_pack("{s:s?, s:s?, s:s?, s:s?}", "actor", a->actor, "subject", a->subject,
			      "client_id", a->client_id, "grant_id", a->grant_id);
	if (f && detail)
		json_object_set(f, "detail", detail);
	log_event(LOG_INFO, a->event, a->request_id, f);
	json_decref(detail);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}
