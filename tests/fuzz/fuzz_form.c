/* application/x-www-form-urlencoded bodies (OAuth endpoints, GitHub's token
 * answers): form_parse on the raw bytes. A parsed form re-encoded with
 * form_add parses back to the same fields, and no non-empty pair of a form
 * without duplicates is dropped silently. */
#include <jansson.h>

#include "form.h"
#include "fuzz.h"

static size_t pairs(const char *s, size_t n)
{
	size_t count = 0, len = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '&') {
			count += len > 0;
			len = 0;
		} else {
			len++;
		}
	}
	return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int dup = 0, dup2 = 0;
	json_t *f = form_parse((const char *)data, size, &dup);
	if (!f)
		return 0;
	FUZZ_CHECK(dup || json_object_size(f) == pairs((const char *)data, size));
	struct buf b;
	buf_init(&b, 1 << 20);
	const char *k;
	json_t *v;
	json_object_foreach(f, k, v)
	{
		FUZZ_CHECK(json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v));
		FUZZ_CHECK(form_add(&b, k, json_string_value(v)) == 0);
	}
	json_t *g = form_parse(b.ptr ? b.ptr : "", b.len, &dup2);
	FUZZ_CHECK(g && !dup2 && json_equal(f, g));
	form_free(&g);
	form_free(&f);
	buf_free(&b);
	return 0;
}
