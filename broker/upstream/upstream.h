/* Upstream identity providers over libcurl: data-driven presets (github,
 * sentry, google, oidc discovery), the authorization redirect, code
 * exchange, identity, refresh and revocation. Every call is bounded in time
 * and response size, TLS-verified, never redirected.
 *
 * Every answer is classified (enum upstream_class). Only UPC_GRANT_DEAD is a
 * verdict on the user's grant; every other failure says something about the
 * upstream or about the broker's own credentials, and must never cost a user
 * their grant. Each failed call is counted in
 * mcpb_upstream_errors_total{upstream, op, class} and logged once
 * ("upstream.error", never with a token, code or secret). */
#ifndef MCPB_UPSTREAM_H
#define MCPB_UPSTREAM_H
#include <jansson.h>
#include "buf.h"
#include "config.h"

/* What a call to the upstream came to. */
enum upstream_class {
	UPC_OK = 0,
	UPC_GRANT_DEAD,          /* definitive: invalid_grant, GitHub's bad_refresh_token or
				    bad_verification_code, a 401 for the user's token at userinfo */
	UPC_INVALID_CLIENT,      /* the broker's own upstream credentials are refused: invalid_client,
				    GitHub's incorrect_client_credentials, a bare 401 at the token endpoint */
	UPC_UNAUTHORIZED_CLIENT, /* the broker's upstream client may not use this grant type */
	UPC_RATE_LIMITED,        /* 429, 403 (GitHub's rate limit answer), slow_down */
	UPC_SERVER_ERROR,        /* 5xx, server_error, temporarily_unavailable */
	UPC_TIMEOUT,             /* no (complete) answer in time, or 408 */
	UPC_UNREACHABLE,         /* connection refused or reset, DNS, TLS failure */
	UPC_GARBAGE,             /* unparseable, wrong content type, required field missing or
				    invalid, too large, an unexpected status */
	UPC_REFUSED,             /* any other OAuth error (invalid_request, invalid_scope, ...):
				    not a verdict on the grant */
	UPC_INTERNAL,            /* out of memory or misconfiguration on the broker's side */
};

/* The kind of call, for classification, the metric and the log. */
enum upstream_op {
	UPOP_EXCHANGE,           /* authorization code grant at /callback */
	UPOP_REFRESH,            /* refresh_token grant */
	UPOP_USERINFO,           /* userinfo / GitHub /user / Sentry /api/0/, at /callback or to check a token */
	UPOP_REVOKE,             /* RFC 7009 or GitHub's grant API */
	UPOP_DISCOVERY,          /* OIDC discovery document */
	UPOP_CLIENT_CREDENTIALS, /* client_credentials grant with the broker's own credentials (machine clients) */
};

/* Coarse result of upstream_revoke, kept for its retrying caller. */
enum upstream_rc {
	UP_OK = 0,
	UP_REJECTED = -1,    /* a final refusal (garbage, an OAuth error): retrying will not help */
	UP_UNAVAILABLE = -2, /* may succeed later: 5xx, 429/403, connection failure, our credentials */
	UP_TIMEOUT = -3,
	UP_INTERNAL = -4, /* out of memory, misconfiguration */
};

#define UP_ERROR_MAX 64         /* an OAuth "error" code kept from an answer, with its NUL */
#define UP_MAX_TOKEN 8192       /* an upstream access or refresh token */
#define UP_MAX_ID_FIELD 255     /* subject, login, email, name */
#define UP_RETRY_AFTER_MAX 3600 /* longest wait the broker passes on */

struct upstream_tokens {
	char *access_token;
	char *refresh_token; /* NULL when the answer had none */
	char *scope;
	long expires_in; /* seconds; -1 when the token does not expire */
	json_t *user;    /* identity carried in the token answer (sentry), or NULL */
};

struct upstream_identity {
	char *subject; /* stable id: OIDC sub, GitHub numeric id, Sentry user id */
	char *login;
	char *email;
	char *name;
};

/* Resolved endpoints and quirks of one configured upstream. */
struct upstream_ep {
	char authorize[1024], token[1024], userinfo[1024], revoke[1024];
	int pkce;
	int identity_from_token;            /* sentry */
	int github;                         /* GitHub quirks: form answers, grant revocation API */
	const char *extra_authorize_params; /* google: offline access */
};

/* ---- pure functions: no I/O, no globals; safe on any bytes ------------ */

/* Parses the body of a token endpoint answer: data[0..size) need not be
 * NUL-terminated and may hold anything. form: 1 parses it as
 * application/x-www-form-urlencoded (GitHub's default), 0 as a JSON object
 * (duplicate members refused). Returns 0 when it is a well-formed answer of
 * that kind; then out holds what it carried, each field validated or NULL:
 * access_token/refresh_token 1..UP_MAX_TOKEN visible ASCII characters,
 * scope, expires_in (-1 when absent or invalid), user (a JSON object, a new
 * reference). error receives the OAuth "error" code when the answer had one
 * of [A-Za-z0-9_.-]{1,63}, "invalid" for any other error value, "" when
 * none. Returns -1 for anything else, with *out empty and error "". The
 * caller frees *out with upstream_tokens_free (also after -1). */
int upstream_parse_token_answer(const char *data, size_t size, int form, struct upstream_tokens *out,
				char error[UP_ERROR_MAX]) WUR;

