#include "revoke.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include "cache.h"
#include "clients.h"
#include "crypto.h"
#include "form.h"
#include "reqform.h"
#include "grant.h"
#include "log.h"
#include "upstream.h"
#include "vault.h"

#define DB_WAIT_MS 2000
#define REVOKE_MAX_ATTEMPTS 8
#define REVOKE_BATCH "10"
#define REVOKE_POLL_S 5

/* ---- POST /revoke ------------------------------------------------------- */

void revoke_endpoint(struct http_req *r)
{
	static struct db_stmt q_find = DB_STMT(
		"SELECT kind, grant_id::text, client_id FROM tokens WHERE token_hash = $1::bytea");
	static struct db_stmt q_one = DB_STMT(
		"UPDATE tokens SET revoked_at = now() WHERE token_hash = $1::bytea AND revoked_at IS NULL");
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" GRANT_NOTIFY_CHANNEL "', 't:' || $1)");
	struct db_conn *c = NULL;
	struct client cl;
	json_t *form = NULL;
	int dup = 0;
	memset(&cl, 0, sizeof(cl));
	(void)http_add_header(r, "Cache-Control", "no-store");
	const char *why = NULL;
	char who[LIM_CLIENT_ID + 1];
	int gated = 0;
	if (!(form = reqform_body(r, &dup, &why))) {
		http_send_oauth_error(r, 400, "invalid_request", why);
		return;
	}
	/* The same failure buckets as /token: a client secret cannot be tried
	 * on here instead (unknown tokens answer 200 and are no failure). */
	clients_named_id(r, form, who);
	if (clients_failures_check(r, who) < 0)
		goto out;
	gated = 1;
	const char *token = form_get(form, "token");
	const char *hint = form_get(form, "token_type_hint");
	if (dup || !token || !*token) {
		http_send_oauth_error(r, 400, "invalid_request", dup ? "a parameter was given more than once" : "token is required");
		goto out;
	}
	if (hint && strcmp(hint, "access_token") != 0 && strcmp(hint, "refresh_token") != 0) {
		http_send_oauth_error(r, 400, "unsupported_token_type", "token_type_hint must be access_token or refresh_token");
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	enum client_auth ca = clients_authenticate(r, c, form, &cl);
	if (ca != CA_OK) {
		clients_auth_error(r, ca);
		goto out;
	}
	if (strlen(token) > LIM_TOKEN) {
		http_send(r, 200, "application/json", "{}", 2); /* unknown token: nothing to do */
		goto out;
	}
	char hash[67];
	vault_hash_hex(token, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q_find, 1, p);
	if (!res) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	/* Unknown tokens, and tokens of other clients, answer 200 without
	 * effect: the endpoint must not reveal which tokens exist. */
	int mine = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 2), cl.client_id) == 0;
	int refresh = mine && strcmp(PQgetvalue(res, 0, 0), "refresh") == 0;
	char grant_id[37] = "";
	if (mine)
		snprintf(grant_id, sizeof(grant_id), "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	if (!mine) {
		http_send(r, 200, "application/json", "{}", 2);
		goto out;
	}
	char actor[LIM_CLIENT_ID + 8];
	snprintf(actor, sizeof(actor), "client:%s", cl.client_id);
	int ok = db_begin(c) == 0;
	if (ok && refresh) {
		/* A refresh token stands for the whole grant. */
		ok = grant_revoke(r->app, c, grant_id, "client_revoked", actor, r->id) >= 0;
	} else if (ok) {
		PGresult *u = db_exec_ok(c, &q_one, 1, p);
		int changed = u && strcmp(PQcmdTuples(u), "0") != 0;
		PGresult *n = changed ? db_exec_ok(c, &q_notify, 1, p) : NULL;
		struct audit a = { "token.revoked", actor, NULL, cl.client_id, grant_id, r->id };
		ok = u && (!changed || (n && audit_record(c, &a, json_pack("{s:s}", "kind", "access")) == 0));
		if (changed)
			cache_revoked(&(struct cache_revocation){ .token_hash = hash + 2 });
		PQclear(u);
		PQclear(n);
	}
	if (!ok || db_commit(c) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	http_send(r, 200, "application/json", "{}", 2);
out:
	if (gated)
		clients_failures_count(r, who);
	form_free(&form);
	client_free(&cl);
	db_release(r->app->db, &c);
}

/* ---- the upstream revocation worker ----------------------------------- */

static pthread_t rw_thread;
static int rw_running, rw_stop, rw_kick;
static pthread_mutex_t rw_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rw_cond = PTHREAD_COND_INITIALIZER;

void revoke_wake(void)
{
	pthread_mutex_lock(&rw_lock);
	rw_kick = 1;
	pthread_cond_signal(&rw_cond);
	pthread_mutex_unlock(&rw_lock);
}

/* Revokes one grant upstream. Returns the outcome label; *retry when a
 * later attempt may succeed. */
