/* Schema migrations: the numbered files of sql/, embedded at build time,
 * each applied in its own transaction and recorded in schema_migrations.
 * Concurrent nodes serialise on a PostgreSQL advisory lock. */
#ifndef MCPB_MIGRATE_H
#define MCPB_MIGRATE_H
#include <libpq-fe.h>
#include <stddef.h>
#include "buf.h"

struct migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct migration migrations[];
extern const size_t migrations_count;

/* The newest version this binary knows. */
int migrate_latest(void);
/* Applies what is missing; *applied = how many. -1 on failure (logged),
 * including a database newer than this binary. */
int migrate_run(PGconn *pg, int *applied) WUR;
/* Reads the current version (0 when the table does not exist). */
int migrate_current(PGconn *pg, int *version) WUR;

#endif
