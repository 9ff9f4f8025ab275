/* Client ID Metadata Documents: the client_id URL an anonymous client
 * names (cimd_check_url), the Cache-Control of the answer (cimd_max_age)
 * and the fetched document (cimd_check_document). The input is
 * "client_id URL\nCache-Control\ndocument"; missing parts are empty.
 * - an accepted URL is https, at most LIM_CLIENT_ID bytes, without
 *   fragment, query or credentials, and not on the deny list;
 * - an accepted document names that client_id, has 1..LIM_REDIRECT_URIS
 *   redirect URIs that the registration policy allows, and no
 *   token_endpoint_auth_method but "none" or "private_key_jwt" (with
 *   exactly one of jwks and jwks_uri). */
#include <strings.h>

#include "cimd.h"
#include "fuzz.h"
#include "uri.h"

static char *deny[] = { "*.internal.example", "metadata.google.internal" };

static const char *part(char **p)
{
	char *s = *p, *nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = s + strlen(s);
	}
	return s;
}

/* The deny list read on the URL text itself (host = up to the first '/' or
 * ':' after "https://"): a URL whose text names a denied host must not be
 * accepted whatever curl reads into it. */
static int denied(const char *url)
{
	char host[LIM_CLIENT_ID + 1];
	size_t n = strcspn(url + 8, "/:");
	memcpy(host, url + 8, n);
	host[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (host[i] >= 'A' && host[i] <= 'Z')
			host[i] = (char)(host[i] + 32);
	while (n && host[n - 1] == '.')
		host[--n] = '\0';
	static const char suffix[] = ".internal.example";
	size_t sl = sizeof(suffix) - 1;
	return strcmp(host, "metadata.google.internal") == 0 || (n > sl && strcmp(host + n - sl, suffix) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	cfg.registration.client_id_metadata_documents = 1;
	cfg.registration.allow_loopback_redirects = 1;
	cfg.registration.allow_private_schemes = 1;
	cfg.registration.cimd_deny_hosts = deny;
	cfg.registration.n_cimd_deny_hosts = 2;

	char *s = fuzz_cstr(data, size), *p = s;
	const char *url = part(&p);
	const char *cc = part(&p);
	const char *doc = p;
	size_t doclen = size - (size_t)(doc - s);

	if (cimd_check_url(&cfg, url) == NULL) {
		FUZZ_CHECK(cimd_is_url(url) && strncasecmp(url, "https://", 8) == 0);
		FUZZ_CHECK(strlen(url) <= LIM_CLIENT_ID);
		FUZZ_CHECK(!strchr(url, '#') && !strchr(url, '?') && !strchr(url, '@'));
		FUZZ_CHECK(!denied(url));
	}
	FUZZ_CHECK(cimd_max_age(cc) >= -1);
	FUZZ_CHECK(cimd_max_age(NULL) == -1);

	struct client out;
	json_t *uris = NULL;
	memset(&out, 0, sizeof(out));
	if (cimd_check_document(&cfg, url, doc, doclen, &out, &uris) == NULL) {
		FUZZ_CHECK(strcmp(out.client_id, url) == 0 && strcmp(out.kind, "cimd") == 0);
		FUZZ_CHECK(out.private_key_jwt == (out.jwks || out.jwks_uri) && !(out.jwks && out.jwks_uri));
		size_t n = json_array_size(uris), i;
		json_t *v;
		FUZZ_CHECK(n >= 1 && n <= LIM_REDIRECT_URIS);
		json_array_foreach(uris, i, v)
		{
			const char *why = NULL;
			FUZZ_CHECK(json_is_string(v) && uri_redirect_allowed(json_string_value(v), &why) == 0);
		}
	} else {
		FUZZ_CHECK(uris == NULL);
	}
	json_decref(uris);
	client_free(&out);
	free(s);
	return 0;
}
