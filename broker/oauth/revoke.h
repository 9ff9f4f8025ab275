/* POST /revoke: RFC 7009 token revocation by the client that holds the
 * token (a refresh token stands for its whole grant). The upstream side of
 * a revoked grant is the revoker's (upstream/revoker.h). */
#ifndef MCPB_REVOKE_H
#define MCPB_REVOKE_H
#include "http.h"

/* POST /revoke */
void revoke_endpoint(struct http_req *r);

#endif
