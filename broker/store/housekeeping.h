/* Background purge of expired rows (pending authorizations, codes, tokens,
 * sessions of dead grants) in small batches, by whichever node holds the
 * housekeeping advisory lock, so nodes never contend or hold long locks. */
#ifndef MCPB_HOUSEKEEPING_H
#define MCPB_HOUSEKEEPING_H
#include "app.h"

/* Starts the thread: a pass every housekeeping_interval_s. -1 when the
 * thread cannot be created. */
int housekeeping_start(struct app *app) WUR;
void housekeeping_stop(void);

#endif
