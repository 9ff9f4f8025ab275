#include "app_type.h"

#include <curl/curl.h>
#include <string.h>

#include "uri.h"

enum app_uri_kind app_type_uri_kind(const char *uri)
{
	enum app_uri_kind kind = APP_URI_OTHER;
	char *scheme = NULL, *host = NULL;
	CURLU *u = curl_url();
	if (!u || !uri || strlen(uri) > LIM_REDIRECT_URI ||
	    curl_url_set(u, CURLUPART_URL, uri, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
		goto out;
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		kind = APP_URI_PRIVATE;
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host)
		goto out;
	if (uri_host_is_loopback(host))
		kind = APP_URI_LOOPBACK;
	else if (strcmp(scheme, "https") == 0)
		kind = APP_URI_HTTPS;
out:
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
	return kind;
}

/* 1 when a client of this type may use a redirect URI of this kind. */
static int allowed(int native, enum app_uri_kind kind)
{
	return kind == APP_URI_HTTPS || (native && (kind == APP_URI_LOOPBACK || kind == APP_URI_PRIVATE));
}

enum app_type_check app_type_check(const json_t *given, const json_t *uris, const char **type)
{
	const char *v = json_string_value(given);
	int native = 0;
	*type = NULL;
	if (given && !json_is_null(given)) {
		if (!v || (strcmp(v, "web") != 0 && strcmp(v, "native") != 0))
			return APP_TYPE_BAD_VALUE;
		native = strcmp(v, "native") == 0;
	}
	if (!json_is_array(uris) || json_array_size(uris) == 0)
		return APP_TYPE_BAD_URI;
	for (size_t i = 0; !v && i < json_array_size(uris); i++)
		native = native || app_type_uri_kind(json_string_value(json_array_get(uris, i))) != APP_URI_HTTPS;
	for (size_t i = 0; i < json_array_size(uris); i++)
		if (!allowed(native, app_type_uri_kind(json_string_value(json_array_get(uris, i)))))
			return APP_TYPE_BAD_URI;
	*type = native ? "native" : "web";
	return APP_TYPE_OK;
}
