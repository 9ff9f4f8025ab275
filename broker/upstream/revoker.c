#include "revoker.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "notify.h"
#include "num.h"
#include "upstream.h"
#include "vault.h"

#define REVOKE_MAX_ATTEMPTS 8
#define REVOKE_BATCH "10"
#define REVOKER_DB_WAIT_MS 1000

static pthread_t rw_thread;
static int rw_running, rw_stop, rw_kick, rw_subscribed;
static pthread_mutex_t rw_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rw_cond = PTHREAD_COND_INITIALIZER;

/* A revoked grant is committed with its upstream_revocations row: look for
 * due rows now (one access token's revocation queues nothing). */
static void wake(const struct revocation *rv, void *arg)
{
	(void)arg;
	if (rv->token_hash && !rv->grant_id && !rv->client_id && !rv->subject && !rv->upstream)
		return;
	pthread_mutex_lock(&rw_lock);
	rw_kick = 1;
	pthread_cond_signal(&rw_cond);
	pthread_mutex_unlock(&rw_lock);
}

/* Revokes one grant upstream. Returns the outcome label; *retry when a
 * later attempt may succeed. */
static const char *revoke_one(struct app *app, const char *grant_id, const char *upstream, const char *key_id,
			      const char *enc_access, const char *enc_refresh, int others, int connected, int *retry)
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
	/* A connected account's tokens are sealed under "<upstream>:<kind>". */
	char pa[96] = "access", pr[96] = "refresh";
	if (connected) {
		vault_connection_purpose(pa, upstream, "access");
		vault_connection_purpose(pr, upstream, "refresh");
	}
	char *access = enc_access ? vault_open(cfg, key_id, grant_id, pa, enc_access) : NULL;
	char *refresh = enc_refresh ? vault_open(cfg, key_id, grant_id, pr, enc_refresh) : NULL;
	const char *outcome;
	if (!access && !refresh) {
		outcome = "no_token";
	} else {
		/* GitHub's application-grant API revokes every token of the user
		 * for the app: while another session of the account needs it,
		 * only this token goes. */
		int one = ep.github && others;
		enum upstream_rc rc = one ? upstream_revoke_one(up, &ep, access)
					  : upstream_revoke(up, &ep, access ? access : refresh, refresh);
		*retry = rc == UP_UNAVAILABLE || rc == UP_TIMEOUT;
		outcome = rc == UP_OK                ? one ? "revoked_token" : "revoked"
			  : one && rc == UP_REJECTED ? "kept_for_other_sessions"
			  : rc == UP_REJECTED        ? "rejected"
						     : upstream_rc_name(rc);
	}
	vault_free(access);
	vault_free(refresh);
	return outcome;
}

/* Records the outcome of attempt number `attempt` of a row: retried later
 * with backoff, or done (given up) with the upstream tokens erased, which
 * are of no further use here either way. 0, or -1 on a database error. */
static int settle(struct db_conn *c, const char *gid, const char *outcome, int attempt, int retry)
{
	static struct db_stmt q_done = DB_STMT(
		"UPDATE upstream_revocations SET done_at = now(), outcome = $2, attempts = attempts + 1 "
		"WHERE grant_id = $1::uuid");
	static struct db_stmt q_wipe = DB_STMT(
		"UPDATE grants SET up_access = NULL, up_refresh = NULL, updated_at = now() WHERE id = $1::uuid");
	static struct db_stmt q_retry = DB_STMT(
		"UPDATE upstream_revocations SET attempts = attempts + 1, outcome = $2, "
		"next_attempt = now() + make_interval(secs => $3::int) WHERE grant_id = $1::uuid");
	PGresult *u;
	if (retry && attempt < REVOKE_MAX_ATTEMPTS) {
		char backoff[16];
		snprintf(backoff, sizeof(backoff), "%d", 1 << (attempt < 12 ? attempt : 12));
		const char *p[] = { gid, outcome, backoff };
		u = db_exec_ok(c, &q_retry, 3, p);
	} else {
		const char *p[] = { gid, retry ? "gave_up" : outcome };
		u = db_exec_ok(c, &q_done, 2, p);
		PQclear(u);
		u = u ? db_exec_ok(c, &q_wipe, 1, p) : NULL;
	}
	PQclear(u);
	return u ? 0 : -1;
}