static const char *revoke_one(struct app *app, const char *grant_id, const char *upstream,
			      const char *key_id, const char *enc_access, const char *enc_refresh, int others,
			      int *retry)
{
	const struct config *cfg = app->cfg;
	const struct cfg_upstream *up = config_upstream(cfg, upstream);
	struct upstream_ep ep;
	*retry = 0;
	if (!up)
		return "unknown_upstream";
	if (upstream_endpoints(up, &ep) < 0) {
		*retry = 1;
		return "discovery_failed";
	}
	if (!ep.revoke[0])
		return "unsupported";
	/* GitHub's application-grant API revokes every token of the user for
	 * the app: only when no other session of the user still needs it. */
	if (ep.github && others)
		return "kept_for_other_sessions";
	char *access = enc_access ? vault_open(cfg, key_id, grant_id, "access", enc_access) : NULL;
	char *refresh = enc_refresh ? vault_open(cfg, key_id, grant_id, "refresh", enc_refresh) : NULL;
	const char *outcome;
	if (!access && !refresh) {
		outcome = "no_token";
	} else {
		enum upstream_rc rc = upstream_revoke(up, &ep, access ? access : refresh, refresh);
		*retry = rc == UP_UNAVAILABLE || rc == UP_TIMEOUT;
		outcome = rc == UP_OK ? "revoked" : rc == UP_REJECTED ? "rejected" : upstream_rc_name(rc);
	}
	vault_free(access);
	vault_free(refresh);
	return outcome;
}

int revoke_worker_run_once(struct app *app)
{
	static struct db_stmt q_due = DB_STMT(
		"SELECT r.grant_id::text, r.upstream, r.attempts, g.key_id, g.up_access, g.up_refresh, "
		"EXISTS (SELECT 1 FROM grants o WHERE o.user_id = g.user_id AND o.upstream = g.upstream "
		"AND o.status = 'active' AND o.id <> g.id) "
		"FROM upstream_revocations r JOIN grants g ON g.id = r.grant_id "
		"WHERE r.done_at IS NULL AND r.next_attempt <= now() "
		"ORDER BY r.next_attempt LIMIT " REVOKE_BATCH " FOR UPDATE OF r SKIP LOCKED");
	static struct db_stmt q_done = DB_STMT(
		"UPDATE upstream_revocations SET done_at = now(), outcome = $2, attempts = attempts + 1 "
		"WHERE grant_id = $1::uuid");
	static struct db_stmt q_wipe = DB_STMT(
		"UPDATE grants SET up_access = NULL, up_refresh = NULL, updated_at = now() WHERE id = $1::uuid");
	static struct db_stmt q_retry = DB_STMT(
		"UPDATE upstream_revocations SET attempts = attempts + 1, outcome = $2, "
		"next_attempt = now() + make_interval(secs => $3::int) WHERE grant_id = $1::uuid");
	struct db_conn *c = NULL;
	int handled = 0;
	if (db_acquire(app->db, &c, 1000) < 0)
		return -1;
	if (db_begin(c) < 0)
		goto out;
	PGresult *due = db_exec_ok(c, &q_due, 0, NULL);
	if (!due)
		goto out;
	for (int i = 0; i < PQntuples(due); i++) {
		const char *gid = PQgetvalue(due, i, 0);
		int attempts = (int)strtol(PQgetvalue(due, i, 2), NULL, 10) + 1;
		int retry = 0;
		int others = strcmp(PQgetvalue(due, i, 6), "t") == 0;
		const char *outcome = revoke_one(app, gid, PQgetvalue(due, i, 1), PQgetvalue(due, i, 3),
						 PQgetisnull(due, i, 4) ? NULL : PQgetvalue(due, i, 4),
						 PQgetisnull(due, i, 5) ? NULL : PQgetvalue(due, i, 5), others, &retry);
		PGresult *u;
		if (retry && attempts < REVOKE_MAX_ATTEMPTS) {
			char backoff[16];
			snprintf(backoff, sizeof(backoff), "%d", 1 << (attempts < 12 ? attempts : 12));
			const char *p[] = { gid, outcome, backoff };
			u = db_exec_ok(c, &q_retry, 3, p);
		} else {
			/* Done, or given up: either way the upstream tokens are
			 * of no further use here and are erased. */
			const char *p[] = { gid, retry ? "gave_up" : outcome };
			u = db_exec_ok(c, &q_done, 2, p);
			PQclear(u);
			u = u ? db_exec_ok(c, &q_wipe, 1, p) : NULL;
		}
		PQclear(u);
		json_t *f = json_pack("{s:s, s:s, s:i, s:b}", "grant_id", gid, "outcome", outcome, "attempt",
				      attempts, "retry", retry && attempts < REVOKE_MAX_ATTEMPTS);
		log_event(retry ? LOG_WARN : LOG_INFO, "upstream.revocation", NULL, f);
		handled++;
	}
	PQclear(due);
	if (db_commit(c) < 0)
		handled = -1;
out:
	db_release(app->db, &c);
	return handled;
}

static void *rw_loop(void *arg)
{
	struct app *app = arg;
	pthread_mutex_lock(&rw_lock);
	while (!rw_stop) {
		if (!rw_kick) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += REVOKE_POLL_S;
			pthread_cond_timedwait(&rw_cond, &rw_lock, &ts);
		}
		rw_kick = 0;
		if (rw_stop)
			break;
		pthread_mutex_unlock(&rw_lock);
		while (revoke_worker_run_once(app) > 0)
			;
		pthread_mutex_lock(&rw_lock);
	}
	pthread_mutex_unlock(&rw_lock);
	return NULL;
}

int revoke_worker_start(struct app *app)
{
	if (pthread_create(&rw_thread, NULL, rw_loop, app) != 0)
		return -1;
	rw_running = 1;
	return 0;
}

void revoke_worker_stop(void)
{
	if (!rw_running)
		return;
	pthread_mutex_lock(&rw_lock);
	rw_stop = 1;
	pthread_cond_signal(&rw_cond);
	pthread_mutex_unlock(&rw_lock);
	pthread_join(rw_thread, NULL);
	rw_running = 0;
}
