/* The background worker that revokes revoked grants at their upstream
 * (RFC 7009 endpoints, or GitHub's grant API): rows of
 * upstream_revocations (and connected accounts': connection_revocations), retried with exponential backoff, outcome recorded,
 * the upstream tokens erased once done or given up. Woken by every
 * revocation the node learns of (notify.h), and every REVOKER_POLL_S. */
#ifndef MCPB_REVOKER_H
#define MCPB_REVOKER_H
#include "app.h"

#define REVOKER_POLL_S 5

/* Subscribes to notify (before notify_start) and starts the thread. */
int revoker_start(struct app *app) WUR;
void revoker_stop(void);
/* Looks for due rows now (a disconnect this node just committed). */
void revoker_kick(void);
/* One pass over due rows (the worker's body; tests): *handled rows. 0, or
 * -1 when the database failed (nothing of the pass is kept). */
int revoker_run_once(struct app *app, int *handled) WUR;

#endif
