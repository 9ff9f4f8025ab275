#include "admin.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "audit.h"
#include "cache.h"
#include "connection.h"
#include "crypto.h"
#include "grant.h"
#include "jparse.h"
#include "log.h"
#include "notify.h"
#include "num.h"
#include "revoker.h"

#define ADMIN_PAGE_MAX 500
#define ADMIN_PAGE_DEFAULT 100

/* 0 authenticated; otherwise the answer has been sent. */
static int admin_auth(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	const char *h = http_header(r, "Authorization");
	http_add_header(r, "Cache-Control", "no-store");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7] || strlen(h + 7) > LIM_TOKEN) {
		http_add_header(r, "WWW-Authenticate", "Bearer realm=\"mcp-broker-admin\"");
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

/* ---- GET /admin/v1/grants ------------------------------------------- */

/* The raw query parameters of a listing, NULL when absent. */
struct grants_args {
	const char *user, *client_id, *upstream, *status, *limit, *cursor;
};

/* A validated listing: filters (NULL: any), the page size, and the
 * position after the previous page. */
struct grants_query {
	const char *user, *client_id, *upstream, *status;
	long long limit;
	int has_cursor;
	char cur_ts[24], cur_id[37]; /* created_at in microseconds, grant id */
};

/* A filter value: NULL when absent or empty (then it does not filter);
 * *too_long set when it is over max bytes: a filter that cannot match must
 * not widen the listing to every grant. */
static const char *filter(const char *v, size_t max, int *too_long)
{
	if (v && strlen(v) > max)
		*too_long = 1;
	return v && *v ? v : NULL;
}

/* NULL with *q filled, or the error text for a 400. */
static const char *grants_parse(const struct grants_args *a, struct grants_query *q)
{
	const char *err = NULL;
	memset(q, 0, sizeof(*q));
	int too_long = 0;
	q->user = filter(a->user, 300, &too_long);
	q->client_id = filter(a->client_id, LIM_CLIENT_ID, &too_long);
	q->upstream = filter(a->upstream, 64, &too_long);
	q->status = filter(a->status, 16, &too_long);
	q->limit = ADMIN_PAGE_DEFAULT;
	/* cursor = "<created_at microseconds>_<grant id>" from the previous page */
	const char *us = a->cursor ? strchr(a->cursor, '_') : NULL;
	size_t n = us ? (size_t)(us - a->cursor) : 0;
	long long ts;
	if (too_long)
		err = "a filter is too long";
	else if (q->status && strcmp(q->status, "active") != 0 && strcmp(q->status, "revoked") != 0)
		err = "status must be active or revoked";
	else if (a->limit && num_parse(a->limit, 1, ADMIN_PAGE_MAX, &q->limit) < 0)
		err = "limit must be 1..500";
	else if (a->cursor &&
		 (!us || n == 0 || n >= sizeof(q->cur_ts) || strspn(a->cursor, "0123456789") != n ||
		  num_parse_n(a->cursor, n, 0, LLONG_MAX, &ts) < 0 || strlen(us + 1) != 36 || !num_uuid_ok(us + 1)))
		err = "malformed cursor"; /* the timestamp must fit the bigint it is compared with */
	if (!err && a->cursor) {
		memcpy(q->cur_ts, a->cursor, n);
		memcpy(q->cur_id, us + 1, 37);
		q->has_cursor = 1;
	}
	return err;
}

static PGresult *grants_select(struct db_conn *c, const struct grants_query *q)
{
	static struct db_stmt st = DB_STMT(
		"SELECT g.id::text, u.upstream, u.subject, u.login, g.client_id, g.resource, "
		"array_to_json(g.scopes), g.status, to_char(g.created_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), to_char(g.revoked_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), g.revoked_reason, "
		"(extract(epoch FROM g.created_at) * 1000000)::bigint, "
		"(SELECT coalesce(json_agg(json_build_object('upstream', k.upstream, 'subject', k.subject, 'login', "
		"k.login, 'connected_at', to_char(k.connected_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) ORDER BY k.upstream), '[]') FROM grant_connections k "
		"WHERE k.grant_id = g.id) "
		"FROM grants g JOIN users u ON u.id = g.user_id "
		"WHERE ($1::text IS NULL OR u.subject = $1) AND ($2::text IS NULL OR g.client_id = $2) "
		"AND ($3::text IS NULL OR g.upstream = $3) AND ($4::text IS NULL OR g.status = $4) "
		"AND ($5::bigint IS NULL OR ((extract(epoch FROM g.created_at) * 1000000)::bigint, g.id) < ($5::bigint, $6::uuid)) "
		"ORDER BY 12 DESC, g.id DESC LIMIT $7::int");
	char lim[24];
	snprintf(lim, sizeof(lim), "%lld", q->limit);
	const char *p[] = { q->user,
			    q->client_id,
			    q->upstream,
			    q->status,
			    q->has_cursor ? q->cur_ts : NULL,
			    q->has_cursor ? q->cur_id : NULL,
			    lim };
	return db_exec_ok(c, &st, 7, p);
}

/* One grant of a listing; NULL when out of memory. */
static json_t *grant_json(const PGresult *res, int i)
{
	json_t *g = json_pack("{s:s, s:{s:s, s:s, s:s?}, s:s, s:s, s:o, s:s, s:s, s:o}", "grant_id",
			      PQgetvalue(res, i, 0), "user", "upstream", PQgetvalue(res, i, 1), "subject",
			      PQgetvalue(res, i, 2), "login", PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
			      "client_id", PQgetvalue(res, i, 4), "resource", PQgetvalue(res, i, 5), "scopes",
			      jparse_str(PQgetvalue(res, i, 6), 0, LIM_JSON_DEPTH), "status", PQgetvalue(res, i, 7),
			      "created_at", PQgetvalue(res, i, 8), "connections",
			      jparse_str(PQgetvalue(res, i, 12), 0, LIM_JSON_DEPTH));
	if (g && !PQgetisnull(res, i, 9) &&
	    (json_object_set_new(g, "revoked_at", json_string(PQgetvalue(res, i, 9))) < 0 ||
	     json_object_set_new(g, "revoked_reason", json_string(PQgetvalue(res, i, 10))) < 0)) {
		json_decref(g);
		g = NULL;
	}
	return g;
}

/* {"grants": [...], "next_cursor"?}: the cursor when the page is full.
 * NULL when out of memory. */
static json_t *grants_page(const PGresult *res, long long limit)
{
	json_t *list = json_array(), *out = NULL;
	int n = PQntuples(res), ok = list != NULL;
	for (int i = 0; ok && i < n; i++)
		ok = json_array_append_new(list, grant_json(res, i)) == 0;
	if (ok && (out = json_pack("{s:o}", "grants", list)) && n == limit) {
		char next[80];
		snprintf(next, sizeof(next), "%s_%s", PQgetvalue(res, n - 1, 11), PQgetvalue(res, n - 1, 0));
		if (json_object_set_new(out, "next_cursor", json_string(next)) < 0) {
			json_decref(out);
			out = NULL;
		}
	}
	if (!ok)
		json_decref(list);
	return out;
}

void admin_grants(struct http_req *r)
{
	struct db_conn *c = NULL;
	PGresult *res = NULL;
	struct grants_args a;
	struct grants_query q;
	const char *err = NULL;
	if (admin_auth(r) < 0)
		goto out;
	a = (struct grants_args){ http_query(r, "user"),   http_query(r, "client_id"), http_query(r, "upstream"),
				  http_query(r, "status"), http_query(r, "limit"),     http_query(r, "cursor") };
	if ((err = grants_parse(&a, &q))) {
		http_send_json(r, 400, json_pack("{s:s}", "error", err));
	} else if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "database unavailable"));
	} else if (!(res = grants_select(c, &q))) {
		http_send_json(r, 500, json_pack("{s:s}", "error", "query failed"));
	} else {
		json_t *page = grants_page(res, q.limit);
		json_t *filters = json_pack("{s:s?, s:s?, s:s?, s:s?}", "user", q.user, "client_id", q.client_id,
					    "upstream", q.upstream, "status", q.status);
		if (audit_call(c, r, "list_grants", filters) < 0)
			log_msg(LOG_WARN, "admin.audit_failed", r->id, "audit record not written");
		http_send_json(r, 200, page); /* 500 when page is NULL */
	}
