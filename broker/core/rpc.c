#include "rpc.h"

#include <string.h>

#include "jparse.h"

/* Depth of nested arrays/objects, stopping once past max. */
static int too_deep(json_t *v, int depth)
{
	if (depth > RPC_MAX_DEPTH)
		return 1;
	if (json_is_object(v)) {
		const char *k;
		json_t *e;
		json_object_foreach(v, k, e) if (too_deep(e, depth + 1)) return 1;
	} else if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) if (too_deep(e, depth + 1)) return 1;
	}
	return 0;
}

int rpc_parse(const char *body, size_t len, json_t **out)
{
	*out = NULL;
	if (!body || len == 0)
		return -1;
	/* jparse refuses a NUL byte (jansson 2.14 skips one after a number or
	 * literal: "[1\0,2]" reads as [1,2]), duplicates, and nesting past
	 * RPC_MAX_DEPTH + 1 (a batch's array) before jansson builds anything;
	 * jansson refuses invalid UTF-8, a BOM, "\u0000" (no JSON_ALLOW_NUL),
	 * trailing bytes and integers past json_int_t. */
	json_t *j = jparse(body, len, 0, RPC_MAX_DEPTH + 1);
	int ok = json_is_object(j) || (json_is_array(j) && json_array_size(j) > 0);
	for (size_t i = 0; ok && json_is_array(j) && i < json_array_size(j); i++)
		ok = json_is_object(json_array_get(j, i));
	/* The limit is per message: a batch's array is not a level of it. */
	for (size_t i = 0; ok && i < rpc_count(j); i++)
		ok = !too_deep(rpc_message(j, i), 1);
	if (!ok) {
		json_decref(j);
		return -1;
	}
	*out = j;
	return 0;
}

size_t rpc_count(json_t *body)
{
	return json_is_array(body) ? json_array_size(body) : 1;
}

json_t *rpc_message(json_t *body, size_t i)
{
	return json_is_array(body) ? json_array_get(body, i) : body;
}

int rpc_tool_call(json_t *msg, const char **tool)
{
	const char *method = json_string_value(json_object_get(msg, "method"));
	*tool = NULL;
	if (!method || strcmp(method, "tools/call") != 0)
		return 0;
	json_t *name = json_object_get(json_object_get(msg, "params"), "name");
	const char *s = json_string_value(name);
	size_t n = s ? json_string_length(name) : 0;
	if (!s || n == 0 || n > RPC_MAX_TOOL)
		return -1;
	*tool = s;
	return 1;
}

int rpc_headers_agree(json_t *body, const char *hm, const char *hn)
{
	if (!hm && !hn)
		return 1;
	if (!json_is_object(body))
		return 0;
	const char *method = json_string_value(json_object_get(body, "method"));
	if (hm && (!method || strcmp(hm, method) != 0))
		return 0;
	if (hn) {
		json_t *params = json_object_get(body, "params");
		const char *name = json_string_value(json_object_get(params, "name"));
		if (!name)
			name = json_string_value(json_object_get(params, "uri"));
		if (!name || strcmp(hn, name) != 0)
			return 0;
	}
	return 1;
}
