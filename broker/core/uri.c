#include "uri.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lim.h"

struct parts {
	char *scheme, *user, *password, *host, *port, *path, *query, *fragment;
};

static void parts_free(struct parts *p)
{
	curl_free(p->scheme);
	curl_free(p->user);
	curl_free(p->password);
	curl_free(p->host);
	curl_free(p->port);
	curl_free(p->path);
	curl_free(p->query);
	curl_free(p->fragment);
	memset(p, 0, sizeof(*p));
}

/* One part into *out (NULL when the URL has none): -1 on any other error,
 * out of memory above all, which must not read as "no query here". */
static int get_part(CURLU *u, CURLUPart what, char **out, unsigned flags)
{
	CURLUcode c = curl_url_get(u, what, out, flags);
	return c == CURLUE_OK || (c >= CURLUE_NO_SCHEME && c <= CURLUE_NO_FRAGMENT) ? 0 : -1;
}

static int parse(const char *s, struct parts *p, unsigned flags)
{
	memset(p, 0, sizeof(*p));
	if (!s || strlen(s) > LIM_REDIRECT_URI)
		return -1;
	CURLU *u = curl_url();
	if (!u)
		return -1;
	int rc = -1;
	if (curl_url_set(u, CURLUPART_URL, s, flags) != CURLUE_OK)
		goto out;
	if (get_part(u, CURLUPART_SCHEME, &p->scheme, 0) < 0 || get_part(u, CURLUPART_USER, &p->user, 0) < 0 ||
	    get_part(u, CURLUPART_PASSWORD, &p->password, 0) < 0 || get_part(u, CURLUPART_HOST, &p->host, 0) < 0 ||
	    get_part(u, CURLUPART_PORT, &p->port, CURLU_NO_DEFAULT_PORT) < 0 ||
	    get_part(u, CURLUPART_PATH, &p->path, 0) < 0 || get_part(u, CURLUPART_QUERY, &p->query, 0) < 0 ||
	    get_part(u, CURLUPART_FRAGMENT, &p->fragment, 0) < 0)
		goto out;
	rc = p->scheme ? 0 : -1;
out:
	curl_url_cleanup(u);
	if (rc < 0)
		parts_free(p);
	return rc;
}

int uri_host_is_loopback(const char *host)
{
	return host &&
	       (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0 || strcasecmp(host, "localhost") == 0);
}

static char *canonical_once(const char *s)
{
	struct parts p;
	char *out = NULL;
	/* curl reports no fragment for an empty one ("/mcp#"): RFC 8707 wants
	 * none at all. */
	if ((s && strchr(s, '#')) || parse(s, &p, 0) < 0)
		return NULL;
	if ((strcmp(p.scheme, "https") != 0 && strcmp(p.scheme, "http") != 0) || !p.host || p.query || p.fragment ||
	    p.user || p.password)
		goto out;
	/* Exactly "scheme://host", as for redirect URIs: curl also reads
	 * https:///host and https:/host, which name no host to other parsers. */
	size_t sl = strlen(p.scheme);
	if (strncmp(s + sl, "://", 3) != 0 || s[sl + 3] == '/')
		goto out;
	for (char *h = p.host; *h; h++)
		*h = (char)tolower((unsigned char)*h);
	size_t plen = p.path ? strlen(p.path) : 0;
	while (plen > 0 && p.path[plen - 1] == '/')
		p.path[--plen] = '\0';
	size_t n = strlen(p.scheme) + strlen(p.host) + plen + 16;
	out = malloc(n);
	if (out)
		snprintf(out, n, "%s://%s%s%s%s", p.scheme, p.host, p.port ? ":" : "", p.port ? p.port : "",
			 plen ? p.path : "");
out:
	parts_free(&p);
	return out;
}

char *uri_canonical_resource(const char *s)
{
	/* Canonical means a fixed point: curl decodes some forms only in part
	 * in one pass (the host 127%2e0.1 becomes 127.0.1, which the next pass
	 * reads as 127.0.0.1), and such a resource would not name one thing. */
	char *c = canonical_once(s), *again = c ? canonical_once(c) : NULL;
	if (c && (!again || strcmp(c, again) != 0)) {
		free(c);
		c = NULL;
	}
	free(again);
	return c;
}

