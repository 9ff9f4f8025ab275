#include "connection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "crypto.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "cache.h"
#include "vault.h"

struct conn_row {
	char key_id[65];
	char *up_access, *up_refresh; /* sealed hex */
	int stale;
};

static void row_free(struct conn_row *g)
{
	free(g->up_access);
	free(g->up_refresh);
	memset(g, 0, sizeof(*g));
}

#define CONN_COLUMNS                                                                            \
	"SELECT key_id, up_access, up_refresh, "                                                \
	"up_expires_at IS NOT NULL AND up_expires_at < now() + make_interval(secs => $3::int) " \
	"FROM grant_connections WHERE grant_id = $1::uuid AND upstream = $2"

/* 0 with *found, -1 on a database error (a lock timeout among them). */
static int load(struct db_conn *c, struct db_stmt *q, const char *grant_id, const char *upstream, long skew,
		struct conn_row *g, int *found)
{
	char skews[24];
	snprintf(skews, sizeof(skews), "%ld", skew);
	const char *p[] = { grant_id, upstream, skews };
	PGresult *r = db_exec_ok(c, q, 3, p);
	int rc = r ? 0 : -1;
	*found = r && PQntuples(r) == 1;
	if (*found) {
		snprintf(g->key_id, sizeof(g->key_id), "%s", PQgetvalue(r, 0, 0));
		g->up_access = strdup(PQgetvalue(r, 0, 1));
		g->up_refresh = PQgetisnull(r, 0, 2) ? NULL : strdup(PQgetvalue(r, 0, 2));
		g->stale = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
		if (!g->up_access || (!PQgetisnull(r, 0, 2) && !g->up_refresh))
			rc = -1;
	}
	PQclear(r);
	return rc;
}

/* The purpose a connection's sealed token is bound to: "<upstream>:access". */

static enum upstream_token_rc open_current(const struct config *cfg, const struct conn_row *g, const char *grant_id,
					   const char *upstream, const char *request_id, char **token)
{
	char pp[96];
	vault_connection_purpose(pp, upstream, "access");
	*token = vault_open(cfg, g->key_id, grant_id, pp, g->up_access);
	if (!*token)
		log_msg(LOG_ERROR, "vault.open_failed", request_id, "connected %s token of grant %s does not decrypt",
			upstream, grant_id);
	return *token ? UT_OK : UT_UNAVAILABLE;
}

static enum upstream_token_rc ut_of(enum upstream_class cls)
{
	switch (upstream_class_http_status(cls)) {
	case 200: return UT_OK;
	case 401: return UT_NOT_CONNECTED;
	case 502: return UT_BAD_GATEWAY;
	case 504: return UT_TIMEOUT;
	default: return UT_UNAVAILABLE;
	}
}

/* Seals tok for the connection; *enc_a / *enc_r malloc'd (enc_r NULL when
 * there is no refresh token to keep). 0 or -1. */
static int seal(const struct config *cfg, const char *grant_id, const char *upstream, const char *access,
		const char *refresh, char **enc_a, char **enc_r, const char **key_id)
{
	char pa[96], pr[96];
	vault_connection_purpose(pa, upstream, "access");
	vault_connection_purpose(pr, upstream, "refresh");
	*enc_a = vault_seal(cfg, grant_id, pa, access, key_id);
	*enc_r = refresh ? vault_seal(cfg, grant_id, pr, refresh, key_id) : NULL;
	return *enc_a && (*enc_r || !refresh) ? 0 : -1;
}

/* The upstream refused the refresh token for good: the account is
 * disconnected (committed); the grant stays. */
static enum upstream_token_rc disconnect_dead(struct db_conn *c, const char *grant_id, const char *upstream,
					      const char *request_id)
{
	static struct db_stmt q_del = DB_STMT(
		"DELETE FROM grant_connections WHERE grant_id = $1::uuid AND upstream = $2");
	const char *p[] = { grant_id, upstream };
	PGresult *r = db_exec_ok(c, &q_del, 2, p);
	struct audit a = { "connection.lost", "system", NULL, NULL, grant_id, request_id };
	int ok = r &&
		 audit_record(c, &a,
			      json_pack("{s:s, s:s}", "upstream", upstream, "reason", "upstream_invalid_grant")) == 0 &&
		 db_commit(c) == 0;
	PQclear(r);
	return ok ? UT_NOT_CONNECTED : UT_UNAVAILABLE;
}

