/* Client ID Metadata Documents: a client_id that is an https URL names a
 * JSON document describing the client. Fetching a URL that an anonymous
 * party chose is an SSRF risk, so the fetch is HTTPS-only, certificate
 * verified, never redirected, bounded in time and size (LIM_CIMD_BODY),
 * application/json only, without proxies, and the address actually
 * connected to (checked in libcurl's open-socket callback, after DNS) must
 * not be loopback, private, link-local, CGNAT, multicast, reserved or a
 * metadata service. Documents are cached in PostgreSQL (clients, kind
 * 'cimd') honouring Cache-Control within [cimd_min_ttl_s, cimd_max_ttl_s]. */
#ifndef MCPB_CIMD_H
#define MCPB_CIMD_H
#include <sys/socket.h>
#include <jansson.h>
#include "app.h"
#include "client.h"
#include "db.h"

/* 1 when client_id looks like a URL client id (http:// or https://, any
 * case): such ids go to cimd_lookup, which refuses anything but https. */
int cimd_is_url(const char *client_id);

/* Resolves a CIMD client into *out (cleared first), from the shared cache
 * or by fetching its document: CLIENT_FOUND; CLIENT_UNKNOWN with *why a
 * fixed, printable reason; CLIENT_UNAVAILABLE (database error, or every
 * fetch slot busy: *why says so). */
enum client_find cimd_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out,
			     const char **why) WUR;

/* The JWKS at uri (a private_key_jwt client's jwks_uri), from the shared
 * cache (jwks_cache) or fetched under the same policy, limits and slots as
 * a document (at most LIM_JWKS_BODY) and cached by its Cache-Control:
 * CLIENT_FOUND with *jwks the JSON text (the caller frees it);
 * CLIENT_UNKNOWN (refused) or CLIENT_UNAVAILABLE with *why a fixed reason
 * (NULL for a database error). */
enum client_find cimd_jwks(struct app *app, struct db_conn *c, const char *uri, char **jwks, const char **why) WUR;

/* Exposed for unit tests: 1 when the address may be connected to. */
int cimd_address_allowed(const struct config *cfg, const struct sockaddr *sa);
/* 1 when host matches pattern ("*.example.com" = any subdomain). */
int cimd_host_matches(const char *pattern, const char *host);

/* The pure checks of cimd_lookup, exposed for unit tests and fuzzing: the
 * client_id URL (NULL or a fixed reason); max-age of a Cache-Control value
 * (0 for no-store/no-cache, -1 when absent); a fetched document body for
 * client_id (NULL, out filled and *uris the redirect URIs, a new reference;
 * or a fixed reason). */
const char *cimd_check_url(const struct config *cfg, const char *url) WUR;
long cimd_max_age(const char *cache_control);
const char *cimd_check_document(const struct config *cfg, const char *client_id, const char *body, size_t len,
				struct client *out, json_t **uris) WUR;

#endif
