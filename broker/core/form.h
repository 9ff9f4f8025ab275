/* application/x-www-form-urlencoded, pure: parsing bodies (a request's
 * through reqform.h, an upstream's answer) and building query strings.
 * Decoding and escaping are libcurl's. */
#ifndef MCPB_FORM_H
#define MCPB_FORM_H
#include <jansson.h>
#include <stddef.h>
#include "buf.h"

/* Parses s[0..len) into a new JSON object of string values. NULL when
 * malformed, over LIM_FORM_FIELDS fields or LIM_FORM_VALUE bytes per value,
 * not UTF-8, or containing NUL. A repeated name sets *duplicate (the first
 * value is kept) so OAuth endpoints can refuse it. */
json_t *form_parse(const char *s, size_t len, int *duplicate) WUR;
/* Appends "&name=value" (the '&' only when b is not empty), escaped. */
int form_add(struct buf *b, const char *name, const char *value) WUR;
/* Wipes every value (forms carry codes, verifiers, secrets and tokens),
 * releases the object and sets *form to NULL. */
void form_free(json_t **form);
/* Value of a string member or NULL. */
const char *form_get(const json_t *form, const char *name);

#endif