static enum upstream_token_rc store_refreshed(struct app *app, struct db_conn *c, const char *grant_id,
					      const char *upstream, const char *request_id,
					      const struct upstream_tokens *t, const char *old_refresh, char **token)
{
	static struct db_stmt q_store = DB_STMT(
		"UPDATE grant_connections SET key_id = $3, up_access = $4::bytea, up_refresh = $5::bytea, "
		"up_expires_at = CASE WHEN $6::int > 0 THEN now() + make_interval(secs => $6::int) END, "
		"up_scope = coalesce($7, up_scope), updated_at = now() WHERE grant_id = $1::uuid AND upstream = $2");
	const char *key_id = NULL;
	char *enc_a = NULL, *enc_r = NULL, exp[24];
	enum upstream_token_rc rc = UT_UNAVAILABLE;
	PGresult *r = NULL;
	snprintf(exp, sizeof(exp), "%ld", t->expires_in);
	if (seal(app->cfg, grant_id, upstream, t->access_token, t->refresh_token ? t->refresh_token : old_refresh,
		 &enc_a, &enc_r, &key_id) == 0) {
		const char *p[] = { grant_id, upstream, key_id, enc_a, enc_r, exp, t->scope };
		struct audit a = { "upstream.refreshed", "system", NULL, NULL, grant_id, request_id };
		if ((r = db_exec_ok(c, &q_store, 7, p)) &&
		    audit_record(c, &a,
				 json_pack("{s:s, s:b, s:b}", "upstream", upstream, "rotated", t->refresh_token != NULL,
					   "connected", 1)) == 0 &&
		    db_commit(c) == 0 && (*token = strdup(t->access_token)) != NULL)
			rc = UT_OK;
	}
	PQclear(r);
	free(enc_a);
	free(enc_r);
	return rc;
}

/* Under the connection's row lock: the token another request refreshed
 * meanwhile, or one upstream refresh. */
static enum upstream_token_rc refresh_locked(struct app *app, struct db_conn *c, const char *grant_id,
					     const char *upstream, const char *request_id, char **token,
					     long *retry_after)
{
	static struct db_stmt q_lock = DB_STMT(CONN_COLUMNS " FOR UPDATE");
	const struct config *cfg = app->cfg;
	struct conn_row g = { 0 };
	struct upstream_tokens t = { 0 };
	struct upstream_ep ep;
	char lockwait[64], pr[96], *old_refresh = NULL;
	int found = 0;
	enum upstream_token_rc rc = UT_UNAVAILABLE;
	t.expires_in = -1;
	snprintf(lockwait, sizeof(lockwait), "SET LOCAL lock_timeout = %ld", cfg->tokens.upstream_lock_wait_ms);
	if (db_begin(c) < 0 || db_command(c, lockwait) < 0 ||
	    load(c, &q_lock, grant_id, upstream, cfg->tokens.upstream_refresh_skew, &g, &found) < 0)
		goto out;
	if (!found) {
		rc = UT_NOT_CONNECTED;
		goto out;
	}
	if (!g.stale || !g.up_refresh) {
		/* Refreshed meanwhile, or nothing to refresh with: use it until the
		 * upstream refuses it. */
		rc = open_current(cfg, &g, grant_id, upstream, request_id, token);
		goto out;
	}
	vault_connection_purpose(pr, upstream, "refresh");
	const struct cfg_upstream *up = config_upstream(cfg, upstream);
	if (!(old_refresh = vault_open(cfg, g.key_id, grant_id, pr, g.up_refresh)) || !up ||
	    upstream_endpoints(up, &ep) < 0) {
		log_msg(LOG_ERROR, "upstream.unavailable", request_id,
			"connected %s session of grant %s cannot be refreshed now", upstream, grant_id);
		goto out;
	}
	enum upstream_class cls = upstream_refresh(up, &ep, old_refresh, request_id, &t, retry_after);
	metrics_count("upstream_refresh_total", upstream_class_name(cls), 1);
	if (cls == UPC_GRANT_DEAD)
		rc = disconnect_dead(c, grant_id, upstream, request_id);
	else if (cls != UPC_OK)
		rc = ut_of(cls);
	else
		rc = store_refreshed(app, c, grant_id, upstream, request_id, &t, old_refresh, token);
out:
	if (c->in_tx)
		db_rollback(c);
	vault_free(old_refresh);
	upstream_tokens_free(&t);
	row_free(&g);
	return rc;
}

