/* RFC 7009 token revocation, and the background worker that revokes
 * revoked grants at their upstream (RFC 7009 endpoints, or GitHub's grant
 * API), retried with exponential backoff, outcome recorded. */
#ifndef MCPB_REVOKE_H
#define MCPB_REVOKE_H
#include "app.h"
#include "http.h"

/* POST /revoke */
void revoke_endpoint(struct http_req *r);

int revoke_worker_start(struct app *app) WUR;
void revoke_worker_stop(void);
/* Asks the worker to look for due upstream revocations now. */
void revoke_wake(void);
/* One pass over due rows (the worker's body; tests). */
int revoke_worker_run_once(struct app *app);

#endif
