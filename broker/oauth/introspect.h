/* POST /introspect (RFC 7662) for configured resource servers. */
#ifndef MCPB_INTROSPECT_H
#define MCPB_INTROSPECT_H
#include "http.h"

void introspect_endpoint(struct http_req *r);

#endif
