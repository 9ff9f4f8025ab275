/* application/x-www-form-urlencoded: parsing request and upstream bodies,
 * building query strings. Decoding and escaping are libcurl's. */
#ifndef MCPB_FORM_H
#define MCPB_FORM_H
#include <jansson.h>
#include <stddef.h>
#include "buf.h"

/* Parses s[0..len) into a new JSON object of string values. NULL when
 * malformed, over LIM_FORM_FIELDS fields or LIM_FORM_VALUE bytes per value,
 * not UTF-8, or containing NUL. A repeated name sets *duplicate (the first
 * value is kept) so OAuth endpoints can refuse it. */
json_t *form_parse(const char *s, size_t len, int *duplicate);
struct http_req;
/* The form body of an OAuth endpoint request: NULL when the Content-Type
 * is not application/x-www-form-urlencoded or the body is malformed (*why
 * says which, a fixed text for the error description). */
json_t *form_request(struct http_req *r, int *duplicate, const char **why);
/* Appends "&name=value" (the '&' only when b is not empty), escaped. */
int form_add(struct buf *b, const char *name, const char *value) WUR;
/* Wipes every value (forms carry codes, verifiers, secrets and tokens),
 * releases the object and sets *form to NULL. */
void form_free(json_t **form);
/* Value of a string member or NULL. */
const char *form_get(const json_t *form, const char *name);

#endif
