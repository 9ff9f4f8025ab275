/* Request header syntax (RFC 9110/9112) the broker checks itself: field
 * names and values, Content-Length, Transfer-Encoding, the JSON
 * Content-Type of proxied bodies, Content-Encoding and Connection-style
 * lists. The input is "value\nname" (no newline: the name is "close").
 * Each function is compared with the grammar written out here:
 * - hdr_token_ok / hdr_value_ok: exactly the tchar / field-vchar sets;
 * - hdr_content_length: exactly 1..18 ASCII digits, and their value;
 * - hdr_transfer_encoding: framing is trusted only when the last coding is
 *   a bare "chunked", never with control or non-ASCII bytes;
 * - hdr_json_content_type: only the three spellings of application/json;
 * - hdr_list_has: membership of the trimmed comma-separated elements. */
#include <strings.h>

#include "fuzz.h"
#include "hdr.h"

static int tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int ows(char c)
{
	return c == ' ' || c == '\t';
}

/* s with all OWS removed, lower-cased. */
static char *squeeze(const char *s)
{
	char *o = fuzz_cstr((const uint8_t *)s, strlen(s)), *w = o;
	for (const char *p = s; *p; p++)
		if (!ows(*p))
			*w++ = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
	*w = '\0';
	return o;
}

/* The last comma-separated element of s, trimmed of OWS, is "chunked". */
static int last_is_chunked(const char *s)
{
	const char *c = strrchr(s, ',');
	const char *a = c ? c + 1 : s, *b = s + strlen(s);
	while (a < b && ows(*a))
		a++;
	while (b > a && ows(b[-1]))
		b--;
	return b - a == 7 && strncasecmp(a, "chunked", 7) == 0;
}

static int list_has(const char *s, const char *name, size_t n)
{
	const char *p = s;
	for (;;) {
		const char *c = strchr(p, ',');
		const char *a = p, *b = c ? c : p + strlen(p);
		while (a < b && ows(*a))
			a++;
		while (b > a && ows(b[-1]))
			b--;
		if (n && (size_t)(b - a) == n && strncasecmp(a, name, n) == 0)
			return 1;
		if (!c)
			return 0;
		p = c + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *d = (const char *)data;
	int tok = size > 0, val = 1, val_obs = 1;
	for (size_t i = 0; i < size; i++) {
		unsigned char c = data[i];
		tok &= tchar(c) != 0;
		val &= (c >= 0x20 && c < 0x7f) || c == '\t';
		val_obs &= (c >= 0x20 && c != 0x7f) || c == '\t';
	}
	FUZZ_CHECK(hdr_token_ok(d, size) == tok);
	FUZZ_CHECK(hdr_value_ok(d, size, 0) == val);
	FUZZ_CHECK(hdr_value_ok(d, size, 1) == val_obs);
	(void)hdr_hop_by_hop(d, size);

	char *s = fuzz_cstr(data, size);
	char *nl = strchr(s, '\n');
	const char *name = "close";
	if (nl) {
		*nl = '\0';
		name = nl + 1;
	}
	size_t len = strlen(s);

	uint64_t cl = 0;
	int digits = len >= 1 && len <= 18;
	for (size_t i = 0; i < len; i++)
		digits &= s[i] >= '0' && s[i] <= '9';
	int rc = hdr_content_length(s, &cl);
	FUZZ_CHECK((rc == 0) == digits);
	if (rc == 0)
		FUZZ_CHECK(cl == strtoull(s, NULL, 10));

	int clean = 1;
	for (size_t i = 0; i < len; i++)
		clean &= (s[i] >= 0x20 && s[i] < 0x7f) || s[i] == '\t';
	enum hdr_te te = hdr_transfer_encoding(s);
	if (te == HDR_TE_CHUNKED || te == HDR_TE_UNSUPPORTED)
		FUZZ_CHECK(clean && last_is_chunked(s));
	if (te == HDR_TE_CHUNKED) {
		char *q = squeeze(s);
		FUZZ_CHECK(strcmp(q, "chunked") == 0);
		free(q);
	}
	if (te == HDR_TE_UNSUPPORTED)
		FUZZ_CHECK(strchr(s, ',') != NULL);

	char *q = squeeze(s);
	int canonical = strcmp(q, "application/json") == 0 || strcmp(q, "application/json;charset=utf-8") == 0 ||
			strcmp(q, "application/json;charset=\"utf-8\"") == 0;
	if (hdr_json_content_type(s))
		FUZZ_CHECK(canonical);
	if (strcasecmp(s, "application/json") == 0 || strcasecmp(s, "application/json; charset=utf-8") == 0)
		FUZZ_CHECK(hdr_json_content_type(s));
	free(q);

	if (hdr_identity_encoding(s)) {
		q = squeeze(s);
		FUZZ_CHECK(strcmp(q, "identity") == 0);
		free(q);
	}

	FUZZ_CHECK(hdr_list_has(s, name, strlen(name)) == list_has(s, name, strlen(name)));
	free(s);
	return 0;
}