enum upstream_token_rc connection_token_get(struct app *app, struct db_conn *c, const char *grant_id,
					    const char *upstream, const char *request_id, char **token,
					    long *retry_after)
{
	static struct db_stmt q = DB_STMT(CONN_COLUMNS);
	struct conn_row g = { 0 };
	int found = 0, stale = 0;
	enum upstream_token_rc rc = UT_UNAVAILABLE;
	*token = NULL;
	if (retry_after)
		*retry_after = 0;
	if (load(c, &q, grant_id, upstream, app->cfg->tokens.upstream_refresh_skew, &g, &found) < 0)
		rc = UT_UNAVAILABLE;
	else if (!found)
		rc = UT_NOT_CONNECTED;
	else if (g.stale && g.up_refresh)
		stale = 1;
	else
		rc = open_current(app->cfg, &g, grant_id, upstream, request_id, token);
	row_free(&g);
	return stale ? refresh_locked(app, c, grant_id, upstream, request_id, token, retry_after) : rc;
}

int connection_attach(struct app *app, struct db_conn *c, const char *grant_id, const char *upstream,
		      const struct upstream_tokens *tok, const struct upstream_identity *id, const char *request_id)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO grant_connections(grant_id, upstream, subject, login, key_id, up_access, up_refresh, "
		"up_expires_at, up_scope) SELECT $1::uuid, $2, $3, $4, $5, $6::bytea, $7::bytea, "
		"CASE WHEN $8::int > 0 THEN now() + make_interval(secs => $8::int) END, $9 "
		"FROM grants WHERE id = $1::uuid AND status = 'active' FOR SHARE " /* waits out a revocation */
		"ON CONFLICT (grant_id, upstream) DO UPDATE SET subject = EXCLUDED.subject, login = EXCLUDED.login, "
		"key_id = EXCLUDED.key_id, up_access = EXCLUDED.up_access, up_refresh = EXCLUDED.up_refresh, "
		"up_expires_at = EXCLUDED.up_expires_at, up_scope = EXCLUDED.up_scope, connected_at = now(), "
		"updated_at = now()");
	const char *key_id = NULL;
	char *enc_a = NULL, *enc_r = NULL, exp[24];
	PGresult *r = NULL;
	int rc = -1;
	snprintf(exp, sizeof(exp), "%ld", tok->expires_in);
	if (seal(app->cfg, grant_id, upstream, tok->access_token, tok->refresh_token, &enc_a, &enc_r, &key_id) < 0 ||
	    db_begin(c) < 0)
		goto out;
	const char *p[] = { grant_id, upstream, id->subject, id->login, key_id, enc_a, enc_r, exp, tok->scope };
	struct audit a = { "connection.created", "user", NULL, NULL, grant_id, request_id };
	if (!(r = db_exec_ok(c, &q, 9, p)) || strcmp(PQcmdTuples(r), "1") != 0 ||
	    audit_record(c, &a,
			 json_pack("{s:s, s:b}", "upstream", upstream, "upstream_refreshable",
				   tok->refresh_token != NULL)) < 0 ||
	    db_commit(c) < 0)
		goto out;
	rc = 0;
out:
	if (c->in_tx)
		db_rollback(c);
	PQclear(r);
	free(enc_a);
	free(enc_r);
	return rc;
}

