#include "config.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "hdr.h"
#include "jose.h"
#include "jparse.h"
#include "lim.h"
#include "netaddr.h"
#include "uri.h"

/* ---- the schema tables ------------------------------------------------ */

enum ftype {
	F_STRING,   /* char * */
	F_URL,      /* char *, http(s) URL parsed by curl */
	F_INT,      /* long, within [min,max] */
	F_BOOL,     /* int 0/1 (or -1 when unset and def is -1) */
	F_KEY32,    /* uint8_t[32] from base64 */
	F_SECRET,   /* uint8_t[32] SHA-256 of the string; int flag at aux */
	F_LISTEN,   /* char *, "host:port" */
	F_STRLIST,  /* char **, count (size_t) at aux */
	F_HASHLIST, /* uint8_t (*)[32] SHA-256 of each string, count at aux */
	F_OBJECT,   /* nested struct at offset (inline) */
	F_ARRAY,    /* struct sub * array, count at aux */
	F_MAP,      /* object of objects -> array of struct sub, count at aux */
	F_SCOPEMAP, /* object of string lists -> struct cfg_scope_rule *, count at aux */
	F_JWKS,     /* char *, a JWKS object (RFC 7517) kept as compact JSON text */
	F_OBJARRAY, /* as F_ARRAY; a lone object stands for an array of one */
};

struct schema;

struct field {
	const char *name;
	enum ftype type;
	int required;
	size_t off;
	size_t aux;
	long min, max; /* ints: bounds; strings: max length; lists: min/max count */
	long def;
	const struct schema *sub;
	int secret; /* string wiped on free */
	const char *doc;
};

struct schema {
	const char *name;
	size_t size;
	const struct field *fields;
	ssize_t name_off; /* F_MAP entries: where the key goes, or -1 */
};

#define END                                              \
	{                                                \
		NULL, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL \
	}
#define O(type, member) offsetof(type, member)

static const struct field key_fields[] = { { "id", F_STRING, 1, O(struct cfg_key, id), 0, 1, 64, 0, NULL, 0,
					     "key identifier stored beside each ciphertext" },
					   { "key", F_KEY32, 1, O(struct cfg_key, key), 0, 0, 0, 0, NULL, 0,
					     "base64 of 32 random bytes (mcp-broker keygen)" },
					   END };
static const struct schema key_schema = { "encryption key", sizeof(struct cfg_key), key_fields, -1 };

static const struct field client_fields[] = {
	{ "client_id", F_STRING, 1, O(struct cfg_client, client_id), 0, 1, LIM_CLIENT_ID, 0, NULL, 0,
	  "client identifier" },
	{ "client_name", F_STRING, 0, O(struct cfg_client, client_name), 0, 0, LIM_CLIENT_NAME, 0, NULL, 0,
	  "name shown on the consent page" },
	{ "client_secret", F_SECRET, 0, O(struct cfg_client, secret_hash), O(struct cfg_client, has_secret), 16, 512, 0,
	  NULL, 1, "makes the client confidential; stored hashed" },
	{ "redirect_uris", F_STRLIST, 0, O(struct cfg_client, redirect_uris), O(struct cfg_client, n_redirect_uris), 1,
	  LIM_REDIRECT_URIS, 0, NULL, 0, "exact redirect URIs (loopback: any port); none for client_credentials" },
	{ "grant_types", F_STRLIST, 0, O(struct cfg_client, grant_types), O(struct cfg_client, n_grant_types), 1, 2, 0,
	  NULL, 0,
	  "authorization_code and refresh_token (default), or client_credentials alone, or "
	  "urn:ietf:params:oauth:grant-type:jwt-bearer alone (ID-JAGs of trusted_issuers)" },
	{ "resources", F_STRLIST, 0, O(struct cfg_client, resources), O(struct cfg_client, n_resources), 1,
	  LIM_CLIENT_RESOURCES, 0, NULL, 0, "client_credentials: resource paths it may get tokens for" },
	{ "scopes", F_STRLIST, 0, O(struct cfg_client, scopes), O(struct cfg_client, n_scopes), 0, LIM_SCOPES, 0, NULL,
	  0, "client_credentials: scopes it may get (the default of a request naming none)" },
	{ "jwks", F_JWKS, 0, O(struct cfg_client, jwks), 0, 0, LIM_JWKS_BODY, 0, NULL, 0,
	  "private_key_jwt: the client's public signing keys (a JWKS object)" },
	{ "jwks_uri", F_URL, 0, O(struct cfg_client, jwks_uri), 0, 0, 2048, 0, NULL, 0,
	  "private_key_jwt: an https URL serving the client's JWKS" },
	END
};
static const struct schema client_schema = { "client", sizeof(struct cfg_client), client_fields, -1 };

