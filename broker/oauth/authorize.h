/* The authorization endpoint (RFC 6749 section 4.1.1 with OAuth 2.1's PKCE
 * and RFC 8707 resources): GET /authorize validates the request and shows
 * the consent page, or goes straight upstream when this browser approved
 * this exact request before; POST /authorize takes the decision and sends
 * the browser upstream. It also builds the authorization response (RFC 6749
 * 4.1.2 and 4.1.2.1, RFC 9207 iss) that /callback sends back. */
#ifndef MCPB_AUTHORIZE_H
#define MCPB_AUTHORIZE_H
#include <stddef.h>
#include "config.h"
#include "http.h"
#include "lim.h"

struct client;

/* The parameters the endpoint reads, in the order their repeats are refused. */
enum authorize_param {
	AUTHZ_P_CLIENT_ID,
	AUTHZ_P_REDIRECT_URI,
	AUTHZ_P_RESPONSE_TYPE,
	AUTHZ_P_STATE,
	AUTHZ_P_SCOPE,
	AUTHZ_P_CODE_CHALLENGE,
	AUTHZ_P_CODE_CHALLENGE_METHOD,
	AUTHZ_P_RESOURCE,
	AUTHZ_P_N
};

/* One request's parameters, borrowed (NULL: absent): from the query string,
 * where dup[i] marks a repeated one, or from the sealed consent request. */
struct authorize_params {
	const char *v[AUTHZ_P_N];
	int dup[AUTHZ_P_N];
};

/* A refusal. Until the redirect URI is verified it is an HTML error page
 * (redirect 0: status, code = its title); after, an error sent back to the
 * request's redirect_uri (redirect 1: code = the RFC 6749 4.1.2.1 error).
 * code and description are fixed texts that never echo the request. */
struct authorize_error {
	int redirect;
	int status;
	const char *code;
	const char *description;
};

/* A validated authorization request. */
struct authorize_request {
	const struct client *client; /* borrowed: the client named by client_id */
	char redirect_uri[LIM_REDIRECT_URI + 1];
	char state[LIM_STATE + 1];
	int has_state;
	char challenge[LIM_PKCE_VERIFIER_MAX + 1];
	const struct cfg_resource *res;
	char resource_url[2048];
	char *scope; /* space-joined, owned; never NULL once valid */
};

/* The parse step, pure, in two halves around the client lookup. First the
 * client_id: 0 and *client_id (borrowed from p), or -1 and *err when it is
 * missing or it or redirect_uri is repeated. */
int authorize_parse_client(const struct authorize_params *p, const char **client_id, struct authorize_error *err) WUR;
/* Then everything else, for the enabled client cl that p names: redirect
 * URI, state, repeats, response_type, PKCE (S256), resource, scope. 0 and
 * *out valid (release it with authorize_request_free); -1 and *err, *out
 * owning nothing, its redirect_uri and state (has_state) set when
 * err->redirect. */
int authorize_parse(const struct config *cfg, const struct client *cl, const struct authorize_params *p,
		    struct authorize_request *out, struct authorize_error *err) WUR;
void authorize_request_free(struct authorize_request *a);

/* The upstream's redirect URI: public_url "/callback" into out (cap bytes). */
int authorize_callback_url(const struct config *cfg, char *out, size_t cap) WUR;
/* Sends the browser back to the verified redirect_uri with an error (desc
 * and state may be NULL) and iss; logs authorize.error. */
void authorize_redirect_error(struct http_req *r, const char *redirect_uri, const char *error, const char *desc,
			      const char *state);
/* Sends the browser back to the verified redirect_uri with the one-time
 * code, state (may be NULL) and iss; the Location is wiped after sending. */
void authorize_redirect_code(struct http_req *r, const char *redirect_uri, const char *code, const char *state);

void authorize_get(struct http_req *r);
void authorize_post(struct http_req *r);

#endif
