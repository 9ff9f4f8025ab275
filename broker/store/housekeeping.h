/* Background purge of expired rows (pending authorizations, codes, tokens,
 * sessions of dead grants) in small batches, by whichever node holds the
 * housekeeping advisory lock, so nodes never contend or hold long locks. */
#ifndef MCPB_HOUSEKEEPING_H
#define MCPB_HOUSEKEEPING_H
#include "app.h"

int housekeeping_start(struct app *app) WUR;
void housekeeping_stop(void);
/* One pass (tests, and the thread's loop): rows deleted, or -1. */
long housekeeping_run_once(struct app *app);

#endif