/* Parses a userinfo answer (a JSON object: OIDC userinfo, GitHub /user, or
 * Sentry's /api/0/ with the user inside "user"), data[0..size) as above.
 * Returns 0 when it names a subject (sub or id: a string of 1..255 visible
 * ASCII characters or an integer); login/email/name are kept when they are
 * strings of at most 255 bytes without control characters. -1 otherwise,
 * with *out empty. The caller frees *out with upstream_identity_free. */
int upstream_parse_userinfo(const char *data, size_t size, struct upstream_identity *out) WUR;

/* Classifies one HTTP answer of the upstream to op: the status, the
 * Content-Type header value (may be NULL) and the body. Only a definitive
 * "this grant is dead" is UPC_GRANT_DEAD: error=invalid_grant,
 * bad_refresh_token or bad_verification_code from the token endpoint
 * (HTTP 200, 400 or 401), and 401 from userinfo. Never UPC_TIMEOUT for a
 * status other than 408, never UPC_UNREACHABLE or UPC_INTERNAL. For
 * UPOP_REVOKE, 200 and 204 are UPC_OK (GitHub's 404 is its caller's call). */
enum upstream_class upstream_classify(enum upstream_op op, long status, const char *content_type, const char *body,
				      size_t len);

/* The class an OAuth "error" code stands for at the token endpoint
 * (UPC_REFUSED for codes it does not know, and for NULL or ""). */
enum upstream_class upstream_error_class(const char *error);

/* Seconds to wait from a Retry-After value (delta-seconds or an HTTP-date,
 * RFC 9110 §10.2.3) at time now (epoch seconds), at most
 * UP_RETRY_AFTER_MAX; 0 when value is NULL, malformed or in the past. */
long upstream_parse_retry_after(const char *value, long long now);

/* The status to answer a client whose request failed on cls: 504 timeout,
 * 503 rate limiting, 5xx, unreachable and internal, 502 for the rest
 * (our credentials refused, garbage, refused). 401 for UPC_GRANT_DEAD,
 * 200 for UPC_OK. */
int upstream_class_http_status(enum upstream_class cls);

/* Metric/log label of a class ("ok", "grant_dead", "invalid_client",
 * "unauthorized_client", "rate_limited", "server_error", "timeout",
 * "unreachable", "garbage", "refused", "internal") and of an op
 * ("exchange", "refresh", "userinfo", "revoke", "discovery", "client_credentials"). Static. */
const char *upstream_class_name(enum upstream_class cls);
const char *upstream_op_name(enum upstream_op op);

/* ---- calls ------------------------------------------------------------ */

/* Fills ep for up (OIDC discovery at first use, cached). */
int upstream_endpoints(const struct cfg_upstream *up, struct upstream_ep *ep) WUR;

/* The URL to send the browser to; malloc'd. challenge may be NULL. */
char *upstream_authorize_url(const struct cfg_upstream *up, const struct upstream_ep *ep, const char *redirect_uri,
			     const char *state, const char *challenge) WUR;

/* The three calls below return the class of the upstream's answer; on UPC_OK
 * *out holds the result (free it with upstream_tokens_free /
 * upstream_identity_free, also after a failure). retry_after (may be NULL)
 * receives the seconds the upstream asked the broker to wait (Retry-After,
 * or GitHub's rate limit reset), 0 when it did not. request_id (may be NULL)
 * goes on the log line of a failure. */
enum upstream_class upstream_exchange_code(const struct cfg_upstream *up, const struct upstream_ep *ep,
					   const char *code, const char *redirect_uri, const char *verifier,
					   const char *request_id, struct upstream_tokens *out, long *retry_after) WUR;
enum upstream_class upstream_refresh(const struct cfg_upstream *up, const struct upstream_ep *ep,
				     const char *refresh_token, const char *request_id, struct upstream_tokens *out,
				     long *retry_after) WUR;
/* The upstream's own client_credentials grant (RFC 6749 section 4.4) with
 * the broker's client id and secret at up (and up's scopes, when it has
 * any), for a machine client's grant: its first upstream token and every
 * renewal. Classified as a token endpoint answer. */
enum upstream_class upstream_client_credentials(const struct cfg_upstream *up, const struct upstream_ep *ep,
						const char *request_id, struct upstream_tokens *out,
						long *retry_after) WUR;
/* The user's identity from tok: from the token answer itself where the
 * provider puts it there (sentry), else from the userinfo endpoint with
 * tok->access_token. Also the check of a token the downstream refused:
 * UPC_GRANT_DEAD means the upstream refuses the token (401). */
enum upstream_class upstream_identity(const struct cfg_upstream *up, const struct upstream_ep *ep,
				      const struct upstream_tokens *tok, const char *request_id,
				      struct upstream_identity *out, long *retry_after) WUR;
/* Revokes at the upstream where the provider has an endpoint; UP_OK when it
 * has none, and for GitHub's 404 (the token is already gone). */
enum upstream_rc upstream_revoke(const struct cfg_upstream *up, const struct upstream_ep *ep, const char *access_token,
				 const char *refresh_token) WUR;
/* Revokes this one access token and nothing else of the user's: GitHub's
 * DELETE /applications/{client_id}/token (where upstream_revoke takes the
 * whole application grant). UP_REJECTED, sending nothing, for an upstream
 * without such an endpoint (the others' tokens expire). */
enum upstream_rc upstream_revoke_one(const struct cfg_upstream *up, const struct upstream_ep *ep,
				     const char *access_token) WUR;

void upstream_tokens_free(struct upstream_tokens *t);
void upstream_identity_free(struct upstream_identity *id);
const char *upstream_rc_name(enum upstream_rc rc);

#endif