static int scheme_forbidden(const char *scheme)
{
	static const char *const bad[] = { "javascript", "data",   "file", "vbscript", "blob", "about",
					   "filesystem", "mailto", "ftp",  "ws",       "wss" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (strcasecmp(scheme, bad[i]) == 0)
			return 1;
	return 0;
}

int uri_redirect_allowed(const char *uri, const char **why)
{
	struct parts p;
	int rc = -1;
	*why = "redirect_uri is not an absolute URI";
	if (!uri || !*uri || strlen(uri) > LIM_REDIRECT_URI) {
		*why = "redirect_uri is empty or too long";
		return -1;
	}
	for (const char *c = uri; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
			*why = "redirect_uri contains whitespace or control characters";
			return -1;
		}
	if (strchr(uri, '#')) {
		*why = "redirect_uri must not contain a fragment";
		return -1;
	}
	if (parse(uri, &p, CURLU_NON_SUPPORT_SCHEME) < 0)
		return -1;
	if (scheme_forbidden(p.scheme)) {
		*why = "redirect_uri scheme is not allowed";
		goto out;
	}
	if (p.user || p.password) {
		*why = "redirect_uri must not contain credentials";
		goto out;
	}
	if (strcmp(p.scheme, "http") == 0 || strcmp(p.scheme, "https") == 0) {
		/* Exactly "scheme://host": curl also accepts https:///host and
		 * https:/host, which other parsers read differently. */
		size_t sl = strlen(p.scheme);
		if (strncmp(uri + sl, "://", 3) != 0 || uri[sl + 3] == '/') {
			*why = "redirect_uri is not an absolute URI";
			goto out;
		}
	}
	if (strcmp(p.scheme, "https") == 0) {
		if (!p.host || !*p.host) {
			*why = "https redirect_uri needs a host";
			goto out;
		}
	} else if (strcmp(p.scheme, "http") == 0) {
		if (!uri_host_is_loopback(p.host)) {
			*why = "http redirect_uri is allowed only on 127.0.0.1, [::1] or localhost";
			goto out;
		}
	}
	/* Any other scheme is a private-use scheme (RFC 8252 section 7.1). */
	rc = 0;
out:
	parts_free(&p);
	return rc;
}

static int streq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int uri_redirect_matches(const char *registered, const char *requested)
{
	if (!registered || !requested)
		return 0;
	if (strcmp(registered, requested) == 0)
		return 1;
	/* The browser is sent to the requested URI: it must pass the
	 * registration policy itself (curl also reads http:/[::1]:/ and other
	 * spellings that no client registers). */
	const char *why;
	if (uri_redirect_allowed(requested, &why) < 0)
		return 0;
	struct parts a, b;
	int ok = 0;
	if (parse(registered, &a, CURLU_NON_SUPPORT_SCHEME) < 0)
		return 0;
	if (parse(requested, &b, CURLU_NON_SUPPORT_SCHEME) < 0) {
		parts_free(&a);
		return 0;
	}
	/* Only loopback IP literals get a variable port; the rest of the URI
	 * must be identical. localhost is included: clients register it. */
	ok = strcmp(a.scheme, "http") == 0 && strcmp(b.scheme, "http") == 0 && uri_host_is_loopback(a.host) &&
	     streq(a.host, b.host) && streq(a.path, b.path) && streq(a.query, b.query) && !a.fragment && !b.fragment &&
	     !b.user && !b.password;
	parts_free(&a);
	parts_free(&b);
	return ok;
}

#define DISPLAY_MAX 120

char *uri_display_host(const char *uri)
{
	struct parts p;
	char *out = NULL;
	if (parse(uri, &p, CURLU_NON_SUPPORT_SCHEME) < 0)
		return NULL;
	if ((strcmp(p.scheme, "https") == 0 || strcmp(p.scheme, "http") == 0) && p.host && *p.host) {
		size_t n = strlen(p.host) + (p.port ? strlen(p.port) : 0) + 2;
		out = malloc(n);
		if (out)
			snprintf(out, n, "%s%s%s", p.host, p.port ? ":" : "", p.port ? p.port : "");
	} else {
		/* A private-use scheme goes to whichever app claimed the scheme;
		 * its "host" means nothing (evil://github.com/cb), and curl reads
		 * com.example.app:/cb as host "cb". Show the URI itself. */
		size_t n = strcspn(uri, "?");
		int cut = n > DISPLAY_MAX;
		if (cut)
			n = DISPLAY_MAX;
		out = malloc(n + 4);
		if (out)
			snprintf(out, n + 4, "%.*s%s", (int)n, uri, cut ? "..." : "");
	}
	parts_free(&p);
	return out;
}

char *uri_with_query(const char *uri, const char *query)
{
	/* Appended as text, never re-serialised by a URL parser: the redirect
	 * URI matched a registered one exactly, and curl rewrites forms such
	 * as com.example.app:/cb (RFC 8252 section 7.1) into another URI. */
	if (!uri || !query || !*uri || strchr(uri, '#'))
		return NULL;
	size_t ulen = strlen(uri), qlen = strlen(query);
	const char *sep = !strchr(uri, '?') ? "?" : (uri[ulen - 1] == '?' || uri[ulen - 1] == '&') ? "" : "&";
	size_t n = ulen + strlen(sep) + qlen + 1;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s%s%s", uri, sep, query);
	return out;
}
