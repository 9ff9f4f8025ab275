/* The configured protected resources by their public URL: the lookup of a
 * client's RFC 8707 `resource` parameter (/authorize, /token) and the exact
 * URL a resource is known by (its metadata, its tokens' audience). */
#ifndef MCPB_RESOURCES_H
#define MCPB_RESOURCES_H
#include <stddef.h>
#include "config.h"

/* The public URL of res (public_url followed by its path) into out, cap
 * bytes with the NUL. -1 when it does not fit. */
int resources_url(const struct config *cfg, const struct cfg_resource *res, char *out, size_t cap) WUR;

/* The configured resource that resource names, both compared after
 * uri_canonical_resource (scheme and host case, default port, trailing
 * slash); NULL when none does or resource is not an http(s) URL. */
const struct cfg_resource *resources_find(const struct config *cfg, const char *resource) WUR;

#endif