static const struct field upstream_fields[] = {
	{ "preset", F_STRING, 0, O(struct cfg_upstream, preset), 0, 1, 32, 0, NULL, 0,
	  "github, sentry, google or oidc" },
	{ "issuer", F_URL, 0, O(struct cfg_upstream, issuer), 0, 0, 2048, 0, NULL, 0, "OIDC issuer (discovery)" },
	{ "authorize_url", F_URL, 0, O(struct cfg_upstream, authorize_url), 0, 0, 2048, 0, NULL, 0,
	  "overrides the preset" },
	{ "token_url", F_URL, 0, O(struct cfg_upstream, token_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "userinfo_url", F_URL, 0, O(struct cfg_upstream, userinfo_url), 0, 0, 2048, 0, NULL, 0,
	  "overrides the preset" },
	{ "revoke_url", F_URL, 0, O(struct cfg_upstream, revoke_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "timeout_ms", F_INT, 0, O(struct cfg_upstream, timeout_ms), 0, 100, 120000, 10000, NULL, 0,
	  "total timeout of one upstream call" },
	{ "client_id", F_STRING, 1, O(struct cfg_upstream, client_id), 0, 1, 512, 0, NULL, 0,
	  "the broker's client id at the upstream" },
	{ "client_secret", F_STRING, 1, O(struct cfg_upstream, client_secret), 0, 1, 1024, 0, NULL, 1,
	  "the broker's client secret at the upstream" },
	{ "scopes", F_STRLIST, 0, O(struct cfg_upstream, scopes), O(struct cfg_upstream, n_scopes), 0, LIM_SCOPES, 0,
	  NULL, 0, "scopes requested upstream" },
	{ "pkce", F_BOOL, 0, O(struct cfg_upstream, pkce), 0, 0, 0, -1, NULL, 0,
	  "send PKCE S256 upstream (default: preset)" },
	{ "ca_file", F_STRING, 0, O(struct cfg_upstream, ca_file), 0, 1, 4096, 0, NULL, 0,
	  "CA bundle for the upstream's TLS (tests)" },
	{ "client_credentials", F_BOOL, 0, O(struct cfg_upstream, client_credentials), 0, 0, 0, 0, NULL, 0,
	  "the upstream grants client_credentials to the broker's client (needed by machine clients)" },
	END
};
static const struct schema upstream_schema = { "upstream", sizeof(struct cfg_upstream), upstream_fields,
					       O(struct cfg_upstream, name) };

static const struct field inject_fields[] = { { "header", F_STRING, 0, O(struct cfg_inject, header), 0, 1, 128, 0, NULL,
						0, "header injected downstream (default Authorization)" },
					      { "value", F_STRING, 0, O(struct cfg_inject, value), 0, 1, 512, 0, NULL,
						0, "template; {upstream_token} or {upstream_token:NAME} is replaced" },
					      END };
static const struct schema inject_schema = { "inject", sizeof(struct cfg_inject), inject_fields, -1 };

static const struct field resource_fields[] = {
	{ "path", F_STRING, 1, O(struct cfg_resource, path), 0, 1, 256, 0, NULL, 0,
	  "path prefix under public_url, e.g. /mcp" },
	{ "upstream", F_STRING, 1, O(struct cfg_resource, upstream), 0, 1, 64, 0, NULL, 0,
	  "name of an entry in upstreams" },
	{ "downstream", F_URL, 1, O(struct cfg_resource, downstream), 0, 1, 2048, 0, NULL, 0,
	  "URL of the MCP server behind the broker" },
	{ "connect", F_STRLIST, 0, O(struct cfg_resource, connect), O(struct cfg_resource, n_connect), 0,
	  LIM_CONNECT_UPSTREAMS, 0, NULL, 0,
	  "further upstreams (names in upstreams) whose accounts a grant connects in band" },
	{ "inject", F_OBJARRAY, 0, O(struct cfg_resource, inject), O(struct cfg_resource, n_inject), 1,
	  LIM_CONNECT_UPSTREAMS + 1, 0, &inject_schema, 0,
	  "how upstream tokens are injected: one {header, value} or an array of them" },
	{ "scopes", F_SCOPEMAP, 0, O(struct cfg_resource, scopes), O(struct cfg_resource, n_scopes), 0, LIM_SCOPES, 0,
	  NULL, 0, "scope -> tools it allows (\"*\" = any)" },
	{ "default_scopes", F_STRLIST, 0, O(struct cfg_resource, default_scopes),
	  O(struct cfg_resource, n_default_scopes), 0, LIM_SCOPES, 0, NULL, 0,
	  "scopes granted when a request names none" },
	{ "allowed_origins", F_STRLIST, 0, O(struct cfg_resource, allowed_origins),
	  O(struct cfg_resource, n_allowed_origins), 0, 64, 0, NULL, 0,
	  "browser Origins allowed to call the resource" },
	{ "connect_timeout_ms", F_INT, 0, O(struct cfg_resource, connect_timeout_ms), 0, 100, 60000, 5000, NULL, 0,
	  "downstream connect timeout" },
	{ "idle_timeout_ms", F_INT, 0, O(struct cfg_resource, idle_timeout_ms), 0, 1000, 86400000, 300000, NULL, 0,
	  "downstream idle timeout (no bytes for this long)" },
	{ "stream_idle_timeout_ms", F_INT, 0, O(struct cfg_resource, stream_idle_timeout_ms), 0, 0, 86400000, 0, NULL,
	  0, "idle timeout of an SSE answer once its headers arrived (0: none)" },
	{ "identity_headers", F_BOOL, 0, O(struct cfg_resource, identity_headers), 0, 0, 0, 1, NULL, 0,
	  "send X-MCP-User, X-MCP-Client, X-MCP-Scopes downstream" },
	{ "audit_arguments", F_BOOL, 0, O(struct cfg_resource, audit_arguments), 0, 0, 0, 0, NULL, 0,
	  "tool audit records include arguments" },
	{ "client_cert", F_STRING, 0, O(struct cfg_resource, client_cert), 0, 1, 4096, 0, NULL, 0,
	  "PEM client certificate for mutual TLS downstream" },
	{ "client_key", F_STRING, 0, O(struct cfg_resource, client_key), 0, 1, 4096, 0, NULL, 0,
	  "PEM private key for mutual TLS downstream" },
	{ "ca_file", F_STRING, 0, O(struct cfg_resource, ca_file), 0, 1, 4096, 0, NULL, 0,
	  "CA bundle verifying the downstream" },
	{ "response_headers", F_STRLIST, 0, O(struct cfg_resource, response_headers),
	  O(struct cfg_resource, n_response_headers), 0, 32, 0, NULL, 0,
	  "downstream response headers passed to the client beside the built-in allow-list (never Set-Cookie or hop-by-hop)" },
	{ "rate_per_grant", F_INT, 0, O(struct cfg_resource, rate_per_grant), 0, 0, 1000000, 0, NULL, 0,
	  "requests/s per grant (0: limits.proxy_per_grant_per_second)" },
	{ "rate_per_client", F_INT, 0, O(struct cfg_resource, rate_per_client), 0, 0, 1000000, 0, NULL, 0,
	  "requests/s per client across its grants (0 disables)" },
	{ "require_dpop", F_BOOL, 0, O(struct cfg_resource, require_dpop), 0, 0, 0, 0, NULL, 0,
	  "only DPoP-bound access tokens (RFC 9449) are accepted" },
	END
};
static const struct schema resource_schema = { "resource", sizeof(struct cfg_resource), resource_fields, -1 };

static const struct field rs_fields[] = { { "client_id", F_STRING, 1, O(struct cfg_resource_server, client_id), 0, 1,
					    LIM_CLIENT_ID, 0, NULL, 0, "resource server identifier" },
					  { "client_secret", F_SECRET, 1, O(struct cfg_resource_server, secret_hash),
					    O(struct cfg_resource_server, has_secret), 16, 512, 0, NULL, 1,
					    "its secret (HTTP Basic at /introspect); stored hashed" },
					  { "resources", F_STRLIST, 0, O(struct cfg_resource_server, resources),
					    O(struct cfg_resource_server, n_resources), 0, 64, 0, NULL, 0,
					    "resource paths whose tokens it may introspect (default: all)" },
					  END };
static const struct schema rs_schema = { "resource server", sizeof(struct cfg_resource_server), rs_fields, -1 };

#define C(member) O(struct config, member)
static const struct field tokens_fields[] = {
	{ "access_ttl", F_INT, 0, C(tokens.access_ttl) - C(tokens), 0, 30, 86400, 300, NULL, 0,
	  "access token lifetime, seconds" },
	{ "refresh_ttl", F_INT, 0, C(tokens.refresh_ttl) - C(tokens), 0, 300, 31536000, 2592000, NULL, 0,
	  "refresh token lifetime, seconds" },
	{ "code_ttl", F_INT, 0, C(tokens.code_ttl) - C(tokens), 0, 5, 60, 60, NULL, 0,
	  "authorization code lifetime, seconds (<= 60)" },
	{ "refresh_grace", F_INT, 0, C(tokens.refresh_grace) - C(tokens), 0, 0, 300, 10, NULL, 0,
	  "seconds a rotated refresh token replays its successor" },
	{ "upstream_refresh_skew", F_INT, 0, C(tokens.upstream_refresh_skew) - C(tokens), 0, 0, 3600, 60, NULL, 0,
	  "refresh upstream tokens this many seconds before they expire" },
	{ "upstream_lock_wait_ms", F_INT, 0, C(tokens.upstream_lock_wait_ms) - C(tokens), 0, 100, 60000, 15000, NULL, 0,
	  "how long a request waits for another node's upstream refresh" },
	END
};
static const struct schema tokens_schema = { "tokens", sizeof(((struct config *)0)->tokens), tokens_fields, -1 };

static const struct field registration_fields[] = {
	{ "dynamic", F_BOOL, 0, C(registration.dynamic) - C(registration), 0, 0, 0, 1, NULL, 0,
	  "RFC 7591 dynamic registration" },
	{ "client_id_metadata_documents", F_BOOL, 0, C(registration.client_id_metadata_documents) - C(registration), 0,
	  0, 0, 0, NULL, 0, "URL client ids (CIMD)" },
	{ "initial_access_token", F_SECRET, 0, C(registration.initial_access_token_hash) - C(registration),
	  C(registration.has_initial_access_token) - C(registration), 16, 512, 0, NULL, 1,
	  "required bearer token for /register" },
	{ "dynamic_client_ttl_days", F_INT, 0, C(registration.dynamic_client_ttl_days) - C(registration), 0, 0, 3650,
	  30, NULL, 0, "purge dynamic clients that never completed a flow after this many days (0: never)" },
	{ "allow_loopback_redirects", F_BOOL, 0, C(registration.allow_loopback_redirects) - C(registration), 0, 0, 0, 1,
	  NULL, 0, "allow http redirect URIs on 127.0.0.1, [::1], localhost" },
	{ "allow_private_schemes", F_BOOL, 0, C(registration.allow_private_schemes) - C(registration), 0, 0, 0, 1, NULL,
	  0, "allow private-use scheme redirect URIs (cursor://...)" },
	{ "cimd_allow_hosts", F_STRLIST, 0, C(registration.cimd_allow_hosts) - C(registration),
	  C(registration.n_cimd_allow_hosts) - C(registration), 0, 256, 0, NULL, 0,
	  "CIMD client_id hosts allowed (\"*.example.com\"); empty: any" },
	{ "cimd_deny_hosts", F_STRLIST, 0, C(registration.cimd_deny_hosts) - C(registration),
	  C(registration.n_cimd_deny_hosts) - C(registration), 0, 256, 0, NULL, 0,
	  "CIMD client_id hosts refused (wins over allow)" },
	{ "cimd_trusted_hosts", F_STRLIST, 0, C(registration.cimd_trusted_hosts) - C(registration),
	  C(registration.n_cimd_trusted_hosts) - C(registration), 0, 256, 0, NULL, 0,
	  "CIMD client_id hosts the operator vouches for: no unverified warning on the consent page" },
	{ "cimd_allow_private_cidrs", F_STRLIST, 0, C(registration.cimd_allow_private_cidrs) - C(registration),
	  C(registration.n_cimd_allow_private_cidrs) - C(registration), 0, 16, 0, NULL, 0,
	  "testing only: private CIDRs a CIMD fetch may connect to" },
	{ "cimd_resolve", F_STRLIST, 0, C(registration.cimd_resolve) - C(registration),
	  C(registration.n_cimd_resolve) - C(registration), 0, 16, 0, NULL, 0,
	  "testing only: host:port:address pins for CIMD fetches" },
	{ "cimd_ca_file", F_STRING, 0, C(registration.cimd_ca_file) - C(registration), 0, 1, 4096, 0, NULL, 0,
	  "testing only: CA bundle for CIMD fetches" },
	{ "cimd_timeout_ms", F_INT, 0, C(registration.cimd_timeout_ms) - C(registration), 0, 500, 30000, 5000, NULL, 0,
	  "total time of one CIMD fetch" },
	{ "cimd_min_ttl_s", F_INT, 0, C(registration.cimd_min_ttl_s) - C(registration), 0, 0, 86400, 60, NULL, 0,
	  "cache a CIMD document at least this long" },
	{ "cimd_max_ttl_s", F_INT, 0, C(registration.cimd_max_ttl_s) - C(registration), 0, 60, 604800, 86400, NULL, 0,
	  "cache a CIMD document at most this long" },
	END
};
static const struct schema registration_schema = { "registration", sizeof(((struct config *)0)->registration),
						   registration_fields, -1 };

static const struct field limits_fields[] = {
	{ "register_per_ip_per_hour", F_INT, 0, C(limits.register_per_ip_per_hour) - C(limits), 0, 0, 1000000, 20, NULL,
	  0, "0 disables" },
	{ "token_per_client_per_minute", F_INT, 0, C(limits.token_per_client_per_minute) - C(limits), 0, 0, 1000000,
	  600, NULL, 0, "0 disables" },
	{ "proxy_per_grant_per_second", F_INT, 0, C(limits.proxy_per_grant_per_second) - C(limits), 0, 0, 1000000, 0,
	  NULL, 0, "0 disables" },
	{ "token_failures_per_client_address_per_minute", F_INT, 0,
	  C(limits.token_failures_per_client_address_per_minute) - C(limits), 0, 0, 1000000, 30, NULL, 0,
	  "failed client authentications and invalid codes/refresh tokens per (client, address) at /token, /revoke, /introspect; beyond it that pair gets 429 (0 disables)" },
	{ "token_failures_per_address_per_minute", F_INT, 0,
	  C(limits.token_failures_per_address_per_minute) - C(limits), 0, 0, 1000000, 120, NULL, 0,
	  "the same failures per client address across all client ids (IPv6 per /64; 0 disables)" },
	END
};
static const struct field dpop_fields[] = {
	{ "require_nonce", F_BOOL, 0, C(dpop.require_nonce) - C(dpop), 0, 0, 0, 0, NULL, 0,
	  "DPoP proofs must carry a nonce the broker issued (DPoP-Nonce)" },
	{ "nonce_ttl_s", F_INT, 0, C(dpop.nonce_ttl_s) - C(dpop), 0, 10, 3600, 300, NULL, 0,
	  "a nonce is good for one to two of these periods, on every node" },
	{ "proof_max_age_s", F_INT, 0, C(dpop.proof_max_age_s) - C(dpop), 0, 5, 600, 60, NULL, 0,
	  "a proof's iat at most this old (its jti is remembered as long)" },
	END
};
static const struct schema dpop_schema = { "dpop", sizeof(((struct config *)0)->dpop), dpop_fields, -1 };

static const struct schema limits_schema = { "limits", sizeof(((struct config *)0)->limits), limits_fields, -1 };

static const struct field database_fields[] = {
	{ "pool_size", F_INT, 0, C(database.pool_size) - C(database), 0, 1, 256, 8, NULL, 0,
	  "PostgreSQL connections per node" },
	{ "statement_timeout_ms", F_INT, 0, C(database.statement_timeout_ms) - C(database), 0, 100, 600000, 5000, NULL,
	  0, "server-side statement timeout" },
	{ "connect_timeout_s", F_INT, 0, C(database.connect_timeout_s) - C(database), 0, 1, 60, 3, NULL, 0,
	  "connect timeout" },
	END
};
static const struct schema database_schema = { "database", sizeof(((struct config *)0)->database), database_fields,
					       -1 };

static const struct field http_fields[] = {
	{ "threads", F_INT, 0, C(http.threads) - C(http), 0, 1, 256, 8, NULL, 0, "HTTP worker threads" },
	{ "handler_threads", F_INT, 0, C(http.handler_threads) - C(http), 0, 0, LIM_OFFLOAD_THREADS, 16, NULL, 0,
	  "threads for the handlers that block (token, registration, authorization, callback, admin...), "
	  "so that a slow database or upstream never holds a worker's connections; 0: on the workers" },
	{ "max_connections", F_INT, 0, C(http.max_connections) - C(http), 0, 1, 100000, 0, NULL, 0,
	  "concurrent client connections, beyond them 503; default (shown as 0): (hard RLIMIT_NOFILE - 256) / 2, within 64..32768" },
	{ "drain_timeout_s", F_INT, 0, C(http.drain_timeout_s) - C(http), 0, 0, 600, 25, NULL, 0,
	  "SIGTERM: wait this long for in-flight requests" },
	{ "connection_timeout_s", F_INT, 0, C(http.connection_timeout_s) - C(http), 0, 1, 3600, 60, NULL, 0,
	  "idle client connection timeout" },
	{ "max_body_bytes_in_flight", F_INT, 0, C(http.max_body_bytes_in_flight) - C(http), 0, 65536, 1L << 34,
	  64L * 1024 * 1024, NULL, 0,
	  "request body bytes buffered on the node in total; beyond it new bodies get 503" },
	{ "trusted_proxies", F_STRLIST, 0, C(http.trusted_proxies) - C(http), C(http.n_trusted_proxies) - C(http), 0,
	  64, 0, NULL, 0, "load balancer CIDRs whose X-Forwarded-For names the client" },
	END
};
static const struct schema http_schema = { "http", sizeof(((struct config *)0)->http), http_fields, -1 };

static const struct field log_fields[] = { { "level", F_STRING, 0, C(log.level) - C(log), 0, 1, 8, 0, NULL, 0,
					     "debug, info, warn or error (default info)" },
					   END };
static const struct schema log_schema = { "log", sizeof(((struct config *)0)->log), log_fields, -1 };

static const struct field ti_fields[] = {
	{ "issuer", F_URL, 1, O(struct cfg_trusted_issuer, issuer), 0, 1, 1024, 0, NULL, 0,
	  "the enterprise IdP's issuer (the ID-JAG's iss, exactly)" },
	{ "jwks_uri", F_URL, 1, O(struct cfg_trusted_issuer, jwks_uri), 0, 1, 1024, 0, NULL, 0,
	  "https URL of its signing keys (fetched and cached like a client's jwks_uri)" },
	{ "subject_claim", F_STRING, 0, O(struct cfg_trusted_issuer, subject_claim), 0, 1, 64, 0, NULL, 0,
	  "the claim naming the user (default sub)" },
	{ "login_upstream", F_STRING, 1, O(struct cfg_trusted_issuer, login_upstream), 0, 1, 64, 0, NULL, 0,
	  "the upstream (at the same IdP) its users sign in with to connect accounts in band" },
	END
};
static const struct schema ti_schema = { "trusted issuer", sizeof(struct cfg_trusted_issuer), ti_fields, -1 };

static const struct field config_fields[] = {
	{ "listen", F_LISTEN, 1, C(listen), 0, 1, 128, 0, NULL, 0, "address:port to listen on" },
	{ "public_url", F_URL, 1, C(public_url), 0, 1, 1024, 0, NULL, 0, "external https URL (the OAuth issuer)" },
	{ "database_url", F_STRING, 1, C(database_url), 0, 1, 4096, 0, NULL, 1, "libpq connection string or URI" },
	{ "encryption_keys", F_ARRAY, 1, C(encryption_keys), C(n_encryption_keys), 1, 16, 0, &key_schema, 0,
	  "first encrypts, all decrypt" },
	{ "cookie_secret", F_KEY32, 1, C(cookie_secret), 0, 0, 0, 0, NULL, 0,
	  "base64 of 32 bytes signing cookies and state" },
	{ "admin_tokens", F_HASHLIST, 0, C(admin_token_hashes), C(n_admin_tokens), 0, 16, 0, NULL, 1,
	  "bearer tokens of the operator API (>= 16 chars)" },
	{ "tokens", F_OBJECT, 0, C(tokens), 0, 0, 0, 0, &tokens_schema, 0, "token lifetimes" },
	{ "registration", F_OBJECT, 0, C(registration), 0, 0, 0, 0, &registration_schema, 0,
	  "client registration policy" },
	{ "clients", F_ARRAY, 0, C(clients), C(n_clients), 0, 1000, 0, &client_schema, 0, "pre-registered clients" },
	{ "upstreams", F_MAP, 0, C(upstreams), C(n_upstreams), 0, 64, 0, &upstream_schema, 0,
	  "upstream identity providers by name" },
	{ "resources", F_ARRAY, 0, C(resources), C(n_resources), 0, 64, 0, &resource_schema, 0,
	  "protected MCP resources" },
	{ "resource_servers", F_ARRAY, 0, C(resource_servers), C(n_resource_servers), 0, 64, 0, &rs_schema, 0,
	  "credentials allowed to call /introspect" },
	{ "trusted_issuers", F_ARRAY, 0, C(trusted_issuers), C(n_trusted_issuers), 0, 16, 0, &ti_schema, 0,
	  "enterprise IdPs whose ID-JAGs /token accepts (jwt-bearer grant)" },
	{ "limits", F_OBJECT, 0, C(limits), 0, 0, 0, 0, &limits_schema, 0, "rate limits" },
	{ "dpop", F_OBJECT, 0, C(dpop), 0, 0, 0, 0, &dpop_schema, 0, "DPoP proofs (RFC 9449)" },
	{ "database", F_OBJECT, 0, C(database), 0, 0, 0, 0, &database_schema, 0, "PostgreSQL pool" },
	{ "http", F_OBJECT, 0, C(http), 0, 0, 0, 0, &http_schema, 0, "HTTP server" },
	{ "log", F_OBJECT, 0, C(log), 0, 0, 0, 0, &log_schema, 0, "logging" },
	{ "housekeeping_interval_s", F_INT, 0, C(housekeeping_interval_s), 0, 1, 86400, 60, NULL, 0,
	  "seconds between purges of expired rows" },
	END
};
static const struct schema config_schema = { "config", sizeof(struct config), config_fields, -1 };

/* ---- errors ------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static void cfg_err(struct cfg_errors *e, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char **n = realloc(e->msg, (e->n + 1) * sizeof(*n));
	if (!n) {
		e->lost++;
		return;
	}
	e->msg = n;
	size_t len = strlen(path) + strlen(msg) + 3;
	char *line = malloc(len);
	if (!line) {
		e->lost++;
		return;
	}
	snprintf(line, len, "%s: %s", path, msg);
	e->msg[e->n++] = line;
}

void config_errors_free(struct cfg_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msg[i]);
	free(e->msg);
	e->msg = NULL;
	e->n = 0;
	e->lost = 0;
}

/* ---- environment expansion --------------------------------------------- */

/* The variable name of "${name}" at d into name (LIM_ENV_NAME + 1 bytes);
 * *end at its closing brace. -1 with why set when malformed. */
static int env_name(const char *d, char *name, const char **end, char *why, size_t whycap)
{
	*end = strchr(d + 2, '}');
	if (!*end) {
		snprintf(why, whycap, "unterminated ${ in string");
		return -1;
	}
	size_t n = (size_t)(*end - d - 2);
	int ok = n > 0 && n <= LIM_ENV_NAME;
	for (size_t i = 0; ok && i < n; i++) {
		char c = d[2 + i];
		ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
	}
	if (!ok) {
		snprintf(why, whycap, "bad environment variable name in ${...}");
		return -1;
	}
	memcpy(name, d + 2, n);
	name[n] = '\0';
	return 0;
}

int config_expand_env(const char *in, char **out, char *why, size_t whycap)
{
	int rc = -1;
	struct buf b;
	buf_init(&b, LIM_CONFIG_STRING);
	b.secret = 1;
	*out = NULL;
	for (const char *p = in; *p;) {
		const char *d = strstr(p, "${"), *end;
		char name[LIM_ENV_NAME + 1];
		if (!d) {
			if (buf_adds(&b, p) < 0)
				goto toolong;
			break;
		}
		if (buf_add(&b, p, (size_t)(d - p)) < 0)
			goto toolong;
		if (env_name(d, name, &end, why, whycap) < 0)
			goto out;
		const char *val = getenv(name);
		if (!val) {
			snprintf(why, whycap, "environment variable %s is not set", name);
			goto out;
		}
		if (buf_adds(&b, val) < 0)
			goto toolong;
		p = end + 1;
	}
	*out = buf_take(&b, NULL);
	if (!*out) {
		snprintf(why, whycap, "out of memory");
		goto out;
	}
	rc = 0;
	goto out;
toolong:
	snprintf(why, whycap, "string too long (at most %d bytes, after ${...} expansion)", LIM_CONFIG_STRING);
out:
	buf_free(&b);
	return rc;
}

/* ---- validators -------------------------------------------------------- */

static int url_ok(const char *s, const char **why)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *frag = NULL;
	int ok = 0;
	if (!u) {
		*why = "out of memory";
		return 0;
	}
	if (curl_url_set(u, CURLUPART_URL, s, 0) != CURLUE_OK) {
		*why = "expected an absolute http(s) URL";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
		*why = "expected an http or https URL";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
		*why = "expected a URL with a host";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK) {
		*why = "URL must not have a fragment";
		goto out;
	}
	ok = 1;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(frag);
	curl_url_cleanup(u);
	return ok;
}

static int listen_ok(const char *s, char *host, size_t hostcap, int *port, const char **why)
{
	const char *colon;
	size_t hlen;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':') {
			*why = "expected [ipv6]:port";
			return 0;
		}
		hlen = (size_t)(rb - s - 1);
		if (hlen >= hostcap) {
			*why = "address too long";
			return 0;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		colon = rb + 1;
		unsigned char a6[16];
		if (inet_pton(AF_INET6, host, a6) != 1) {
			*why = "expected an IPv6 address inside [...]";
			return 0;
		}
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			*why = "expected host:port";
			return 0;
		}
		hlen = (size_t)(colon - s);
		if (hlen == 0 || hlen >= hostcap) {
			*why = "expected host:port";
			return 0;
		}
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		unsigned char a4[4];
		if (strcmp(host, "localhost") == 0)
			snprintf(host, hostcap, "127.0.0.1");
		else if (inet_pton(AF_INET, host, a4) != 1) {
			*why = "expected an IPv4 address, [IPv6] or localhost before the port";
			return 0;
		}
	}
	const char *p = colon + 1;
	if (!*p || strlen(p) > 5) {
		*why = "expected a port number 0-65535";
		return 0;
	}
	long v = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9') {
			*why = "expected a port number 0-65535";
			return 0;
		}
		v = v * 10 + (*p - '0');
	}
	if (v > 65535) {
		*why = "expected a port number 0-65535";
		return 0;
	}
	*port = (int)v;
	return 1;
}

