#include "server.h"

#include <stdlib.h>
#include <string.h>

#include "health.h"

static const struct http_route static_routes[] = {
	{ HM_GET, "/healthz", MATCH_EXACT, 0, health_healthz, "healthz", NULL },
	{ HM_GET, "/readyz", MATCH_EXACT, 0, health_readyz, "readyz", NULL },
	{ HM_GET, "/metrics", MATCH_EXACT, 0, health_metrics, "metrics", NULL },
};

int server_routes(const struct app *app, struct http_route **out, size_t *n)
{
	size_t ns = sizeof(static_routes) / sizeof(static_routes[0]);
	struct http_route *r = calloc(ns, sizeof(*r));
	if (!r)
		return -1;
	memcpy(r, static_routes, sizeof(static_routes));
	(void)app;
	*out = r;
	*n = ns;
	return 0;
}

void server_routes_free(struct http_route **routes, size_t n)
{
	(void)n;
	free(*routes);
	*routes = NULL;
}
