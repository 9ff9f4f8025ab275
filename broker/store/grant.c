#include "grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "cache.h"
#include "revoke.h"
#include "crypto.h"
#include "vault.h"

static int insert_token(struct db_conn *c, const char *token, const char *kind, const char *grant_id,
			const char *client_id, const char *resource, const char *scope, long ttl)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO tokens(token_hash, kind, grant_id, client_id, resource, scopes, expires_at) "
		"VALUES ($1::bytea, $2, $3::uuid, $4, $5, string_to_array($6, ' '), "
		"now() + make_interval(secs => $7::int))");
	char hash[67], ttls[24];
	vault_hash_hex(token, hash);
	snprintf(ttls, sizeof(ttls), "%ld", ttl);
	const char *p[] = { hash, kind, grant_id, client_id, resource, scope, ttls };
	PGresult *r = db_exec_ok(c, &q, 7, p);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

int grant_issue(struct app *app, struct db_conn *c, const char *grant_id, const char *client_id,
		const char *resource, const char *scope, struct issued *out)
{
	const struct config *cfg = app->cfg;
	memset(out, 0, sizeof(*out));
	if (strlen(scope) >= sizeof(out->scope))
		return -1;
	snprintf(out->scope, sizeof(out->scope), "%s", scope);
	out->expires_in = cfg->tokens.access_ttl;
	if (crypto_token_new(TOKEN_PREFIX_ACCESS, out->access, sizeof(out->access)) < 0 ||
	    crypto_token_new(TOKEN_PREFIX_REFRESH, out->refresh, sizeof(out->refresh)) < 0 ||
	    insert_token(c, out->access, "access", grant_id, client_id, resource, scope,
			 cfg->tokens.access_ttl) < 0 ||
	    insert_token(c, out->refresh, "refresh", grant_id, client_id, resource, scope,
			 cfg->tokens.refresh_ttl) < 0) {
		issued_wipe(out);
		return -1;
	}
	return 0;
}

json_t *grant_token_response(const struct issued *out)
{
	json_t *j = json_pack("{s:s, s:s, s:i, s:s}", "access_token", out->access, "token_type", "Bearer",
			      "expires_in", (int)out->expires_in, "refresh_token", out->refresh);
	if (j && out->scope[0])
		json_object_set_new(j, "scope", json_string(out->scope));
	return j;
}

void issued_wipe(struct issued *out)
{
	crypto_wipe(out, sizeof(*out));
}

/* The NOTIFY payload for rv (grammar in grant.h), malloc'd; NULL when out
 * of memory. */
static char *notify_payload(const struct cache_revocation *rv)
{
	char *out = NULL;
	json_t *sel = NULL;
	int selector = rv->client_id || rv->subject || rv->upstream;
	if (!selector && !rv->token_hash && rv->grant_id) {
		size_t n = strlen(rv->grant_id) + 3;
		if ((out = malloc(n)))
			snprintf(out, n, "g:%s", rv->grant_id);
		goto out;
	}
	if (!selector && !rv->grant_id && rv->token_hash) {
		size_t n = strlen(rv->token_hash) + 5;
		if ((out = malloc(n)))
			snprintf(out, n, "t:\\x%s", rv->token_hash);
		goto out;
	}
	if (selector && !rv->token_hash) {
		const char *k[] = { "grant_id", "client_id", "subject", "upstream" };
		const char *v[] = { rv->grant_id, rv->client_id, rv->subject, rv->upstream };
		int bad = !(sel = json_object());
		for (int i = 0; i < 4 && !bad; i++)
			bad = v[i] && json_object_set_new(sel, k[i], json_string(v[i])) < 0;
		char *j = !bad ? json_dumps(sel, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		size_t n = j ? strlen(j) + 3 : 0;
		if (j && n <= GRANT_NOTIFY_MAX + 1 && (out = malloc(n)))
			snprintf(out, n, "r:%s", j);
		free(j);
		if (out || bad)
			goto out; /* out of memory: NULL */
	}
	/* Everything, or a selector too long to say: every node ends everything. */
	out = strdup("*");
out:
	json_decref(sel);
	return out;
}

int grant_announce(struct db_conn *c, const struct cache_revocation *rv)
{
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" GRANT_NOTIFY_CHANNEL "', $1)");
	int rc = -1;
	char *payload = notify_payload(rv);
	if (!payload)
		goto out;
	const char *p[] = { payload };
	PGresult *r = db_exec_ok(c, &q_notify, 1, p);
	if (!r)
		goto out;
	PQclear(r);
	/* This node forgets and ends it now; the others on the NOTIFY. */
	cache_revoked(rv);
	revoke_wake();
	rc = 0;
out:
	free(payload);
	return rc;
}

static int revoke_one(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
		      const char *actor, const char *request_id, int announce)
{
	static struct db_stmt q_grant = DB_STMT(
		"UPDATE grants SET status = 'revoked', revoked_at = now(), revoked_reason = $2, "
		"updated_at = now() WHERE id = $1::uuid AND status = 'active' RETURNING user_id::text, client_id, upstream");
	static struct db_stmt q_tokens = DB_STMT(
		"UPDATE tokens SET revoked_at = now() WHERE grant_id = $1::uuid AND revoked_at IS NULL");
	static struct db_stmt q_queue = DB_STMT(
		"INSERT INTO upstream_revocations(grant_id, upstream) VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING");
	(void)app;
	const char *p[] = { grant_id, reason };
	PGresult *r = db_exec_ok(c, &q_grant, 2, p);
	if (!r)
		return -1;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return 0;
	}
	char user[40], client[600], upstream[80];
	snprintf(user, sizeof(user), "%s", PQgetvalue(r, 0, 0));
	snprintf(client, sizeof(client), "%s", PQgetvalue(r, 0, 1));
	snprintf(upstream, sizeof(upstream), "%s", PQgetvalue(r, 0, 2));
	PQclear(r);
	/* A grant the upstream already rejected needs no upstream revocation
	 * (and GitHub's grant API would take the user's other sessions too). */
	if (strncmp(reason, "upstream_", 9) != 0) {
		const char *pq[] = { grant_id, upstream };
		if (!(r = db_exec_ok(c, &q_queue, 2, pq)))
			return -1;
		PQclear(r);
	}
	if (!(r = db_exec_ok(c, &q_tokens, 1, p)))
		return -1;
	PQclear(r);
	struct audit a = { "grant.revoked", actor, user, client, grant_id, request_id };
	if (audit_record(c, &a, json_pack("{s:s}", "reason", reason)) < 0)
		return -1;
	if (announce) {
		struct cache_revocation rv = { .grant_id = grant_id };
		if (grant_announce(c, &rv) < 0)
			return -1;
	}
	return 1;
}

int grant_revoke(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
		 const char *actor, const char *request_id)
{
	return revoke_one(app, c, grant_id, reason, actor, request_id, 1);
}

int grant_revoke_quiet(struct app *app, struct db_conn *c, const char *grant_id, const char *reason,
		       const char *actor, const char *request_id)
{
	return revoke_one(app, c, grant_id, reason, actor, request_id, 0);
}
