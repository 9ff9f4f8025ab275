/* Parsing JSON that came from outside the process (a request body, a CIMD
 * document, an upstream's answer, a NOTIFY payload, a database column): the
 * depth is bounded before jansson builds anything. */
#ifndef MCPB_JPARSE_H
#define MCPB_JPARSE_H
#include <stddef.h>
#include <jansson.h>
#include "buf.h"

/* The deepest nesting of arrays and objects in p[0..len), strings skipped
 * (escapes honoured); SIZE_MAX once it passes max. Never reads past len. */
size_t jparse_depth(const char *p, size_t len, size_t max);

/* json_loadb(p, len, flags | JSON_REJECT_DUPLICATES) after refusing a NUL
 * byte (jansson skips one after a literal) and nesting deeper than max_depth
 * (LIM_JSON_DEPTH for anything an outsider sent). NULL when refused or
 * invalid; the caller owns the result. */
json_t *jparse(const char *p, size_t len, size_t flags, size_t max_depth) WUR;

/* jparse over a NUL-terminated string (a database value, a NOTIFY payload). */
json_t *jparse_str(const char *s, size_t flags, size_t max_depth) WUR;

#endif