/* ---- the walker: one handler per field type ------------------------------ */

/* Reads JSON value v for field f of the struct at base (path names v in
 * errors); f's storage is left unset after an error is reported. */
typedef void (*walk_fn)(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e);
/* Frees what walk stored for f in the struct at base. */
typedef void (*release_fn)(const struct field *f, char *base);

struct ftype_ops {
	const char *expected; /* "expected %s" in errors and in config_describe */
	walk_fn walk;
	release_fn release;
};

static const struct ftype_ops *ops_of(enum ftype t);

static void walk_object(const json_t *j, const struct schema *s, void *obj, const char *path, struct cfg_errors *e);
static void free_object(const struct schema *s, void *obj);

static const char *type_name(enum ftype t)
{
	return ops_of(t)->expected;
}

/* Frees a string that may hold a secret. */
static void free_string(char *s)
{
	if (s)
		crypto_wipe(s, strlen(s));
	free(s);
}

/* Expands and length-checks one string; NULL after reporting an error.
 * (No NUL inside: jansson refuses \u0000 without JSON_ALLOW_NUL.) */
static char *take_string(const json_t *v, const struct field *f, const char *path, struct cfg_errors *e)
{
	if (!json_is_string(v)) {
		cfg_err(e, path, "expected a string");
		return NULL;
	}
	char why[CONFIG_WHY_LEN];
	char *s;
	if (config_expand_env(json_string_value(v), &s, why, sizeof(why)) < 0) {
		cfg_err(e, path, "%s", why);
		return NULL;
	}
	size_t n = strlen(s);
	if (f->max && n > (size_t)f->max) {
		cfg_err(e, path, "expected at most %ld characters", f->max);
	} else if ((long)n < f->min) {
		cfg_err(e, path, f->min == 1 ? "expected a non-empty string" : "expected at least %ld characters",
			f->min);
	} else {
		return s;
	}
	free_string(s);
	return NULL;
}

