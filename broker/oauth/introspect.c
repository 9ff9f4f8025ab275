#include "introspect.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "client_auth.h"
#include "crypto.h"
#include "form.h"
#include "jparse.h"
#include "reqform.h"
#include "num.h"
#include "vault.h"

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

/* What an introspection request came to. */
enum ti_rc {
	TI_OK = 0,       /* an active token this resource server may see */
	TI_INACTIVE,     /* {"active": false}: unknown, expired, revoked, another audience */
	TI_REFUSED,      /* 400: no form or no token */
	TI_UNAUTHORIZED, /* 401: resource server authentication failed */
	TI_UNAVAILABLE,  /* 503: the database */
	TI_ANSWERED,     /* r was answered already (429 slow_down) */
};

/* A live token with its grant's user: views into the query result. */
#define LIM_SUB_TEXT 2400 /* namespace (an issuer URL at most 2048) : subject */

struct token_row {
	const char *kind, *client_id, *aud, *scope;
	char sub[LIM_SUB_TEXT];  /* "<namespace>:<subject>", as X-MCP-User says it */
	const char *jkt;         /* the DPoP key the token is bound to, NULL when none */
	const char *connections; /* JSON array of the grant's connected upstreams */
	long long exp, iat;
};

/* The token of an introspection request (RFC 7662 section 2.1); form may
 * be NULL (no form body). TI_INACTIVE for one no broker token can be. */
static enum ti_rc parse_request(const json_t *form, int dup, const char **token)
{
	enum ti_rc rc = TI_OK;
	*token = form_get(form, "token");
	if (!form || dup || !*token)
		rc = TI_REFUSED;
	else if (strlen(*token) > LIM_TOKEN)
		rc = TI_INACTIVE;
	return rc;
}

/* The token's audience is one of the resources this server is, or the
 * server lists none. */
static int audience_ok(const struct config *cfg, const struct cfg_resource_server *rs, const char *aud)
{
	int allowed = rs->n_resources == 0;
	for (size_t i = 0; i < rs->n_resources; i++) {
		char url[2048];
		int n = snprintf(url, sizeof(url), "%s%s", cfg->public_url, rs->resources[i]);
		allowed |= n >= 0 && (size_t)n < sizeof(url) && strcmp(url, aud) == 0;
	}
	return allowed;
}

/* The RFC 7662 section 2.2 answer for an active token; a DPoP-bound one
 * names its key's thumbprint in cnf.jkt (RFC 9449 section 6.2). */
static json_t *active_answer(const struct config *cfg, const struct token_row *row)
{
	int access = strcmp(row->kind, "access") == 0;
	const char *type = !access ? "refresh_token" : row->jkt ? "DPoP" : "Bearer";
	json_t *j = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "active", 1, "scope", row->scope,
			      "client_id", row->client_id, "sub", row->sub, "aud", row->aud, "exp",
			      (json_int_t)row->exp, "iat", (json_int_t)row->iat, "token_type", type, "iss",
			      cfg->public_url);
	if (j && row->jkt && json_object_set_new(j, "cnf", json_pack("{s:s}", "jkt", row->jkt)) < 0) {
		json_decref(j);
		j = NULL;
	}
	/* The accounts connected beside the sign-in (an extension member). */
	json_t *conn = row->connections ? jparse_str(row->connections, 0, LIM_JSON_DEPTH) : NULL;
	if (j && json_array_size(conn) > 0 && json_object_set(j, "mcpb_connections", conn) < 0) {
		json_decref(j);
		j = NULL;
	}
	json_decref(conn);
	return j;
}

