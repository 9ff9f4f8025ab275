#include "metadata.h"

#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "resources.h"
#include "scope.h"

static json_t *resource_scopes(const struct cfg_resource *res)
{
	json_t *a = json_array();
	for (size_t i = 0; i < res->n_scopes; i++)
		json_array_append_new(a, json_string(res->scopes[i].scope));
	return a;
}

static char *endpoint(const struct config *cfg, const char *path)
{
	size_t n = strlen(cfg->public_url) + strlen(path) + 1;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s%s", cfg->public_url, path);
	return s;
}

static json_t *endpoint_json(const struct config *cfg, const char *path)
{
	char *s = endpoint(cfg, path);
	json_t *j = s ? json_string(s) : NULL;
	free(s);
	return j;
}

void metadata_authorization_server(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	json_t *scopes = json_array();
	for (size_t i = 0; i < cfg->n_resources; i++) {
		const struct cfg_resource *res = &cfg->resources[i];
		for (size_t s = 0; s < res->n_scopes; s++) {
			int seen = 0;
			size_t k;
			json_t *v;
			json_array_foreach(scopes, k, v)
				seen |= strcmp(json_string_value(v), res->scopes[s].scope) == 0;
			if (!seen)
				json_array_append_new(scopes, json_string(res->scopes[s].scope));
		}
	}
	json_t *m = json_object();
	json_object_set_new(m, "issuer", json_string(cfg->public_url));
	json_object_set_new(m, "authorization_endpoint", endpoint_json(cfg, "/authorize"));
	json_object_set_new(m, "token_endpoint", endpoint_json(cfg, "/token"));
	if (cfg->registration.dynamic)
		json_object_set_new(m, "registration_endpoint", endpoint_json(cfg, "/register"));
	json_object_set_new(m, "revocation_endpoint", endpoint_json(cfg, "/revoke"));
	json_object_set_new(m, "revocation_endpoint_auth_methods_supported",
			    json_pack("[s,s,s]", "none", "client_secret_basic", "client_secret_post"));
	if (cfg->n_resource_servers) {
		json_object_set_new(m, "introspection_endpoint", endpoint_json(cfg, "/introspect"));
		json_object_set_new(m, "introspection_endpoint_auth_methods_supported", json_pack("[s]", "client_secret_basic"));
	}
	json_object_set_new(m, "scopes_supported", scopes);
	json_object_set_new(m, "response_types_supported", json_pack("[s]", "code"));
	json_object_set_new(m, "response_modes_supported", json_pack("[s]", "query"));
	json_object_set_new(m, "grant_types_supported", json_pack("[s,s]", "authorization_code", "refresh_token"));
	json_object_set_new(m, "token_endpoint_auth_methods_supported",
			    json_pack("[s,s,s]", "none", "client_secret_basic", "client_secret_post"));
	json_object_set_new(m, "code_challenge_methods_supported", json_pack("[s]", "S256"));
	json_object_set_new(m, "client_id_metadata_document_supported",
			    json_boolean(cfg->registration.client_id_metadata_documents));
	json_object_set_new(m, "authorization_response_iss_parameter_supported", json_true());
	(void)http_add_header(r, "Cache-Control", "public, max-age=300");
	(void)http_add_header(r, "Access-Control-Allow-Origin", "*");
	http_send_json(r, 200, m);
}

void metadata_protected_resource(struct http_req *r)
{
	const struct config *cfg = r->app->cfg;
	if (r->method_id == HM_OPTIONS) {
		/* CORS preflight of a browser-based client. */
		(void)http_add_header(r, "Access-Control-Allow-Origin", "*");
		(void)http_add_header(r, "Access-Control-Allow-Methods", "GET, OPTIONS");
		(void)http_add_header(r, "Access-Control-Allow-Headers", "MCP-Protocol-Version");
		(void)http_add_header(r, "Access-Control-Max-Age", "600");
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
	json_t *m = json_pack("{s:s, s:[s], s:o, s:[s]}", "resource", url, "authorization_servers",
			      cfg->public_url, "scopes_supported", resource_scopes(res),
			      "bearer_methods_supported", "header");
	(void)http_add_header(r, "Cache-Control", "public, max-age=300");
	(void)http_add_header(r, "Access-Control-Allow-Origin", "*");
	http_send_json(r, 200, m);
}

void metadata_challenge(struct http_req *r, const struct cfg_resource *res, int status,
			const char *error, const char *scope)
{
	const struct config *cfg = r->app->cfg;
	struct buf b;
	buf_init(&b, 4096);
	struct scopes all = { 0 };
	char *joined = NULL;
	if (!scope) {
		/* Without a specific need, ask for the resource's default scopes. */
		for (size_t i = 0; i < res->n_default_scopes; i++)
			if (scopes_add(&all, res->default_scopes[i]) < 0)
				break;
		for (size_t i = 0; !res->n_default_scopes && i < res->n_scopes; i++)
			if (scopes_add(&all, res->scopes[i].scope) < 0)
				break;
		joined = scopes_join(&all);
		scope = joined;
	}
	int rc = buf_printf(&b, "Bearer resource_metadata=\"%s/.well-known/oauth-protected-resource%s\"",
			    cfg->public_url, res->path);
	if (rc == 0 && scope && *scope)
		rc = buf_printf(&b, ", scope=\"%s\"", scope);
	if (rc == 0 && error)
		rc = buf_printf(&b, ", error=\"%s\"", error);
	if (rc == 0)
		(void)http_add_header(r, "WWW-Authenticate", b.ptr);
	buf_free(&b);
	free(joined);
	scopes_free(&all);
	const char *msg = status == 403 ? "insufficient_scope" : error ? error : "unauthorized";
	http_send_json(r, status, json_pack("{s:s, s:{s:i, s:s}, s:n}", "jsonrpc", "2.0", "error", "code",
					    -32001, "message", msg, "id"));
}
