#include "metadata.h"

#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "dpop.h"
#include "resources.h"
#include "scope.h"

/* The scopes res offers; NULL on allocation failure. */
/* dpop_signing_alg_values_supported (RFC 9449 section 5.1): DPOP_ALGS as
 * an array; NULL when out of memory. */
static json_t *dpop_algs(void)
{
	json_t *a = json_array();
	for (const char *p = DPOP_ALGS; a && *p;) {
		size_t n = strcspn(p, " ");
		if (json_array_append_new(a, json_stringn(p, n)) < 0) {
			json_decref(a);
			a = NULL;
		}
		p += n + (p[n] == ' ');
	}
	return a;
}

static json_t *resource_scopes(const struct cfg_resource *res)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < res->n_scopes; i++)
		if (json_array_append_new(a, json_string(res->scopes[i].scope)) < 0) {
			json_decref(a);
			a = NULL;
		}
	return a;
}

/* Every scope some resource offers, once each; NULL on allocation failure. */
static json_t *all_scopes(const struct config *cfg)
{
	json_t *scopes = json_array();
	for (size_t i = 0; scopes && i < cfg->n_resources; i++) {
		const struct cfg_resource *res = &cfg->resources[i];
		for (size_t s = 0; scopes && s < res->n_scopes; s++) {
			int seen = 0;
			size_t k;
			json_t *v;
			json_array_foreach(scopes, k, v)
				seen |= strcmp(json_string_value(v), res->scopes[s].scope) == 0;
			if (!seen && json_array_append_new(scopes, json_string(res->scopes[s].scope)) < 0) {
				json_decref(scopes);
				scopes = NULL;
			}
		}
	}
	return scopes;
}

static json_t *endpoint_json(const struct config *cfg, const char *path)
{
	struct buf b;
	buf_init(&b, LIM_PATH + 1024);
	json_t *j = buf_printf(&b, "%s%s", cfg->public_url, path) == 0 ? json_string(b.ptr) : NULL;
	buf_free(&b);
	return j;
}

/* Sends m (stolen) as a public, cacheable discovery document; any member
 * that could not be built (bad) makes it a 500 rather than a partial one. */
static void send_document(struct http_req *r, json_t *m, int bad)
{
	if (bad || !m) {
		json_decref(m);
		http_send_error(r, 500, "server_error");
		return;
	}
	http_add_header(r, "Cache-Control", "public, max-age=300");
	http_add_header(r, "Access-Control-Allow-Origin", "*");
	http_send_json(r, 200, m);
}

void metadata_authorization_server(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	json_t *m = json_object();
	int bad = json_object_set_new(m, "issuer", json_string(cfg->public_url)) < 0;
	bad |= json_object_set_new(m, "authorization_endpoint", endpoint_json(cfg, "/authorize")) < 0;
	bad |= json_object_set_new(m, "token_endpoint", endpoint_json(cfg, "/token")) < 0;
	if (cfg->registration.dynamic)
		bad |= json_object_set_new(m, "registration_endpoint", endpoint_json(cfg, "/register")) < 0;
	bad |= json_object_set_new(m, "revocation_endpoint", endpoint_json(cfg, "/revoke")) < 0;
	bad |= json_object_set_new(m, "revocation_endpoint_auth_methods_supported",
				   json_pack("[s,s,s,s]", "none", "client_secret_basic", "client_secret_post",
					     "private_key_jwt")) < 0;
	if (cfg->n_resource_servers) {
		bad |= json_object_set_new(m, "introspection_endpoint", endpoint_json(cfg, "/introspect")) < 0;
		bad |= json_object_set_new(m, "introspection_endpoint_auth_methods_supported",
					   json_pack("[s]", "client_secret_basic")) < 0;
	}
	bad |= json_object_set_new(m, "scopes_supported", all_scopes(cfg)) < 0;
	bad |= json_object_set_new(m, "response_types_supported", json_pack("[s]", "code")) < 0;
	bad |= json_object_set_new(m, "response_modes_supported", json_pack("[s]", "query")) < 0;
	/* client_credentials (SEP-1046) is offered once a machine client is configured. */
	int machines = 0;
	for (size_t i = 0; i < cfg->n_clients; i++)
		machines |= cfg->clients[i].client_credentials;
	json_t *gts = json_pack("[s,s]", "authorization_code", "refresh_token");
	if (gts && machines)
		bad |= json_array_append_new(gts, json_string("client_credentials")) < 0;
	if (gts && cfg->n_trusted_issuers)
		bad |= json_array_append_new(gts, json_string(GRANT_TYPE_JWT_BEARER)) < 0;
	bad |= json_object_set_new(m, "grant_types_supported", gts) < 0;
	bad |= json_object_set_new(m, "token_endpoint_auth_methods_supported",
				   json_pack("[s,s,s,s]", "none", "client_secret_basic", "client_secret_post",
					     "private_key_jwt")) < 0;
	bad |= json_object_set_new(m, "token_endpoint_auth_signing_alg_values_supported",
				   json_pack("[s,s,s,s]", "RS256", "PS256", "ES256", "EdDSA")) < 0;
	bad |= json_object_set_new(m, "code_challenge_methods_supported", json_pack("[s]", "S256")) < 0;
	bad |= json_object_set_new(m, "dpop_signing_alg_values_supported", dpop_algs()) < 0;
	bad |= json_object_set_new(m, "client_id_metadata_document_supported",
				   json_boolean(cfg->registration.client_id_metadata_documents)) < 0;
	bad |= json_object_set_new(m, "authorization_response_iss_parameter_supported", json_true()) < 0;
	send_document(r, m, bad);
}

void metadata_protected_resource(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	if (r->method_id == HM_OPTIONS) {
		/* CORS preflight of a browser-based client. */
		http_add_header(r, "Access-Control-Allow-Origin", "*");
		http_add_header(r, "Access-Control-Allow-Methods", "GET, OPTIONS");
		http_add_header(r, "Access-Control-Allow-Headers", "MCP-Protocol-Version");
		http_add_header(r, "Access-Control-Max-Age", "600");
		http_send(r, 204, NULL, "", 0);
		return;
	}
	const struct cfg_resource *res = r->route->data;
	char url[2048];
	if (!res) {
		if (cfg->n_resources != 1) {
			http_send_error(r, 404, "not_found");
			return;
		}
		res = &cfg->resources[0];
	}
	if (resources_url(cfg, res, url, sizeof(url)) < 0) {
		http_send_error(r, 500, "server_error");
		return;
	}
	json_t *scopes = resource_scopes(res);
	json_t *m = scopes ? json_pack("{s:s, s:[s], s:o, s:[s], s:o, s:b}", "resource", url, "authorization_servers",
				       cfg->public_url, "scopes_supported", scopes, "bearer_methods_supported",
				       "header", "dpop_signing_alg_values_supported", dpop_algs(),
				       "dpop_bound_access_tokens_required", res->require_dpop)
			   : NULL;
	send_document(r, m, 0);
}
