#include "upstream_token.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "cache.h"
#include "crypto.h"
#include "grant.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "num.h"
#include "upstream.h"
#include "vault.h"

struct grant_row {
	char key_id[65];
	char *up_access, *up_refresh; /* sealed hex */
	int stale, active, expires;
	int connected; /* it holds a sign-in session (an ID-JAG grant has none until connected) */
	long long exp; /* epoch seconds, 0 when the token does not expire */
	char upstream[65];
	char client_id[LIM_CLIENT_ID + 1];
};

static void row_free(struct grant_row *g)
{
	free(g->up_access);
	free(g->up_refresh);
	memset(g, 0, sizeof(*g));
}

/* Reads the grant's row into g: 0 with *found 1 (or 0 for no such grant),
 * -1 on a database error (a lock timeout among them) or out of memory. */
static int load(struct db_conn *c, struct db_stmt *q, const char *grant_id, long skew, struct grant_row *g, int *found)
{
	char skews[24];
	snprintf(skews, sizeof(skews), "%ld", skew);
	const char *p[] = { grant_id, skews };
	PGresult *r = db_exec_ok(c, q, 2, p);
	int rc = r ? 0 : -1;
	*found = r && PQntuples(r) == 1;
	if (*found) {
		snprintf(g->key_id, sizeof(g->key_id), "%s", PQgetvalue(r, 0, 0));
		g->connected = !PQgetisnull(r, 0, 1);
		g->up_access = strdup(PQgetvalue(r, 0, 1));
		g->up_refresh = PQgetisnull(r, 0, 2) ? NULL : strdup(PQgetvalue(r, 0, 2));
		g->stale = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
		g->active = strcmp(PQgetvalue(r, 0, 4), "t") == 0;
		g->expires = strcmp(PQgetvalue(r, 0, 5), "t") == 0;
		snprintf(g->upstream, sizeof(g->upstream), "%s", PQgetvalue(r, 0, 6));
		snprintf(g->client_id, sizeof(g->client_id), "%s", PQgetvalue(r, 0, 8));
		if (!g->up_access || (!PQgetisnull(r, 0, 2) && !g->up_refresh) ||
		    num_parse(PQgetvalue(r, 0, 7), 0, LLONG_MAX, &g->exp) < 0)
			rc = -1;
	}
	PQclear(r);
	return rc;
}

#define GRANT_COLUMNS                                                                            \
	"SELECT key_id, up_access, up_refresh, "                                                 \
	"up_expires_at IS NOT NULL AND up_expires_at < now() + make_interval(secs => $2::int), " \
	"status = 'active', up_expires_at IS NOT NULL, upstream, "                               \
	"coalesce(extract(epoch FROM up_expires_at)::bigint, 0), client_id FROM grants WHERE id = $1::uuid"

static enum upstream_token_rc ut_of(enum upstream_class cls)
{
	switch (upstream_class_http_status(cls)) {
	case 200: return UT_OK;
	case 401: return UT_REVOKED;
	case 502: return UT_BAD_GATEWAY;
	case 504: return UT_TIMEOUT;
	default: return UT_UNAVAILABLE;
	}
}

int upstream_token_http_status(enum upstream_token_rc rc)
{
	switch (rc) {
	case UT_OK: return 200;
	case UT_REVOKED: return 401;
	case UT_BAD_GATEWAY: return 502;
	case UT_TIMEOUT: return 504;
	case UT_NOT_CONNECTED: return 403;
	default: return 503;
	}
}

/* The downstream refused a token that cannot be renewed. Ask the upstream
 * itself before killing the grant: only its definitive verdict counts (a
 * misbehaving downstream, or an upstream in trouble, must not revoke users).
 * Runs inside the caller's transaction, which holds the grant's row lock. */
