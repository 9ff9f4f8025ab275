/* POST /register: RFC 7591 dynamic client registration, as the
 * registration policy allows (registration.dynamic, an optional initial
 * access token, limits.register_per_ip_per_hour). */
#ifndef MCPB_REGISTER_H
#define MCPB_REGISTER_H
#include <jansson.h>
#include "config.h"
#include "http.h"

/* A registration request, checked. */
struct register_request {
	json_t *doc;                  /* the parsed body, which the borrowed pointers below point into */
	json_t *redirect_uris;        /* in doc: 1..LIM_REDIRECT_URIS URIs the policy allows */
	const char *name;             /* client_name, or NULL */
	const char *auth_method;      /* none, client_secret_basic (the default) or client_secret_post */
	const char *application_type; /* "web" or "native" (static), also in metadata */
	int confidential;             /* auth_method is not "none" */
	json_t *grant_types;          /* owned: as asked, or the default */
	json_t *metadata; /* owned: client_uri, logo_uri, tos_uri, policy_uri, scope as given; application_type */
};

/* Why a request was refused: an RFC 7591 section 3.2.2 error code and a
 * fixed description (never the input). */
struct register_refusal {
	const char *error;
	const char *description;
};

enum register_parse {
	REGISTER_OK = 0,
	REGISTER_INVALID, /* *why filled */
	REGISTER_NOMEM,
};

/* The pure step of /register: the Content-Type (may be NULL) and body
 * (body may be NULL when len is 0) into *out. Unknown metadata is ignored,
 * neither stored nor echoed. Anything but REGISTER_OK leaves *out empty. */
enum register_parse register_parse(const struct config *cfg, const char *content_type, const char *body, size_t len,
				   struct register_request *out, struct register_refusal *why) WUR;
/* Frees what rq owns and empties it; an empty one may be freed again. */
void register_request_free(struct register_request *rq);

/* POST /register. */
void register_endpoint(struct http_req *r);

#endif
