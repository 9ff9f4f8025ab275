#include "admin.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "audit.h"
#include "crypto.h"
#include "grant.h"
#include "log.h"
#include "notify.h"

#define DB_WAIT_MS 2000
#define ADMIN_PAGE_MAX 500
#define ADMIN_PAGE_DEFAULT 100

/* 0 authenticated; otherwise the answer has been sent. */
static int admin_auth(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	const char *h = http_header(r, "Authorization");
	(void)http_add_header(r, "Cache-Control", "no-store");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7] || strlen(h + 7) > LIM_TOKEN) {
		(void)http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker-admin\"");
		http_send_json(r, 401, json_pack("{s:s}", "error", "unauthorized"));
		return -1;
	}
	uint8_t hash[CRYPTO_SHA256_LEN];
	crypto_sha256(h + 7, strlen(h + 7), hash);
	int ok = 0;
	for (size_t i = 0; i < cfg->n_admin_tokens; i++) /* every entry: no early exit */
		ok |= crypto_ct_equal(hash, sizeof(hash), cfg->admin_token_hashes[i], CRYPTO_SHA256_LEN);
	crypto_wipe(hash, sizeof(hash));
	if (!ok) {
		log_msg(LOG_WARN, "admin.denied", r->id, "admin call with a wrong token from %s", r->client_ip);
		http_send_json(r, 403, json_pack("{s:s}", "error", "forbidden"));
		return -1;
	}
	return 0;
}

static int audit_call(struct db_conn *c, struct http_req *r, const char *action, json_t *detail)
{
	struct audit a = { "admin.call", "admin", NULL, NULL, NULL, r->id };
	if (detail)
		json_object_set_new(detail, "action", json_string(action));
	else
		detail = json_pack("{s:s}", "action", action);
	json_object_set_new(detail, "ip", json_string(r->client_ip));
	return audit_record(c, &a, detail);
}

static const char *q_arg(struct http_req *r, const char *name, size_t max)
{
	const char *v = http_query(r, name);
	return v && *v && strlen(v) <= max ? v : NULL;
}

