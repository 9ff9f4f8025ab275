/* PostgreSQL on libpq: a fixed-size pool of connections, each with a
 * statement timeout and lazily prepared statements, reconnecting by itself
 * after the server restarts. */
#ifndef MCPB_DB_H
#define MCPB_DB_H
#include <libpq-fe.h>
#include "buf.h"

struct config;
struct db;

/* A statement prepared on first use on each connection. Define them static
 * in the module that uses them: static struct db_stmt q = DB_STMT("...");
 * The id is assigned on first use. */
struct db_stmt {
	const char *sql;
	int id;
};
#define DB_STMT(sql_text)    \
	{                    \
		sql_text, -1 \
	}
#define DB_MAX_STMTS 256

/* How long a request waits for a pooled connection before it answers 503. */
#define DB_WAIT_MS 2000

struct db_conn {
	PGconn *pg;
	unsigned char prepared[DB_MAX_STMTS / 8];
	int in_tx;
	long long last_used_ms;
};

/* Builds the pool; connections are opened lazily. NULL on allocation failure. */
struct db *db_open(const struct config *cfg) WUR;
void db_close(struct db **db);

/* Takes a healthy connection, waiting at most timeout_ms for a free one and
 * reconnecting a broken one. -1: none free in time or the server is down. */
int db_acquire(struct db *db, struct db_conn **out, int timeout_ms) WUR;
/* Marks the calling thread (a handler-pool thread, the audit writer, the
 * revoker, housekeeping) as one that leaves the pool's reserve free: with
 * http.handler_threads, a quarter of the connections (at least one, at
 * most http.threads) is taken only by the workers, so that a crowd of
 * handlers or a long purge never makes a worker wait. */
void db_thread_yields(void);
/* Returns the connection; an open transaction is rolled back. Sets *c NULL. */
void db_release(struct db *db, struct db_conn **c);

/* Executes a prepared statement with text parameters (NULL = SQL NULL).
 * Returns the result (caller PQclear()s) or NULL after logging the failure;
 * a NULL result with db_conn_broken() true means the server went away. */
PGresult *db_exec(struct db_conn *c, struct db_stmt *st, int n, const char *const *params) WUR;
/* Same, checking the result status is TUPLES_OK or COMMAND_OK. */
PGresult *db_exec_ok(struct db_conn *c, struct db_stmt *st, int n, const char *const *params) WUR;
/* Runs a parameterless command (BEGIN, COMMIT, ...): 0 or -1. */
int db_command(struct db_conn *c, const char *sql) WUR;
int db_begin(struct db_conn *c) WUR;
int db_commit(struct db_conn *c) WUR;
void db_rollback(struct db_conn *c);
int db_conn_broken(const struct db_conn *c);
/* One round trip instead of two (libpq pipeline mode). db_begin_exec_ok:
 * BEGIN, then st, whose result it returns as db_exec_ok does (NULL on any
 * failure; the transaction, if it opened, stays to be rolled back).
 * db_exec_commit: st, then COMMIT; 0 when both succeeded (the statement's
 * result into *res when res is not NULL), -1 otherwise, with the
 * transaction left to be rolled back (c->in_tx). */
PGresult *db_begin_exec_ok(struct db_conn *c, struct db_stmt *st, int n, const char *const *params) WUR;
int db_exec_commit(struct db_conn *c, struct db_stmt *st, int n, const char *const *params, PGresult **res) WUR;

/* Opens one standalone connection (migrations, LISTEN). NULL on failure,
 * with the reason logged. */
PGconn *db_connect_one(const struct config *cfg, const char *application_name) WUR;

/* Pool statistics for /metrics. */
void db_stats(struct db *db, int *size, int *in_use, long *waits, long *reconnects);

/* SQLSTATE of a failed result ("" when none). */
const char *db_sqlstate(const PGresult *res);

#endif