static enum upstream_token_rc check_unrenewable(struct app *app, struct db_conn *c, const struct grant_row *g,
						const struct cfg_upstream *up, const struct upstream_ep *ep,
						const char *grant_id, const char *request_id, char **token,
						long *retry_after)
{
	struct upstream_tokens cur = { 0 };
	struct upstream_identity who = { 0 };
	enum upstream_token_rc rc = UT_UNAVAILABLE;
	cur.expires_in = -1;
	cur.access_token = vault_open(app->cfg, g->key_id, grant_id, "access", g->up_access);
	if (!cur.access_token) {
		log_msg(LOG_ERROR, "vault.open_failed", request_id, "upstream token of grant %s does not decrypt",
			grant_id);
		goto out;
	}
	enum upstream_class v = upstream_identity(up, ep, &cur, request_id, &who, retry_after);
	if (v == UPC_OK) {
		*token = cur.access_token; /* still valid upstream: replay as is */
		cur.access_token = NULL;
		rc = UT_OK;
	} else if (v == UPC_GRANT_DEAD) {
		rc = UT_REVOKED;
		if (grant_revoke(app, c, grant_id, "upstream_rejected", "system", request_id) < 0 || db_commit(c) < 0)
			rc = UT_UNAVAILABLE;
	} else {
		rc = ut_of(v);
	}
out:
	upstream_identity_free(&who);
	upstream_tokens_free(&cur);
	return rc;
}

/* Opens the transaction and takes the grant's row lock (waiting at most
 * tokens.upstream_lock_wait_ms) into g: UT_OK for an active grant. */
static enum upstream_token_rc lock_row(const struct config *cfg, struct db_conn *c, const char *grant_id,
				       struct grant_row *g)
{
	static struct db_stmt q_lock = DB_STMT(GRANT_COLUMNS " FOR UPDATE");
	char lockwait[64];
	int found = 0;
	enum upstream_token_rc rc = UT_UNAVAILABLE; /* a lock timeout lands here too */
	snprintf(lockwait, sizeof(lockwait), "SET LOCAL lock_timeout = %ld", cfg->tokens.upstream_lock_wait_ms);
	if (db_begin(c) == 0 && db_command(c, lockwait) == 0 &&
	    load(c, &q_lock, grant_id, cfg->tokens.upstream_refresh_skew, g, &found) == 0)
		rc = found && g->active ? UT_OK : UT_REVOKED;
	return rc;
}

/* The grant's current upstream access token, decrypted into *token. */
static enum upstream_token_rc use_current(const struct config *cfg, const struct grant_row *g, const char *grant_id,
					  char **token)
{
	*token = vault_open(cfg, g->key_id, grant_id, "access", g->up_access);
	return *token ? UT_OK : UT_UNAVAILABLE;
}

/* The upstream's definitive refusal of the refresh token (the user revoked
 * the app upstream, or the token died): the grant goes, committed. */
static enum upstream_token_rc refresh_dead(struct app *app, struct db_conn *c, const struct grant_row *g,
					   const char *grant_id, const char *request_id, enum upstream_class cls)
{
	struct audit a = { "upstream.refresh_failed", "system", NULL, NULL, grant_id, request_id };
	json_t *detail = json_pack("{s:s, s:s}", "upstream", g->upstream, "result", upstream_class_name(cls));
	enum upstream_token_rc rc = UT_REVOKED;
	if (audit_record(c, &a, detail) < 0 ||
	    grant_revoke(app, c, grant_id, "upstream_invalid_grant", "system", request_id) < 0 || db_commit(c) < 0)
		rc = UT_UNAVAILABLE;
	return rc;
}

/* Stores what the upstream answered t, sealed under the active key, with
 * exactly one copy of the upstream refresh token: the new one, or old_refresh
 * kept when the answer had none. Every node drops its cached copy; commits;
 * *token receives a copy of the new access token. */
