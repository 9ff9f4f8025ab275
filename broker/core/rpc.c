#include "rpc.h"

#include <string.h>

#include "jparse.h"
#include "lim.h"

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

/* SEP-2243's table (tools/call, prompts/get, resources/read) and SEP-2663's
 * tasks rows require Mcp-Name on the 2026-07-28 wire; resources/subscribe
 * and unsubscribe are checked when a client sends it (the SDK 2.4 client
 * does not). */
static const struct name_source {
	const char *method, *field;
	int required;
} name_sources[] = {
	{ "tools/call", "name", 1 },         { "prompts/get", "name", 1 },          { "resources/read", "uri", 1 },
	{ "resources/subscribe", "uri", 0 }, { "resources/unsubscribe", "uri", 0 }, { "tasks/get", "taskId", 1 },
	{ "tasks/update", "taskId", 1 },     { "tasks/cancel", "taskId", 1 },
};

static const struct name_source *name_source(const char *method)
{
	for (size_t i = 0; method && i < sizeof(name_sources) / sizeof(name_sources[0]); i++)
		if (strcmp(method, name_sources[i].method) == 0)
			return &name_sources[i];
	return NULL;
}

const char *rpc_name_field(const char *method)
{
	const struct name_source *src = name_source(method);
	return src ? src->field : NULL;
}

int rpc_wire_requires_headers(const char *v)
{
	/* Revisions are YYYY-MM-DD: in that form, later sorts later. */
	if (!v || strlen(v) != 10)
		return 0;
	for (size_t i = 0; i < 10; i++)
		if (i == 4 || i == 7 ? v[i] != '-' : v[i] < '0' || v[i] > '9')
			return 0;
	return strcmp(v, "2026-07-28") >= 0;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	return c == '/' ? 63 : -1;
}

/* Canonical padded base64 of n characters into out (cap bytes): the decoded
 * length, or -1. No allocation: the header is bounded by out. */
static long b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	size_t len = 0;
	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int pad = in[i + 3] == '=' ? (in[i + 2] == '=' ? 2 : 1) : 0;
		if (pad && i + 4 != n)
			return -1;
		unsigned long v = 0;
		for (size_t k = 0; k < 4; k++) {
			int d = k >= 4 - (size_t)pad ? 0 : b64_value(in[i + k]);
			if (d < 0)
				return -1;
			v = v << 6 | (unsigned long)d;
		}
		if (len + 3 - (size_t)pad > cap)
			return -1;
		out[len++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[len++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[len++] = (unsigned char)v;
	}
	return (long)len;
}

/* An Mcp-Name value equals the body's string (len bytes, no NUL). */
static int name_matches(const char *h, const char *want, size_t wlen)
{
	static const char pre[] = "=?base64?", suf[] = "?=";
	size_t n = strlen(h);
	while (n > 0 && (*h == ' ' || *h == '\t'))
		h++, n--;
	while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	if (n >= sizeof(pre) - 1 + sizeof(suf) - 1 && memcmp(h, pre, sizeof(pre) - 1) == 0 &&
	    memcmp(h + n - (sizeof(suf) - 1), suf, sizeof(suf) - 1) == 0) {
		unsigned char dec[LIM_MCP_NAME];
		long d = b64_decode(h + sizeof(pre) - 1, n - (sizeof(pre) - 1) - (sizeof(suf) - 1), dec, sizeof(dec));
		return d >= 0 && (size_t)d == wlen && memcmp(dec, want, wlen) == 0;
	}
	return n == wlen && memcmp(h, want, wlen) == 0;
}

/* One message against the headers. */
static int message_agrees(json_t *msg, const char *hm, const char *hn, int required)
{
	const char *method = json_string_value(json_object_get(msg, "method"));
	const struct name_source *src = name_source(method);
	json_t *v = src ? json_object_get(json_object_get(msg, "params"), src->field) : NULL;
	const char *value = json_string_value(v);
	int request = json_object_get(msg, "id") != NULL, name_required = src && src->required;
	if (hm && (!method || strcmp(hm, method) != 0))
		return 0;
	if (hn && (!value || !name_matches(hn, value, json_string_length(v))))
		return 0;
	if (required && request && method && (!hm || (value && !hn && name_required)))
		return 0;
	return 1;
}

int rpc_headers_agree(json_t *body, const char *hm, const char *hn, int required, json_t **bad)
{
	*bad = NULL;
	for (size_t i = 0; i < rpc_count(body); i++) {
		json_t *msg = rpc_message(body, i);
		if (!message_agrees(msg, hm, hn, required)) {
			*bad = msg;
			return 0;
		}
	}
	return 1;
}

int rpc_acts(json_t *msg)
{
	static const char *const idle[] = { "initialize",           "ping",
					    "logging/setLevel",     "server/discover",
					    "subscriptions/listen", "resources/unsubscribe" };
	const char *m = json_string_value(json_object_get(msg, "method"));
	json_t *id = json_object_get(msg, "id");
	if (!json_is_object(msg) || !m || !id || json_is_null(id))
		return 0;
	for (size_t i = 0; i < sizeof(idle) / sizeof(idle[0]); i++)
		if (strcmp(m, idle[i]) == 0)
			return 0;
	size_t n = strlen(m);
	return !(n >= 5 && strcmp(m + n - 5, "/list") == 0);
}
