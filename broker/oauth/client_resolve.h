/* Which client a request names: a URL client id that the configuration does
 * not list is described by its metadata document (oauth/cimd); any other id
 * is a static or dynamically registered client (store/clients). */
#ifndef MCPB_CLIENT_RESOLVE_H
#define MCPB_CLIENT_RESOLVE_H
#include "app.h"
#include "client.h"
#include "db.h"

/* Resolves client_id into *out (cleared first). *why is set to NULL, or,
 * for CLIENT_UNKNOWN and CLIENT_UNAVAILABLE of a URL client id, to a fixed
 * printable reason that may be shown to the user (never the input). */
enum client_find client_resolve(struct app *app, struct db_conn *c, const char *client_id, struct client *out,
				const char **why) WUR;

#endif