static enum upstream_token_rc store_refreshed(struct app *app, struct db_conn *c, const struct grant_row *g,
					      const char *grant_id, const char *request_id, int force,
					      const struct upstream_tokens *t, const char *old_refresh, char **token)
{
	static struct db_stmt q_store = DB_STMT(
		"UPDATE grants SET key_id = $2, up_access = $3::bytea, up_refresh = $4::bytea, "
		"up_expires_at = CASE WHEN $5::int > 0 THEN now() + make_interval(secs => $5::int) END, "
		"up_scope = coalesce($6, up_scope), updated_at = now() WHERE id = $1::uuid");
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" NOTIFY_CHANNEL "', 'u:' || $1)");
	const struct config *cfg = app->cfg;
	const char *key_id = NULL;
	char *enc_a = vault_seal(cfg, grant_id, "access", t->access_token, &key_id);
	const char *refresh = t->refresh_token ? t->refresh_token : old_refresh;
	char *enc_r = refresh ? vault_seal(cfg, grant_id, "refresh", refresh, &key_id) : NULL;
	char exp[24];
	snprintf(exp, sizeof(exp), "%ld", t->expires_in);
	const char *p[] = { grant_id, key_id, enc_a, enc_r, exp, t->scope }, *pn[] = { grant_id };
	struct audit a = { "upstream.refreshed", "system", NULL, NULL, grant_id, request_id };
	PGresult *stored = NULL, *notified = NULL;
	enum upstream_token_rc rc = UT_UNAVAILABLE;
	if (enc_a && (enc_r || !refresh) && (stored = db_exec_ok(c, &q_store, 6, p)) &&
	    (notified = db_exec_ok(c, &q_notify, 1, pn))) {
		cache_evict_grant(grant_id);
		if (audit_record(c, &a,
				 json_pack("{s:s, s:b, s:b}", "upstream", g->upstream, "rotated",
					   t->refresh_token != NULL, "forced", force)) == 0 &&
		    db_commit(c) == 0 && (*token = strdup(t->access_token)) != NULL)
			rc = UT_OK;
	}
	PQclear(stored);
	PQclear(notified);
	free(enc_a);
	free(enc_r);
	return rc;
}

/* 1 when the grant is a machine client's (config clients[].grant_types
 * ["client_credentials"]): such a client has no redirect URI, so every
 * grant it holds came from the client_credentials grant, and its upstream
 * token is renewed by the upstream's own client_credentials grant. */
static int machine_grant(const struct config *cfg, const struct grant_row *g)
{
	const struct cfg_client *cl = config_client(cfg, g->client_id);
	return cl && cl->client_credentials;
}

/* Under the grant's row lock: the token another request may have refreshed
 * meanwhile, or one upstream refresh (or, without a refresh token, the
 * upstream's verdict on the current one; for a machine grant, the
 * upstream's client_credentials grant run again). */
