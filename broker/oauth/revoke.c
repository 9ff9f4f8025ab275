#include "revoke.h"

#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "client_auth.h"
#include "crypto.h"
#include "form.h"
#include "reqform.h"
#include "grant.h"
#include "notify.h"
#include "vault.h"

/* Revokes the client's own token in one transaction: a refresh token
 * stands for its whole grant, an access token for itself. hash is the
 * token's bytea hex text. 0 committed; -1 the database failed. */
static int revoke_owned(struct http_req *r, struct db_conn *c, const struct client *cl, const char *hash,
			const char *grant_id, int refresh)
{
	static struct db_stmt q_one = DB_STMT(
		"UPDATE tokens SET revoked_at = now() WHERE token_hash = $1::bytea AND revoked_at IS NULL");
	char actor[LIM_CLIENT_ID + 8];
	snprintf(actor, sizeof(actor), "client:%s", cl->client_id);
	int ok = db_begin(c) == 0;
	if (ok && refresh) {
		ok = grant_revoke(r->app, c, grant_id, "client_revoked", actor, r->id) >= 0;
	} else if (ok) {
		const char *p[] = { hash };
		PGresult *u = db_exec_ok(c, &q_one, 1, p);
		int changed = u && strcmp(PQcmdTuples(u), "0") != 0;
		struct audit a = { "token.revoked", actor, NULL, cl->client_id, grant_id, r->id };
		ok = u && (!changed || (notify_publish(c, &(struct revocation){ .token_hash = hash + 2 }) == 0 &&
					audit_record(c, &a, json_pack("{s:s}", "kind", "access")) == 0));
		PQclear(u);
	}
	return ok && db_commit(c) == 0 ? 0 : -1;
}

void revoke_endpoint(struct http_req *r)
{
	static struct db_stmt q_find = DB_STMT(
		"SELECT kind, grant_id::text, client_id FROM tokens WHERE token_hash = $1::bytea");
	struct db_conn *c = NULL;
	struct client cl;
	json_t *form = NULL;
	int dup = 0;
	memset(&cl, 0, sizeof(cl));
	http_add_header(r, "Cache-Control", "no-store");
	const char *why = NULL;
	char who[LIM_CLIENT_ID + 1];
	int gated = 0;
	if (!(form = reqform_body(r, &dup, &why))) {
		http_send_oauth_error(r, 400, "invalid_request", why);
		return;
	}
	/* The same failure buckets as /token: a client secret cannot be tried
	 * on here instead (unknown tokens answer 200 and are no failure). */
	client_auth_named_id(r, form, who);
	if (client_auth_failures_check(r, who) < 0)
		goto out;
	gated = 1;
	const char *token = form_get(form, "token");
	const char *hint = form_get(form, "token_type_hint");
	if (dup || !token || !*token) {
		http_send_oauth_error(r, 400, "invalid_request",
				      dup ? "a parameter was given more than once" : "token is required");
		goto out;
	}
	if (hint && strcmp(hint, "access_token") != 0 && strcmp(hint, "refresh_token") != 0) {
		http_send_oauth_error(r, 400, "unsupported_token_type",
				      "token_type_hint must be access_token or refresh_token");
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	enum client_auth ca = client_auth_verify(r, c, form, &cl);
	if (ca != CA_OK) {
		client_auth_error(r, ca);
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
	if (revoke_owned(r, c, &cl, hash, grant_id, refresh) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	http_send(r, 200, "application/json", "{}", 2);
out:
	if (gated)
		client_auth_failures_count(r, who);
	form_free(&form);
	client_free(&cl);
	db_release(r->app->db, &c);
}
