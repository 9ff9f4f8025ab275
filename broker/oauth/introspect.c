#include "introspect.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "clients.h"
#include "crypto.h"
#include "form.h"
#include "reqform.h"
#include "vault.h"

#define DB_WAIT_MS 2000

/* HTTP Basic of a configured resource server: the server, or NULL. */
static const struct cfg_resource_server *rs_auth(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	const char *h = http_header(r, "Authorization");
	char raw[1200];
	if (!h || strncasecmp(h, "Basic ", 6) != 0 || strlen(h + 6) > 1500)
		return 0;
	long n = crypto_b64_decode(h + 6, strlen(h + 6), raw, sizeof(raw) - 1);
	if (n <= 0)
		return 0;
	raw[n] = '\0';
	char *colon = strchr(raw, ':');
	const struct cfg_resource_server *ok = NULL;
	if (colon && strlen(raw) == (size_t)n) {
		*colon = '\0';
		uint8_t hash[CRYPTO_SHA256_LEN];
		crypto_sha256(colon + 1, strlen(colon + 1), hash);
		for (size_t i = 0; i < cfg->n_resource_servers; i++) {
			const struct cfg_resource_server *rs = &cfg->resource_servers[i];
			int id = strcmp(rs->client_id, raw) == 0;
			int sec = crypto_ct_equal(hash, sizeof(hash), rs->secret_hash, sizeof(hash));
			if (id & sec)
				ok = rs;
		}
		crypto_wipe(hash, sizeof(hash));
	}
	crypto_wipe(raw, sizeof(raw));
	return ok;
}

void introspect_endpoint(struct http_req *r)
{
	static struct db_stmt q = DB_STMT(
		"SELECT t.kind, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"u.upstream || ':' || u.subject, extract(epoch FROM t.expires_at)::bigint, "
		"extract(epoch FROM t.created_at)::bigint, t.grant_id::text "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id JOIN users u ON u.id = g.user_id "
		"WHERE t.token_hash = $1::bytea AND t.revoked_at IS NULL AND t.expires_at > now() "
		"AND g.status = 'active' AND (t.kind = 'access' OR t.used_at IS NULL)");
	struct db_conn *c = NULL;
	json_t *form = NULL;
	int dup = 0;
	char who[LIM_CLIENT_ID + 1];
	(void)http_add_header(r, "Cache-Control", "no-store");
	/* Wrong resource server credentials count per (id, address) like
	 * wrong client secrets; over the limit nothing is checked. */
	clients_named_id(r, NULL, who);
	if (clients_failures_check(r, who) < 0)
		return;
	const struct cfg_resource_server *rs = rs_auth(r);
	if (!rs) {
		(void)http_add_header(r, "WWW-Authenticate", "Basic realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_client", "resource server authentication failed");
		clients_failures_count(r, who);
		return;
	}
	const char *why = NULL;
	if (!(form = reqform_body(r, &dup, &why)) || dup || !form_get(form, "token")) {
		http_send_oauth_error(r, 400, "invalid_request", "token is required (form body)");
		goto out;
	}
	const char *token = form_get(form, "token");
	if (strlen(token) > LIM_TOKEN) {
		http_send_json(r, 200, json_pack("{s:b}", "active", 0));
		goto out;
	}
	if (db_acquire(r->app->db, &c, DB_WAIT_MS) < 0) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	char hash[67];
	vault_hash_hex(token, hash);
	const char *p[] = { hash };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res) {
		http_send_oauth_unavailable(r);
		goto out;
	}
	json_t *out;
	int allowed = PQntuples(res) == 1 && rs->n_resources == 0;
	for (size_t i = 0; PQntuples(res) == 1 && i < rs->n_resources; i++) {
		/* The token's audience is one of the resources this server is. */
		char url[2048];
		snprintf(url, sizeof(url), "%s%s", r->app->cfg->public_url, rs->resources[i]);
		allowed |= strcmp(url, PQgetvalue(res, 0, 2)) == 0;
	}
	if (allowed) {
		int access = strcmp(PQgetvalue(res, 0, 0), "access") == 0;
		out = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "active", 1, "scope",
				PQgetvalue(res, 0, 3), "client_id", PQgetvalue(res, 0, 1), "sub", PQgetvalue(res, 0, 4),
				"aud", PQgetvalue(res, 0, 2), "exp", (json_int_t)strtoll(PQgetvalue(res, 0, 5), NULL, 10),
				"iat", (json_int_t)strtoll(PQgetvalue(res, 0, 6), NULL, 10), "token_type",
				access ? "Bearer" : "refresh_token");
		if (out)
			json_object_set_new(out, "iss", json_string(r->app->cfg->public_url));
	} else {
		out = json_pack("{s:b}", "active", 0);
	}
	PQclear(res);
	http_send_json(r, 200, out);
out:
	form_free(&form);
	db_release(r->app->db, &c);
}
