/* JSON-RPC bodies of proxied MCP requests, as the tool policy reads them:
 * rpc_parse, then rpc_count/rpc_message, rpc_tool_call and
 * rpc_headers_agree on what it accepted.
 * - accepted bytes are an RFC 8259 JSON text in strict UTF-8 (checked here
 *   by a recogniser of its own: what jansson accepts, every other JSON
 *   parser must read the same way);
 * - the accepted value re-serialises and re-parses to an equal value;
 * - a tools/call is always judged (never "not a tools/call"), and the tool
 *   name the policy sees holds no NUL;
 * - headers naming the first message's method (and the value its Mcp-Name
 *   mirrors) agree with the body exactly when every message has them, and
 *   a disagreement names the message. */
#include <jansson.h>

#include "fuzz.h"
#include "rpc.h"

struct rd {
	const unsigned char *p, *e;
};

static void ws(struct rd *r)
{
	while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int eat(struct rd *r, unsigned char c)
{
	if (r->p < r->e && *r->p == c) {
		r->p++;
		return 1;
	}
	return 0;
}

static int digits(struct rd *r)
{
	const unsigned char *s = r->p;
	while (r->p < r->e && *r->p >= '0' && *r->p <= '9')
		r->p++;
	return r->p > s;
}

/* One UTF-8 sequence, strict (RFC 3629: no overlong form, no surrogate,
 * nothing past U+10FFFF). */
static int utf8(struct rd *r)
{
	unsigned char c = *r->p;
	size_t n;
	unsigned lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		n = 1;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 2;
		lo = c == 0xE0 ? 0xA0 : 0x80;
		hi = c == 0xED ? 0x9F : 0xBF;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 3;
		lo = c == 0xF0 ? 0x90 : 0x80;
		hi = c == 0xF4 ? 0x8F : 0xBF;
	} else
		return 0;
	if ((size_t)(r->e - r->p) <= n || r->p[1] < lo || r->p[1] > hi)
		return 0;
	for (size_t i = 2; i <= n; i++)
		if (r->p[i] < 0x80 || r->p[i] > 0xBF)
			return 0;
	r->p += n + 1;
	return 1;
}

static int string(struct rd *r)
{
	if (!eat(r, '"'))
		return 0;
	while (r->p < r->e) {
		unsigned char c = *r->p;
		if (c == '"') {
			r->p++;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			r->p++;
			if (r->p >= r->e)
				return 0;
			if (*r->p == 'u') {
				r->p++;
				for (int i = 0; i < 4; i++, r->p++)
					if (r->p >= r->e || !strchr("0123456789abcdefABCDEF", *r->p) || !*r->p)
						return 0;
			} else if (*r->p && strchr("\"\\/bfnrt", *r->p)) {
				r->p++;
			} else {
				return 0;
			}
		} else if (c >= 0x80) {
			if (!utf8(r))
				return 0;
		} else {
			r->p++;
		}
	}
	return 0;
}

static int number(struct rd *r)
{
	eat(r, '-');
	if (!eat(r, '0') && !(r->p < r->e && *r->p >= '1' && *r->p <= '9' && digits(r)))
		return 0;
	if (eat(r, '.') && !digits(r))
		return 0;
	if (eat(r, 'e') || eat(r, 'E')) {
		if (!eat(r, '+'))
			eat(r, '-');
		if (!digits(r))
			return 0;
	}
	return 1;
}

static int lit(struct rd *r, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n) != 0)
		return 0;
	r->p += n;
	return 1;
}

static int value(struct rd *r, int depth)
{
	if (depth > 4096)
		return 0;
	ws(r);
	if (r->p >= r->e)
		return 0;
	unsigned char c = *r->p;
	int ok;
	if (c == '{' || c == '[') {
		unsigned char close = c == '{' ? '}' : ']';
		r->p++;
		ws(r);
		if (eat(r, close))
			return 1;
		do {
			ws(r);
			if (c == '{') {
				if (!string(r))
					return 0;
				ws(r);
				if (!eat(r, ':'))
					return 0;
			}
			if (!value(r, depth + 1))
				return 0;
			ws(r);
		} while (eat(r, ','));
		ok = eat(r, close);
	} else if (c == '"') {
		ok = string(r);
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		ok = number(r);
	} else {
		ok = lit(r, "true") || lit(r, "false") || lit(r, "null");
	}
	return ok;
}

static int rfc8259(const uint8_t *data, size_t size)
{
	struct rd r = { data, data + size };
	if (!value(&r, 0))
		return 0;
	ws(&r);
	return r.p == r.e;
}

/* A value SEP-2243 lets a client send as it is: no SP/HTAB at either end,
 * not in the base64 form. */
static int plain_name(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && s[0] != ' ' && s[0] != '\t' && s[n - 1] != ' ' && s[n - 1] != '\t' &&
	       strncmp(s, "=?base64?", 9) != 0;
}

/* Every message has this method and (name non-NULL) this mirrored value. */
static int all_named(json_t *body, const char *method, const char *field, const char *name)
{
	for (size_t i = 0; i < rpc_count(body); i++) {
		json_t *m = rpc_message(body, i);
		const char *mi = json_string_value(json_object_get(m, "method"));
		const char *vi = name ? json_string_value(json_object_get(json_object_get(m, "params"), field)) : NULL;
		if (!mi || strcmp(mi, method) != 0 || (name && (!vi || strcmp(vi, name) != 0)))
			return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = NULL, *again = NULL;
	if (rpc_parse((const char *)data, size, &body) < 0) {
		FUZZ_CHECK(body == NULL);
		return 0;
	}
	FUZZ_CHECK(rfc8259(data, size));
	char *text = json_dumps(body, JSON_COMPACT);
	FUZZ_CHECK(text && rpc_parse(text, strlen(text), &again) == 0 && json_equal(body, again));
	size_t n = rpc_count(body);
	FUZZ_CHECK(n >= 1);
	for (size_t i = 0; i < n; i++) {
		json_t *msg = rpc_message(body, i);
		FUZZ_CHECK(json_is_object(msg));
		const char *tool = NULL;
		int rc = rpc_tool_call(msg, &tool);
		const char *method = json_string_value(json_object_get(msg, "method"));
		if (method && strcmp(method, "tools/call") == 0)
			FUZZ_CHECK(rc != 0);
		if (rc == 1) {
			size_t tl = json_string_length(json_object_get(json_object_get(msg, "params"), "name"));
			FUZZ_CHECK(tool && strlen(tool) == tl && tl >= 1 && tl <= RPC_MAX_TOOL);
		} else {
			FUZZ_CHECK(tool == NULL);
		}
	}
	json_t *bad = NULL;
	FUZZ_CHECK(rpc_headers_agree(body, NULL, NULL, 0, &bad) == 1 && bad == NULL);
	json_t *first = rpc_message(body, 0);
	const char *method = json_string_value(json_object_get(first, "method"));
	if (method) {
		FUZZ_CHECK(strlen(method) == json_string_length(json_object_get(first, "method")));
		const char *field = rpc_name_field(method);
		const char *name = field ? json_string_value(json_object_get(json_object_get(first, "params"), field))
					 : NULL;
		if (name && !plain_name(name))
			name = NULL; /* a client sends those in the base64 form */
		FUZZ_CHECK(rpc_headers_agree(body, method, name, 0, &bad) == all_named(body, method, field, name));
		if (strcmp(method, "\x01other") != 0)
			FUZZ_CHECK(rpc_headers_agree(body, "\x01other", NULL, 0, &bad) == 0 && bad == first);
	}
	free(text);
	json_decref(again);
	json_decref(body);
	return 0;
}
