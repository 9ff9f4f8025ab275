#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "authorize.h"
#include "callback.h"
#include "account.h"
#include "connect.h"
#include "health.h"
#include "introspect.h"
#include "metadata.h"
#include "metrics_page.h"
#include "register.h"
#include "resource.h"
#include "revoke.h"
#include "token.h"

/* Browser-based MCP clients call discovery, registration and the token
 * endpoint cross-origin; they carry no ambient credentials, so any origin
 * may preflight them. */
static void cors_preflight(struct http_req *r)
{
	http_add_header(r, "Access-Control-Allow-Origin", "*");
	http_add_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
	http_add_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version, DPoP");
	http_add_header(r, "Access-Control-Max-Age", "600");
	http_send(r, 204, NULL, "", 0);
}

/* The last field (http.h): an endpoint that may wait (the database, an
 * upstream, a CIMD fetch) runs on the handler pool; what answers from
 * memory stays on the worker's loop, and so does /readyz (a load balancer
 * must not see a node whose proxy is healthy as down because anonymous
 * requests fill its pool; it waits READYZ_ACQUIRE_MS at most); the admin
 * API takes a free pool thread or else the loop. */
static const struct http_route static_routes[] = {
	{ HM_GET, "/healthz", MATCH_EXACT, 0, health_healthz, "healthz", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/readyz", MATCH_EXACT, 0, health_readyz, "readyz", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/metrics", MATCH_EXACT, 0, metrics_page_get, "metrics", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/.well-known/oauth-authorization-server", MATCH_EXACT, 0, metadata_authorization_server,
	  "as_metadata", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/.well-known/openid-configuration", MATCH_EXACT, 0, metadata_authorization_server, "as_metadata",
	  NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/.well-known/oauth-protected-resource", MATCH_EXACT, 0, metadata_protected_resource, "pr_metadata",
	  NULL, NULL, HTTP_ON_LOOP },
	{ HM_OPTIONS, "/.well-known/oauth-authorization-server", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL,
	  HTTP_ON_LOOP },
	{ HM_OPTIONS, "/.well-known/openid-configuration", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL,
	  HTTP_ON_LOOP },
	{ HM_OPTIONS, "/.well-known/oauth-protected-resource", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL,
	  HTTP_ON_LOOP },
	{ HM_POST, "/register", MATCH_EXACT, LIM_BODY_REGISTER, register_endpoint, "register", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_OPTIONS, "/register", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL, HTTP_ON_LOOP },
	{ HM_GET, "/authorize", MATCH_EXACT, 0, authorize_get, "authorize", NULL, NULL, HTTP_ON_POOL },
	{ HM_POST, "/authorize", MATCH_EXACT, LIM_BODY_DEFAULT, authorize_post, "consent", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/callback", MATCH_EXACT, 0, callback_get, "callback", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/connect", MATCH_EXACT, 0, connect_get, "connect", NULL, NULL, HTTP_ON_POOL },
	{ HM_POST, "/connect", MATCH_EXACT, LIM_BODY_DEFAULT, connect_post, "connect", NULL, NULL, HTTP_ON_POOL },
	{ HM_GET, "/account", MATCH_EXACT, 0, account_get, "account", NULL, NULL, HTTP_ON_POOL },
	{ HM_POST, "/account/login", MATCH_EXACT, LIM_BODY_DEFAULT, account_login, "account", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_POST, "/account/revoke", MATCH_EXACT, LIM_BODY_DEFAULT, account_revoke, "account", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_POST, "/account/disconnect", MATCH_EXACT, LIM_BODY_DEFAULT, account_disconnect, "account", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_POST, "/account/logout", MATCH_EXACT, LIM_BODY_DEFAULT, account_logout, "account", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_POST, "/token", MATCH_EXACT, LIM_BODY_DEFAULT, token_endpoint, "token", NULL, NULL, HTTP_ON_POOL },
	{ HM_OPTIONS, "/token", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL, HTTP_ON_LOOP },
	{ HM_POST, "/revoke", MATCH_EXACT, LIM_BODY_DEFAULT, revoke_endpoint, "revoke", NULL, NULL, HTTP_ON_POOL },
	{ HM_OPTIONS, "/revoke", MATCH_EXACT, 0, cors_preflight, "cors", NULL, NULL, HTTP_ON_LOOP },
	{ HM_POST, "/introspect", MATCH_EXACT, LIM_BODY_DEFAULT, introspect_endpoint, "introspect", NULL, NULL,
	  HTTP_ON_POOL },
	{ HM_GET, "/admin/v1/grants", MATCH_EXACT, 0, admin_grants, "admin", NULL, NULL, HTTP_ON_POOL_OR_LOOP },
	{ HM_POST, "/admin/v1/revoke", MATCH_EXACT, LIM_BODY_ADMIN, admin_revoke, "admin", NULL, NULL,
	  HTTP_ON_POOL_OR_LOOP },
	{ HM_POST, "/admin/v1/disconnect", MATCH_EXACT, LIM_BODY_ADMIN, admin_disconnect, "admin", NULL, NULL,
	  HTTP_ON_POOL_OR_LOOP },
};

#define PRM_PREFIX "/.well-known/oauth-protected-resource"

int routes_build(const struct app *app, struct http_route **out, size_t *n)
{
	const struct config *cfg = app->cfg;
	size_t ns = sizeof(static_routes) / sizeof(static_routes[0]);
	size_t total = ns + 2 * cfg->n_resources;
	struct http_route *r = calloc(total, sizeof(*r));
	if (!r)
		return -1;
	/* Resource metadata documents first: they are exact paths under the
	 * well-known prefix. */
	size_t k = 0;
	for (size_t i = 0; i < cfg->n_resources; i++) {
		const struct cfg_resource *res = &cfg->resources[i];
		size_t len = strlen(PRM_PREFIX) + strlen(res->path) + 1;
		char *path = malloc(len);
		if (!path) {
			routes_free(&r, k);
			return -1;
		}
		snprintf(path, len, "%s%s", PRM_PREFIX, res->path);
		r[k++] = (struct http_route){ .methods = HM_GET | HM_OPTIONS,
					      .path = path,
					      .match = MATCH_EXACT,
					      .handler = metadata_protected_resource,
					      .label = "pr_metadata",
					      .data = res };
	}
	memcpy(r + k, static_routes, sizeof(static_routes));
	k += ns;
	for (size_t i = 0; i < cfg->n_resources; i++) {
		const struct cfg_resource *res = &cfg->resources[i];
		r[k++] = (struct http_route){ .methods = HM_ANY,
					      .path = res->path,
					      .match = MATCH_PREFIX,
					      .max_body = LIM_BODY_PROXY_INSPECT,
					      .handler = resource_handler,
					      .label = "resource",
					      .data = res,
					      .on_headers = resource_headers };
	}
	*out = r;
	*n = k;
	return 0;
}

void routes_free(struct http_route **routes, size_t n)
{
	struct http_route *r = *routes;
	if (!r)
		return;
	/* Only the per-resource metadata paths were allocated. */
	for (size_t i = 0; i < n; i++)
		if (r[i].handler == metadata_protected_resource && r[i].data)
			free((char *)r[i].path);
	free(r);
	*routes = NULL;
}
