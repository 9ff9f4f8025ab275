/* What of a client's request travels downstream: the URL (the path below
 * the resource, re-encoded, and the query), the request's header fields
 * that are the client's to say (an allow-by-default list that drops
 * hop-by-hop, credential, identity and routing fields), and the fields the
 * broker adds (the injected upstream credential, the identity headers,
 * X-Forwarded-For, X-Request-Id). */
#ifndef MCPB_FORWARD_H
#define MCPB_FORWARD_H
#include <curl/curl.h>
#include "buf.h"
#include "config.h"
#include "http.h"

/* A line the broker builds or copies (a longer client field is not forwarded). */
#define FORWARD_LINE_MAX 8192

/* Whom the downstream request serves, as the identity headers say it. */
struct forward_identity {
	const char *upstream, *subject, *client_id, *scope;
};

/* A field value without the optional whitespace around it (RFC 9110 5.5):
 * libmicrohttpd keeps trailing SP/HTAB, every other parser drops it, so
 * the broker judges and forwards the trimmed value. A view into v. */
struct str forward_ows_trim(const char *v);

/* 1 when every request field name is an RFC 9110 token and every value
 * visible ASCII, SP or HTAB: values travel downstream verbatim, and a bare
 * CR, LF or other control byte could end a line for a parser there. */
int forward_fields_ok(struct http_req *r);

/* 1 when the path below the resource (rest) has a "." or ".." segment. */
int forward_has_dot_segment(const char *rest);

/* 1 when the client's field name never travels downstream: hop-by-hop
 * fields (and those its Connection value lists), the credential, fields
 * naming who the client is or which URL and method the request has, any
 * name with '_', and inject_header (may be NULL): a header the broker injects. */
int forward_dropped(const char *name, const char *inject_header, const char *connection);

/* The downstream URL of r (res->downstream, r's path below res->path,
 * segment by segment re-encoded, and r's query re-encoded), malloc'd;
 * NULL on a dot segment, overflow or lack of memory. */
char *forward_url(struct http_req *r, const struct cfg_resource *res) WUR;

/* The downstream request's header list: r's fields not dropped (without
 * Mcp-Session-Id when drop_session, nor any header res injects), each
 * upstream credential tokens[i] in res's inject template i (none when
 * tokens[i] is NULL), the identity headers when res asks for them, then
 * X-Forwarded-For, X-Request-Id, an empty Expect and, when has_body,
 * Content-Type: application/json. 0 and *out (free it with
 * forward_headers_free: it holds the credential); -1 when the credential or
 * subject is not a valid field value or memory is lacking (*out NULL). */
int forward_headers(struct http_req *r, const struct cfg_resource *res, const struct forward_identity *id,
		    const char *const *tokens, int drop_session, int has_body, struct curl_slist **out) WUR;

/* Wipes and frees a list forward_headers built; NULL-safe, sets *l NULL. */
void forward_headers_free(struct curl_slist **l);

#endif
