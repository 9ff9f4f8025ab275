#include "housekeeping.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "notify.h"
#include "num.h"

#define HK_BATCH_ROWS 500
#define HK_BATCH "500" /* HK_BATCH_ROWS in SQL */
#define HK_ROUNDS 100  /* batches of one statement per pass */
#define HK_DB_WAIT_MS 1000
#define HK_LOCK_KEY "7881707912358893427"

static pthread_t hk_thread;
static int hk_running;
static pthread_mutex_t hk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hk_cond = PTHREAD_COND_INITIALIZER;
static int hk_stop;

/* Each statement deletes at most one batch; the pass repeats a statement
 * while it keeps finding full batches. Expired rows stay a grace minute so
 * that an in-flight request never races its own row's deletion. */
static struct db_stmt purge[] = {
	DB_STMT("DELETE FROM pending_authorizations WHERE ctid IN (SELECT ctid FROM pending_authorizations "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	DB_STMT("DELETE FROM auth_codes WHERE ctid IN (SELECT ctid FROM auth_codes "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	DB_STMT("DELETE FROM tokens WHERE ctid IN (SELECT ctid FROM tokens "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	/* Session bindings of users with no live grant left (a session id
	 * whose binding is gone is refused, never forwarded unbound). */
	DB_STMT("DELETE FROM mcp_session_bindings WHERE ctid IN (SELECT s.ctid FROM mcp_session_bindings s "
		"WHERE s.created_at < now() - interval '1 day' AND NOT EXISTS (SELECT 1 FROM grants g "
		"WHERE g.user_id = s.user_id AND g.status = 'active') LIMIT " HK_BATCH ")"),
	/* Spent client assertion ids (their assertions expired) and stale
	 * fetched JWKS documents (migration 0005). */
	DB_STMT("DELETE FROM client_assertion_jtis WHERE ctid IN (SELECT ctid FROM client_assertion_jtis "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	DB_STMT("DELETE FROM jwks_cache WHERE ctid IN (SELECT ctid FROM jwks_cache "
		"WHERE expires_at < now() - interval '1 day' LIMIT " HK_BATCH ")"),
	/* Connect tickets and connect flows (migration 0007). */
	DB_STMT("DELETE FROM connect_tickets WHERE ctid IN (SELECT ctid FROM connect_tickets "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	DB_STMT("DELETE FROM pending_connects WHERE ctid IN (SELECT ctid FROM pending_connects "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	/* Account sign-ins under way, connection revocations settled a week ago (0008). */
	DB_STMT("DELETE FROM pending_account_logins WHERE ctid IN (SELECT ctid FROM pending_account_logins "
		"WHERE expires_at < now() - interval '1 minute' LIMIT " HK_BATCH ")"),
	DB_STMT("DELETE FROM connection_revocations WHERE ctid IN (SELECT ctid FROM connection_revocations "
		"WHERE done_at < now() - interval '7 days' LIMIT " HK_BATCH ")"),
	/* The per-resource table of the previous version (migration 0004). */
	DB_STMT("DELETE FROM mcp_sessions WHERE ctid IN (SELECT ctid FROM mcp_sessions "
		"WHERE created_at < now() - interval '1 day' LIMIT " HK_BATCH ")"),
};

/* Dynamically registered clients that never completed a flow within the
 * configured days, and CIMD cache rows long expired, without grants. */
static struct db_stmt purge_clients = DB_STMT(
	"DELETE FROM clients WHERE ctid IN (SELECT c.ctid FROM clients c WHERE "
	"((c.kind = 'dynamic' AND c.last_used_at IS NULL AND $1::int > 0 "
	"  AND c.created_at < now() - make_interval(days => $1::int)) "
	" OR (c.kind = 'cimd' AND c.cimd_expires_at < now() - interval '7 days')) "
	"AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.client_id = c.client_id) LIMIT " HK_BATCH ") "
	"RETURNING client_id, kind");

/* The purged dynamic clients, each announced as a disabled one is: no node
 * keeps authenticating its cached copy (store/cache.h). CIMD rows are not
 * announced: the node cache never holds them (oauth/client_resolve.c), and
 * each announcement costs every node a sweep. *n rows deleted. */
static int purge_clients_run(struct db_conn *c, const char *days, long long *n)
{
	const char *p[] = { days };
	PGresult *r = db_exec_ok(c, &purge_clients, 1, p);
	*n = r ? PQntuples(r) : 0;
	for (long long i = 0; i < *n; i++) {
		if (strcmp(PQgetvalue(r, (int)i, 1), "dynamic") != 0)
			continue;
		struct revocation rv = { .client_id = PQgetvalue(r, (int)i, 0) };
		if (notify_publish(c, &rv) < 0)
			log_msg(LOG_WARN, "housekeeping.unannounced", NULL,
				"a purged client was not announced: nodes may serve their copy for 30 s");
	}
	PQclear(r);
	return r ? 0 : -1;
}

/* Runs one purge statement; 0 with *n rows deleted, or -1. */
static int purge_run(struct db_conn *c, struct db_stmt *st, int np, const char *const *p, long long *n)
{
	PGresult *r = db_exec_ok(c, st, np, p);
	int rc = r && num_parse(PQcmdTuples(r), 0, HK_BATCH_ROWS, n) == 0 ? 0 : -1;
	PQclear(r);
	return rc;
}

/* One pass. A failure was logged where it happened (db.error, ...) and
 * the next interval tries again: nothing to report beside the rows. */
static void run_once(struct app *app)
{
	static struct db_stmt q_lock = DB_STMT("SELECT pg_try_advisory_lock(" HK_LOCK_KEY ")");
	static struct db_stmt q_unlock = DB_STMT("SELECT pg_advisory_unlock(" HK_LOCK_KEY ")");
	struct db_conn *c = NULL;
	long long n = 0;
	long deleted = 0;
	if (db_acquire(app->db, &c, HK_DB_WAIT_MS) < 0)
		return;
	PGresult *r = db_exec_ok(c, &q_lock, 0, NULL);
	int locked = r && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!locked)
		goto out; /* another node is on it */
	for (size_t i = 0; i < sizeof(purge) / sizeof(purge[0]); i++) {
		for (int rounds = 0; rounds < HK_ROUNDS; rounds++) {
			if (purge_run(c, &purge[i], 0, NULL, &n) < 0)
				goto out;
			deleted += (long)n;
			if (n < HK_BATCH_ROWS)
				break;
		}
	}
	char days[24];
	snprintf(days, sizeof(days), "%ld", app->cfg->registration.dynamic_client_ttl_days);
	if (purge_clients_run(c, days, &n) == 0)
		deleted += (long)n;
out:
	if (locked)
		PQclear(db_exec_ok(c, &q_unlock, 0, NULL));
	db_release(app->db, &c);
	if (deleted > 0)
		log_msg(LOG_INFO, "housekeeping.purged", NULL, "%ld expired rows deleted", deleted);
}

static void *loop(void *arg)
{
	struct app *app = arg;
	db_thread_yields(); /* background work: the pool's reserve is the workers' */
	pthread_mutex_lock(&hk_lock);
	while (!hk_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += app->cfg->housekeeping_interval_s;
		pthread_cond_timedwait(&hk_cond, &hk_lock, &ts);
		if (hk_stop)
			break;
		pthread_mutex_unlock(&hk_lock);
		run_once(app);
		pthread_mutex_lock(&hk_lock);
	}
	pthread_mutex_unlock(&hk_lock);
	return NULL;
}

int housekeeping_start(struct app *app)
{
	if (pthread_create(&hk_thread, NULL, loop, app) != 0)
		return -1;
	hk_running = 1;
	return 0;
}

void housekeeping_stop(void)
{
	if (!hk_running)
		return;
	pthread_mutex_lock(&hk_lock);
	hk_stop = 1;
	pthread_cond_signal(&hk_cond);
	pthread_mutex_unlock(&hk_lock);
	pthread_join(hk_thread, NULL);
	hk_running = 0;
}