/* The live token whose hash is that of token; *res owns what row points into. */
static enum ti_rc lookup(struct app *app, struct db_conn **c, const char *token, PGresult **res, struct token_row *row)
{
	static struct db_stmt q = DB_STMT(
		"SELECT t.kind, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"u.upstream, extract(epoch FROM t.expires_at)::bigint, "
		"extract(epoch FROM t.created_at)::bigint, t.grant_id::text, t.jkt, u.subject, "
		"(SELECT coalesce(json_agg(k.upstream ORDER BY k.upstream), '[]') FROM grant_connections k "
		"WHERE k.grant_id = g.id) "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id JOIN users u ON u.id = g.user_id "
		"WHERE t.token_hash = $1::bytea AND t.revoked_at IS NULL AND t.expires_at > now() "
		"AND g.status = 'active' AND (t.kind = 'access' OR t.used_at IS NULL)");
	char hash[67];
	const char *p[] = { hash };
	enum ti_rc rc;
	vault_hash_hex(token, hash);
	/* Unreachable database and unreadable row both answer 503. */
	/* NOLINTNEXTLINE(bugprone-branch-clone) */
	if (db_acquire(app->db, c, DB_WAIT_MS) < 0 || !(*res = db_exec_ok(*c, &q, 1, p))) {
		rc = TI_UNAVAILABLE;
	} else if (PQntuples(*res) != 1) {
		rc = TI_INACTIVE;
	} else if (num_parse(PQgetvalue(*res, 0, 5), 0, LLONG_MAX, &row->exp) < 0 ||
		   num_parse(PQgetvalue(*res, 0, 6), 0, LLONG_MAX, &row->iat) < 0) {
		rc = TI_UNAVAILABLE; /* not the bigints the query returns */
	} else {
		row->kind = PQgetvalue(*res, 0, 0);
		row->client_id = PQgetvalue(*res, 0, 1);
		row->aud = PQgetvalue(*res, 0, 2);
		row->scope = PQgetvalue(*res, 0, 3);
		/* An enterprise user is named by the issuer's login upstream, as
		 * downstream (proxy/bearer.c). */
		const char *ns = PQgetvalue(*res, 0, 4);
		const struct cfg_trusted_issuer *iss = config_trusted_issuer(app->cfg, ns);
		snprintf(row->sub, sizeof(row->sub), "%s:%s", iss ? iss->login_upstream : ns, PQgetvalue(*res, 0, 9));
		row->jkt = PQgetisnull(*res, 0, 8) ? NULL : PQgetvalue(*res, 0, 8);
		row->connections = PQgetvalue(*res, 0, 10);
		rc = TI_OK;
	}
	crypto_wipe(hash, sizeof(hash));
	return rc;
}

static void respond(struct http_req *r, enum ti_rc rc, const struct token_row *row)
{
	switch (rc) {
	case TI_OK: http_send_json(r, 200, active_answer(r->app->cfg, row)); break;
	case TI_INACTIVE: http_send_json(r, 200, json_pack("{s:b}", "active", 0)); break;
	case TI_REFUSED: http_send_oauth_error(r, 400, "invalid_request", "token is required (form body)"); break;
	case TI_UNAUTHORIZED:
		http_add_header(r, "WWW-Authenticate", "Basic realm=\"mcp-broker\"");
		http_send_oauth_error(r, 401, "invalid_client", "resource server authentication failed");
		break;
	case TI_UNAVAILABLE: http_send_oauth_unavailable(r); break;
	case TI_ANSWERED: break;
	}
}

void introspect_endpoint(struct http_req *r)
{
	struct db_conn *c = NULL;
	json_t *form = NULL;
	PGresult *res = NULL;
	struct token_row row = { 0 };
	const struct cfg_resource_server *rs = NULL;
	const char *token = NULL, *why = NULL;
	int dup = 0;
	char who[LIM_CLIENT_ID + 1];
	enum ti_rc rc;
	http_add_header(r, "Cache-Control", "no-store");
	/* Wrong resource server credentials count per (id, address) like
	 * wrong client secrets; over the limit nothing is checked. */
	client_auth_named_id(r, NULL, who);
	if (client_auth_failures_check(r, who) < 0) {
		rc = TI_ANSWERED;
	} else if (!(rs = rs_auth(r))) {
		rc = TI_UNAUTHORIZED;
	} else {
		form = reqform_body(r, &dup, &why);
		rc = parse_request(form, dup, &token);
	}
	if (rc == TI_OK)
		rc = lookup(r->app, &c, token, &res, &row);
	if (rc == TI_OK && !audience_ok(r->app->cfg, rs, row.aud))
		rc = TI_INACTIVE;
	respond(r, rc, &row);
	if (rc == TI_UNAUTHORIZED)
		client_auth_failures_count(r, who);
	PQclear(res);
	form_free(&form);
	db_release(r->app->db, &c);
}