void admin_grants(struct http_req *r)
{
	static struct db_stmt q = DB_STMT(
		"SELECT g.id::text, u.upstream, u.subject, u.login, g.client_id, g.resource, "
		"array_to_json(g.scopes), g.status, to_char(g.created_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), to_char(g.revoked_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), g.revoked_reason, "
		"(extract(epoch FROM g.created_at) * 1000000)::bigint "
		"FROM grants g JOIN users u ON u.id = g.user_id "
		"WHERE ($1::text IS NULL OR u.subject = $1) AND ($2::text IS NULL OR g.client_id = $2) "
		"AND ($3::text IS NULL OR g.upstream = $3) AND ($4::text IS NULL OR g.status = $4) "
		"AND ($5::bigint IS NULL OR ((extract(epoch FROM g.created_at) * 1000000)::bigint, g.id) < ($5::bigint, $6::uuid)) "
		"ORDER BY 12 DESC, g.id DESC LIMIT $7::int");
	struct db_conn *c = NULL;
	if (admin_auth(r) < 0)
		return;
	const char *user = q_arg(r, "user", 300), *client = q_arg(r, "client_id", LIM_CLIENT_ID);
	const char *upstream = q_arg(r, "upstream", 64), *status = q_arg(r, "status", 16);
	const char *limit_s = http_query(r, "limit"), *cursor = http_query(r, "cursor");
	long limit = ADMIN_PAGE_DEFAULT;
	if (status && strcmp(status, "active") != 0 && strcmp(status, "revoked") != 0) {
		http_send_json(r, 400, json_pack("{s:s}", "error", "status must be active or revoked"));
		return;
	}
	if (limit_s) {
		char *end = NULL;
		limit = strtol(limit_s, &end, 10);
		if (!end || *end || limit < 1 || limit > ADMIN_PAGE_MAX) {
			http_send_json(r, 400, json_pack("{s:s}", "error", "limit must be 1..500"));
			return;
		}
	}
	/* cursor = "<created_at microseconds>_<grant id>" from the previous page */
	char cur_ts[24] = "", cur_id[37] = "";
	if (cursor) {
		const char *us = strchr(cursor, '_');
		size_t n = us ? (size_t)(us - cursor) : 0;
		if (!us || n == 0 || n >= sizeof(cur_ts) || strspn(cursor, "0123456789") != n ||
		    strlen(us + 1) != 36 || strspn(us + 1, "0123456789abcdef-") != 36) {
			http_send_json(r, 400, json_pack("{s:s}", "error", "malformed cursor"));
			return;
		}
		memcpy(cur_ts, cursor, n);
		memcpy(cur_id, us + 1, 37);
	}
	char lim[16];
	snprintf(lim, sizeof(lim), "%ld", limit);
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		(void)http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "database unavailable"));
		return;
	}
	const char *p[] = { user, client, upstream, status, cursor ? cur_ts : NULL, cursor ? cur_id : NULL, lim };
	PGresult *res = db_exec_ok(c, &q, 7, p);
	if (!res) {
		db_release(r->app->db, &c);
		http_send_json(r, 500, json_pack("{s:s}", "error", "query failed"));
		return;
	}
	json_t *list = json_array();
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		json_t *g = json_pack("{s:s, s:{s:s, s:s, s:s?}, s:s, s:s, s:o, s:s, s:s}", "grant_id",
				      PQgetvalue(res, i, 0), "user", "upstream", PQgetvalue(res, i, 1), "subject",
				      PQgetvalue(res, i, 2), "login", PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
				      "client_id", PQgetvalue(res, i, 4), "resource", PQgetvalue(res, i, 5), "scopes",
				      json_loads(PQgetvalue(res, i, 6), 0, NULL), "status", PQgetvalue(res, i, 7),
				      "created_at", PQgetvalue(res, i, 8));
		if (g && !PQgetisnull(res, i, 9)) {
			json_object_set_new(g, "revoked_at", json_string(PQgetvalue(res, i, 9)));
			json_object_set_new(g, "revoked_reason", json_string(PQgetvalue(res, i, 10)));
		}
		json_array_append_new(list, g);
	}
	json_t *out = json_pack("{s:o}", "grants", list);
	if (n == limit) {
		char next[80];
		snprintf(next, sizeof(next), "%s_%s", PQgetvalue(res, n - 1, 11), PQgetvalue(res, n - 1, 0));
		json_object_set_new(out, "next_cursor", json_string(next));
	}
	PQclear(res);
	if (audit_call(c, r, "list_grants", json_pack("{s:s?, s:s?, s:s?, s:s?}", "user", user, "client_id", client,
						       "upstream", upstream, "status", status)) < 0)
		log_msg(LOG_WARN, "admin.audit_failed", r->id, "audit record not written");
	db_release(r->app->db, &c);
	http_send_json(r, 200, out);
}

/* Revokes every active grant matched by the selector in one transaction,
 * announced once (one NOTIFY however many grants: every node matches the
 * selector against what it caches and serves). */