static void walk_string(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	char *s = take_string(v, f, path, e);
	if (s)
		*(char **)(base + f->off) = s;
}

static void walk_url(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	const char *why = NULL;
	char *s = take_string(v, f, path, e);
	if (!s)
		return;
	if (!url_ok(s, &why)) {
		cfg_err(e, path, "%s", why);
		free(s);
		return;
	}
	*(char **)(base + f->off) = s;
}

/* Only the top-level "listen": host and port go to struct config itself. */
static void walk_listen(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	const char *why = NULL;
	struct config *c = (struct config *)base;
	char *s = take_string(v, f, path, e);
	if (!s)
		return;
	if (!listen_ok(s, c->listen_host, sizeof(c->listen_host), &c->listen_port, &why)) {
		cfg_err(e, path, "%s", why);
		free(s);
		return;
	}
	*(char **)(base + f->off) = s;
}

static void walk_int(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_integer(v)) {
		cfg_err(e, path, "expected an integer");
		return;
	}
	json_int_t n = json_integer_value(v);
	if (n < f->min || n > f->max) {
		cfg_err(e, path, "expected an integer between %ld and %ld", f->min, f->max);
		return;
	}
	*(long *)(base + f->off) = (long)n;
}

static void walk_bool(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_boolean(v)) {
		cfg_err(e, path, "expected true or false");
		return;
	}
	*(int *)(base + f->off) = json_is_true(v);
}

static void walk_key32(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	char *s = take_string(v, f, path, e);
	if (!s)
		return;
	uint8_t tmp[64];
	long n = crypto_b64_decode(s, strlen(s), tmp, sizeof(tmp));
	if (n != CRYPTO_KEY_LEN)
		cfg_err(e, path, "expected base64 of exactly 32 bytes (mcp-broker keygen)");
	else
		memcpy(base + f->off, tmp, CRYPTO_KEY_LEN);
	crypto_wipe(tmp, sizeof(tmp));
	free_string(s);
}

static void walk_secret(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	char *s = take_string(v, f, path, e);
	if (!s)
		return;
	crypto_sha256(s, strlen(s), (uint8_t *)(base + f->off));
	*(int *)(base + f->aux) = 1;
	free_string(s);
}

/* 1 when jwk is a public key some supported algorithm can use. */
static int jwk_usable(const json_t *jwk)
{
	static const enum jose_alg algs[] = { JOSE_RS256, JOSE_PS256, JOSE_ES256, JOSE_EDDSA };
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		EVP_PKEY *k = NULL;
		if (jose_jwk_key(jwk, algs[i], &k) == 0) {
			EVP_PKEY_free(k);
			return 1;
		}
	}
	return 0;
}

