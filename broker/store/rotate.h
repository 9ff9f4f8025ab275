/* mcp-broker rotate-keys: re-encrypts every stored upstream token under the
 * active key (encryption_keys[0]), in small batches, each row locked only
 * for its own short transaction, safe while nodes serve. */
#ifndef MCPB_ROTATE_H
#define MCPB_ROTATE_H
#include <libpq-fe.h>
#include "config.h"

/* 0 with *done grants re-encrypted, or -1 (logged). A grant whose key is
 * not configured any more (or whose data does not open) is counted in
 * *unreadable and left as is. */
int rotate_keys(const struct config *cfg, PGconn *pg, long *done, long *unreadable) WUR;

/* The same for connected accounts (grant_connections) and the tokens of
 * connection revocations not yet done: *done rows, *unreadable left. */
int rotate_connections(const struct config *cfg, PGconn *pg, long *done, long *unreadable) WUR;

#endif
