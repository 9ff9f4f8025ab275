#include "hdr.h"

#include <string.h>
#include <strings.h>

static int tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int hdr_token_ok(const char *s, size_t n)
{
	if (!s || n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!tchar((unsigned char)s[i]))
			return 0;
	return 1;
}

int hdr_value_ok(const char *s, size_t n, int allow_obs_text)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f || (c >= 0x80 && !allow_obs_text))
			return 0;
	}
	return 1;
}

int hdr_hop_by_hop(const char *name, size_t n)
{
	static const char *const hop[] = { "connection",
					   "keep-alive",
					   "proxy-authenticate",
					   "proxy-authorization",
					   "proxy-connection",
					   "te",
					   "trailer",
					   "transfer-encoding",
					   "upgrade",
					   "content-length" };
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strlen(hop[i]) == n && strncasecmp(name, hop[i], n) == 0)
			return 1;
	return 0;
}

static int ows(char c)
{
	return c == ' ' || c == '\t';
}

/* One element of a comma-separated list (RFC 9110 5.6.1) starting at p,
 * without the OWS around it, in *el and *len; returns where it ends (at
 * the ',' after it, or the NUL). */
static const char *list_element(const char *p, const char **el, size_t *len)
{
	while (ows(*p))
		p++;
	const char *start = p;
	while (*p && *p != ',')
		p++;
	const char *end = p;
	while (end > start && ows(end[-1]))
		end--;
	*el = start;
	*len = (size_t)(end - start);
	return p;
}

int hdr_list_has(const char *s, const char *name, size_t n)
{
	for (const char *p = s; p && *p;) {
		const char *el;
		size_t len;
		p = list_element(p, &el, &len);
		if (n && len == n && strncasecmp(el, name, n) == 0)
			return 1;
		if (*p)
			p++; /* ',' */
	}
	return 0;
}

int hdr_content_length(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t n = 0;
	if (!s)
		return -1;
	for (; s[n]; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 18)
			return -1;
		v = v * 10 + (uint64_t)(s[n] - '0');
	}
	if (n == 0)
		return -1;
	*out = v;
	return 0;
}

enum hdr_te hdr_transfer_encoding(const char *s)
{
	size_t codings = 0;
	int last_chunked = 0;
	const char *p = s;
	if (!s)
		return HDR_TE_INVALID;
	for (;;) {
		const char *start;
		size_t n;
		p = list_element(p, &start, &n);
		if (n == 0)
			return HDR_TE_INVALID; /* "chunked,," or an empty value */
		/* A coding may carry parameters (gzip;q=1): anything but a bare
		 * token is not chunked, and chunked itself takes none. */
		size_t tok = 0;
		while (tok < n && tchar((unsigned char)start[tok]))
			tok++;
		if (tok == 0)
			return HDR_TE_INVALID;
		if (tok < n && !hdr_value_ok(start + tok, n - tok, 0))
			return HDR_TE_INVALID;
		if (last_chunked)
			return HDR_TE_INVALID; /* chunked applied twice, or not last */
		last_chunked = tok == n && n == 7 && strncasecmp(start, "chunked", 7) == 0;
		codings++;
		if (!*p)
			break;
		p++; /* ',' */
	}
	if (!last_chunked)
		return HDR_TE_INVALID;
	return codings == 1 ? HDR_TE_CHUNKED : HDR_TE_UNSUPPORTED;
}

int hdr_json_content_type(const char *s)
{
	static const char base[] = "application/json";
	const size_t nb = sizeof(base) - 1;
	if (!s || strncasecmp(s, base, nb) != 0)
		return 0;
	const char *p = s + nb;
	while (ows(*p))
		p++;
	if (!*p)
		return 1;
	if (*p != ';')
		return 0;
	p++;
	while (ows(*p))
		p++;
	if (strncasecmp(p, "charset=", 8) != 0)
		return 0;
	p += 8;
	if (strncasecmp(p, "utf-8", 5) == 0)
		p += 5;
	else if (strncasecmp(p, "\"utf-8\"", 7) == 0)
		p += 7;
	else
		return 0;
	while (ows(*p))
		p++;
	return *p == '\0';
}

int hdr_identity_encoding(const char *s)
{
	if (!s)
		return 1;
	while (ows(*s))
		s++;
	size_t n = strlen(s);
	while (n && ows(s[n - 1]))
		n--;
	return n == 8 && strncasecmp(s, "identity", 8) == 0;
}
