#include "clients.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cache.h"
#include "jparse.h"
#include "num.h"

/* Configuration is the truth for a static client; row (may hold no tuple)
 * only carries the operator's disable switch. */
static enum client_find from_config(const struct cfg_client *sc, const PGresult *row, struct client *out)
{
	snprintf(out->kind, sizeof(out->kind), "static");
	out->confidential = sc->has_secret;
	memcpy(out->secret_hash, sc->secret_hash, sizeof(out->secret_hash));
	out->disabled = PQntuples(row) == 1 && strcmp(PQgetvalue(row, 0, 4), "t") == 0;
	if (sc->client_name && !(out->name = strdup(sc->client_name)))
		return CLIENT_UNAVAILABLE;
	if (client_set_uris(out, (const char *const *)sc->redirect_uris, sc->n_redirect_uris) < 0)
		return CLIENT_UNAVAILABLE;
	if ((sc->jwks || sc->jwks_uri) && client_set_keys(out, sc->jwks, sc->jwks_uri) < 0)
		return CLIENT_UNAVAILABLE;
	return CLIENT_FOUND;
}

/* A dynamically registered client's row: kind, client_name,
 * array_to_json(redirect_uris), encode(secret_hash, 'hex'), disabled. */
static enum client_find from_row(const PGresult *row, struct client *out)
{
	enum client_find rc = CLIENT_UNAVAILABLE;
	json_t *uris = NULL;
	snprintf(out->kind, sizeof(out->kind), "%s", PQgetvalue(row, 0, 0));
	out->disabled = strcmp(PQgetvalue(row, 0, 4), "t") == 0;
	if (!PQgetisnull(row, 0, 1) && !(out->name = strdup(PQgetvalue(row, 0, 1))))
		goto out;
	if (!PQgetisnull(row, 0, 3)) {
		size_t len = 0;
		if (OPENSSL_hexstr2buf_ex(out->secret_hash, sizeof(out->secret_hash), &len, PQgetvalue(row, 0, 3),
					  '\0') != 1 ||
		    len != sizeof(out->secret_hash))
			goto out;
		out->confidential = 1;
	}
	uris = jparse_str(PQgetvalue(row, 0, 2), 0, LIM_JSON_DEPTH);
	if (client_set_uris_json(out, uris) < 0)
		goto out;
	rc = CLIENT_FOUND;
out:
	json_decref(uris);
	return rc;
}

/* The bits of a space-separated list ("" for a NULL or empty array: none). */
static unsigned grant_types_bits(const char *list)
{
	unsigned bits = 0;
	char name[64]; /* the longest: urn:ietf:params:oauth:grant-type:jwt-bearer */
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, " ");
		if (n && n < sizeof(name)) {
			memcpy(name, p, n);
			name[n] = '\0';
			bits |= client_grant_type_bit(name);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return bits;
}

enum client_find clients_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out)
{
	static struct db_stmt q = DB_STMT(
		"SELECT kind, client_name, array_to_json(redirect_uris), encode(secret_hash, 'hex'), "
		"disabled_at IS NOT NULL, array_to_string(grant_types, ' ') FROM clients WHERE client_id = $1");
	enum client_find rc = CLIENT_UNKNOWN;
	PGresult *res = NULL;
	memset(out, 0, sizeof(*out));
	/* Anything but VSCHAR is unknown here rather than a database encoding error. */
	if (!client_id_ok(client_id))
		goto out;
	/* Read before the row: an eviction racing this lookup wins. */
	unsigned long gen = cache_generation();
	if (cache_client_get(client_id, out))
		return CLIENT_FOUND;
	const struct cfg_client *sc = config_client(app->cfg, client_id);
	const char *p[] = { client_id };
	if (!(res = db_exec_ok(c, &q, 1, p))) {
		rc = CLIENT_UNAVAILABLE;
		goto out;
	}
	snprintf(out->client_id, sizeof(out->client_id), "%s", client_id);
	if (sc)
		rc = from_config(sc, res, out);
	else if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "static") != 0)
		rc = from_row(res, out);
	if (rc == CLIENT_FOUND) {
		out->grant_types_known = 1;
		out->grant_types = PQntuples(res) == 1 ? grant_types_bits(PQgetvalue(res, 0, 5)) : CLIENT_GT_ALL;
		cache_client_put(out, gen);
	}
out:
	PQclear(res);
	if (rc != CLIENT_FOUND)
		client_free(out);
	return rc;
}

/* list[0..n) as a compact JSON array, malloc'd; NULL when out of memory. */
static char *strlist_json(char *const *list, size_t n)
{
	json_t *a = json_array();
	int bad = !a;
	for (size_t i = 0; !bad && i < n; i++)
		bad = json_array_append_new(a, json_string(list[i])) < 0;
	char *text = bad ? NULL : json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return text;
}

