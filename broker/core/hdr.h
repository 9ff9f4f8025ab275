/* RFC 9110 / RFC 9112 syntax of request header fields: pure functions over
 * (pointer, length) with no HTTP library around them, so that every rule the
 * broker applies to outside bytes can be unit-tested and fuzzed alone. */
#ifndef MCPB_HDR_H
#define MCPB_HDR_H
#include <stddef.h>
#include <stdint.h>

/* 1 when s[0..n) is a non-empty RFC 9110 token (tchar only): what a field
 * name must be. Whitespace, ':' and control bytes are not tchars. */
int hdr_token_ok(const char *s, size_t n);

/* 1 when s[0..n) may be a field value: no control byte but HTAB (so no CR,
 * LF or NUL). obs-text (>= 0x80) is allowed only when allow_obs_text. */
int hdr_value_ok(const char *s, size_t n, int allow_obs_text);

/* 1 when name[0..n) is a hop-by-hop field (RFC 9110 7.6.1, plus the
 * framing fields Content-Length and Transfer-Encoding). */
int hdr_hop_by_hop(const char *name, size_t n);

/* 1 when the comma-separated list s (a Connection value, say) names
 * name[0..n), compared case-insensitively; OWS around elements ignored. */
int hdr_list_has(const char *s, const char *name, size_t n);

/* Content-Length: 1..18 digits and nothing else (no sign, space, list).
 * 0 and *out set, or -1. */
int hdr_content_length(const char *s, uint64_t *out);

/* A Transfer-Encoding value (all of the request's lines joined by ", "):
 * HDR_TE_CHUNKED when its only coding is chunked; HDR_TE_UNSUPPORTED when
 * chunked is last but other codings precede it (RFC 9112 6.1: 501);
 * HDR_TE_INVALID otherwise (chunked not last, empty elements, parameters
 * on chunked, non-token bytes: the framing cannot be trusted, 400). */
enum hdr_te { HDR_TE_CHUNKED = 0, HDR_TE_UNSUPPORTED = 1, HDR_TE_INVALID = 2 };
enum hdr_te hdr_transfer_encoding(const char *s);

/* 1 when a Content-Type is exactly application/json, optionally with one
 * charset=utf-8 parameter (case-insensitive, quoted or not, OWS around
 * ';' and nothing else): the one form whose bytes every JSON parser reads
 * alike. */
int hdr_json_content_type(const char *s);

/* 1 when a Content-Encoding is absent (NULL) or exactly "identity". */
int hdr_identity_encoding(const char *s);

#endif