out:
	PQclear(res);
	db_release(r->app->db, &c);
}

/* ---- POST /admin/v1/revoke ------------------------------------------- */

/* A revocation's selector: views into the request body. */
struct revoke_sel {
	const char *grant_id, *user, *client_id, *upstream;
	int all, disable_client;
};

/* Exactly one selector: {grant_id}, {user[, upstream]},
 * {client_id[, disable_client]}, {upstream} or {all: true}; nothing else.
 * 0 with *sel filled, or -1. */
static int revoke_parse(json_t *body, struct revoke_sel *sel)
{
	const char *k;
	json_t *v;
	int selectors = 0, bad = !json_is_object(body);
	memset(sel, 0, sizeof(*sel));
	json_object_foreach(body, k, v)
	{
		const char *s = json_string_value(v);
		size_t len = s ? strlen(s) : 0;
		if (strcmp(k, "grant_id") == 0 && num_uuid_ok(s))
			sel->grant_id = s, selectors++;
		else if (strcmp(k, "user") == 0 && s && len && len <= 300)
			sel->user = s, selectors++;
		else if (strcmp(k, "client_id") == 0 && s && len && len <= LIM_CLIENT_ID)
			sel->client_id = s, selectors++;
		else if (strcmp(k, "upstream") == 0 && s && len && len <= 64)
			sel->upstream = s;
		else if (strcmp(k, "all") == 0 && json_is_true(v))
			sel->all = 1, selectors++;
		else if (strcmp(k, "disable_client") == 0 && json_is_boolean(v))
			sel->disable_client = json_is_true(v);
		else
			bad = 1;
	}
	/* "upstream" alone is a selector, or narrows "user". */
	if (sel->upstream && selectors == 0)
		selectors = 1;
	else if (sel->upstream && !sel->user)
		bad = 1;
	if (sel->disable_client && !sel->client_id)
		bad = 1;
	return bad || selectors != 1 ? -1 : 0;
}