static enum upstream_token_rc refresh_locked(struct app *app, struct db_conn *c, const char *grant_id, int force,
					     const char *request_id, char **token, long *retry_after)
{
	const struct config *cfg = app->cfg;
	const struct cfg_upstream *up = NULL;
	struct grant_row g = { 0 };
	struct upstream_tokens t = { 0 };
	struct upstream_ep ep;
	char *old_refresh = NULL;
	enum upstream_class cls = UPC_INTERNAL;
	t.expires_in = -1;
	enum upstream_token_rc rc = lock_row(cfg, c, grant_id, &g);
	if (rc == UT_OK && !g.connected)
		rc = UT_NOT_CONNECTED;
	if (rc != UT_OK)
		goto out;
	/* Another request (on any node) may have refreshed while we waited. */
	if (!g.stale && !force) {
		rc = use_current(cfg, &g, grant_id, token);
		goto out;
	}
	int machine = machine_grant(cfg, &g);
	if (!machine && g.up_refresh && !(old_refresh = vault_open(cfg, g.key_id, grant_id, "refresh", g.up_refresh))) {
		log_msg(LOG_ERROR, "vault.open_failed", request_id,
			"upstream refresh token of grant %s does not decrypt", grant_id);
		rc = UT_UNAVAILABLE;
		goto out;
	}
	if (!machine && !old_refresh && !force) {
		/* Nothing to refresh with: use the token until the upstream refuses it. */
		rc = use_current(cfg, &g, grant_id, token);
		goto out;
	}
	if (!(up = config_upstream(cfg, g.upstream)) || upstream_endpoints(up, &ep) < 0) {
		log_msg(LOG_ERROR, "upstream.unavailable", request_id,
			"upstream of grant %s is not configured or not discoverable", grant_id);
		rc = UT_UNAVAILABLE;
		goto out;
	}
	if (!machine && !old_refresh) {
		rc = check_unrenewable(app, c, &g, up, &ep, grant_id, request_id, token, retry_after);
		goto out;
	}
	cls = machine ? upstream_client_credentials(up, &ep, request_id, &t, retry_after)
		      : upstream_refresh(up, &ep, old_refresh, request_id, &t, retry_after);
	metrics_count("upstream_refresh_total", upstream_class_name(cls), 1);
	/* Only a definitive refusal says something about the grant; anything
	 * else keeps it as it is (the answer is logged and counted by
	 * upstream_refresh). */
	if (cls == UPC_GRANT_DEAD)
		rc = refresh_dead(app, c, &g, grant_id, request_id, cls);
	else if (cls != UPC_OK)
		rc = ut_of(cls);
	else
		rc = store_refreshed(app, c, &g, grant_id, request_id, force, &t, old_refresh, token);
out:
	if (c->in_tx)
		db_rollback(c);
	vault_free(old_refresh);
	upstream_tokens_free(&t);
	row_free(&g);
	return rc;
}

enum upstream_token_rc upstream_token_cached(struct app *app, const char *grant_id, char **token)
{
	/* The node's cache: sealed token and expiry, no database. */
	char kid[65], *sealed = NULL;
	long long exp = 0;
	*token = NULL;
	if (!cache_upstream_get(grant_id, kid, &sealed, &exp))
		return UT_UNAVAILABLE;
	int fresh = exp == 0 || exp - (long long)time(NULL) > app->cfg->tokens.upstream_refresh_skew;
	if (fresh)
		*token = vault_open(app->cfg, kid, grant_id, "access", sealed);
	free(sealed);
	return *token ? UT_OK : UT_UNAVAILABLE;
}

enum upstream_token_rc upstream_token_get(struct app *app, struct db_conn *c, const char *grant_id, int force,
					  const char *request_id, char **token, long *retry_after)
{
	static struct db_stmt q = DB_STMT(GRANT_COLUMNS);
	const struct config *cfg = app->cfg;
	struct grant_row g = { 0 };
	int found = 0, refresh = 0;
	*token = NULL;
	if (retry_after)
		*retry_after = 0;
	enum upstream_token_rc rc = force ? UT_UNAVAILABLE : upstream_token_cached(app, grant_id, token);
	unsigned long gen = cache_generation();
	if (rc == UT_OK)
		goto out; /* this node's cache */
	if (load(c, &q, grant_id, cfg->tokens.upstream_refresh_skew, &g, &found) < 0)
		rc = UT_UNAVAILABLE;
	else if (!found || !g.active)
		rc = UT_REVOKED;
	else if (!g.connected)
		rc = UT_NOT_CONNECTED;
	else if (g.stale || force)
		refresh = 1;
	else if ((rc = use_current(cfg, &g, grant_id, token)) == UT_OK)
		cache_upstream_put(grant_id, g.key_id, g.up_access, g.exp, gen);
	else
		log_msg(LOG_ERROR, "vault.open_failed", request_id, "upstream token of grant %s does not decrypt",
			grant_id);
out:
	row_free(&g);
	return refresh ? refresh_locked(app, c, grant_id, force, request_id, token, retry_after) : rc;
}
