/* HTML pages (consent, errors): every interpolated value is escaped, and
 * every page carries CSP, X-Frame-Options: DENY and Cache-Control: no-store. */
#ifndef MCPB_HTML_H
#define MCPB_HTML_H
#include "buf.h"
#include "http.h"

/* Appends s with & < > " ' and ` as character references, safe in text and
 * in a quoted attribute value. -1 when b overflows. */
int html_escape(struct buf *b, const char *s) WUR;
/* Appends the whole error page for title and message (escaped), pure. */
int html_error_build(struct buf *b, const char *title, const char *message) WUR;
/* Adds the security headers of every HTML page. */
void html_headers(struct http_req *r);
/* An error page; title and message are fixed texts (escaped anyway). */
void html_error_page(struct http_req *r, int status, const char *title, const char *message);
/* Sends b as an HTML page with the security headers. */
void html_send(struct http_req *r, int status, struct buf *b);

#endif
