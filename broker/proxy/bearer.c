#include "bearer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "dpop.h"
#include "lim.h"
#include "num.h"
#include "scope.h"
#include "vault.h"

const char *bearer_token(const char *authorization, int *dpop)
{
	*dpop = 0;
	if (!authorization)
		return NULL;
	const char *t = NULL;
	if (strncasecmp(authorization, "Bearer ", 7) == 0)
		t = authorization + 7;
	else if (strncasecmp(authorization, "DPoP ", 5) == 0 && (*dpop = 1))
		t = authorization + 5;
	size_t n = t ? strlen(t) : 0;
	return n == 0 || n > LIM_TOKEN ? NULL : t;
}

/* 1 valid (ti filled), 0 unknown/expired/revoked, -1 database error. */
static int lookup(const struct config *cfg, struct db_conn *c, const char *hash, struct token_info *ti)
{
	static struct db_stmt q = DB_STMT(
		"SELECT t.grant_id::text, t.client_id, t.resource, array_to_string(t.scopes, ' '), "
		"g.user_id::text, u.subject, g.upstream, extract(epoch FROM t.expires_at)::bigint, t.jkt, u.upstream "
		"FROM tokens t JOIN grants g ON g.id = t.grant_id "
		"JOIN users u ON u.id = g.user_id WHERE t.token_hash = $1::bytea AND t.kind = 'access' "
		"AND t.revoked_at IS NULL AND t.expires_at > now() AND g.status = 'active'");
	const char *p[] = { hash };
	int rc = -1;
	memset(ti, 0, sizeof(*ti));
	PGresult *res = db_exec_ok(c, &q, 1, p);
	if (!res)
		goto out;
	rc = 0;
	if (PQntuples(res) != 1)
		goto out;
	if (num_parse(PQgetvalue(res, 0, 7), 0, LLONG_MAX, &ti->exp) < 0) {
		rc = -1;
		goto out;
	}
	snprintf(ti->grant_id, sizeof(ti->grant_id), "%s", PQgetvalue(res, 0, 0));
	snprintf(ti->client_id, sizeof(ti->client_id), "%s", PQgetvalue(res, 0, 1));
	snprintf(ti->resource, sizeof(ti->resource), "%s", PQgetvalue(res, 0, 2));
	snprintf(ti->scope, sizeof(ti->scope), "%s", PQgetvalue(res, 0, 3));
	snprintf(ti->user_id, sizeof(ti->user_id), "%s", PQgetvalue(res, 0, 4));
	snprintf(ti->subject, sizeof(ti->subject), "%s", PQgetvalue(res, 0, 5));
	snprintf(ti->upstream, sizeof(ti->upstream), "%s", PQgetvalue(res, 0, 6));
	snprintf(ti->jkt, sizeof(ti->jkt), "%s", PQgetisnull(res, 0, 8) ? "" : PQgetvalue(res, 0, 8));
	/* The user's own namespace names them to the downstream: an
	 * enterprise user (a trusted issuer's) by the issuer's login
	 * upstream, at the same IdP with the same subject (config.c checks). */
	const char *ns = PQgetvalue(res, 0, 9);
	const struct cfg_trusted_issuer *iss = config_trusted_issuer(cfg, ns);
	if (!iss && !config_upstream(cfg, ns)) {
		/* A user of an issuer (or upstream) no longer configured: their
		 * tokens end with the trust. */
		memset(ti, 0, sizeof(*ti));
		goto out;
	}
	snprintf(ti->user_ns, sizeof(ti->user_ns), "%s", iss ? iss->login_upstream : ns);
	rc = 1;
out:
	PQclear(res);
	return rc;
}

