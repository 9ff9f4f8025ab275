/* Discovery: RFC 8414 authorization server metadata (also served as
 * openid-configuration), RFC 9728 protected resource metadata per resource
 * (proxy/bearer's WWW-Authenticate challenge points clients at them). */
#ifndef MCPB_METADATA_H
#define MCPB_METADATA_H
#include "config.h"
#include "http.h"

void metadata_authorization_server(struct http_req *r);
/* route data = the resource; NULL data = the root form (only resource). */
void metadata_protected_resource(struct http_req *r);

#endif
