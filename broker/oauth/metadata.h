/* Discovery: RFC 8414 authorization server metadata (also served as
 * openid-configuration), RFC 9728 protected resource metadata per resource,
 * and the WWW-Authenticate challenge that points clients at them. */
#ifndef MCPB_METADATA_H
#define MCPB_METADATA_H
#include "config.h"
#include "http.h"

void metadata_authorization_server(struct http_req *r);
/* route data = the resource; NULL data = the root form (only resource). */
void metadata_protected_resource(struct http_req *r);

/* Sends 401 (or 403 for insufficient_scope) with the Bearer challenge:
 * resource_metadata, scope, and error when given. */
void metadata_challenge(struct http_req *r, const struct cfg_resource *res, int status,
			const char *error, const char *scope);

#endif
