/* URIs from clients: resource indicators (uri_canonical_resource), redirect
 * URIs at registration (uri_redirect_allowed) and at authorization
 * (uri_redirect_matches against a registered one), the consent page's host
 * and the redirect with its query. The input is "registered\nrequested"
 * (no newline: both the same).
 * - canonicalisation is idempotent and yields no query or fragment;
 * - an allowed redirect URI has no fragment, control byte or space, a host
 *   to display, and takes a query;
 * - a requested URI that matches an allowed registered one is itself
 *   allowed (the browser goes where the policy looked). */
#include "fuzz.h"
#include "uri.h"

static void one(const char *s)
{
	char *c = uri_canonical_resource(s);
	if (c) {
		FUZZ_CHECK(strncmp(c, "https://", 8) == 0 || strncmp(c, "http://", 7) == 0);
		FUZZ_CHECK(!strchr(c, '?') && !strchr(c, '#'));
		char *c2 = uri_canonical_resource(c);
		FUZZ_CHECK(c2 && strcmp(c, c2) == 0);
		free(c2);
		free(c);
	}
	const char *why = NULL;
	if (uri_redirect_allowed(s, &why) == 0) {
		for (const char *p = s; *p; p++)
			FUZZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f && *p != '#');
		char *h = uri_display_host(s);
		FUZZ_CHECK(h != NULL);
		free(h);
		char *q = uri_with_query(s, "code=c&state=s");
		FUZZ_CHECK(q && strncmp(q, s, strlen(s)) == 0);
		free(q);
	} else {
		FUZZ_CHECK(why != NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char *nl = strchr(s, '\n');
	const char *registered = s, *requested = s;
	if (nl) {
		*nl = '\0';
		requested = nl + 1;
	}
	one(registered);
	if (requested != registered)
		one(requested);
	const char *why = NULL;
	if (uri_redirect_matches(registered, requested) && uri_redirect_allowed(registered, &why) == 0)
		FUZZ_CHECK(uri_redirect_allowed(requested, &why) == 0);
	free(s);
	return 0;
}