int clients_sync_static(struct app *app)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO clients(client_id, kind, client_name, redirect_uris, token_endpoint_auth_method, grant_types) "
		"SELECT $1, 'static', $2, array(SELECT json_array_elements_text($3::json)), $4, "
		"array(SELECT json_array_elements_text($5::json)) "
		"ON CONFLICT (client_id) DO UPDATE SET kind = 'static', client_name = EXCLUDED.client_name, "
		"redirect_uris = EXCLUDED.redirect_uris, "
		"token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method, grant_types = EXCLUDED.grant_types");
	struct db_conn *c = NULL;
	int rc = -1;
	if (db_acquire(app->db, &c, 10000) < 0)
		return -1;
	for (size_t i = 0; i < app->cfg->n_clients; i++) {
		const struct cfg_client *cc = &app->cfg->clients[i];
		char *text = strlist_json(cc->redirect_uris, cc->n_redirect_uris);
		char *grants = cc->n_grant_types ? strlist_json(cc->grant_types, cc->n_grant_types)
						 : strdup("[\"authorization_code\", \"refresh_token\"]");
		const char *method = cc->has_secret             ? "client_secret_basic"
				     : cc->jwks || cc->jwks_uri ? "private_key_jwt"
								: "none";
		const char *p[] = { cc->client_id, cc->client_name, text, method, grants };
		PGresult *res = text && grants ? db_exec_ok(c, &q, 5, p) : NULL;
		free(text);
		free(grants);
		if (!res)
			goto out;
		PQclear(res);
	}
	rc = 0;
out:
	db_release(app->db, &c);
	return rc;
}

/* The count of the last hour's registrations from ip, after taking the
 * per-address lock (two-key advisory lock, first key "mcpb"): the count runs
 * as its own statement so that its snapshot is taken once the lock is held.
 * -1 on error. */
static long long registrations_last_hour(struct db_conn *c, const char *ip)
{
	static struct db_stmt q_lock = DB_STMT("SELECT pg_advisory_xact_lock(1835233378, hashtext($1))");
	static struct db_stmt q_count = DB_STMT(
		"SELECT count(*) FROM clients WHERE kind = 'dynamic' AND registration_ip = $1::inet "
		"AND created_at > now() - interval '1 hour'");
	const char *p[] = { ip };
	long long n = -1;
	PGresult *res = db_exec_ok(c, &q_lock, 1, p);
	if (!res)
		return -1;
	PQclear(res);
	if (!(res = db_exec_ok(c, &q_count, 1, p)))
		return -1;
	if (PQntuples(res) != 1 || num_parse(PQgetvalue(res, 0, 0), 0, LLONG_MAX, &n) < 0)
		n = -1;
	PQclear(res);
	return n;
}

enum clients_create clients_create_dynamic(struct db_conn *c, const struct clients_new *n, long per_ip_per_hour,
					   long long *issued_at)
{
	static struct db_stmt q_insert = DB_STMT(
		"INSERT INTO clients(client_id, kind, client_name, redirect_uris, secret_hash, "
		"token_endpoint_auth_method, grant_types, metadata, registration_ip) "
		"VALUES ($1, 'dynamic', $2, array(SELECT json_array_elements_text($3::json)), "
		"decode($4, 'hex'), $5, array(SELECT json_array_elements_text($6::json)), $7::jsonb, $8::inet) "
		"RETURNING extract(epoch FROM created_at)::bigint");
	enum clients_create rc = CLIENTS_ERROR;
	char *uris = NULL, *grants = NULL, *meta = NULL;
	PGresult *res = NULL;
	if (per_ip_per_hour > 0) {
		long long count = registrations_last_hour(c, n->registration_ip);
		if (count < 0)
			goto out;
		if (count >= per_ip_per_hour) {
			rc = CLIENTS_OVER_LIMIT;
			goto out;
		}
	}
	uris = json_dumps(n->redirect_uris, JSON_COMPACT);
	grants = json_dumps(n->grant_types, JSON_COMPACT);
	meta = json_dumps(n->metadata, JSON_COMPACT);
	if (!uris || !grants || !meta)
		goto out;
	const char *p[] = { n->client_id,   n->name, uris, n->secret_hash_hex,
			    n->auth_method, grants,  meta, n->registration_ip };
	if (!(res = db_exec_ok(c, &q_insert, 8, p)))
		goto out;
	if (PQntuples(res) == 1 && num_parse(PQgetvalue(res, 0, 0), 0, LLONG_MAX, issued_at) == 0)
		rc = CLIENTS_CREATED;
out:
	PQclear(res);
	free(uris);
	free(grants);
	free(meta);
	return rc;
}