/* Revokes every active grant the selector matches, announced once (one
 * NOTIFY however many grants: every node matches the selector against what
 * it caches and serves); one grant by id is announced by grant_revoke. */
static int revoke_selected(struct http_req *r, struct db_conn *c, const struct revoke_sel *sel, long *revoked)
{
	static struct db_stmt q_select = DB_STMT(
		"SELECT g.id::text FROM grants g JOIN users u ON u.id = g.user_id WHERE g.status = 'active' "
		"AND ($1::uuid IS NULL OR g.id = $1::uuid) AND ($2::text IS NULL OR u.subject = $2) "
		"AND ($3::text IS NULL OR g.client_id = $3) AND ($4::text IS NULL OR g.upstream = $4) "
		"AND ($1::uuid IS NOT NULL OR $2::text IS NOT NULL OR $3::text IS NOT NULL OR $4::text IS NOT NULL OR $5::bool) "
		"ORDER BY g.id FOR UPDATE OF g");
	const char *p[] = { sel->grant_id, sel->user, sel->client_id, sel->upstream, sel->all ? "true" : "false" };
	struct revocation rv = { .client_id = sel->client_id, .subject = sel->user, .upstream = sel->upstream };
	PGresult *res = db_exec_ok(c, &q_select, 5, p);
	int rc = res ? 0 : -1;
	*revoked = 0;
	for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
		const char *gid = PQgetvalue(res, i, 0);
		int n = sel->grant_id ? grant_revoke(r->app, c, gid, "operator", "admin", r->id)
				      : grant_revoke_quiet(r->app, c, gid, "operator", "admin", r->id);
		if (n < 0)
			rc = -1;
		else
			*revoked += n;
	}
	PQclear(res);
	/* Disabling is announced even with nothing to revoke: every node's
	 * cached copy of the client goes (store/cache.h). */
	if (rc == 0 && !sel->grant_id && (*revoked > 0 || sel->disable_client) && notify_publish(c, &rv) < 0)
		rc = -1;
	return rc;
}

static int disable_client(struct http_req *r, struct db_conn *c, const char *client_id)
{
	static struct db_stmt q_disable = DB_STMT(
		"UPDATE clients SET disabled_at = coalesce(disabled_at, now()) WHERE client_id = $1");
	const char *p[] = { client_id };
	struct audit a = { "client.disabled", "admin", NULL, client_id, NULL, r->id };
	PGresult *u = db_exec_ok(c, &q_disable, 1, p);
	int rc = u && audit_record(c, &a, NULL) == 0 ? 0 : -1;
	PQclear(u);
	return rc;
}

/* The revocation in one transaction with its audit records (the body as
 * given and the count): 0 committed, or -1 with nothing revoked. */