static int grants_once(struct app *app, int *handled)
{
	static struct db_stmt q_due = DB_STMT(
		"SELECT r.grant_id::text, r.upstream, r.attempts, g.key_id, g.up_access, g.up_refresh, "
		"EXISTS (SELECT 1 FROM grants o WHERE o.user_id = g.user_id AND o.upstream = g.upstream "
		"AND o.status = 'active' AND o.id <> g.id) "
		/* the same account connected to another grant, or an enterprise
		 * user's (whose account there is not known): kept too */
		"OR EXISTS (SELECT 1 FROM users u WHERE u.id = g.user_id AND (u.upstream <> g.upstream OR EXISTS "
		"(SELECT 1 FROM grant_connections k WHERE k.upstream = g.upstream AND k.subject = u.subject))) "
		"FROM upstream_revocations r JOIN grants g ON g.id = r.grant_id "
		"WHERE r.done_at IS NULL AND r.next_attempt <= now() "
		"ORDER BY r.next_attempt LIMIT " REVOKE_BATCH " FOR UPDATE OF r SKIP LOCKED");
	struct db_conn *c = NULL;
	PGresult *due = NULL;
	int rc = -1, n = 0;
	*handled = 0;
	if (db_acquire(app->db, &c, REVOKER_DB_WAIT_MS) < 0)
		return -1;
	if (db_begin(c) < 0 || !(due = db_exec_ok(c, &q_due, 0, NULL)))
		goto out;
	for (int i = 0; i < PQntuples(due); i++) {
		const char *gid = PQgetvalue(due, i, 0);
		long long done_before = 0;
		/* A count the database cannot give makes this the last attempt. */
		if (num_parse(PQgetvalue(due, i, 2), 0, INT_MAX - 1, &done_before) < 0)
			done_before = REVOKE_MAX_ATTEMPTS;
		int attempt = (int)done_before + 1, retry = 0;
		int others = strcmp(PQgetvalue(due, i, 6), "t") == 0;
		const char *outcome = revoke_one(app, gid, PQgetvalue(due, i, 1), PQgetvalue(due, i, 3),
						 PQgetisnull(due, i, 4) ? NULL : PQgetvalue(due, i, 4),
						 PQgetisnull(due, i, 5) ? NULL : PQgetvalue(due, i, 5), others, 0,
						 &retry);
		if (settle(c, gid, outcome, attempt, retry) < 0)
			goto out;
		json_t *f = json_pack("{s:s, s:s, s:i, s:b}", "grant_id", gid, "outcome", outcome, "attempt", attempt,
				      "retry", retry && attempt < REVOKE_MAX_ATTEMPTS);
		log_event(retry ? LOG_WARN : LOG_INFO, "upstream.revocation", NULL, f);
		n++;
	}
	if (db_commit(c) < 0)
		goto out;
	*handled = n;
	rc = 0;
out:
	PQclear(due);
	db_release(app->db, &c);
	return rc;
}

/* The same for connected accounts (connection_revocations): each row
 * carries its sealed tokens, erased once done or given up. *handled rows;
 * 0, or -1 on a database error (nothing of the pass is kept). */
