/* MCP session binding (Streamable HTTP's Mcp-Session-Id): a session id
 * belongs to the user whose request opened it at one downstream, recorded
 * in mcp_session_bindings (by the id's SHA-256) and cached on the node. */
#ifndef MCPB_SESSION_H
#define MCPB_SESSION_H
#include <stddef.h>
#include "app.h"
#include "buf.h"
#include "db.h"

/* Bytes of a session id the broker accepts. */
#define SESSION_ID_MAX 1024

enum session_rc {
	SESSION_PASS,        /* no id, or one this user opened at this downstream */
	SESSION_DROP,        /* an initialize with an id nobody opened: forward it without the id */
	SESSION_BAD_ID,      /* empty or longer than SESSION_ID_MAX */
	SESSION_FOREIGN,     /* opened by another user */
	SESSION_UNKNOWN,     /* opened by nobody (and not an initialize) */
	SESSION_UNAVAILABLE, /* the database could not answer */
	SESSION_ERROR,       /* memory lacking */
};

/* Judges the request's Mcp-Session-Id value raw (NULL: none; OWS around it
 * ignored) for user_id at downstream; initialize: the request is a lone
 * initialize (it opens a new session). A pooled connection is acquired
 * into *c when one is needed and *c is NULL; the caller releases it. */
enum session_rc session_check(struct app *app, struct db_conn **c, const char *downstream, const char *user_id,
			      const char *raw, int initialize) WUR;

/* After the downstream answered: binds the answer's session id (answered,
 * NULL: none) to user_id unless it is the one the request was checked
 * against (asked: the request's value as forwarded, NULL when none was).
 * 0 bound or nothing to bind; -1 when it could not be recorded (an unbound
 * session would be open to anyone: the answer must be refused). */
int session_record(struct app *app, const char *downstream, const char *user_id, const char *asked,
		   const char *answered, const char *request_id) WUR;

#endif