static void walk_jwks(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	const json_t *keys = json_object_get(v, "keys");
	size_t n = json_array_size(keys);
	if (!json_is_object(v) || !json_is_array(keys) || n == 0 || n > LIM_JWKS_KEYS) {
		cfg_err(e, path, "expected a JWKS object: {\"keys\": [1..%d public keys]}", LIM_JWKS_KEYS);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (!jwk_usable(json_array_get(keys, i))) {
			cfg_err(e, path,
				"keys[%zu]: expected a public signing key: RSA (2048..8192 bits), EC P-256 or OKP Ed25519, "
				"its alg and use (when given) fitting, no private part",
				i);
			return;
		}
	char *s = json_dumps(v, JSON_COMPACT);
	if (!s) {
		cfg_err(e, path, "out of memory");
		return;
	}
	if (strlen(s) > (size_t)f->max) {
		cfg_err(e, path, "expected at most %ld bytes", f->max);
		free(s);
		return;
	}
	*(char **)(base + f->off) = s;
}

/* The array of a list field, checked against f's count bounds, with room for
 * every entry of elem bytes (stored at once, count 0); NULL after an error. */
static void *list_alloc(size_t n, size_t elem, const struct field *f, char *base, const char *path,
			struct cfg_errors *e)
{
	if ((long)n < f->min || (f->max && (long)n > f->max)) {
		cfg_err(e, path, "expected between %ld and %ld entries", f->min, f->max);
		return NULL;
	}
	void *arr = calloc(n ? n : 1, elem);
	if (!arr) {
		cfg_err(e, path, "out of memory");
		return NULL;
	}
	*(void **)(base + f->off) = arr;
	*(size_t *)(base + f->aux) = 0;
	return arr;
}

/* Each string of array v, checked as a field of [min, max] characters, to
 * keep(s, i, arr), which takes it; the entries kept are counted at f->aux. */
static void walk_strings(const json_t *v, const struct field *f, char *base, const char *path, long min, long max,
			 void (*keep)(char *s, size_t i, void *arr), void *arr, struct cfg_errors *e)
{
	char sub[512];
	struct field item = *f;
	item.min = min;
	item.max = max;
	size_t got = 0;
	for (size_t i = 0; i < json_array_size(v); i++) {
		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		char *s = take_string(json_array_get(v, i), &item, sub, e);
		if (s)
			keep(s, got++, arr);
	}
	*(size_t *)(base + f->aux) = got;
}

static void keep_string(char *s, size_t i, void *arr)
{
	((char **)arr)[i] = s;
}

static void keep_hash(char *s, size_t i, void *arr)
{
	crypto_sha256(s, strlen(s), (uint8_t *)arr + i * CRYPTO_SHA256_LEN);
	free_string(s);
}

static void walk_strlist(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_array(v)) {
		cfg_err(e, path, "expected an array of strings");
		return;
	}
	void *arr = list_alloc(json_array_size(v), sizeof(char *), f, base, path, e);
	if (arr)
		walk_strings(v, f, base, path, 1, LIM_REDIRECT_URI, keep_string, arr, e);
}

/* Secrets (admin tokens) kept as their SHA-256 only. */
static void walk_hashlist(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_array(v)) {
		cfg_err(e, path, "expected an array of strings");
		return;
	}
	void *arr = list_alloc(json_array_size(v), CRYPTO_SHA256_LEN, f, base, path, e);
	if (arr)
		walk_strings(v, f, base, path, 16, 512, keep_hash, arr, e);
}

static void walk_nested(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_object(v)) {
		cfg_err(e, path, "expected an object");
		return;
	}
	walk_object(v, f->sub, base + f->off, path, e);
}

/* Entry n of an array or map field: an object walked against f->sub. */
static void walk_entry(const json_t *item, const struct field *f, char *elem, const char *sub, struct cfg_errors *e)
{
	if (!json_is_object(item))
		cfg_err(e, sub, "expected an object");
	else
		walk_object(item, f->sub, elem, sub, e);
}

static void walk_array(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_array(v)) {
		cfg_err(e, path, "expected an array of objects");
		return;
	}
	size_t n = json_array_size(v);
	char *arr = list_alloc(n, f->sub->size, f, base, path, e);
	if (!arr)
		return;
	*(size_t *)(base + f->aux) = n;
	char sub[512];
	for (size_t i = 0; i < n; i++) {
		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		walk_entry(json_array_get(v, i), f, arr + i * f->sub->size, sub, e);
	}
}

/* An array of objects, or one object standing for an array of one (its
 * errors name the key itself). */
static void walk_objarray(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (json_is_array(v)) {
		walk_array(v, f, base, path, e);
		return;
	}
	if (!json_is_object(v)) {
		cfg_err(e, path, "expected an object or an array of objects");
		return;
	}
	char *arr = list_alloc(1, f->sub->size, f, base, path, e);
	if (!arr)
		return;
	*(size_t *)(base + f->aux) = 1;
	walk_entry(v, f, arr, path, e);
}

/* An object of objects: each entry's key goes to the struct's name_off. */
static void walk_map(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	if (!json_is_object(v)) {
		cfg_err(e, path, "expected an object");
		return;
	}
	size_t n = json_object_size(v);
	char *arr = list_alloc(n, f->sub->size, f, base, path, e);
	if (!arr)
		return;
	*(size_t *)(base + f->aux) = n;
	char sub[512];
	size_t i = 0;
	const char *k;
	json_t *item;
	json_object_foreach((json_t *)v, k, item)
	{
		snprintf(sub, sizeof(sub), "%s.%s", path, k);
		char *elem = arr + i++ * f->sub->size;
		char *name = strdup(k);
		*(char **)(elem + f->sub->name_off) = name;
		if (!name)
			cfg_err(e, sub, "out of memory");
		walk_entry(item, f, elem, sub, e);
	}
}

/* scope -> [tools]: an object of string lists. */
static void walk_scopemap(const json_t *v, const struct field *f, char *base, const char *path, struct cfg_errors *e)
{
	static const struct field tools = {
		"tools", F_STRLIST, 0,   O(struct cfg_scope_rule, tools), O(struct cfg_scope_rule, n_tools), 0, 1000, 0,
		NULL,    0,         NULL
	};
	if (!json_is_object(v)) {
		cfg_err(e, path, "expected an object of scope -> [tools]");
		return;
	}
	size_t n = json_object_size(v);
	if (f->max && (long)n > f->max) {
		cfg_err(e, path, "expected at most %ld scopes", f->max);
		return;
	}
	struct cfg_scope_rule *rules = calloc(n ? n : 1, sizeof(*rules));
	if (!rules) {
		cfg_err(e, path, "out of memory");
		return;
	}
	*(void **)(base + f->off) = rules;
	*(size_t *)(base + f->aux) = n;
	char sub[512];
	const char *k;
	json_t *item;
	size_t i = 0;
	json_object_foreach((json_t *)v, k, item)
	{
		snprintf(sub, sizeof(sub), "%s.%s", path, k);
		rules[i].scope = strdup(k);
		if (!rules[i].scope)
			cfg_err(e, sub, "out of memory");
		walk_strlist(item, &tools, (char *)&rules[i], sub, e);
		i++;
	}
}

static void release_string(const struct field *f, char *base)
{
	char **at = (char **)(base + f->off);
	if (f->secret)
		free_string(*at);
	else
		free(*at);
	*at = NULL;
}

static void release_strlist(const struct field *f, char *base)
{
	char **l = *(char ***)(base + f->off);
	size_t n = *(size_t *)(base + f->aux);
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
	*(char ***)(base + f->off) = NULL;
}

static void release_hashlist(const struct field *f, char *base)
{
	void *l = *(void **)(base + f->off);
	size_t n = *(size_t *)(base + f->aux);
	if (l)
		crypto_wipe(l, n * CRYPTO_SHA256_LEN);
	free(l);
	*(void **)(base + f->off) = NULL;
}

static void release_nested(const struct field *f, char *base)
{
	free_object(f->sub, base + f->off);
}

static void release_entries(const struct field *f, char *base)
{
	char *arr = *(char **)(base + f->off);
	size_t n = *(size_t *)(base + f->aux);
	for (size_t i = 0; arr && i < n; i++) {
		char *elem = arr + i * f->sub->size;
		if (f->sub->name_off >= 0)
			free(*(char **)(elem + f->sub->name_off));
		free_object(f->sub, elem);
	}
	if (arr)
		crypto_wipe(arr, n * f->sub->size);
	free(arr);
	*(char **)(base + f->off) = NULL;
}

static void release_scopemap(const struct field *f, char *base)
{
	struct cfg_scope_rule *r = *(struct cfg_scope_rule **)(base + f->off);
	size_t n = *(size_t *)(base + f->aux);
	for (size_t i = 0; r && i < n; i++) {
		free(r[i].scope);
		for (size_t t = 0; t < r[i].n_tools; t++)
			free(r[i].tools[t]);
		free(r[i].tools);
	}
	free(r);
	*(void **)(base + f->off) = NULL;
}

/* Values held inline (numbers, flags, hashed secrets) need no freeing. */
static void release_inline(const struct field *f, char *base)
{
	(void)f;
	(void)base;
}

static const struct ftype_ops *ops_of(enum ftype t)
{
	static const struct ftype_ops ops[] = {
		[F_STRING] = { "a string", walk_string, release_string },
		[F_URL] = { "a string", walk_url, release_string },
		[F_INT] = { "an integer", walk_int, release_inline },
		[F_BOOL] = { "true or false", walk_bool, release_inline },
		[F_KEY32] = { "a string", walk_key32, release_inline },
		[F_SECRET] = { "a string", walk_secret, release_inline },
		[F_LISTEN] = { "a string", walk_listen, release_string },
		[F_STRLIST] = { "an array of strings", walk_strlist, release_strlist },
		[F_HASHLIST] = { "an array of strings", walk_hashlist, release_hashlist },
		[F_OBJECT] = { "an object", walk_nested, release_nested },
		[F_ARRAY] = { "an array of objects", walk_array, release_entries },
		[F_MAP] = { "an object", walk_map, release_entries },
		[F_SCOPEMAP] = { "an object", walk_scopemap, release_scopemap },
		[F_JWKS] = { "a JWKS object", walk_jwks, release_string },
		[F_OBJARRAY] = { "an object or an array of objects", walk_objarray, release_entries },
	};
	return &ops[t];
}

static void apply_defaults(const struct schema *s, void *obj)
{
	for (const struct field *f = s->fields; f->name; f++) {
		if (f->type == F_INT)
			*(long *)((char *)obj + f->off) = f->def;
		else if (f->type == F_BOOL)
			*(int *)((char *)obj + f->off) = (int)f->def;
		else if (f->type == F_OBJECT)
			apply_defaults(f->sub, (char *)obj + f->off);
	}
}

