/* Structured logging: one JSON object per line on stderr with time, level,
 * event and request id. A line is formatted on the caller's thread and
 * queued; one writer thread writes the queue in batches, so a slow stderr
 * never stalls a caller. Past a cap of queued bytes lines are dropped and
 * counted (a "log.dropped" line with the count follows once the writer has
 * caught up); node.* and error lines have a higher cap. Any field whose name suggests a secret (token,
 * secret, password, verifier, code, cookie, authorization, key, ...) is
 * replaced by "[redacted]" before printing, at every depth. */
#ifndef MCPB_LOG_H
#define MCPB_LOG_H
#include <jansson.h>
#include <stdio.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the level and the output (NULL: stderr), after writing what was
 * queued to the previous output; starts the writer if it is not running
 * (log_shutdown is registered with atexit). Without a writer lines are
 * written on the caller's thread. */
void log_init(enum log_level min, FILE *out);
/* Waits until every line logged before the call is written. */
void log_flush(void);
/* Writes what is queued (waiting at most 2 s for the output) and stops the
 * writer; lines logged afterwards are written on the caller's thread. */
void log_shutdown(void);
/* Lines dropped because the queue was full (or no memory), since start. */
unsigned long long log_dropped_total(void);
int log_level_parse(const char *s, enum log_level *out);
int log_enabled(enum log_level lvl);

/* Emits event with the fields of obj (stolen; may be NULL). Events named
 * "node.*" (a node's lifecycle) are printed whatever the level. */
void log_event(enum log_level lvl, const char *event, const char *request_id, json_t *obj);
/* Same with a printf-checked human message in field "msg". */
void log_msg(enum log_level lvl, const char *event, const char *request_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The access line of one request (event "http.request"), formatted without
 * jansson as log_event would print {method, route, path, status,
 * duration_ms, client[, terminated]}: one per request, on the hot path.
 * terminated < 0: left out. None of these fields is a secret. Each is
 * bounded (method 32 bytes, path 256, the others 64), so a line is never
 * dropped for its length. */
struct log_request_line {
	const char *method, *route, *path, *client;
	int status;
	double duration_ms;
	int terminated;
};
void log_request(enum log_level lvl, const char *request_id, const struct log_request_line *q);

/* 1 when a field of this name would be redacted. */
int log_is_secret_key(const char *key);

#endif