int connect_ticket_new(struct db_conn *c, const char *grant_id, const char *upstream, char ticket[CONNECT_TICKET_MAX],
		       char elicitation_id[37])
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO connect_tickets(ticket_hash, elicitation_id, grant_id, upstream, expires_at) "
		"VALUES ($1::bytea, $2, $3::uuid, $4, now() + make_interval(secs => $5::int))");
	char hash[67], ttl[16];
	if (crypto_token_new(CONNECT_TICKET_PREFIX, ticket, CONNECT_TICKET_MAX) < 0 || vault_uuid(elicitation_id) < 0)
		return -1;
	vault_hash_hex(ticket, hash);
	snprintf(ttl, sizeof(ttl), "%d", CONNECT_TICKET_TTL_S);
	const char *p[] = { hash, elicitation_id, grant_id, upstream, ttl };
	PGresult *r = db_exec_ok(c, &q, 5, p);
	PQclear(r);
	if (!r)
		crypto_wipe(ticket, CONNECT_TICKET_MAX);
	return r ? 0 : -1;
}

int connection_attach_signin(struct app *app, struct db_conn *c, const char *grant_id, const char *upstream,
			     const struct upstream_tokens *tok, const char *request_id)
{
	static struct db_stmt q = DB_STMT(
		"UPDATE grants SET key_id = $3, up_access = $4::bytea, up_refresh = $5::bytea, "
		"up_expires_at = CASE WHEN $6::int > 0 THEN now() + make_interval(secs => $6::int) END, "
		"up_scope = $7, updated_at = now() WHERE id = $1::uuid AND upstream = $2 AND status = 'active'");
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" NOTIFY_CHANNEL "', 'u:' || $1)");
	const char *key_id = NULL;
	char *enc_a = vault_seal(app->cfg, grant_id, "access", tok->access_token, &key_id);
	char *enc_r = tok->refresh_token ? vault_seal(app->cfg, grant_id, "refresh", tok->refresh_token, &key_id)
					 : NULL;
	char exp[24];
	PGresult *r = NULL, *n = NULL;
	int rc = -1;
	snprintf(exp, sizeof(exp), "%ld", tok->expires_in);
	if (!enc_a || (tok->refresh_token && !enc_r) || db_begin(c) < 0)
		goto out;
	const char *p[] = { grant_id, upstream, key_id, enc_a, enc_r, exp, tok->scope }, *pn[] = { grant_id };
	struct audit a = { "connection.created", "user", NULL, NULL, grant_id, request_id };
	if (!(r = db_exec_ok(c, &q, 7, p)) || strcmp(PQcmdTuples(r), "1") != 0 ||
	    !(n = db_exec_ok(c, &q_notify, 1, pn)) ||
	    audit_record(c, &a,
			 json_pack("{s:s, s:b, s:b}", "upstream", upstream, "signin", 1, "upstream_refreshable",
				   tok->refresh_token != NULL)) < 0 ||
	    db_commit(c) < 0)
		goto out;
	cache_evict_grant(grant_id);
	rc = 0;
out:
	if (c->in_tx)
		db_rollback(c);
	PQclear(r);
	PQclear(n);
	free(enc_a);
	free(enc_r);
	return rc;
}

int connection_disconnect(struct db_conn *c, const char *grant_id, const char *upstream, const char *actor,
			  const char *reason, const char *request_id)
{
	static struct db_stmt q = DB_STMT(
		"WITH gone AS (DELETE FROM grant_connections WHERE grant_id = $1::uuid AND upstream = $2 "
		"RETURNING grant_id, upstream, subject, key_id, up_access, up_refresh) "
		"INSERT INTO connection_revocations(grant_id, upstream, subject, key_id, up_access, up_refresh, reason) "
		"SELECT grant_id, upstream, subject, key_id, up_access, up_refresh, $3 FROM gone RETURNING id");
	const char *p[] = { grant_id, upstream, reason };
	PGresult *r = db_exec_ok(c, &q, 3, p);
	if (!r)
		return -1;
	int n = PQntuples(r);
	PQclear(r);
	if (n == 0)
		return 0;
	struct audit a = { "connection.disconnected", actor, NULL, NULL, grant_id, request_id };
	json_t *detail = json_pack("{s:s, s:s}", "upstream", upstream, "reason", reason);
	return detail && audit_record(c, &a, detail) == 0 ? 1 : -1;
}