static int revoke_store(struct http_req *r, struct db_conn *c, const struct revoke_sel *sel, const json_t *body,
			long *revoked)
{
	json_t *detail = NULL;
	int rc = -1;
	if (db_begin(c) < 0 || revoke_selected(r, c, sel, revoked) < 0 ||
	    (sel->disable_client && disable_client(r, c, sel->client_id) < 0))
		goto out;
	if (!(detail = json_deep_copy(body)) || json_object_set_new(detail, "revoked", json_integer(*revoked)) < 0)
		goto out;
	rc = audit_call(c, r, "revoke", detail) < 0 || db_commit(c) < 0 ? -1 : 0;
	detail = NULL; /* stolen by audit_call */
	/* The announcement evicted this node's copy before the commit, so a
	 * lookup in between may have kept the row still enabled: gone again
	 * (the other nodes hear the NOTIFY only once it is committed). */
	if (rc == 0 && sel->disable_client)
		cache_client_evict(sel->client_id);
out:
	json_decref(detail);
	return rc;
}

void admin_revoke(struct http_req *r)
{
	struct db_conn *c = NULL;
	json_t *body = NULL;
	struct revoke_sel sel;
	long revoked = 0;
	if (admin_auth(r) < 0)
		goto out;
	body = jparse(r->body.ptr ? r->body.ptr : "", r->body.len, 0, LIM_JSON_DEPTH);
	if (revoke_parse(body, &sel) < 0) {
		http_send_json(r, 400,
			       json_pack("{s:s}", "error",
					 "body must be exactly one of {grant_id}, {user[, upstream]}, "
					 "{client_id[, disable_client]}, {upstream}, {all: true}"));
	} else if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "database unavailable"));
	} else if (revoke_store(r, c, &sel, body, &revoked) < 0) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "revocation failed; nothing was revoked"));
	} else {
		http_send_json(r, 200, json_pack("{s:I}", "revoked", (json_int_t)revoked));
	}
out:
	json_decref(body);
	db_release(r->app->db, &c);
}

/* ---- POST /admin/v1/disconnect ---------------------------------------- */

/* {grant_id, upstream}: that grant's connected account; {upstream}: every
 * grant's account there (an upstream app whose tokens must all go). The
 * sessions end at once; their tokens are revoked at the upstream by the
 * revoker. Answers {"disconnected": N}. */
void admin_disconnect(struct http_req *r)
{
	static struct db_stmt q_select = DB_STMT(
		"SELECT grant_id::text FROM grant_connections WHERE upstream = $2 AND ($1::uuid IS NULL OR "
		"grant_id = $1::uuid) ORDER BY grant_id FOR UPDATE");
	struct db_conn *c = NULL;
	PGresult *res = NULL;
	json_t *detail = NULL;
	const char *k, *grant_id = NULL, *upstream = NULL;
	json_t *v, *body = jparse(r->body.ptr ? r->body.ptr : "", r->body.len, 0, LIM_JSON_DEPTH);
	long n = 0;
	int bad = !json_is_object(body), rc = -1;
	if (admin_auth(r) < 0)
		goto out;
	json_object_foreach(body, k, v)
	{
		const char *s = json_string_value(v);
		size_t len = s ? strlen(s) : 0;
		if (strcmp(k, "grant_id") == 0 && num_uuid_ok(s))
			grant_id = s;
		else if (strcmp(k, "upstream") == 0 && s && len && len <= 64)
			upstream = s;
		else
			bad = 1;
	}
	if (bad || !upstream) {
		http_send_json(r, 400, json_pack("{s:s}", "error", "body must be {grant_id, upstream} or {upstream}"));
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "database unavailable"));
		goto out;
	}
	const char *p[] = { grant_id, upstream };
	if (db_begin(c) < 0 || !(res = db_exec_ok(c, &q_select, 2, p)))
		goto fail;
	for (int i = 0; i < PQntuples(res); i++) {
		int one = connection_disconnect(c, PQgetvalue(res, i, 0), upstream, "admin", "operator", r->id);
		if (one < 0)
			goto fail;
		n += one;
	}
	if (!(detail = json_deep_copy(body)) || json_object_set_new(detail, "disconnected", json_integer(n)) < 0)
		goto fail;
	rc = audit_call(c, r, "disconnect", detail) < 0 || db_commit(c) < 0 ? -1 : 0;
	detail = NULL; /* stolen by audit_call */
fail:
	if (rc < 0) {
		http_add_header(r, "Retry-After", "1");
		http_send_json(r, 503, json_pack("{s:s}", "error", "disconnect failed; nothing was disconnected"));
	} else {
		revoker_kick();
		http_send_json(r, 200, json_pack("{s:I}", "disconnected", (json_int_t)n));
	}
out:
	json_decref(detail);
	json_decref(body);
	PQclear(res);
	db_release(r->app->db, &c);
}
