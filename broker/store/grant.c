#include "grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "crypto.h"
#include "notify.h"
#include "vault.h"

static int insert_token(struct db_conn *c, const char *token, const char *kind, const char *grant_id,
			const char *client_id, const char *resource, const char *scope, long ttl, const char *jkt)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO tokens(token_hash, kind, grant_id, client_id, resource, scopes, expires_at, jkt) "
		"VALUES ($1::bytea, $2, $3::uuid, $4, $5, string_to_array($6, ' '), "
		"now() + make_interval(secs => $7::int), $8)");
	char hash[67], ttls[24];
	vault_hash_hex(token, hash);
	snprintf(ttls, sizeof(ttls), "%ld", ttl);
	const char *p[] = { hash, kind, grant_id, client_id, resource, scope, ttls, jkt && *jkt ? jkt : NULL };
	PGresult *r = db_exec_ok(c, &q, 8, p);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* Fills out with fresh token text (the refresh token only when
 * with_refresh): no database. */
static int mint(struct app *app, const char *scope, const struct grant_binding *b, int with_refresh, struct issued *out)
{
	const char *jkt = b && b->jkt && *b->jkt ? b->jkt : NULL;
	memset(out, 0, sizeof(*out));
	if (strlen(scope) >= sizeof(out->scope) || (jkt && strlen(jkt) >= sizeof(out->jkt)))
		return -1;
	snprintf(out->scope, sizeof(out->scope), "%s", scope);
	snprintf(out->jkt, sizeof(out->jkt), "%s", jkt ? jkt : "");
	out->expires_in = app->cfg->tokens.access_ttl;
	if (crypto_token_new(TOKEN_PREFIX_ACCESS, out->access, sizeof(out->access)) < 0 ||
	    (with_refresh && crypto_token_new(TOKEN_PREFIX_REFRESH, out->refresh, sizeof(out->refresh)) < 0)) {
		issued_wipe(out);
		return -1;
	}
	return 0;
}

static int issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
		 const char *scope, const struct grant_binding *b, int with_refresh, struct issued *out)
{
	const struct config *cfg = app->cfg;
	if (mint(app, scope, b, with_refresh, out) < 0)
		return -1;
	const char *jkt = out->jkt[0] ? out->jkt : NULL;
	if (insert_token(c, out->access, "access", grant_id, client_id, resource, scope, cfg->tokens.access_ttl, jkt) <
		    0 ||
	    (with_refresh && insert_token(c, out->refresh, "refresh", grant_id, client_id, resource, scope,
					  cfg->tokens.refresh_ttl, b && b->refresh_bound ? jkt : NULL) < 0)) {
		issued_wipe(out);
		return -1;
	}
	return 0;
}

int grant_mint(struct app *app, const char *scope, const struct grant_binding *b, struct issued *out)
{
	return mint(app, scope, b, 1, out);
}

int grant_rotate_commit(struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
			long refresh_ttl, const struct grant_binding *b, const struct issued *out,
			const char *used_hash, const char *successor, const struct audit *a, json_t *detail)
{
	/* One round trip instead of five: both tokens, the rotation mark and
	 * the audit row in one statement (data-modifying CTEs all run,
	 * whatever the outer statement reads), pipelined with COMMIT. */
	static struct db_stmt q = DB_STMT(
		"WITH pair AS (INSERT INTO tokens(token_hash, kind, grant_id, client_id, resource, scopes, expires_at, jkt) "
		"VALUES ($1::bytea, 'access', $3::uuid, $4, $5, string_to_array($6, ' '), "
		"now() + make_interval(secs => $7::int), $8), "
		"($2::bytea, 'refresh', $3::uuid, $4, $5, string_to_array($6, ' '), "
		"now() + make_interval(secs => $9::int), $10)), "
		"used AS (UPDATE tokens SET used_at = now(), successor = $12::bytea WHERE token_hash = $11::bytea "
		"AND kind = 'refresh' AND used_at IS NULL RETURNING 1) "
		/* event is NOT NULL: no marked row, no audit row, and the
		 * statement fails, so its COMMIT does not happen. */
		"INSERT INTO audit_events(event, actor, subject, client_id, grant_id, request_id, detail) "
		"VALUES ((SELECT $13::text FROM used), $14, $15, $16, $17::uuid, $18, coalesce($19::jsonb, '{}'::jsonb))");
	const char *jkt = out->jkt[0] ? out->jkt : NULL;
	char access_hash[67], refresh_hash[67], attl[24], rttl[24];
	vault_hash_hex(out->access, access_hash);
	vault_hash_hex(out->refresh, refresh_hash);
	snprintf(attl, sizeof(attl), "%ld", out->expires_in);
	snprintf(rttl, sizeof(rttl), "%ld", refresh_ttl);
	char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
	const char *p[] = { access_hash,  refresh_hash, grant_id,      client_id, resource,
			    out->scope,   attl,         jkt,           rttl,      b && b->refresh_bound ? jkt : NULL,
			    used_hash,    successor,    a->event,      a->actor,  a->subject,
			    a->client_id, a->grant_id,  a->request_id, text };
	int ok = !(detail && !text) && db_exec_commit(c, &q, 19, p, NULL) == 0;
	free(text);
	crypto_wipe(access_hash, sizeof(access_hash));
	crypto_wipe(refresh_hash, sizeof(refresh_hash));
	if (!ok)
		return -1;
	audit_log_line(a, detail);
	return 0;
}

