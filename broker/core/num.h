/* Bounded decimal integers: the one way the broker turns text into a number
 * (request data, configuration, PostgreSQL's text results). */
#ifndef MCPB_NUM_H
#define MCPB_NUM_H
#include <stddef.h>
#include "buf.h"

/* Parses all of s (an optional '-' then 1..19 ASCII digits, nothing else: no
 * space, no '+', no hex) into *out if it lies in [min, max]. 0 on success;
 * -1 otherwise, *out untouched. */
int num_parse(const char *s, long long min, long long max, long long *out) WUR;

/* The same over the first len bytes of s (no NUL needed). */
int num_parse_n(const char *s, size_t len, long long min, long long max, long long *out) WUR;

/* 1 when s is a UUID as PostgreSQL prints it (8-4-4-4-12 lower-case hex
 * digits), so that a ::uuid cast of it cannot fail. */
int num_uuid_ok(const char *s);

#endif
