/* URL rules of the OAuth endpoints, on libcurl's URL API: resource
 * canonicalisation (RFC 8707), redirect URI policy and matching (RFC 8252
 * loopback ports), hosts for the consent page, query building. */
#ifndef MCPB_URI_H
#define MCPB_URI_H
#include "buf.h"

/* Canonical form of an absolute http(s) URL without query or fragment:
 * lower-case scheme and host, default port dropped, no trailing slash.
 * malloc'd, or NULL when s is not such a URL. */
char *uri_canonical_resource(const char *s);

/* Registration policy: https anywhere, http only on loopback hosts,
 * private-use schemes (cursor://, com.example.app:/cb); never fragments,
 * credentials, or javascript:/data:/file:-like schemes. 0 or -1 + *why. */
int uri_redirect_allowed(const char *uri, const char **why);

/* 1 when requested equals registered exactly, or both are http loopback
 * URIs equal except for the port (RFC 8252 section 7.3). */
int uri_redirect_matches(const char *registered, const char *requested);

int uri_host_is_loopback(const char *host);

/* Host (and port, when not the default) of an http(s) uri; for any other
 * scheme the uri itself without its query (at most 120 characters + "...").
 * malloc'd, NULL when uri does not parse. */
char *uri_display_host(const char *uri);

/* uri with query (already escaped: "a=1&b=2") appended as text, after "?"
 * or "&"; malloc'd, NULL for a uri with a fragment. */
char *uri_with_query(const char *uri, const char *query);

#endif
