#include "html.h"

#include <string.h>

int html_escape(struct buf *b, const char *s)
{
	for (const char *p = s; *p; p++) {
		const char *rep = NULL;
		switch (*p) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		case '`': rep = "&#96;"; break;
		default: break;
		}
		if (rep ? buf_adds(b, rep) < 0 : buf_add(b, p, 1) < 0)
			return -1;
	}
	return 0;
}

void html_headers(struct http_req *r)
{
	http_add_header(r, "Content-Security-Policy",
			"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
			"frame-ancestors 'none'; base-uri 'none'");
	http_add_header(r, "X-Frame-Options", "DENY");
	http_add_header(r, "Cache-Control", "no-store");
	http_add_header(r, "Pragma", "no-cache");
	http_add_header(r, "Referrer-Policy", "no-referrer");
}

void html_send(struct http_req *r, int status, struct buf *b)
{
	html_headers(r);
	http_send(r, status, "text/html; charset=utf-8", b->ptr ? b->ptr : "", b->len);
}

int html_error_build(struct buf *b, const char *title, const char *message)
{
	if (buf_adds(b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>") < 0 ||
	    html_escape(b, title) < 0 ||
	    buf_adds(b, "</title><style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;"
			"padding:0 1em}</style></head><body><h1>") < 0 ||
	    html_escape(b, title) < 0 || buf_adds(b, "</h1><p>") < 0 || html_escape(b, message) < 0 ||
	    buf_adds(b, "</p><p>You can close this window and try again from your application.</p></body></html>") < 0)
		return -1;
	return 0;
}

void html_error_page(struct http_req *r, int status, const char *title, const char *message)
{
	struct buf b;
	buf_init(&b, 8192);
	if (html_error_build(&b, title, message) < 0)
		http_send_error(r, 500, "server_error");
	else
		html_send(r, status, &b);
	buf_free(&b);
}