void admin_revoke(struct http_req *r)
{
	static struct db_stmt q_select = DB_STMT(
		"SELECT g.id::text FROM grants g JOIN users u ON u.id = g.user_id WHERE g.status = 'active' "
		"AND ($1::uuid IS NULL OR g.id = $1::uuid) AND ($2::text IS NULL OR u.subject = $2) "
		"AND ($3::text IS NULL OR g.client_id = $3) AND ($4::text IS NULL OR g.upstream = $4) "
		"AND ($1::uuid IS NOT NULL OR $2::text IS NOT NULL OR $3::text IS NOT NULL OR $4::text IS NOT NULL OR $5::bool) "
		"ORDER BY g.id FOR UPDATE OF g");
	static struct db_stmt q_disable = DB_STMT(
		"UPDATE clients SET disabled_at = coalesce(disabled_at, now()) WHERE client_id = $1");
	struct db_conn *c = NULL;
	json_t *body = NULL;
	if (admin_auth(r) < 0)
		return;
	body = json_loadb(r->body.ptr ? r->body.ptr : "", r->body.len, JSON_REJECT_DUPLICATES, NULL);
	const char *gid = NULL, *user = NULL, *client = NULL, *upstream = NULL;
	int all = 0, disable = 0, selectors = 0, bad = !json_is_object(body);
	const char *k;
	json_t *v;
	if (!bad) {
		json_object_foreach(body, k, v) {
			const char *s = json_string_value(v);
			size_t len = s ? strlen(s) : 0;
			if (strcmp(k, "grant_id") == 0 && s && len == 36 && strspn(s, "0123456789abcdef-") == 36)
				gid = s, selectors++;
			else if (strcmp(k, "user") == 0 && s && len && len <= 300)
				user = s, selectors++;
			else if (strcmp(k, "client_id") == 0 && s && len && len <= LIM_CLIENT_ID)
				client = s, selectors++;
			else if (strcmp(k, "upstream") == 0 && s && len && len <= 64)
				upstream = s;
			else if (strcmp(k, "all") == 0 && json_is_true(v))
				all = 1, selectors++;
			else if (strcmp(k, "disable_client") == 0 && json_is_boolean(v))
				disable = json_is_true(v);
			else
				bad = 1;
		}
	}
	/* Exactly one selector; "upstream" alone is one, or narrows "user". */
	if (upstream && selectors == 0)
		selectors = 1;
	else if (upstream && !user)
		bad = 1;
	if (disable && !client)
		bad = 1;
	if (bad || selectors != 1) {
		http_send_json(r, 400, json_pack("{s:s}", "error",
						 "body must be exactly one of {grant_id}, {user[, upstream]}, "
						 "{client_id[, disable_client]}, {upstream}, {all: true}"));
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		(void)http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "database unavailable"));
		goto out;
	}
	if (db_begin(c) < 0)
		goto fail;
	const char *p[] = { gid, user, client, upstream, all ? "true" : "false" };
	PGresult *res = db_exec_ok(c, &q_select, 5, p);
	if (!res)
		goto fail;
	long revoked = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		int rc = gid ? grant_revoke(r->app, c, PQgetvalue(res, i, 0), "operator", "admin", r->id)
			     : grant_revoke_quiet(r->app, c, PQgetvalue(res, i, 0), "operator", "admin", r->id);
		if (rc < 0) {
			PQclear(res);
			goto fail;
		}
		revoked += rc;
	}
	PQclear(res);
	struct revocation sel = { .client_id = client, .subject = user, .upstream = upstream };
	if (!gid && revoked > 0 && notify_publish(c, &sel) < 0)
		goto fail;
	if (disable) {
		const char *pd[] = { client };
		PGresult *u = db_exec_ok(c, &q_disable, 1, pd);
		if (!u)
			goto fail;
		PQclear(u);
		struct audit a = { "client.disabled", "admin", NULL, client, NULL, r->id };
		if (audit_record(c, &a, NULL) < 0)
			goto fail;
	}
	json_t *d = json_deep_copy(body);
	json_object_set_new(d, "revoked", json_integer(revoked));
	if (audit_call(c, r, "revoke", d) < 0 || db_commit(c) < 0)
		goto fail;
	http_send_json(r, 200, json_pack("{s:I}", "revoked", (json_int_t)revoked));
	goto out;
fail:
	(void)http_add_header(r, "Retry-After", "1");
	http_send_json(r, 503, json_pack("{s:s}", "error", "revocation failed; nothing was revoked"));
out:
	json_decref(body);
	db_release(r->app->db, &c);
}
