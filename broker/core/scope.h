/* Space-separated OAuth scope lists (RFC 6749 section 3.3). */
#ifndef MCPB_SCOPE_H
#define MCPB_SCOPE_H
#include <stddef.h>
#include "buf.h"
#include "lim.h"

struct scopes {
	char *v[LIM_SCOPES];
	size_t n;
};

/* Parses s into distinct scope tokens (RFC 6749 characters only, at most
 * LIM_SCOPES, each <= 128 bytes, s at most LIM_SCOPE bytes; NULL or "" is
 * an empty list). -1 on a malformed list or allocation failure, with *out
 * empty. */
int scopes_parse(const char *s, struct scopes *out) WUR;
int scopes_has(const struct scopes *s, const char *scope);
/* 1 when every scope of sub is in super. */
int scopes_subset(const struct scopes *sub, const struct scopes *super);
int scopes_add(struct scopes *s, const char *scope) WUR;
void scopes_remove(struct scopes *s, const char *scope);
/* Space-joined, malloc'd ("" for no scopes); NULL on allocation failure or
 * past 2 * LIM_SCOPE bytes. */
char *scopes_join(const struct scopes *s);
/* Frees the tokens; s is left empty, v[] all NULL. */
void scopes_free(struct scopes *s);

#endif
