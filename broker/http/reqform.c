#include "reqform.h"

#include <strings.h>

#include "form.h"

json_t *reqform_body(struct http_req *r, int *duplicate, const char **why)
{
	const char *ct = http_header(r, "Content-Type");
	*duplicate = 0;
	if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
		*why = "the body must be application/x-www-form-urlencoded";
		return NULL;
	}
	json_t *f = form_parse(r->body.ptr ? r->body.ptr : "", r->body.len, duplicate);
	if (!f)
		*why = "the body is not a valid form";
	return f;
}
