/* application_type (OpenID Connect Dynamic Client Registration 1.0 section
 * 2, MCP SEP-837): the redirect URI kinds a "web" or a "native" client may
 * use. Pure: no I/O. Used by /register and by CIMD document checks. */
#ifndef MCPB_APP_TYPE_H
#define MCPB_APP_TYPE_H
#include <jansson.h>
#include "buf.h"
#include "lim.h"

/* What a redirect URI is, for application_type and the consent page. */
enum app_uri_kind {
	APP_URI_HTTPS,    /* https on a host that is not loopback */
	APP_URI_LOOPBACK, /* http or https on 127.0.0.1, [::1] or localhost */
	APP_URI_PRIVATE,  /* a private-use scheme (RFC 8252 section 7.1) */
	APP_URI_OTHER,    /* http elsewhere, or not a URI at all */
};

enum app_uri_kind app_type_uri_kind(const char *uri);

enum app_type_check {
	APP_TYPE_OK = 0,
	APP_TYPE_BAD_VALUE, /* application_type is neither "web" nor "native" */
	APP_TYPE_BAD_URI,   /* a redirect URI its type does not allow */
};

/* given: the application_type member (NULL or JSON null when absent); uris:
 * a JSON array of redirect URI strings. "web" allows only APP_URI_HTTPS;
 * "native" allows APP_URI_HTTPS (claimed https redirects, RFC 8252 section
 * 7.2), APP_URI_LOOPBACK and APP_URI_PRIVATE. When absent, the type is
 * "web" if every URI is APP_URI_HTTPS and "native" otherwise, so that
 * clients written before SEP-837 keep registering loopback URIs. On
 * APP_TYPE_OK *type is "web" or "native" (static); otherwise *type is NULL. */
enum app_type_check app_type_check(const json_t *given, const json_t *uris, const char **type) WUR;

#endif
