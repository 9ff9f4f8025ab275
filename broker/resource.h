/* Protected MCP resources: origin check, bearer token validation (audience
 * = this resource), tool-level scope policy, session binding, then the
 * streaming proxy with the upstream credential injected. */
#ifndef MCPB_RESOURCE_H
#define MCPB_RESOURCE_H
#include "http.h"

void resource_handler(struct http_req *r);

#endif
