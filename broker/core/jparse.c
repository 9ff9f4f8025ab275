#include "jparse.h"

#include <stdint.h>
#include <string.h>

size_t jparse_depth(const char *p, size_t len, size_t max)
{
	size_t depth = 0, deepest = 0;
	int in_string = 0;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (in_string) {
			if (c == '\\')
				i++; /* the escaped byte cannot end the string */
			else if (c == '"')
				in_string = 0;
			continue;
		}
		if (c == '"') {
			in_string = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return SIZE_MAX;
			if (depth > deepest)
				deepest = depth;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return deepest;
}

json_t *jparse(const char *p, size_t len, size_t flags, size_t max_depth)
{
	if (!p || memchr(p, '\0', len))
		return NULL;
	if (jparse_depth(p, len, max_depth) == SIZE_MAX)
		return NULL;
	return json_loadb(p, len, flags | JSON_REJECT_DUPLICATES, NULL);
}

json_t *jparse_str(const char *s, size_t flags, size_t max_depth)
{
	return s ? jparse(s, strlen(s), flags, max_depth) : NULL;
}
