/* The form body of a request to an OAuth endpoint (RFC 6749 section 3.2):
 * the Content-Type check and form_parse over the buffered body. */
#ifndef MCPB_REQFORM_H
#define MCPB_REQFORM_H
#include <jansson.h>
#include "http.h"

/* A new object of the body's fields (free it with form_free), or NULL when
 * the Content-Type is not application/x-www-form-urlencoded or the body is
 * not a valid form (form_parse's rules); *why then says which, a fixed text
 * for the error description. A repeated field sets *duplicate. */
json_t *reqform_body(struct http_req *r, int *duplicate, const char **why) WUR;

#endif
