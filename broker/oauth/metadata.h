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

/* The exact public URL of a resource into out (cap bytes). */
int metadata_resource_url(const struct config *cfg, const struct cfg_resource *res, char *out,
			  size_t cap) WUR;
/* The configured resource named by a `resource` parameter (compared after
 * canonicalisation), or NULL. */
const struct cfg_resource *metadata_find_resource(const struct config *cfg, const char *resource);

#endif
