/* Structured logging: one JSON object per line on stderr with time, level,
 * event and request id. Any field whose name suggests a secret (token,
 * secret, password, verifier, code, cookie, authorization, key, ...) is
 * replaced by "[redacted]" before printing, at every depth. */
#ifndef MCPB_LOG_H
#define MCPB_LOG_H
#include <jansson.h>
#include <stdio.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_init(enum log_level min, FILE *out);
int log_level_parse(const char *s, enum log_level *out);
int log_enabled(enum log_level lvl);

/* Emits event with the fields of obj (stolen; may be NULL). Events named
 * "node.*" (a node's lifecycle) are printed whatever the level. */
void log_event(enum log_level lvl, const char *event, const char *request_id, json_t *obj);
/* Same with a printf-checked human message in field "msg". */
void log_msg(enum log_level lvl, const char *event, const char *request_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* 1 when a field of this name would be redacted. */
int log_is_secret_key(const char *key);

#endif
