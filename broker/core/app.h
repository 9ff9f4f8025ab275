/* The state one node shares between its request handlers. */
#ifndef MCPB_APP_H
#define MCPB_APP_H
#include "config.h"

struct db; /* store/db.h */

struct app {
	struct config *cfg;
	struct db *db;
	int draining; /* set on SIGTERM: /readyz answers 503 */
	/* Run by each handler-pool thread before its first job (may be NULL). */
	void (*handler_thread_init)(void);
};

#endif
