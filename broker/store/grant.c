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

static int issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id, const char *resource,
		 const char *scope, const struct grant_binding *b, int with_refresh, struct issued *out)
{
	const struct config *cfg = app->cfg;
	const char *jkt = b && b->jkt && *b->jkt ? b->jkt : NULL;
	memset(out, 0, sizeof(*out));
	if (strlen(scope) >= sizeof(out->scope) || (jkt && strlen(jkt) >= sizeof(out->jkt)))
		return -1;
	snprintf(out->scope, sizeof(out->scope), "%s", scope);
	snprintf(out->jkt, sizeof(out->jkt), "%s", jkt ? jkt : "");
	out->expires_in = cfg->tokens.access_ttl;
	if (crypto_token_new(TOKEN_PREFIX_ACCESS, out->access, sizeof(out->access)) < 0 ||
	    insert_token(c, out->access, "access", grant_id, client_id, resource, scope, cfg->tokens.access_ttl, jkt) <
		    0 ||
	    (with_refresh && (crypto_token_new(TOKEN_PREFIX_REFRESH, out->refresh, sizeof(out->refresh)) < 0 ||
			      insert_token(c, out->refresh, "refresh", grant_id, client_id, resource, scope,
					   cfg->tokens.refresh_ttl, b && b->refresh_bound ? jkt : NULL) < 0))) {
		issued_wipe(out);
		return -1;
	}
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
