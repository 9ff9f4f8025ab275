/* Wires a node: the route table built from the configuration. */
#ifndef MCPB_ROUTES_H
#define MCPB_ROUTES_H
#include <stddef.h>
#include "app.h"
#include "http.h"

/* Builds the routes of this configuration into *out (caller frees with
 * routes_free). -1 on allocation failure. */
int routes_build(const struct app *app, struct http_route **out, size_t *n) WUR;
void routes_free(struct http_route **routes, size_t n);

#endif
