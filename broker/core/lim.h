/* Every input dimension the broker accepts has a named limit here. Smaller
 * limits apply before a client is authenticated. */
#ifndef MCPB_LIM_H
#define MCPB_LIM_H

/* HTTP */
#define LIM_HEADER_BYTES (16 * 1024)   /* all request headers of one request */
#define LIM_HTTP_SHARDS 16             /* libmicrohttpd daemons per HTTP worker (an epoll set each) */
#define LIM_OFFLOAD_THREADS 256        /* http.handler_threads at most */
#define LIM_OFFLOAD_QUEUE_PER_THREAD 8 /* requests queued for the handler pool, per thread; beyond: 503 */
#define LIM_OFFLOAD_WAIT_MS 10000      /* a queued request not started by then gets 503 */
#define LIM_BODY_DEFAULT (16 * 1024)   /* POST bodies of OAuth endpoints */
#define LIM_BODY_REGISTER (16 * 1024)  /* RFC 7591 registration documents */
#define LIM_BODY_ADMIN (8 * 1024)
#define LIM_BODY_PROXY_INSPECT (1024 * 1024) /* JSON-RPC bodies inspected by policy */
#define LIM_FORM_FIELDS 32
#define LIM_FORM_VALUE 4096
#define LIM_QUERY_BYTES 8192 /* the raw query string of a request target */
#define LIM_REQUEST_ID 64
#define LIM_PATH 2048
#define LIM_RESP_HEADERS 16 /* headers a handler adds to one response */
#define LIM_MCP_NAME 8192   /* decoded bytes of a base64 Mcp-Name header (SEP-2243) */

/* OAuth values */
#define LIM_CLIENT_ID 512
#define LIM_CLIENT_NAME 200
#define LIM_REDIRECT_URI 2000
#define LIM_REDIRECT_URIS 10
#define LIM_STATE 1024
#define LIM_SCOPE 1024
#define LIM_SCOPES 32
#define LIM_CONNECT_UPSTREAMS 8 /* connect upstreams of one resource */
#define LIM_CLIENT_RESOURCES 16 /* resource paths of one client_credentials client */
#define LIM_TOKEN 256
#define LIM_PKCE_VERIFIER_MIN 43
#define LIM_PKCE_VERIFIER_MAX 128

/* Upstream answers */
#define LIM_UPSTREAM_BODY (64 * 1024)
#define LIM_CIMD_BODY (5 * 1024)
#define LIM_JWKS_BODY (16 * 1024) /* a fetched or configured JWKS (RFC 7517) */

/* JOSE (RFC 7515, 7517) and client assertions (RFC 7523) */
#define LIM_JWS_BYTES 8192         /* a compact JWS: client_assertion */
#define LIM_JWS_SIG 1024           /* decoded signature bytes (RSA-8192) */
#define LIM_JWKS_KEYS 16           /* keys in one JWKS */
#define LIM_JWK_RSA_MIN_BYTES 256  /* RSA modulus: 2048 bits at least */
#define LIM_JWK_RSA_MAX_BYTES 1024 /* 8192 bits at most */
#define LIM_JWK_KID 256
#define LIM_ASSERTION_JTI 256
#define LIM_DPOP_JTI 256             /* a DPoP proof's jti (RFC 9449) */
#define LIM_DPOP_HTU 4096            /* its htu: a public_url (1024) and a path (LIM_PATH) fit */
#define LIM_ASSERTION_AUDS 16        /* members of an aud array */
#define LIM_ASSERTION_LIFETIME_S 300 /* exp at most this far ahead */
#define LIM_ASSERTION_LEEWAY_S 30    /* clock skew allowed on exp, nbf, iat */

/* JSON */
#define LIM_JSON_DEPTH 16
#define LIM_CONFIG_BYTES (1024 * 1024)

/* Environment expansion in config strings */
#define LIM_ENV_NAME 128
#define LIM_CONFIG_STRING 8192

#endif