int grant_issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
		const char *scope, const struct grant_binding *b, struct issued *out)
{
	return issue(app, c, grant_id, client_id, resource, scope, b, 1, out);
}

int grant_issue_access(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id,
		       const char *resource, const char *scope, const struct grant_binding *b, struct issued *out)
{
	return issue(app, c, grant_id, client_id, resource, scope, b, 0, out);
}

json_t *grant_token_response(const struct issued *out)
{
	json_t *j = json_pack("{s:s, s:s, s:i}", "access_token", out->access, "token_type",
			      out->jkt[0] ? "DPoP" : "Bearer", "expires_in", (int)out->expires_in);
	if (j && out->refresh[0] && json_object_set_new(j, "refresh_token", json_string(out->refresh)) < 0) {
		json_decref(j);
		j = NULL;
	}
	if (j && out->scope[0] && json_object_set_new(j, "scope", json_string(out->scope)) < 0) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

void issued_wipe(struct issued *out)
{
	crypto_wipe(out, sizeof(*out));
}

static enum grant_revoke_rc revoke_one(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
				       const char *actor, const char *request_id, int announce)
{
	static struct db_stmt q_grant = DB_STMT(
		"UPDATE grants SET status = 'revoked', revoked_at = now(), revoked_reason = $2, "
		"updated_at = now() WHERE id = $1::uuid AND status = 'active' RETURNING user_id::text, client_id, upstream");
	static struct db_stmt q_tokens = DB_STMT(
		"UPDATE tokens SET revoked_at = now() WHERE grant_id = $1::uuid AND revoked_at IS NULL");
	static struct db_stmt q_queue = DB_STMT(
		"INSERT INTO upstream_revocations(grant_id, upstream) VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING");
	/* Its connected accounts go with it: their sealed tokens move to the
	 * revoker's queue (migration 0008). */
	static struct db_stmt q_connections = DB_STMT(
		"WITH gone AS (DELETE FROM grant_connections WHERE grant_id = $1::uuid RETURNING grant_id, "
		"upstream, subject, key_id, up_access, up_refresh) INSERT INTO connection_revocations(grant_id, "
		"upstream, subject, key_id, up_access, up_refresh, reason) SELECT grant_id, upstream, subject, key_id, "
		"up_access, up_refresh, $2 FROM gone");
	enum grant_revoke_rc rc = GRANT_REVOKE_FAILED;
	char user[40], client[LIM_CLIENT_ID + 1], upstream[80];
	(void)app;
	const char *p[] = { grant_id, reason };
	PGresult *r = db_exec_ok(c, &q_grant, 2, p);
	if (!r)
		goto out;
	if (PQntuples(r) == 0) {
		rc = GRANT_UNCHANGED;
		goto out;
	}
	snprintf(user, sizeof(user), "%s", PQgetvalue(r, 0, 0));
	snprintf(client, sizeof(client), "%s", PQgetvalue(r, 0, 1));
	snprintf(upstream, sizeof(upstream), "%s", PQgetvalue(r, 0, 2));
	PQclear(r);
	r = NULL;
	/* A grant the upstream already rejected needs no upstream revocation
	 * (and GitHub's grant API would take the user's other sessions too). */
	if (strncmp(reason, "upstream_", 9) != 0) {
		const char *pq[] = { grant_id, upstream };
		if (!(r = db_exec_ok(c, &q_queue, 2, pq)))
			goto out;
		PQclear(r);
		r = NULL;
	}
	if (!(r = db_exec_ok(c, &q_tokens, 1, p)))
		goto out;
	PQclear(r);
	if (!(r = db_exec_ok(c, &q_connections, 2, p)))
		goto out;
	PQclear(r);
	r = NULL;
	struct audit a = { "grant.revoked", actor, user, client, grant_id, request_id };
	json_t *detail = json_pack("{s:s}", "reason", reason);
	/* Out of memory for the reason: no record rather than one without it. */
	if (!detail || audit_record(c, &a, detail) < 0)
		goto out;
	if (announce && notify_publish(c, &(struct revocation){ .grant_id = grant_id }) < 0)
		goto out;
	rc = GRANT_REVOKED;
out:
	PQclear(r);
	return rc;
}

enum grant_revoke_rc grant_revoke(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
				  const char *actor, const char *request_id)
{
	return revoke_one(app, c, grant_id, reason, actor, request_id, 1);
}

enum grant_revoke_rc grant_revoke_quiet(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
					const char *actor, const char *request_id)
{
	return revoke_one(app, c, grant_id, reason, actor, request_id, 0);
}