static void walk_object(const json_t *j, const struct schema *s, void *obj, const char *path, struct cfg_errors *e)
{
	char sub[512];
	const char *k;
	json_t *v;
	apply_defaults(s, obj);
	json_object_foreach((json_t *)j, k, v)
	{
		const struct field *f;
		for (f = s->fields; f->name; f++)
			if (strcmp(f->name, k) == 0)
				break;
		snprintf(sub, sizeof(sub), "%s.%s", path, k);
		if (!f->name) {
			cfg_err(e, sub, "unknown key in %s", s->name);
			continue;
		}
		if (json_is_null(v)) {
			cfg_err(e, sub, "expected %s, got null", type_name(f->type));
			continue;
		}
		ops_of(f->type)->walk(v, f, obj, sub, e);
	}
	for (const struct field *f = s->fields; f->name; f++) {
		if (f->required && !json_object_get(j, f->name)) {
			snprintf(sub, sizeof(sub), "%s.%s", path, f->name);
			cfg_err(e, sub, "missing required key (%s)", type_name(f->type));
		}
	}
}

static void free_object(const struct schema *s, void *obj)
{
	for (const struct field *f = s->fields; f->name; f++)
		ops_of(f->type)->release(f, obj);
}

/* ---- cross-field rules ------------------------------------------------- */

static int host_is_loopback(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	int loop = 0;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
		loop = strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0 ||
		       strcasecmp(host, "localhost") == 0;
	curl_free(host);
	curl_url_cleanup(u);
	return loop;
}

static const char *const known_presets[] = { "github", "sentry", "google", "oidc" };

static void check_public_url(struct config *c, struct cfg_errors *e)
{
	if (!c->public_url)
		return;
	if (strncasecmp(c->public_url, "https://", 8) != 0 && !host_is_loopback(c->public_url))
		cfg_err(e, "$.public_url", "expected an https URL (http only for a loopback host)");
	if (strchr(c->public_url, '?'))
		cfg_err(e, "$.public_url", "must not have a query");
	const char *upath = strchr(c->public_url + 8, '/');
	if (upath && strspn(upath, "/") != strlen(upath))
		cfg_err(e, "$.public_url", "must be an origin without a path (https://host[:port])");
	/* One canonical form: no trailing slash, so issuer == PRM entry. */
	size_t n = strlen(c->public_url);
	while (n > 8 && c->public_url[n - 1] == '/')
		c->public_url[--n] = '\0';
}

static void check_log(const struct config *c, struct cfg_errors *e)
{
	static const char *const lv[] = { "debug", "info", "warn", "error" };
	if (!c->log.level)
		return;
	int ok = 0;
	for (size_t i = 0; i < 4; i++)
		ok |= strcmp(c->log.level, lv[i]) == 0;
	if (!ok)
		cfg_err(e, "$.log.level", "expected one of debug, info, warn, error");
}

static void check_keys(const struct config *c, struct cfg_errors *e)
{
	char path[256];
	for (size_t i = 0; i < c->n_encryption_keys; i++)
		for (size_t j = 0; j < i; j++)
			if (c->encryption_keys[i].id && c->encryption_keys[j].id &&
			    strcmp(c->encryption_keys[i].id, c->encryption_keys[j].id) == 0) {
				snprintf(path, sizeof(path), "$.encryption_keys[%zu].id", i);
				cfg_err(e, path, "duplicate key id");
			}
}

/* A client_credentials client: confidential (a client_secret, or its keys
 * for private_key_jwt), and its resources[] and scopes[]: each resource a
 * configured path whose upstream grants client credentials (GitHub has no
 * such grant), each scope valid. */
static void check_machine_client(const struct config *c, const struct cfg_client *cl, const char *path,
				 struct cfg_errors *e)
{
	if (!cl->has_secret && !cl->jwks && !cl->jwks_uri)
		cfg_err(e, path,
			"client_credentials needs a client_secret, or jwks or jwks_uri for private_key_jwt "
			"(a confidential client)");
	if (cl->n_redirect_uris)
		cfg_err(e, path, "a client_credentials client has no redirect_uris");
	if (!cl->n_resources)
		cfg_err(e, path, "client_credentials needs resources (the resource paths it may get tokens for)");
	for (size_t i = 0; i < cl->n_resources; i++) {
		const struct cfg_resource *r = NULL;
		for (size_t k = 0; k < c->n_resources; k++)
			if (c->resources[k].path && strcmp(c->resources[k].path, cl->resources[i]) == 0)
				r = &c->resources[k];
		const struct cfg_upstream *up = r && r->upstream ? config_upstream(c, r->upstream) : NULL;
		if (!r)
			cfg_err(e, path, "resources: no resource with path \"%s\"", cl->resources[i]);
		else if (up && up->preset && strcmp(up->preset, "github") == 0)
			cfg_err(e, path,
				"resources: the upstream of \"%s\" is GitHub, which has no client_credentials grant",
				cl->resources[i]);
		else if (up && !up->client_credentials)
			cfg_err(e, path, "resources: the upstream of \"%s\" needs \"client_credentials\": true",
				cl->resources[i]);
	}
	for (size_t i = 0; i < cl->n_scopes; i++) {
		int found = 0;
		for (size_t k = 0; k < c->n_resources; k++)
			for (size_t j = 0; j < cl->n_resources; j++)
				if (c->resources[k].path && strcmp(c->resources[k].path, cl->resources[j]) == 0)
					for (size_t s = 0; s < c->resources[k].n_scopes; s++)
						found |= strcmp(c->resources[k].scopes[s].scope, cl->scopes[i]) == 0;
		if (!found)
			cfg_err(e, path, "scopes: \"%s\" is not a scope of any of its resources", cl->scopes[i]);
	}
}

/* An ID-JAG client: confidential (the ID-JAG names the client, and only a
 * client that authenticates can be held to it), no redirect URIs. */
static void check_jwt_bearer_client(const struct config *c, const struct cfg_client *cl, const char *path,
				    struct cfg_errors *e)
{
	if (!cl->has_secret && !cl->jwks && !cl->jwks_uri)
		cfg_err(e, path,
			"the jwt-bearer grant needs a client_secret, or jwks or jwks_uri for private_key_jwt "
			"(a confidential client)");
	if (cl->n_redirect_uris || cl->n_resources || cl->n_scopes)
		cfg_err(e, path, "a jwt-bearer client has no redirect_uris, resources or scopes");
	if (!c->n_trusted_issuers)
		cfg_err(e, path, "the jwt-bearer grant needs trusted_issuers");
}

/* grant_types: absent (the code flow), a subset of authorization_code and
 * refresh_token with the first, client_credentials alone, or jwt-bearer
 * alone. */
static void check_client(const struct config *c, struct cfg_client *cl, const char *path, struct cfg_errors *e)
{
	char uris_path[300];
	int code = cl->n_grant_types == 0, machine = 0, jag = 0, bad = 0;
	snprintf(uris_path, sizeof(uris_path), "%s.redirect_uris", path);
	for (size_t i = 0; i < cl->n_grant_types; i++) {
		const char *g = cl->grant_types[i];
		code |= strcmp(g, "authorization_code") == 0;
		machine |= strcmp(g, "client_credentials") == 0;
		jag |= strcmp(g, GRANT_TYPE_JWT_BEARER) == 0;
		bad |= strcmp(g, "authorization_code") != 0 && strcmp(g, "refresh_token") != 0 &&
		       strcmp(g, "client_credentials") != 0 && strcmp(g, GRANT_TYPE_JWT_BEARER) != 0;
	}
	cl->client_credentials = machine;
	cl->jwt_bearer = jag;
	if (bad || ((machine || jag) && cl->n_grant_types != 1) || (!machine && !jag && !code))
		cfg_err(e, path,
			"grant_types: expected [\"authorization_code\", \"refresh_token\"], "
			"[\"client_credentials\"] or [\"" GRANT_TYPE_JWT_BEARER "\"]");
	else if (machine)
		check_machine_client(c, cl, path, e);
	else if (jag)
		check_jwt_bearer_client(c, cl, path, e);
	else if (!cl->n_redirect_uris)
		cfg_err(e, uris_path, "missing required key");
	else if (cl->n_resources || cl->n_scopes)
		cfg_err(e, path, "resources and scopes are for client_credentials clients");
}

/* trusted_issuers: each issuer once, keys over https, a login upstream. */
static void check_trusted_issuers(struct config *c, struct cfg_errors *e)
{
	char path[64];
	for (size_t i = 0; i < c->n_trusted_issuers; i++) {
		struct cfg_trusted_issuer *t = &c->trusted_issuers[i];
		snprintf(path, sizeof(path), "$.trusted_issuers[%zu]", i);
		if (t->jwks_uri && (strncmp(t->jwks_uri, "https://", 8) != 0 || strpbrk(t->jwks_uri, "?#")))
			cfg_err(e, path, "jwks_uri: expected an https URL without query or fragment");
		/* The identity leg of a connect (and the account page) proves an
		 * enterprise user by the OIDC sub of a sign-in at the issuer
		 * itself: login_upstream must be that IdP, and the subject sub. */
		const struct cfg_upstream *lu = t->login_upstream ? config_upstream(c, t->login_upstream) : NULL;
		if (t->login_upstream && !lu)
			cfg_err(e, path, "login_upstream: no upstream named \"%s\"", t->login_upstream);
		else if (lu && t->issuer && (!lu->issuer || strcmp(lu->issuer, t->issuer) != 0))
			cfg_err(e, path,
				"login_upstream: \"%s\" must be the OIDC upstream whose issuer is this issuer (%s)",
				t->login_upstream, t->issuer);
		if (!t->subject_claim && !(t->subject_claim = strdup("sub")))
			cfg_err(e, path, "out of memory");
		else if (t->subject_claim && strcmp(t->subject_claim, "sub") != 0)
			cfg_err(e, path,
				"subject_claim: only \"sub\": the login upstream's sign-in proves the user by sub");
		for (size_t j = 0; j < i && t->issuer; j++)
			if (c->trusted_issuers[j].issuer && strcmp(c->trusted_issuers[j].issuer, t->issuer) == 0)
				cfg_err(e, path, "issuer: listed twice");
	}
}

