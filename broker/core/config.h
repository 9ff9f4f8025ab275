/* Configuration: JSON read with jansson, ${NAME} expanded from the
 * environment, validated against one table per object (config.c), which is
 * also what `check-config` and `--help` describe. */
#ifndef MCPB_CONFIG_H
#define MCPB_CONFIG_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "buf.h"
#include "crypto.h"

struct cfg_key {
	char *id;
	uint8_t key[CRYPTO_KEY_LEN];
};

struct cfg_client {
	char *client_id;
	char *client_name;
	uint8_t secret_hash[CRYPTO_SHA256_LEN]; /* SHA-256 of client_secret */
	int has_secret;
	char **redirect_uris;
	size_t n_redirect_uris;
	char **grant_types; /* absent: authorization_code, refresh_token */
	size_t n_grant_types;
	char **resources; /* client_credentials: resource paths it may get tokens for */
	size_t n_resources;
	char **scopes; /* client_credentials: scopes it may get */
	size_t n_scopes;
	int client_credentials; /* grant_types is ["client_credentials"] (set by the checks) */
	int jwt_bearer;         /* grant_types is [GRANT_TYPE_JWT_BEARER]: ID-JAGs only (set by the checks) */
	char *jwks;             /* private_key_jwt: an inline JWKS, as compact JSON text */
	char *jwks_uri;         /* private_key_jwt: an https URL of the client's JWKS */
};

#define GRANT_TYPE_JWT_BEARER "urn:ietf:params:oauth:grant-type:jwt-bearer"

/* An enterprise IdP whose Identity Assertion JWT Authorization Grants
 * (ID-JAG, SEP-990) the token endpoint accepts. Its users are (issuer,
 * subject); login_upstream is an upstream at the same IdP through which
 * such a user proves who they are when connecting accounts in band. */
struct cfg_trusted_issuer {
	char *issuer;
	char *jwks_uri;       /* https, fetched like a client's jwks_uri */
	char *subject_claim;  /* default "sub" */
	char *login_upstream; /* a name in upstreams */
};

/* Resource servers allowed to call /introspect (RFC 7662). */
struct cfg_resource_server {
	char **resources; /* resource paths it may introspect; empty: all */
	size_t n_resources;
	char *client_id;
	uint8_t secret_hash[CRYPTO_SHA256_LEN];
	int has_secret;
};

struct cfg_upstream {
	char *name; /* the key under "upstreams" */
	char *preset;
	char *issuer;
	char *authorize_url;
	char *token_url;
	char *userinfo_url;
	char *revoke_url;
	long timeout_ms;
	char *client_id;
	char *client_secret; /* plaintext: sent to the upstream; wiped on free */
	char **scopes;
	size_t n_scopes;
	int pkce; /* -1: preset decides */
	char *ca_file;
	int client_credentials; /* the upstream grants the broker's client credentials (machine clients) */
};

struct cfg_scope_rule {
	char *scope;
	char **tools; /* "*" = any tool */
	size_t n_tools;
};

/* One injected header. The template holds exactly one placeholder:
 * {upstream_token} (the sign-in upstream's token) or {upstream_token:NAME}
 * (NAME the sign-in upstream or one of the resource's connect upstreams). */
struct cfg_inject {
	char *header; /* default Authorization */
	char *value;  /* the template */
	/* Set by the checks: whose token it takes, a name in the resource's
	 * connect list (not freed separately), or NULL for the sign-in
	 * upstream's. */
	const char *connect;
};

struct cfg_resource {
	char *path;
	char *upstream;
	char *downstream;
	char **connect; /* further upstreams whose accounts the grant connects in band */
	size_t n_connect;
	struct cfg_inject *inject; /* at least one (the default: Authorization: Bearer {upstream_token}) */
	size_t n_inject;
	struct cfg_scope_rule *scopes;
	size_t n_scopes;
	char **default_scopes;
	size_t n_default_scopes;
	char **allowed_origins;
	size_t n_allowed_origins;
	long connect_timeout_ms;
	long idle_timeout_ms;
	long stream_idle_timeout_ms; /* an SSE answer under way (0: none) */
	int identity_headers;        /* add X-MCP-User / X-MCP-Client / X-MCP-Scopes */
	int audit_arguments;         /* tool audit records carry the call's arguments */
	char *client_cert;           /* mutual TLS to the downstream */
	char *client_key;
	char *ca_file;
	long rate_per_grant;     /* proxied requests per second per grant (0: limits default) */
	long rate_per_client;    /* proxied requests per second per client (0: unlimited) */
	char **response_headers; /* downstream response headers passed beside the built-in allow-list */
	size_t n_response_headers;
	int require_dpop; /* Bearer tokens refused: DPoP-bound ones only */
	char *canonical;  /* public_url + path in canonical form (core/uri.h), set at load; NULL: not known */
};

