/* The operator API under /admin/v1, authenticated by the configured admin
 * bearer tokens (constant-time; 401 without a token, 403 with a wrong one).
 * Every call is an audit event. */
#ifndef MCPB_ADMIN_H
#define MCPB_ADMIN_H
#include "http.h"

/* GET /admin/v1/grants?user=&client_id=&upstream=&status=&limit=&cursor= */
void admin_grants(struct http_req *r);
/* POST /admin/v1/revoke with exactly one selector; answers {"revoked": N}. */
void admin_revoke(struct http_req *r);
/* POST /admin/v1/disconnect {grant_id, upstream} or {upstream}: connected
 * accounts; answers {"disconnected": N}. */
void admin_disconnect(struct http_req *r);

#endif
