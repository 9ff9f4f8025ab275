/* Wires a node: the route table built from the configuration. */
#ifndef MCPB_SERVER_H
#define MCPB_SERVER_H
#include <stddef.h>
#include "app.h"
#include "http.h"

/* Builds the routes of this configuration into *out (caller frees with
 * server_routes_free). -1 on allocation failure. */
int server_routes(const struct app *app, struct http_route **out, size_t *n) WUR;
void server_routes_free(struct http_route **routes, size_t n);

#endif