/* private_key_jwt: one source of keys, https, and no secret beside it (a
 * client authenticates one way). */
static void check_client_keys(const struct cfg_client *cl, size_t i, struct cfg_errors *e)
{
	char path[256];
	snprintf(path, sizeof(path), "$.clients[%zu]", i);
	if (cl->jwks && cl->jwks_uri)
		cfg_err(e, path, "set jwks or jwks_uri, not both");
	if ((cl->jwks || cl->jwks_uri) && cl->has_secret)
		cfg_err(e, path,
			"a client with jwks or jwks_uri authenticates with private_key_jwt: drop client_secret");
	if (cl->jwks_uri && strncasecmp(cl->jwks_uri, "https://", 8) != 0) {
		snprintf(path, sizeof(path), "$.clients[%zu].jwks_uri", i);
		cfg_err(e, path, "expected an https URL");
	}
}

static void check_clients(struct config *c, struct cfg_errors *e)
{
	char path[256];
	for (size_t i = 0; i < c->n_clients; i++) {
		snprintf(path, sizeof(path), "$.clients[%zu]", i);
		check_client(c, &c->clients[i], path, e);
		check_client_keys(&c->clients[i], i, e);
		for (size_t j = 0; j < i; j++)
			if (c->clients[i].client_id && c->clients[j].client_id &&
			    strcmp(c->clients[i].client_id, c->clients[j].client_id) == 0) {
				snprintf(path, sizeof(path), "$.clients[%zu].client_id", i);
				cfg_err(e, path, "duplicate client_id");
			}
	}
}

static void check_upstream(const struct cfg_upstream *u, struct cfg_errors *e)
{
	char path[256];
	snprintf(path, sizeof(path), "$.upstreams.%s", u->name ? u->name : "");
	int known = 0;
	for (size_t k = 0; u->preset && k < 4; k++)
		known |= strcmp(u->preset, known_presets[k]) == 0;
	if (u->preset && !known)
		cfg_err(e, path, "preset: expected one of github, sentry, google, oidc");
	int needs_issuer = u->preset && (strcmp(u->preset, "oidc") == 0);
	if (needs_issuer && !u->issuer)
		cfg_err(e, path, "preset oidc needs an issuer");
	if (!u->preset && !u->issuer && (!u->authorize_url || !u->token_url))
		cfg_err(e, path, "without a preset or issuer, authorize_url and token_url are required");
}

/* resources[i].path: shape, reserved prefixes, unique among the first i. */
static void check_resource_path(const struct config *c, size_t i, const char *path, struct cfg_errors *e)
{
	const struct cfg_resource *r = &c->resources[i];
	if (!r->path)
		return;
	size_t n = strlen(r->path);
	if (r->path[0] != '/' || strpbrk(r->path, "?#%") || (n > 1 && r->path[n - 1] == '/'))
		cfg_err(e, path, "path: expected /segment[/segment...] without a trailing slash, query or %%");
	if (strncmp(r->path, "/.well-known", 12) == 0 || strcmp(r->path, "/") == 0)
		cfg_err(e, path, "path: must not be / or under /.well-known");
	for (size_t j = 0; j < i; j++)
		if (c->resources[j].path && strcmp(r->path, c->resources[j].path) == 0)
			cfg_err(e, path, "path: duplicate resource path");
}

static void check_resource_scopes(const struct cfg_resource *r, const char *path, struct cfg_errors *e)
{
	for (size_t d = 0; d < r->n_default_scopes; d++) {
		int found = 0;
		for (size_t s = 0; s < r->n_scopes; s++)
			found |= strcmp(r->scopes[s].scope, r->default_scopes[d]) == 0;
		if (!found)
			cfg_err(e, path, "default_scopes: \"%s\" is not one of the resource's scopes",
				r->default_scopes[d]);
	}
	for (size_t s = 0; s < r->n_scopes; s++)
		if (strcmp(r->scopes[s].scope, "offline_access") == 0 || strpbrk(r->scopes[s].scope, " \"\\"))
			cfg_err(e, path, "scopes: \"%s\" is not a valid scope name here", r->scopes[s].scope);
}

/* The placeholder of one inject template: {upstream_token} or
 * {upstream_token:NAME}, exactly once; NAME the sign-in upstream (same as
 * the bare form) or one of the resource's connect upstreams. */
static void check_inject_template(struct cfg_resource *r, struct cfg_inject *in, const char *path, struct cfg_errors *e)
{
	static const char ph[] = "{upstream_token";
	const char *at = strstr(in->value, ph);
	if (!at) {
		cfg_err(e, path, "inject.value: expected a template containing {upstream_token}");
		return;
	}
	const char *p = at + strlen(ph), *close = strchr(p, '}');
	if (!close || (*p != '}' && *p != ':')) {
		cfg_err(e, path, "inject.value: expected {upstream_token} or {upstream_token:NAME}");
		return;
	}
	if (strstr(close, ph)) {
		cfg_err(e, path, "inject.value: one placeholder per header");
		return;
	}
	in->connect = NULL;
	if (*p == '}')
		return;
	size_t n = (size_t)(close - p - 1);
	if (r->upstream && strlen(r->upstream) == n && strncmp(p + 1, r->upstream, n) == 0)
		return; /* the sign-in upstream, named */
	for (size_t i = 0; i < r->n_connect; i++)
		if (strlen(r->connect[i]) == n && strncmp(p + 1, r->connect[i], n) == 0) {
			in->connect = r->connect[i];
			return;
		}
	cfg_err(e, path, "inject.value: {upstream_token:%.*s} names neither the upstream nor one in connect", (int)n,
		p + 1);
}

/* connect: configured upstreams other than the sign-in one, each once. */
static void check_resource_connect(const struct config *c, const struct cfg_resource *r, const char *path,
				   struct cfg_errors *e)
{
	for (size_t i = 0; i < r->n_connect; i++) {
		const char *n = r->connect[i];
		if (!config_upstream(c, n))
			cfg_err(e, path, "connect: no upstream named \"%s\"", n);
		else if (r->upstream && strcmp(n, r->upstream) == 0)
			cfg_err(e, path, "connect: \"%s\" is the resource's sign-in upstream", n);
		for (size_t j = 0; j < i; j++)
			if (strcmp(r->connect[j], n) == 0)
				cfg_err(e, path, "connect: \"%s\" is listed twice", n);
	}
}

/* A header an inject entry may set: a field name that is not framing or
 * hop-by-hop, nor one the broker sets or the downstream trusts from it. */
static int inject_header_ok(const char *h)
{
	static const char *const reserved[] = { "Host", "Expect", "X-Request-Id" };
	static const char *const prefixes[] = { "Mcp-", "X-MCP-", "X-Forwarded-", "Proxy-" };
	size_t n = strlen(h);
	if (!hdr_token_ok(h, n) || strchr(h, '_') || hdr_hop_by_hop(h, n) || strcasecmp(h, "Forwarded") == 0)
		return 0;
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strcasecmp(h, reserved[i]) == 0)
			return 0;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncasecmp(h, prefixes[i], strlen(prefixes[i])) == 0)
			return 0;
	return 1;
}

/* inject: the default (Authorization: Bearer {upstream_token}) when absent;
 * each header once; every connect upstream's token injected somewhere. */
static void check_resource_inject(struct cfg_resource *r, const char *path, struct cfg_errors *e)
{
	if (!r->inject) {
		if (!(r->inject = calloc(1, sizeof(*r->inject)))) {
			cfg_err(e, path, "out of memory");
			return;
		}
		r->n_inject = 1;
	}
	for (size_t i = 0; i < r->n_inject; i++) {
		struct cfg_inject *in = &r->inject[i];
		if (!in->header && !(in->header = strdup("Authorization")))
			cfg_err(e, path, "out of memory");
		if (!in->value && !(in->value = strdup("Bearer {upstream_token}")))
			cfg_err(e, path, "out of memory");
		if (in->value)
			check_inject_template(r, in, path, e);
		if (in->header && !inject_header_ok(in->header))
			cfg_err(e, path,
				"inject.header: \"%s\" is not a header the broker may set (a token without \"_\", "
				"not hop-by-hop, Host, Expect, Mcp-*, X-MCP-*, X-Forwarded-* or X-Request-Id)",
				in->header);
		if (in->value && !hdr_value_ok(in->value, strlen(in->value), 0))
			cfg_err(e, path, "inject.value: control bytes (CR, LF, NUL) or non-ASCII in the template");
		for (size_t j = 0; j < i && in->header; j++)
			if (r->inject[j].header && strcasecmp(r->inject[j].header, in->header) == 0)
				cfg_err(e, path, "inject: the header %s is injected twice", in->header);
	}
	for (size_t k = 0; k < r->n_connect; k++) {
		int used = 0;
		for (size_t i = 0; i < r->n_inject; i++)
			used |= r->inject[i].connect == r->connect[k];
		if (!used)
			cfg_err(e, path, "connect: \"%s\" is injected by no inject entry ({upstream_token:%s})",
				r->connect[k], r->connect[k]);
	}
}