enum bearer_rc bearer_validate(struct app *app, struct db_conn **c, const char *token, struct token_info *ti,
			       char hash[65])
{
	char full[67]; /* "\x" and the hex digits, as the database takes it */
	hash[0] = '\0';
	if (strncmp(token, TOKEN_PREFIX_ACCESS, strlen(TOKEN_PREFIX_ACCESS)) != 0 || strlen(token) > LIM_TOKEN)
		return BEARER_INVALID;
	vault_hash_hex(token, full);
	memcpy(hash, full + 2, 65);
	if (cache_get(hash, ti))
		return BEARER_VALID;
	/* Safe to remember a refusal: see cache_token_invalid. */
	if (cache_token_invalid(hash))
		return BEARER_INVALID;
	if (!*c && db_acquire(app->db, c, DB_WAIT_MS) < 0)
		return BEARER_UNAVAILABLE;
	unsigned long gen = cache_generation();
	int v = lookup(app->cfg, *c, full, ti);
	if (v < 0)
		return BEARER_UNAVAILABLE;
	if (v == 0) {
		cache_token_put_invalid(hash);
		return BEARER_INVALID;
	}
	cache_put(hash, ti, gen);
	return BEARER_VALID;
}

/* The resource's default scopes, or all it offers, space-joined; malloc'd,
 * NULL on allocation failure. */
static char *challenge_scope(const struct cfg_resource *res)
{
	struct scopes all = { 0 };
	int bad = 0;
	for (size_t i = 0; i < res->n_default_scopes && !bad; i++)
		bad = scopes_add(&all, res->default_scopes[i]) < 0;
	for (size_t i = 0; !res->n_default_scopes && i < res->n_scopes && !bad; i++)
		bad = scopes_add(&all, res->scopes[i].scope) < 0;
	char *joined = bad ? NULL : scopes_join(&all);
	scopes_free(&all);
	return joined;
}

static void challenge(struct http_req *r, const struct cfg_resource *res, int status, int dpop_scheme,
		      const char *error, const char *description, const char *scope)
{
	const struct config *cfg = r->app->cfg;
	struct buf b;
	buf_init(&b, 4096);
	/* Without a specific need, ask for the resource's default scopes. */
	char *joined = scope ? NULL : challenge_scope(res);
	int rc = scope || joined ? 0 : -1;
	if (rc == 0)
		rc = buf_printf(&b, "%s resource_metadata=\"%s/.well-known/oauth-protected-resource%s\"",
				dpop_scheme ? "DPoP" : "Bearer", cfg->public_url, res->path);
	if (!scope)
		scope = joined;
	if (rc == 0 && scope && *scope)
		rc = buf_printf(&b, ", scope=\"%s\"", scope);
	if (rc == 0 && error)
		rc = buf_printf(&b, ", error=\"%s\"", error);
	if (rc == 0 && description)
		rc = buf_printf(&b, ", error_description=\"%s\"", description);
	if (rc == 0 && dpop_scheme)
		rc = buf_printf(&b, ", algs=\"%s\"", DPOP_ALGS);
	if (rc == 0) {
		http_add_header(r, "WWW-Authenticate", b.ptr);
		const char *msg = status == 403 ? "insufficient_scope" : error ? error : "unauthorized";
		http_send_json(r, status,
			       json_pack("{s:s, s:{s:i, s:s}, s:n}", "jsonrpc", "2.0", "error", "code", -32001,
					 "message", msg, "id"));
	} else {
		/* A 401 without its challenge would send the client nowhere. */
		http_send_error(r, 500, "server_error");
	}
	buf_free(&b);
	free(joined);
}

void bearer_challenge(struct http_req *r, const struct cfg_resource *res, int status, const char *error,
		      const char *scope)
{
	int dpop = 0;
	int dpop_scheme = res->require_dpop || (bearer_token(http_header(r, "Authorization"), &dpop) && dpop);
	challenge(r, res, status, dpop_scheme, error, NULL, scope);
}

void bearer_dpop_refused(struct http_req *r, const struct cfg_resource *res, const char *error, const char *description)
{
	const struct config *cfg = r->app->cfg;
	char nonce[DPOP_NONCE_LEN + 1];
	if (dpop_current_nonce(cfg, nonce) == 0)
		http_add_header(r, "DPoP-Nonce", nonce);
	challenge(r, res, 401, 1, error, description, NULL);
}
