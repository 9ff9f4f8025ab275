/* Upstream identity providers over libcurl: data-driven presets (github,
 * sentry, google, oidc discovery), the authorization redirect, code
 * exchange, identity, refresh and revocation. Every call is bounded in time
 * and response size, TLS-verified, never redirected. */
#ifndef MCPB_UPSTREAM_H
#define MCPB_UPSTREAM_H
#include <jansson.h>
#include "buf.h"
#include "config.h"

enum upstream_rc {
	UP_OK = 0,
	UP_REJECTED = -1,    /* the upstream said no: invalid_grant, 401, access denied */
	UP_UNAVAILABLE = -2, /* 5xx, 429, garbage, too large, connection failure */
	UP_TIMEOUT = -3,
	UP_INTERNAL = -4,    /* out of memory, misconfiguration */
};

struct upstream_tokens {
	char *access_token;
	char *refresh_token; /* NULL when the answer had none */
	char *scope;
	long expires_in;     /* seconds; -1 when the token does not expire */
	json_t *user;        /* identity carried in the token answer (sentry), or NULL */
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
	int identity_from_token; /* sentry */
	int github;              /* GitHub quirks: form answers, grant revocation API */
	const char *extra_authorize_params; /* google: offline access */
};

/* Fills ep for up (OIDC discovery at first use, cached). */
int upstream_endpoints(const struct cfg_upstream *up, struct upstream_ep *ep) WUR;

/* The URL to send the browser to; malloc'd. challenge may be NULL. */
char *upstream_authorize_url(const struct cfg_upstream *up, const struct upstream_ep *ep,
			     const char *redirect_uri, const char *state, const char *challenge);

enum upstream_rc upstream_exchange_code(const struct cfg_upstream *up, const struct upstream_ep *ep,
					const char *code, const char *redirect_uri,
					const char *verifier, struct upstream_tokens *out);
enum upstream_rc upstream_refresh(const struct cfg_upstream *up, const struct upstream_ep *ep,
				  const char *refresh_token, struct upstream_tokens *out);
enum upstream_rc upstream_identity(const struct cfg_upstream *up, const struct upstream_ep *ep,
				   const struct upstream_tokens *tok, struct upstream_identity *out);
/* Revokes at the upstream where the provider has an endpoint; UP_OK when it
 * has none. */
enum upstream_rc upstream_revoke(const struct cfg_upstream *up, const struct upstream_ep *ep,
				 const char *access_token, const char *refresh_token);

void upstream_tokens_free(struct upstream_tokens *t);
void upstream_identity_free(struct upstream_identity *id);
const char *upstream_rc_name(enum upstream_rc rc);

#endif
