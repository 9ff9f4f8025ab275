#include "config.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hdr.h"
#include "lim.h"
#include "netaddr.h"

/* ---- the schema tables ------------------------------------------------ */

enum ftype {
	F_STRING,    /* char * */
	F_URL,       /* char *, http(s) URL parsed by curl */
	F_INT,       /* long, within [min,max] */
	F_BOOL,      /* int 0/1 (or -1 when unset and def is -1) */
	F_KEY32,     /* uint8_t[32] from base64 */
	F_SECRET,    /* uint8_t[32] SHA-256 of the string; int flag at aux */
	F_LISTEN,    /* char *, "host:port" */
	F_STRLIST,   /* char **, count (size_t) at aux */
	F_HASHLIST,  /* uint8_t (*)[32] SHA-256 of each string, count at aux */
	F_OBJECT,    /* nested struct at offset (inline) */
	F_ARRAY,     /* struct sub * array, count at aux */
	F_MAP,       /* object of objects -> array of struct sub, count at aux */
	F_SCOPEMAP,  /* object of string lists -> struct cfg_scope_rule *, count at aux */
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

#define END { NULL, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL }
#define O(type, member) offsetof(type, member)

static const struct field key_fields[] = {
	{ "id", F_STRING, 1, O(struct cfg_key, id), 0, 1, 64, 0, NULL, 0, "key identifier stored beside each ciphertext" },
	{ "key", F_KEY32, 1, O(struct cfg_key, key), 0, 0, 0, 0, NULL, 0, "base64 of 32 random bytes (mcp-broker keygen)" },
	END
};
static const struct schema key_schema = { "encryption key", sizeof(struct cfg_key), key_fields, -1 };

static const struct field client_fields[] = {
	{ "client_id", F_STRING, 1, O(struct cfg_client, client_id), 0, 1, LIM_CLIENT_ID, 0, NULL, 0, "client identifier" },
	{ "client_name", F_STRING, 0, O(struct cfg_client, client_name), 0, 0, LIM_CLIENT_NAME, 0, NULL, 0, "name shown on the consent page" },
	{ "client_secret", F_SECRET, 0, O(struct cfg_client, secret_hash), O(struct cfg_client, has_secret), 16, 512, 0, NULL, 1, "makes the client confidential; stored hashed" },
	{ "redirect_uris", F_STRLIST, 1, O(struct cfg_client, redirect_uris), O(struct cfg_client, n_redirect_uris), 1, LIM_REDIRECT_URIS, 0, NULL, 0, "exact redirect URIs (loopback: any port)" },
	END
};
static const struct schema client_schema = { "client", sizeof(struct cfg_client), client_fields, -1 };

static const struct field upstream_fields[] = {
	{ "preset", F_STRING, 0, O(struct cfg_upstream, preset), 0, 1, 32, 0, NULL, 0, "github, sentry, google or oidc" },
	{ "issuer", F_URL, 0, O(struct cfg_upstream, issuer), 0, 0, 2048, 0, NULL, 0, "OIDC issuer (discovery)" },
	{ "authorize_url", F_URL, 0, O(struct cfg_upstream, authorize_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "token_url", F_URL, 0, O(struct cfg_upstream, token_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "userinfo_url", F_URL, 0, O(struct cfg_upstream, userinfo_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "revoke_url", F_URL, 0, O(struct cfg_upstream, revoke_url), 0, 0, 2048, 0, NULL, 0, "overrides the preset" },
	{ "timeout_ms", F_INT, 0, O(struct cfg_upstream, timeout_ms), 0, 100, 120000, 10000, NULL, 0, "total timeout of one upstream call" },
	{ "client_id", F_STRING, 1, O(struct cfg_upstream, client_id), 0, 1, 512, 0, NULL, 0, "the broker's client id at the upstream" },
	{ "client_secret", F_STRING, 1, O(struct cfg_upstream, client_secret), 0, 1, 1024, 0, NULL, 1, "the broker's client secret at the upstream" },
	{ "scopes", F_STRLIST, 0, O(struct cfg_upstream, scopes), O(struct cfg_upstream, n_scopes), 0, LIM_SCOPES, 0, NULL, 0, "scopes requested upstream" },
	{ "pkce", F_BOOL, 0, O(struct cfg_upstream, pkce), 0, 0, 0, -1, NULL, 0, "send PKCE S256 upstream (default: preset)" },
	{ "ca_file", F_STRING, 0, O(struct cfg_upstream, ca_file), 0, 1, 4096, 0, NULL, 0, "CA bundle for the upstream's TLS (tests)" },
	END
};
static const struct schema upstream_schema = { "upstream", sizeof(struct cfg_upstream), upstream_fields, O(struct cfg_upstream, name) };

static const struct field inject_fields[] = {
	{ "header", F_STRING, 0, O(struct cfg_inject, header), 0, 1, 128, 0, NULL, 0, "header injected downstream (default Authorization)" },
	{ "value", F_STRING, 0, O(struct cfg_inject, value), 0, 1, 512, 0, NULL, 0, "template; {upstream_token} is replaced" },
	END
};
static const struct schema inject_schema = { "inject", sizeof(struct cfg_inject), inject_fields, -1 };

static const struct field resource_fields[] = {
	{ "path", F_STRING, 1, O(struct cfg_resource, path), 0, 1, 256, 0, NULL, 0, "path prefix under public_url, e.g. /mcp" },
	{ "upstream", F_STRING, 1, O(struct cfg_resource, upstream), 0, 1, 64, 0, NULL, 0, "name of an entry in upstreams" },
	{ "downstream", F_URL, 1, O(struct cfg_resource, downstream), 0, 1, 2048, 0, NULL, 0, "URL of the MCP server behind the broker" },
	{ "inject", F_OBJECT, 0, O(struct cfg_resource, inject), 0, 0, 0, 0, &inject_schema, 0, "how the upstream token is injected" },
	{ "scopes", F_SCOPEMAP, 0, O(struct cfg_resource, scopes), O(struct cfg_resource, n_scopes), 0, LIM_SCOPES, 0, NULL, 0, "scope -> tools it allows (\"*\" = any)" },
	{ "default_scopes", F_STRLIST, 0, O(struct cfg_resource, default_scopes), O(struct cfg_resource, n_default_scopes), 0, LIM_SCOPES, 0, NULL, 0, "scopes granted when a request names none" },
	{ "allowed_origins", F_STRLIST, 0, O(struct cfg_resource, allowed_origins), O(struct cfg_resource, n_allowed_origins), 0, 64, 0, NULL, 0, "browser Origins allowed to call the resource" },
	{ "connect_timeout_ms", F_INT, 0, O(struct cfg_resource, connect_timeout_ms), 0, 100, 60000, 5000, NULL, 0, "downstream connect timeout" },
	{ "idle_timeout_ms", F_INT, 0, O(struct cfg_resource, idle_timeout_ms), 0, 1000, 86400000, 300000, NULL, 0, "downstream idle timeout (no bytes for this long)" },
	{ "identity_headers", F_BOOL, 0, O(struct cfg_resource, identity_headers), 0, 0, 0, 1, NULL, 0, "send X-MCP-User, X-MCP-Client, X-MCP-Scopes downstream" },
	{ "audit_arguments", F_BOOL, 0, O(struct cfg_resource, audit_arguments), 0, 0, 0, 0, NULL, 0, "tool audit records include arguments" },
	{ "client_cert", F_STRING, 0, O(struct cfg_resource, client_cert), 0, 1, 4096, 0, NULL, 0, "PEM client certificate for mutual TLS downstream" },
	{ "client_key", F_STRING, 0, O(struct cfg_resource, client_key), 0, 1, 4096, 0, NULL, 0, "PEM private key for mutual TLS downstream" },
	{ "ca_file", F_STRING, 0, O(struct cfg_resource, ca_file), 0, 1, 4096, 0, NULL, 0, "CA bundle verifying the downstream" },
	{ "response_headers", F_STRLIST, 0, O(struct cfg_resource, response_headers), O(struct cfg_resource, n_response_headers), 0, 32, 0, NULL, 0, "downstream response headers passed to the client beside the built-in allow-list (never Set-Cookie or hop-by-hop)" },
	{ "rate_per_grant", F_INT, 0, O(struct cfg_resource, rate_per_grant), 0, 0, 1000000, 0, NULL, 0, "requests/s per grant (0: limits.proxy_per_grant_per_second)" },
	{ "rate_per_client", F_INT, 0, O(struct cfg_resource, rate_per_client), 0, 0, 1000000, 0, NULL, 0, "requests/s per client across its grants (0 disables)" },
	END
};
static const struct schema resource_schema = { "resource", sizeof(struct cfg_resource), resource_fields, -1 };

static const struct field rs_fields[] = {
	{ "client_id", F_STRING, 1, O(struct cfg_resource_server, client_id), 0, 1, LIM_CLIENT_ID, 0, NULL, 0, "resource server identifier" },
	{ "client_secret", F_SECRET, 1, O(struct cfg_resource_server, secret_hash), O(struct cfg_resource_server, has_secret), 16, 512, 0, NULL, 1, "its secret (HTTP Basic at /introspect); stored hashed" },
	{ "resources", F_STRLIST, 0, O(struct cfg_resource_server, resources), O(struct cfg_resource_server, n_resources), 0, 64, 0, NULL, 0, "resource paths whose tokens it may introspect (default: all)" },
	END
};
static const struct schema rs_schema = { "resource server", sizeof(struct cfg_resource_server), rs_fields, -1 };

#define C(member) O(struct config, member)
static const struct field tokens_fields[] = {
	{ "access_ttl", F_INT, 0, C(tokens.access_ttl) - C(tokens), 0, 30, 86400, 300, NULL, 0, "access token lifetime, seconds" },
	{ "refresh_ttl", F_INT, 0, C(tokens.refresh_ttl) - C(tokens), 0, 300, 31536000, 2592000, NULL, 0, "refresh token lifetime, seconds" },
	{ "code_ttl", F_INT, 0, C(tokens.code_ttl) - C(tokens), 0, 5, 60, 60, NULL, 0, "authorization code lifetime, seconds (<= 60)" },
	{ "refresh_grace", F_INT, 0, C(tokens.refresh_grace) - C(tokens), 0, 0, 300, 10, NULL, 0, "seconds a rotated refresh token replays its successor" },
	{ "upstream_refresh_skew", F_INT, 0, C(tokens.upstream_refresh_skew) - C(tokens), 0, 0, 3600, 60, NULL, 0, "refresh upstream tokens this many seconds before they expire" },
	{ "upstream_lock_wait_ms", F_INT, 0, C(tokens.upstream_lock_wait_ms) - C(tokens), 0, 100, 60000, 15000, NULL, 0, "how long a request waits for another node's upstream refresh" },
	END
};
static const struct schema tokens_schema = { "tokens", sizeof(((struct config *)0)->tokens), tokens_fields, -1 };

static const struct field registration_fields[] = {
	{ "dynamic", F_BOOL, 0, C(registration.dynamic) - C(registration), 0, 0, 0, 1, NULL, 0, "RFC 7591 dynamic registration" },
	{ "client_id_metadata_documents", F_BOOL, 0, C(registration.client_id_metadata_documents) - C(registration), 0, 0, 0, 0, NULL, 0, "URL client ids (CIMD)" },
	{ "initial_access_token", F_SECRET, 0, C(registration.initial_access_token_hash) - C(registration), C(registration.has_initial_access_token) - C(registration), 16, 512, 0, NULL, 1, "required bearer token for /register" },
	{ "dynamic_client_ttl_days", F_INT, 0, C(registration.dynamic_client_ttl_days) - C(registration), 0, 0, 3650, 30, NULL, 0, "purge dynamic clients that never completed a flow after this many days (0: never)" },
	{ "allow_loopback_redirects", F_BOOL, 0, C(registration.allow_loopback_redirects) - C(registration), 0, 0, 0, 1, NULL, 0, "allow http redirect URIs on 127.0.0.1, [::1], localhost" },
	{ "allow_private_schemes", F_BOOL, 0, C(registration.allow_private_schemes) - C(registration), 0, 0, 0, 1, NULL, 0, "allow private-use scheme redirect URIs (cursor://...)" },
	{ "cimd_allow_hosts", F_STRLIST, 0, C(registration.cimd_allow_hosts) - C(registration), C(registration.n_cimd_allow_hosts) - C(registration), 0, 256, 0, NULL, 0, "CIMD client_id hosts allowed (\"*.example.com\"); empty: any" },
	{ "cimd_deny_hosts", F_STRLIST, 0, C(registration.cimd_deny_hosts) - C(registration), C(registration.n_cimd_deny_hosts) - C(registration), 0, 256, 0, NULL, 0, "CIMD client_id hosts refused (wins over allow)" },
	{ "cimd_allow_private_cidrs", F_STRLIST, 0, C(registration.cimd_allow_private_cidrs) - C(registration), C(registration.n_cimd_allow_private_cidrs) - C(registration), 0, 16, 0, NULL, 0, "testing only: private CIDRs a CIMD fetch may connect to" },
	{ "cimd_resolve", F_STRLIST, 0, C(registration.cimd_resolve) - C(registration), C(registration.n_cimd_resolve) - C(registration), 0, 16, 0, NULL, 0, "testing only: host:port:address pins for CIMD fetches" },
	{ "cimd_ca_file", F_STRING, 0, C(registration.cimd_ca_file) - C(registration), 0, 1, 4096, 0, NULL, 0, "testing only: CA bundle for CIMD fetches" },
	{ "cimd_timeout_ms", F_INT, 0, C(registration.cimd_timeout_ms) - C(registration), 0, 500, 30000, 5000, NULL, 0, "total time of one CIMD fetch" },
	{ "cimd_min_ttl_s", F_INT, 0, C(registration.cimd_min_ttl_s) - C(registration), 0, 0, 86400, 60, NULL, 0, "cache a CIMD document at least this long" },
	{ "cimd_max_ttl_s", F_INT, 0, C(registration.cimd_max_ttl_s) - C(registration), 0, 60, 604800, 86400, NULL, 0, "cache a CIMD document at most this long" },
	END
};
static const struct schema registration_schema = { "registration", sizeof(((struct config *)0)->registration), registration_fields, -1 };

static const struct field limits_fields[] = {
	{ "register_per_ip_per_hour", F_INT, 0, C(limits.register_per_ip_per_hour) - C(limits), 0, 0, 1000000, 20, NULL, 0, "0 disables" },
	{ "token_per_client_per_minute", F_INT, 0, C(limits.token_per_client_per_minute) - C(limits), 0, 0, 1000000, 600, NULL, 0, "0 disables" },
	{ "proxy_per_grant_per_second", F_INT, 0, C(limits.proxy_per_grant_per_second) - C(limits), 0, 0, 1000000, 0, NULL, 0, "0 disables" },
	{ "token_failures_per_client_address_per_minute", F_INT, 0, C(limits.token_failures_per_client_address_per_minute) - C(limits), 0, 0, 1000000, 30, NULL, 0, "failed client authentications and invalid codes/refresh tokens per (client, address) at /token, /revoke, /introspect; beyond it that pair gets 429 (0 disables)" },
	{ "token_failures_per_address_per_minute", F_INT, 0, C(limits.token_failures_per_address_per_minute) - C(limits), 0, 0, 1000000, 120, NULL, 0, "the same failures per client address across all client ids (IPv6 per /64; 0 disables)" },
	END
};
static const struct schema limits_schema = { "limits", sizeof(((struct config *)0)->limits), limits_fields, -1 };

static const struct field database_fields[] = {
	{ "pool_size", F_INT, 0, C(database.pool_size) - C(database), 0, 1, 256, 8, NULL, 0, "PostgreSQL connections per node" },
	{ "statement_timeout_ms", F_INT, 0, C(database.statement_timeout_ms) - C(database), 0, 100, 600000, 5000, NULL, 0, "server-side statement timeout" },
	{ "connect_timeout_s", F_INT, 0, C(database.connect_timeout_s) - C(database), 0, 1, 60, 3, NULL, 0, "connect timeout" },
	END
};
static const struct schema database_schema = { "database", sizeof(((struct config *)0)->database), database_fields, -1 };

static const struct field http_fields[] = {
	{ "threads", F_INT, 0, C(http.threads) - C(http), 0, 1, 256, 8, NULL, 0, "HTTP worker threads" },
	{ "max_connections", F_INT, 0, C(http.max_connections) - C(http), 0, 1, 100000, 4096, NULL, 0, "concurrent connections" },
	{ "drain_timeout_s", F_INT, 0, C(http.drain_timeout_s) - C(http), 0, 0, 600, 25, NULL, 0, "SIGTERM: wait this long for in-flight requests" },
	{ "connection_timeout_s", F_INT, 0, C(http.connection_timeout_s) - C(http), 0, 1, 3600, 60, NULL, 0, "idle client connection timeout" },
	{ "max_body_bytes_in_flight", F_INT, 0, C(http.max_body_bytes_in_flight) - C(http), 0, 65536, 1L << 34, 64L * 1024 * 1024, NULL, 0, "request body bytes buffered on the node in total; beyond it new bodies get 503" },
	{ "trusted_proxies", F_STRLIST, 0, C(http.trusted_proxies) - C(http), C(http.n_trusted_proxies) - C(http), 0, 64, 0, NULL, 0, "load balancer CIDRs whose X-Forwarded-For names the client" },
	END
};
static const struct schema http_schema = { "http", sizeof(((struct config *)0)->http), http_fields, -1 };

static const struct field log_fields[] = {
	{ "level", F_STRING, 0, C(log.level) - C(log), 0, 1, 8, 0, NULL, 0, "debug, info, warn or error (default info)" },
	END
};
static const struct schema log_schema = { "log", sizeof(((struct config *)0)->log), log_fields, -1 };

static const struct field config_fields[] = {
	{ "listen", F_LISTEN, 1, C(listen), 0, 1, 128, 0, NULL, 0, "address:port to listen on" },
	{ "public_url", F_URL, 1, C(public_url), 0, 1, 1024, 0, NULL, 0, "external https URL (the OAuth issuer)" },
	{ "database_url", F_STRING, 1, C(database_url), 0, 1, 4096, 0, NULL, 1, "libpq connection string or URI" },
	{ "encryption_keys", F_ARRAY, 1, C(encryption_keys), C(n_encryption_keys), 1, 16, 0, &key_schema, 0, "first encrypts, all decrypt" },
	{ "cookie_secret", F_KEY32, 1, C(cookie_secret), 0, 0, 0, 0, NULL, 0, "base64 of 32 bytes signing cookies and state" },
	{ "admin_tokens", F_HASHLIST, 0, C(admin_token_hashes), C(n_admin_tokens), 0, 16, 0, NULL, 1, "bearer tokens of the operator API (>= 16 chars)" },
	{ "tokens", F_OBJECT, 0, C(tokens), 0, 0, 0, 0, &tokens_schema, 0, "token lifetimes" },
	{ "registration", F_OBJECT, 0, C(registration), 0, 0, 0, 0, &registration_schema, 0, "client registration policy" },
	{ "clients", F_ARRAY, 0, C(clients), C(n_clients), 0, 1000, 0, &client_schema, 0, "pre-registered clients" },
	{ "upstreams", F_MAP, 0, C(upstreams), C(n_upstreams), 0, 64, 0, &upstream_schema, 0, "upstream identity providers by name" },
	{ "resources", F_ARRAY, 0, C(resources), C(n_resources), 0, 64, 0, &resource_schema, 0, "protected MCP resources" },
	{ "resource_servers", F_ARRAY, 0, C(resource_servers), C(n_resource_servers), 0, 64, 0, &rs_schema, 0, "credentials allowed to call /introspect" },
	{ "limits", F_OBJECT, 0, C(limits), 0, 0, 0, 0, &limits_schema, 0, "rate limits" },
	{ "database", F_OBJECT, 0, C(database), 0, 0, 0, 0, &database_schema, 0, "PostgreSQL pool" },
	{ "http", F_OBJECT, 0, C(http), 0, 0, 0, 0, &http_schema, 0, "HTTP server" },
	{ "log", F_OBJECT, 0, C(log), 0, 0, 0, 0, &log_schema, 0, "logging" },
	{ "housekeeping_interval_s", F_INT, 0, C(housekeeping_interval_s), 0, 1, 86400, 60, NULL, 0, "seconds between purges of expired rows" },
	END
};
static const struct schema config_schema = { "config", sizeof(struct config), config_fields, -1 };

/* ---- errors ------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static void cfg_err(struct cfg_errors *e, const char *path,
							  const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char **n = realloc(e->msg, (e->n + 1) * sizeof(*n));
	if (!n)
		return;
	e->msg = n;
	size_t len = strlen(path) + strlen(msg) + 3;
	char *line = malloc(len);
	if (!line)
		return;
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
}

/* ---- environment expansion --------------------------------------------- */

char *config_expand_env(const char *in, const char **why)
{
	struct buf b;
	buf_init(&b, LIM_CONFIG_STRING);
	b.secret = 1;
	const char *p = in;
	while (*p) {
		const char *d = strstr(p, "${");
		if (!d) {
			if (buf_adds(&b, p) < 0)
				goto toolong;
			break;
		}
		if (buf_add(&b, p, (size_t)(d - p)) < 0)
			goto toolong;
		const char *end = strchr(d + 2, '}');
		if (!end) {
			*why = "unterminated ${ in string";
			goto fail;
		}
		size_t n = (size_t)(end - d - 2);
		char name[LIM_ENV_NAME + 1];
		if (n == 0 || n > LIM_ENV_NAME) {
			*why = "bad environment variable name in ${...}";
			goto fail;
		}
		memcpy(name, d + 2, n);
		name[n] = '\0';
		for (size_t i = 0; i < n; i++) {
			char c = name[i];
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
			      (i > 0 && c >= '0' && c <= '9'))) {
				*why = "bad environment variable name in ${...}";
				goto fail;
			}
		}
		const char *val = getenv(name);
		if (!val) {
			static __thread char msg[LIM_ENV_NAME + 64];
			snprintf(msg, sizeof(msg), "environment variable %s is not set", name);
			*why = msg;
			goto fail;
		}
		if (buf_adds(&b, val) < 0)
			goto toolong;
		p = end + 1;
	}
	return buf_take(&b, NULL);
toolong:
	*why = "string too long (at most 8192 bytes, after ${...} expansion)";
fail:
	buf_free(&b);
	return NULL;
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

/* ---- the walker -------------------------------------------------------- */

static const char *type_name(enum ftype t)
{
	switch (t) {
	case F_INT: return "an integer";
	case F_BOOL: return "true or false";
	case F_STRLIST: case F_HASHLIST: return "an array of strings";
	case F_OBJECT: case F_MAP: case F_SCOPEMAP: return "an object";
	case F_ARRAY: return "an array of objects";
	default: return "a string";
	}
}

static void walk_object(const json_t *j, const struct schema *s, void *obj, const char *path,
			struct cfg_errors *e);

/* Expands and length-checks one string; NULL after reporting an error. */
static char *take_string(const json_t *v, const struct field *f, const char *path,
			 struct cfg_errors *e)
{
	if (!json_is_string(v)) {
		cfg_err(e, path, "expected a string");
		return NULL;
	}
	const char *why = NULL;
	char *s = config_expand_env(json_string_value(v), &why);
	if (!s) {
		cfg_err(e, path, "%s", why);
		return NULL;
	}
	size_t n = strlen(s);
	if (f->max && n > (size_t)f->max) {
		cfg_err(e, path, "expected at most %ld characters", f->max);
	} else if ((long)n < f->min) {
		cfg_err(e, path, f->min == 1 ? "expected a non-empty string" : "expected at least %ld characters", f->min);
	} else if (strlen(json_string_value(v)) != json_string_length(v)) {
		cfg_err(e, path, "string contains a NUL byte");
	} else {
		return s;
	}
	crypto_wipe(s, n);
	free(s);
	return NULL;
}

static void walk_field(const json_t *v, const struct field *f, char *base, const char *path,
		       struct cfg_errors *e)
{
	void *at = base + f->off;
	char sub[512];
	const char *why = NULL;
	switch (f->type) {
	case F_STRING:
	case F_URL:
	case F_LISTEN: {
		char *s = take_string(v, f, path, e);
		if (!s)
			return;
		if (f->type == F_URL && !url_ok(s, &why)) {
			cfg_err(e, path, "%s", why);
			free(s);
			return;
		}
		if (f->type == F_LISTEN) {
			struct config *c = (struct config *)base;
			if (!listen_ok(s, c->listen_host, sizeof(c->listen_host), &c->listen_port, &why)) {
				cfg_err(e, path, "%s", why);
				free(s);
				return;
			}
		}
		*(char **)at = s;
		return;
	}
	case F_INT: {
		if (!json_is_integer(v)) {
			cfg_err(e, path, "expected an integer");
			return;
		}
		json_int_t n = json_integer_value(v);
		if (n < f->min || n > f->max) {
			cfg_err(e, path, "expected an integer between %ld and %ld", f->min, f->max);
			return;
		}
		*(long *)at = (long)n;
		return;
	}
	case F_BOOL:
		if (!json_is_boolean(v)) {
			cfg_err(e, path, "expected true or false");
			return;
		}
		*(int *)at = json_is_true(v);
		return;
	case F_KEY32: {
		char *s = take_string(v, f, path, e);
		if (!s)
			return;
		uint8_t tmp[64];
		long n = crypto_b64_decode(s, strlen(s), tmp, sizeof(tmp));
		if (n != CRYPTO_KEY_LEN)
			cfg_err(e, path, "expected base64 of exactly 32 bytes (mcp-broker keygen)");
		else
			memcpy(at, tmp, CRYPTO_KEY_LEN);
		crypto_wipe(tmp, sizeof(tmp));
		crypto_wipe(s, strlen(s));
		free(s);
		return;
	}
	case F_SECRET: {
		char *s = take_string(v, f, path, e);
		if (!s)
			return;
		crypto_sha256(s, strlen(s), at);
		*(int *)(base + f->aux) = 1;
		crypto_wipe(s, strlen(s));
		free(s);
		return;
	}
	case F_STRLIST:
	case F_HASHLIST: {
		if (!json_is_array(v)) {
			cfg_err(e, path, "expected an array of strings");
			return;
		}
		size_t n = json_array_size(v);
		if ((long)n < f->min || (f->max && (long)n > f->max)) {
			cfg_err(e, path, "expected between %ld and %ld entries", f->min, f->max);
			return;
		}
		size_t elem = f->type == F_STRLIST ? sizeof(char *) : CRYPTO_SHA256_LEN;
		void *arr = calloc(n ? n : 1, elem);
		if (!arr) {
			cfg_err(e, path, "out of memory");
			return;
		}
		*(void **)at = arr;
		size_t got = 0;
		struct field item = *f;
		item.max = f->type == F_HASHLIST ? 512 : LIM_REDIRECT_URI;
		item.min = f->type == F_HASHLIST ? 16 : 1;
		for (size_t i = 0; i < n; i++) {
			snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
			char *s = take_string(json_array_get(v, i), &item, sub, e);
			if (!s)
				continue;
			if (f->type == F_STRLIST) {
				((char **)arr)[got++] = s;
			} else {
				crypto_sha256(s, strlen(s), (uint8_t *)arr + got++ * CRYPTO_SHA256_LEN);
				crypto_wipe(s, strlen(s));
				free(s);
			}
		}
		*(size_t *)(base + f->aux) = got;
		return;
	}
	case F_OBJECT:
		if (!json_is_object(v)) {
			cfg_err(e, path, "expected an object");
			return;
		}
		walk_object(v, f->sub, at, path, e);
		return;
	case F_ARRAY:
	case F_MAP: {
		int is_map = f->type == F_MAP;
		if (is_map ? !json_is_object(v) : !json_is_array(v)) {
			cfg_err(e, path, is_map ? "expected an object" : "expected an array of objects");
			return;
		}
		size_t n = is_map ? json_object_size(v) : json_array_size(v);
		if ((long)n < f->min || (f->max && (long)n > f->max)) {
			cfg_err(e, path, "expected between %ld and %ld entries", f->min, f->max);
			return;
		}
		char *arr = calloc(n ? n : 1, f->sub->size);
		if (!arr) {
			cfg_err(e, path, "out of memory");
			return;
		}
		*(void **)at = arr;
		*(size_t *)(base + f->aux) = n;
		size_t i = 0;
		const char *k;
		json_t *item;
		if (is_map) {
			json_object_foreach((json_t *)v, k, item) {
				snprintf(sub, sizeof(sub), "%s.%s", path, k);
				char *elem = arr + i++ * f->sub->size;
				*(char **)(elem + f->sub->name_off) = strdup(k);
				if (!json_is_object(item))
					cfg_err(e, sub, "expected an object");
				else
					walk_object(item, f->sub, elem, sub, e);
			}
		} else {
			json_array_foreach(v, i, item) {
				snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
				if (!json_is_object(item))
					cfg_err(e, sub, "expected an object");
				else
					walk_object(item, f->sub, arr + i * f->sub->size, sub, e);
			}
		}
		return;
	}
	case F_SCOPEMAP: {
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
		*(void **)at = rules;
		*(size_t *)(base + f->aux) = n;
		const char *k;
		json_t *item;
		size_t i = 0;
		static const struct field tools = { "tools", F_STRLIST, 0, O(struct cfg_scope_rule, tools), O(struct cfg_scope_rule, n_tools), 0, 1000, 0, NULL, 0, NULL };
		json_object_foreach((json_t *)v, k, item) {
			snprintf(sub, sizeof(sub), "%s.%s", path, k);
			rules[i].scope = strdup(k);
			walk_field(item, &tools, (char *)&rules[i], sub, e);
			i++;
		}
		return;
	}
	}
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

static void walk_object(const json_t *j, const struct schema *s, void *obj, const char *path,
			struct cfg_errors *e)
{
	char sub[512];
	const char *k;
	json_t *v;
	apply_defaults(s, obj);
	json_object_foreach((json_t *)j, k, v) {
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
		walk_field(v, f, obj, sub, e);
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
	for (const struct field *f = s->fields; f->name; f++) {
		void *at = (char *)obj + f->off;
		switch (f->type) {
		case F_STRING: case F_URL: case F_LISTEN: {
			char *p = *(char **)at;
			if (p && f->secret)
				crypto_wipe(p, strlen(p));
			free(p);
			*(char **)at = NULL;
			break;
		}
		case F_STRLIST: {
			char **l = *(char ***)at;
			size_t n = *(size_t *)((char *)obj + f->aux);
			for (size_t i = 0; l && i < n; i++)
				free(l[i]);
			free(l);
			*(char ***)at = NULL;
			break;
		}
		case F_HASHLIST: {
			void *l = *(void **)at;
			size_t n = *(size_t *)((char *)obj + f->aux);
			crypto_wipe(l, n * CRYPTO_SHA256_LEN);
			free(l);
			*(void **)at = NULL;
			break;
		}
		case F_OBJECT:
			free_object(f->sub, at);
			break;
		case F_ARRAY: case F_MAP: {
			char *arr = *(char **)at;
			size_t n = *(size_t *)((char *)obj + f->aux);
			for (size_t i = 0; arr && i < n; i++) {
				char *elem = arr + i * f->sub->size;
				if (f->sub->name_off >= 0)
					free(*(char **)(elem + f->sub->name_off));
				free_object(f->sub, elem);
			}
			if (arr)
				crypto_wipe(arr, n * f->sub->size);
			free(arr);
			*(char **)at = NULL;
			break;
		}
		case F_SCOPEMAP: {
			struct cfg_scope_rule *r = *(struct cfg_scope_rule **)at;
			size_t n = *(size_t *)((char *)obj + f->aux);
			for (size_t i = 0; r && i < n; i++) {
				free(r[i].scope);
				for (size_t t = 0; t < r[i].n_tools; t++)
					free(r[i].tools[t]);
				free(r[i].tools);
			}
			free(r);
			*(void **)at = NULL;
			break;
		}
		default:
			break;
		}
	}
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

static void check_semantics(struct config *c, struct cfg_errors *e)
{
	char path[256];
	if (c->public_url) {
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
	if (c->log.level) {
		static const char *const lv[] = { "debug", "info", "warn", "error" };
		int ok = 0;
		for (size_t i = 0; i < 4; i++)
			ok |= strcmp(c->log.level, lv[i]) == 0;
		if (!ok)
			cfg_err(e, "$.log.level", "expected one of debug, info, warn, error");
	}
	for (size_t i = 0; i < c->n_encryption_keys; i++)
		for (size_t j = 0; j < i; j++)
			if (c->encryption_keys[i].id && c->encryption_keys[j].id &&
			    strcmp(c->encryption_keys[i].id, c->encryption_keys[j].id) == 0) {
				snprintf(path, sizeof(path), "$.encryption_keys[%zu].id", i);
				cfg_err(e, path, "duplicate key id");
			}
	for (size_t i = 0; i < c->n_clients; i++) {
		for (size_t j = 0; j < i; j++)
			if (c->clients[i].client_id && c->clients[j].client_id &&
			    strcmp(c->clients[i].client_id, c->clients[j].client_id) == 0) {
				snprintf(path, sizeof(path), "$.clients[%zu].client_id", i);
				cfg_err(e, path, "duplicate client_id");
			}
	}
	for (size_t i = 0; i < c->n_upstreams; i++) {
		struct cfg_upstream *u = &c->upstreams[i];
		snprintf(path, sizeof(path), "$.upstreams.%s", u->name);
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
	for (size_t i = 0; i < c->n_resources; i++) {
		struct cfg_resource *r = &c->resources[i];
		snprintf(path, sizeof(path), "$.resources[%zu]", i);
		if (r->path && (r->path[0] != '/' || strpbrk(r->path, "?#%") ||
				(strlen(r->path) > 1 && r->path[strlen(r->path) - 1] == '/')))
			cfg_err(e, path, "path: expected /segment[/segment...] without a trailing slash, query or %%");
		if (r->path && (strncmp(r->path, "/.well-known", 12) == 0 || strcmp(r->path, "/") == 0))
			cfg_err(e, path, "path: must not be / or under /.well-known");
		for (size_t j = 0; j < i; j++)
			if (r->path && c->resources[j].path && strcmp(r->path, c->resources[j].path) == 0)
				cfg_err(e, path, "path: duplicate resource path");
		if (r->upstream && c->n_upstreams && !config_upstream(c, r->upstream))
			cfg_err(e, path, "upstream: no upstream named \"%s\"", r->upstream);
		else if (r->upstream && !c->n_upstreams)
			cfg_err(e, path, "upstream: no upstreams are configured");
		for (size_t d = 0; d < r->n_default_scopes; d++) {
			int found = 0;
			for (size_t s = 0; s < r->n_scopes; s++)
				found |= strcmp(r->scopes[s].scope, r->default_scopes[d]) == 0;
			if (!found)
				cfg_err(e, path, "default_scopes: \"%s\" is not one of the resource's scopes", r->default_scopes[d]);
		}
		for (size_t s = 0; s < r->n_scopes; s++)
			if (strcmp(r->scopes[s].scope, "offline_access") == 0 || strpbrk(r->scopes[s].scope, " \"\\"))
				cfg_err(e, path, "scopes: \"%s\" is not a valid scope name here", r->scopes[s].scope);
		if (!r->inject.header)
			r->inject.header = strdup("Authorization");
		if (!r->inject.value)
			r->inject.value = strdup("Bearer {upstream_token}");
		if (r->inject.value && !strstr(r->inject.value, "{upstream_token}"))
			cfg_err(e, path, "inject.value: expected a template containing {upstream_token}");
		for (size_t h = 0; h < r->n_response_headers; h++) {
			const char *name = r->response_headers[h];
			if (!hdr_token_ok(name, strlen(name)) || strcasecmp(name, "set-cookie") == 0 ||
			    strcasecmp(name, "set-cookie2") == 0 || hdr_hop_by_hop(name, strlen(name)))
				cfg_err(e, path, "response_headers: \"%s\" is not a header name that may pass (never Set-Cookie or hop-by-hop)", name);
		}
	}
	struct cidr cd;
	for (size_t i = 0; i < c->http.n_trusted_proxies; i++)
		if (cidr_parse(c->http.trusted_proxies[i], &cd) < 0)
			cfg_err(e, "$.http.trusted_proxies", "expected CIDRs like 10.0.0.0/8 or fd00::/8");
	for (size_t i = 0; i < c->registration.n_cimd_allow_private_cidrs; i++)
		if (cidr_parse(c->registration.cimd_allow_private_cidrs[i], &cd) < 0)
			cfg_err(e, "$.registration.cimd_allow_private_cidrs", "expected CIDRs like 127.0.0.1/32");
	if (!c->log.level)
		c->log.level = strdup("info");
}

/* ---- entry points ------------------------------------------------------ */

struct config *config_parse(const char *text, size_t len, struct cfg_errors *errs)
{
	json_error_t jerr;
	memset(errs, 0, sizeof(*errs));
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char where[64];
		snprintf(where, sizeof(where), "line %d column %d", jerr.line, jerr.column);
		cfg_err(errs, where, "invalid JSON: %s", jerr.text);
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
	if (errs->n == 0)
		check_semantics(c, errs);
	if (errs->n) {
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
			fprintf(f, "  %-44s integer %ld..%ld, default %ld: %s\n", path, fl->min, fl->max, fl->def, fl->doc);
		else if (fl->type == F_BOOL)
			fprintf(f, "  %-44s boolean%s: %s\n", path, fl->def == 1 ? ", default true" : fl->def == 0 ? ", default false" : "", fl->doc);
		else
			fprintf(f, "  %-44s %s%s: %s\n", path, type_name(fl->type), fl->required ? " (required)" : "", fl->doc);
		if (fl->type == F_OBJECT) {
			describe(f, fl->sub, path);
		} else if (fl->type == F_ARRAY || fl->type == F_MAP) {
			snprintf(path + strlen(path), sizeof(path) - strlen(path), fl->type == F_MAP ? ".<name>" : "[]");
			describe(f, fl->sub, path);
		}
	}
}

void config_describe(FILE *f)
{
	describe(f, &config_schema, "");
}