static int connections_once(struct app *app, int *handled)
{
	static struct db_stmt q_due = DB_STMT(
		"SELECT r.id::text, r.grant_id::text, r.upstream, r.attempts, r.key_id, r.up_access, r.up_refresh, "
		"EXISTS (SELECT 1 FROM grant_connections o WHERE o.upstream = r.upstream AND o.subject = r.subject) "
		"OR EXISTS (SELECT 1 FROM grants g JOIN users u ON u.id = g.user_id WHERE g.status = 'active' "
		"AND g.upstream = r.upstream AND u.upstream = r.upstream AND u.subject = r.subject) "
		"FROM connection_revocations r WHERE r.done_at IS NULL AND r.next_attempt <= now() "
		"ORDER BY r.next_attempt LIMIT " REVOKE_BATCH " FOR UPDATE OF r SKIP LOCKED");
	static struct db_stmt q_done = DB_STMT(
		"UPDATE connection_revocations SET done_at = now(), outcome = $2, attempts = attempts + 1, "
		"up_access = NULL, up_refresh = NULL WHERE id = $1::bigint");
	static struct db_stmt q_retry = DB_STMT(
		"UPDATE connection_revocations SET attempts = attempts + 1, outcome = $2, "
		"next_attempt = now() + make_interval(secs => $3::int) WHERE id = $1::bigint");
	struct db_conn *c = NULL;
	PGresult *due = NULL;
	int rc = -1, n = 0;
	*handled = 0;
	if (db_acquire(app->db, &c, REVOKER_DB_WAIT_MS) < 0)
		return -1;
	if (db_begin(c) < 0 || !(due = db_exec_ok(c, &q_due, 0, NULL)))
		goto out;
	for (int i = 0; i < PQntuples(due); i++) {
		const char *id = PQgetvalue(due, i, 0), *gid = PQgetvalue(due, i, 1), *up = PQgetvalue(due, i, 2);
		long long done_before = 0;
		if (num_parse(PQgetvalue(due, i, 3), 0, INT_MAX - 1, &done_before) < 0)
			done_before = REVOKE_MAX_ATTEMPTS;
		int attempt = (int)done_before + 1, retry = 0;
		const char *outcome = revoke_one(app, gid, up, PQgetvalue(due, i, 4),
						 PQgetisnull(due, i, 5) ? NULL : PQgetvalue(due, i, 5),
						 PQgetisnull(due, i, 6) ? NULL : PQgetvalue(due, i, 6),
						 strcmp(PQgetvalue(due, i, 7), "t") == 0, 1, &retry);
		char backoff[16];
		snprintf(backoff, sizeof(backoff), "%d", 1 << (attempt < 12 ? attempt : 12));
		int again = retry && attempt < REVOKE_MAX_ATTEMPTS;
		const char *p[] = { id, again ? outcome : retry ? "gave_up" : outcome, backoff };
		PGresult *u = db_exec_ok(c, again ? &q_retry : &q_done, again ? 3 : 2, p);
		PQclear(u);
		if (!u)
			goto out;
		log_event(retry ? LOG_WARN : LOG_INFO, "upstream.revocation", NULL,
			  json_pack("{s:s, s:s, s:s, s:i, s:b}", "grant_id", gid, "upstream", up, "outcome", outcome,
				    "attempt", attempt, "retry", again));
		n++;
	}
	if (db_commit(c) < 0)
		goto out;
	*handled = n;
	rc = 0;
out:
	PQclear(due);
	db_release(app->db, &c);
	return rc;
}

int revoker_run_once(struct app *app, int *handled)
{
	int g = 0, k = 0;
	int rc = grants_once(app, &g) == 0 && connections_once(app, &k) == 0 ? 0 : -1;
	*handled = g + k;
	return rc;
}

void revoker_kick(void)
{
	pthread_mutex_lock(&rw_lock);
	rw_kick = 1;
	pthread_cond_signal(&rw_cond);
	pthread_mutex_unlock(&rw_lock);
}

static void *rw_loop(void *arg)
{
	struct app *app = arg;
	db_thread_yields(); /* background work: the pool's reserve is the workers' */
	int handled = 0;
	pthread_mutex_lock(&rw_lock);
	while (!rw_stop) {
		if (!rw_kick) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += REVOKER_POLL_S;
			pthread_cond_timedwait(&rw_cond, &rw_lock, &ts);
		}
		rw_kick = 0;
		if (rw_stop)
			break;
		pthread_mutex_unlock(&rw_lock);
		while (revoker_run_once(app, &handled) == 0 && handled > 0)
			;
		pthread_mutex_lock(&rw_lock);
	}
	pthread_mutex_unlock(&rw_lock);
	return NULL;
}

int revoker_start(struct app *app)
{
	if (!rw_subscribed && notify_on_revoke(wake, NULL) < 0)
		return -1;
	rw_subscribed = 1;
	if (pthread_create(&rw_thread, NULL, rw_loop, app) != 0)
		return -1;
	rw_running = 1;
	return 0;
}

void revoker_stop(void)
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