static void check_resource_headers(const struct cfg_resource *r, const char *path, struct cfg_errors *e)
{
	for (size_t h = 0; h < r->n_response_headers; h++) {
		const char *name = r->response_headers[h];
		if (!hdr_token_ok(name, strlen(name)) || strcasecmp(name, "set-cookie") == 0 ||
		    strcasecmp(name, "set-cookie2") == 0 || hdr_hop_by_hop(name, strlen(name)))
			cfg_err(e, path,
				"response_headers: \"%s\" is not a header name that may pass "
				"(never Set-Cookie or hop-by-hop)",
				name);
	}
}

static void check_resource(struct config *c, size_t i, struct cfg_errors *e)
{
	struct cfg_resource *r = &c->resources[i];
	char path[256];
	snprintf(path, sizeof(path), "$.resources[%zu]", i);
	check_resource_path(c, i, path, e);
	if (r->upstream && c->n_upstreams && !config_upstream(c, r->upstream))
		cfg_err(e, path, "upstream: no upstream named \"%s\"", r->upstream);
	else if (r->upstream && !c->n_upstreams)
		cfg_err(e, path, "upstream: no upstreams are configured");
	check_resource_scopes(r, path, e);
	check_resource_connect(c, r, path, e);
	check_resource_inject(r, path, e);
	check_resource_headers(r, path, e);
	/* resources_find compares with this instead of canonicalizing every
	 * resource's URL on each lookup. */
	char url[2048];
	int n = c->public_url && r->path ? snprintf(url, sizeof(url), "%s%s", c->public_url, r->path) : -1;
	if (n > 0 && (size_t)n < sizeof(url))
		r->canonical = uri_canonical_resource(url);
}

/* Every entry of list must be a CIDR; one message for the list. */
static void check_cidrs(char *const *list, size_t n, const char *path, const char *expected, struct cfg_errors *e)
{
	struct cidr cd;
	for (size_t i = 0; i < n; i++)
		if (cidr_parse(list[i], &cd) < 0)
			cfg_err(e, path, "%s", expected);
}

/* http.max_connections when the config leaves it out: the node raises its
 * soft descriptor limit to the hard one at startup, keeps 256 for the
 * database pool, logs, upstream calls and the listener, and 22 per worker
 * (its daemons' epoll sets, its own, its wake-ups and libcurl's); a
 * proxied connection holds two (the client's and the downstream's). */
#define CFG_FD_RESERVE 256
#define CFG_CONN_MIN 64
#define CFG_CONN_MAX 32768
static long default_max_connections(long threads)
{
	struct rlimit rl;
	long reserve = CFG_FD_RESERVE + threads * (LIM_HTTP_SHARDS + 6);
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 4096;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)(reserve + 2 * CFG_CONN_MAX))
		return CFG_CONN_MAX;
	long n = ((long)rl.rlim_max - reserve) / 2;
	return n < CFG_CONN_MIN ? CFG_CONN_MIN : n;
}

/* Rules across fields, in the order of the document; runs once every field
 * has parsed, and completes the defaults that depend on other fields. */
static void check_semantics(struct config *c, struct cfg_errors *e)
{
	check_public_url(c, e);
	if (c->http.max_connections <= 0)
		c->http.max_connections = default_max_connections(c->http.threads > 0 ? c->http.threads : 1);
	check_log(c, e);
	check_keys(c, e);
	check_trusted_issuers(c, e);
	check_clients(c, e);
	for (size_t i = 0; i < c->n_upstreams; i++)
		check_upstream(&c->upstreams[i], e);
	for (size_t i = 0; i < c->n_resources; i++)
		check_resource(c, i, e);
	check_cidrs(c->http.trusted_proxies, c->http.n_trusted_proxies, "$.http.trusted_proxies",
		    "expected CIDRs like 10.0.0.0/8 or fd00::/8", e);
	check_cidrs(c->registration.cimd_allow_private_cidrs, c->registration.n_cimd_allow_private_cidrs,
		    "$.registration.cimd_allow_private_cidrs", "expected CIDRs like 127.0.0.1/32", e);
	if (!c->log.level && !(c->log.level = strdup("info")))
		cfg_err(e, "$.log.level", "out of memory");
	/* DPoP nonces are good on every node: their key comes from a secret
	 * they all share, under its own purpose. */
	if (crypto_hkdf(c->cookie_secret, CRYPTO_KEY_LEN, "mcp-broker", 10, "dpop-nonce", c->dpop.nonce_key,
			CRYPTO_KEY_LEN) < 0)
		cfg_err(e, "$.cookie_secret", "cannot derive the DPoP nonce key");
}

/* ---- entry points ------------------------------------------------------ */

/* Why jparse refused text: jansson's own message with its position, or
 * the refusals jparse adds (a NUL byte, nesting past LIM_JSON_DEPTH). */
static void report_invalid_json(const char *text, size_t len, struct cfg_errors *errs)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char where[64];
		snprintf(where, sizeof(where), "line %d column %d", jerr.line, jerr.column);
		cfg_err(errs, where, "invalid JSON: %s", jerr.text);
		return;
	}
	json_decref(root);
	if (memchr(text, '\0', len))
		cfg_err(errs, "$", "invalid JSON: contains a NUL byte");
	else if (jparse_depth(text, len, LIM_JSON_DEPTH) == SIZE_MAX)
		cfg_err(errs, "$", "invalid JSON: nested deeper than %d levels", LIM_JSON_DEPTH);
	else
		cfg_err(errs, "$", "invalid JSON");
}

struct config *config_parse(const char *text, size_t len, struct cfg_errors *errs)
{
	memset(errs, 0, sizeof(*errs));
	json_t *root = jparse(text, len, 0, LIM_JSON_DEPTH);
	if (!root) {
		report_invalid_json(text, len, errs);
		return NULL;
	}
	struct config *c = calloc(1, sizeof(*c));
	if (!c) {
		json_decref(root);
		cfg_err(errs, "$", "out of memory");
		return NULL;
	}
	if (!json_is_object(root))
		cfg_err(errs, "$", "expected an object");
	else
		walk_object(root, &config_schema, c, "$", errs);
	json_decref(root);
	if (errs->n == 0 && errs->lost == 0)
		check_semantics(c, errs);
	if (errs->n || errs->lost) {
		config_free(&c);
		return NULL;
	}
	return c;
}

struct config *config_load(const char *path, struct cfg_errors *errs)
{
	memset(errs, 0, sizeof(*errs));
	FILE *f = fopen(path, "rb");
	if (!f) {
		cfg_err(errs, path, "cannot open: %s", strerror(errno));
		return NULL;
	}
	struct buf b;
	buf_init(&b, LIM_CONFIG_BYTES);
	b.secret = 1;
	char chunk[4096];
	size_t n;
	int bad = 0;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_add(&b, chunk, n) < 0) {
			bad = 1;
			break;
		}
	fclose(f);
	if (bad) {
		cfg_err(errs, path, "file larger than %d bytes", LIM_CONFIG_BYTES);
		return NULL;
	}
	struct config *c = config_parse(b.ptr ? b.ptr : "", b.len, errs);
	buf_free(&b);
	return c;
}

void config_free(struct config **cp)
{
	if (!cp || !*cp)
		return;
	for (size_t i = 0; i < (*cp)->n_resources; i++)
		free((*cp)->resources[i].canonical);
	free_object(&config_schema, *cp);
	crypto_wipe(*cp, sizeof(**cp));
	free(*cp);
	*cp = NULL;
}

const struct cfg_upstream *config_upstream(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (cfg->upstreams[i].name && strcmp(cfg->upstreams[i].name, name) == 0)
			return &cfg->upstreams[i];
	return NULL;
}

const struct cfg_trusted_issuer *config_trusted_issuer(const struct config *cfg, const char *iss)
{
	for (size_t i = 0; iss && i < cfg->n_trusted_issuers; i++)
		if (cfg->trusted_issuers[i].issuer && strcmp(cfg->trusted_issuers[i].issuer, iss) == 0)
			return &cfg->trusted_issuers[i];
	return NULL;
}

const struct cfg_client *config_client(const struct config *cfg, const char *client_id)
{
	for (size_t i = 0; i < cfg->n_clients; i++)
		if (strcmp(cfg->clients[i].client_id, client_id) == 0)
			return &cfg->clients[i];
	return NULL;
}

static void describe(FILE *f, const struct schema *s, const char *prefix)
{
	char path[256];
	for (const struct field *fl = s->fields; fl->name; fl++) {
		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", fl->name);
		if (fl->type == F_INT)
			fprintf(f, "  %-44s integer %ld..%ld, default %ld: %s\n", path, fl->min, fl->max, fl->def,
				fl->doc);
		else if (fl->type == F_BOOL)
			fprintf(f, "  %-44s boolean%s: %s\n", path,
				fl->def == 1   ? ", default true"
				: fl->def == 0 ? ", default false"
					       : "",
				fl->doc);
		else
			fprintf(f, "  %-44s %s%s: %s\n", path, type_name(fl->type), fl->required ? " (required)" : "",
				fl->doc);
		if (fl->type == F_OBJECT) {
			describe(f, fl->sub, path);
		} else if (fl->type == F_ARRAY || fl->type == F_MAP) {
			snprintf(path + strlen(path), sizeof(path) - strlen(path),
				 fl->type == F_MAP ? ".<name>" : "[]");
			describe(f, fl->sub, path);
		}
	}
}

void config_describe(FILE *f)
{
	describe(f, &config_schema, "");
}
