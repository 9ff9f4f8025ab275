/* Protected MCP resources: origin check, bearer token validation (audience
 * = this resource), tool-level scope policy, session binding, then the
 * streaming proxy with the upstream credential injected. */
#ifndef MCPB_RESOURCE_H
#define MCPB_RESOURCE_H
#include "http.h"

/* Route callbacks of a proxied resource: resource_headers when the request
 * headers have arrived (authentication, origin, media type, rate limits:
 * answered before any body byte is read), resource_handler once the body
 * is complete and again each time the downstream has news. */
void resource_headers(struct http_req *r);
void resource_handler(struct http_req *r);

#endif