struct config {
	char *listen;
	char listen_host[64];
	int listen_port;
	char *public_url;
	char *database_url;
	struct cfg_key *encryption_keys;
	size_t n_encryption_keys;
	uint8_t cookie_secret[CRYPTO_KEY_LEN];
	uint8_t (*admin_token_hashes)[CRYPTO_SHA256_LEN];
	size_t n_admin_tokens;
	struct {
		long access_ttl, refresh_ttl, code_ttl, refresh_grace, upstream_refresh_skew, upstream_lock_wait_ms;
	} tokens;
	struct {
		int dynamic;
		int client_id_metadata_documents;
		uint8_t initial_access_token_hash[CRYPTO_SHA256_LEN];
		int has_initial_access_token;
		long dynamic_client_ttl_days; /* purge DCR clients that never completed a flow */
		int allow_loopback_redirects; /* http://127.0.0.1, [::1], localhost */
		int allow_private_schemes;    /* cursor://..., com.example.app:/cb */
		char **cimd_allow_hosts;      /* wildcards "*.example.com"; empty = any */
		size_t n_cimd_allow_hosts;
		char **cimd_deny_hosts;
		size_t n_cimd_deny_hosts;
		char **cimd_trusted_hosts; /* wildcards as above: consent shows no unverified warning */
		size_t n_cimd_trusted_hosts;
		char **cimd_allow_private_cidrs; /* testing: private ranges allowed */
		size_t n_cimd_allow_private_cidrs;
		char **cimd_resolve; /* testing: "host:port:address" pins */
		size_t n_cimd_resolve;
		char *cimd_ca_file; /* testing: CA bundle */
		long cimd_timeout_ms, cimd_min_ttl_s, cimd_max_ttl_s;
	} registration;
	struct cfg_client *clients;
	size_t n_clients;
	struct cfg_upstream *upstreams;
	size_t n_upstreams;
	struct cfg_resource *resources;
	size_t n_resources;
	struct cfg_resource_server *resource_servers;
	size_t n_resource_servers;
	struct cfg_trusted_issuer *trusted_issuers;
	size_t n_trusted_issuers;
	struct {
		long register_per_ip_per_hour;
		long token_per_client_per_minute;
		long proxy_per_grant_per_second;
		long token_failures_per_client_address_per_minute; /* failure buckets (DESIGN 3.5) */
		long token_failures_per_address_per_minute;
	} limits;
	struct {
		int require_nonce;
		long nonce_ttl_s, proof_max_age_s;
		uint8_t nonce_key[CRYPTO_KEY_LEN]; /* derived from cookie_secret: the same on every node */
	} dpop;
	struct {
		long pool_size, statement_timeout_ms, connect_timeout_s;
	} database;
	struct {
		long threads, max_connections, drain_timeout_s, connection_timeout_s;
		long handler_threads;          /* the pool of handlers that block (0: they run on the workers) */
		long max_body_bytes_in_flight; /* request bodies buffered on the node, in total */
		char **trusted_proxies;        /* CIDRs whose X-Forwarded-For is believed */
		size_t n_trusted_proxies;
	} http;
	long housekeeping_interval_s;
	struct {
		char *level;
	} log;
};

/* Collected problems, each "<json path>: <what was expected>". */
struct cfg_errors {
	char **msg;
	size_t n;
	size_t lost; /* problems that could not be recorded (out of memory) */
};

/* Loads and validates path (at most LIM_CONFIG_BYTES; JSON nested at most
 * LIM_JSON_DEPTH deep). On failure returns NULL and fills errs with every
 * problem found (not only the first). The caller frees errs. */
struct config *config_load(const char *path, struct cfg_errors *errs) WUR;
/* Same from a JSON text (used by tests). */
struct config *config_parse(const char *text, size_t len, struct cfg_errors *errs) WUR;
void config_free(struct config **cfg);
void config_errors_free(struct cfg_errors *errs);

/* Room for the explanation config_expand_env writes. */
#define CONFIG_WHY_LEN 256

/* Expands ${NAME} from the environment (names of at most LIM_ENV_NAME
 * characters, results of at most LIM_CONFIG_STRING bytes). 0 with *out a
 * malloc'd string (which may hold a secret: the caller wipes it); -1 with
 * *out NULL and why (whycap bytes, CONFIG_WHY_LEN is enough) explaining. */
int config_expand_env(const char *in, char **out, char *why, size_t whycap) WUR;

/* Lookups; NULL when absent. */
const struct cfg_upstream *config_upstream(const struct config *cfg, const char *name);
const struct cfg_client *config_client(const struct config *cfg, const char *client_id);
/* The trusted issuer whose issuer is exactly iss, or NULL. */
const struct cfg_trusted_issuer *config_trusted_issuer(const struct config *cfg, const char *iss);

/* Prints the schema (every key, its type and default) to f. */
void config_describe(FILE *f);

#endif
