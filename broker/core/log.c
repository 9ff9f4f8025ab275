#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;
static FILE *log_out;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_init(enum log_level min, FILE *out)
{
	min_level = min;
	log_out = out;
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

int log_enabled(enum log_level lvl)
{
	return lvl >= min_level;
}

int log_is_secret_key(const char *key)
{
	static const char *const parts[] = { "token",  "secret",     "password",  "passwd", "verifier", "authorization",
					     "cookie", "credential", "assertion", "nonce",  "csrf" };
	char low[64];
	size_t n = strlen(key);
	if (n >= sizeof(low))
		return 1; /* absurdly long names are not ours: hide them */
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)tolower((unsigned char)key[i]);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (strstr(low, parts[i]))
			return 1;
	if (strcmp(low, "code") == 0 || strcmp(low, "key") == 0 || strcmp(low, "state") == 0)
		return 1;
	if (n > 5 && strcmp(low + n - 5, "_code") == 0)
		return 1;
	if (n > 4 && strcmp(low + n - 4, "_key") == 0)
		return 1;
	return 0;
}

/* Below LOG_REDACT_DEPTH a container is replaced whole: what cannot be
 * inspected is not printed. */
#define LOG_REDACT_DEPTH 8

static int too_deep(const json_t *v, int depth)
{
	return depth >= LOG_REDACT_DEPTH && (json_is_object(v) || json_is_array(v));
}

/* -1 when a value could not be replaced (no memory for the string): it is
 * still in obj, which must not be printed. */
static int redact(json_t *obj, int depth)
{
	const char *k;
	json_t *v;
	size_t i;
	if (json_is_object(obj)) {
		json_object_foreach(obj, k, v)
		{
			if (log_is_secret_key(k) || too_deep(v, depth)) {
				if (json_object_set_new(obj, k, json_string("[redacted]")) < 0)
					return -1;
			} else if (redact(v, depth + 1) < 0) {
				return -1;
			}
		}
	} else if (json_is_array(obj)) {
		json_array_foreach(obj, i, v)
		{
			if (too_deep(v, depth)) {
				if (json_array_set_new(obj, i, json_string("[redacted]")) < 0)
					return -1;
			} else if (redact(v, depth + 1) < 0) {
				return -1;
			}
		}
	}
	return 0;
}

void log_event(enum log_level lvl, const char *event, const char *request_id, json_t *obj)
{
	/* A node's lifecycle (node.started, node.draining, node.stopped) is
	 * printed whatever the level: operators and supervisors wait for it. */
	if (lvl < min_level && strncmp(event, "node.", 5) != 0) {
		json_decref(obj);
		return;
	}
	json_t *line = json_object();
	if (!line) {
		json_decref(obj);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000);
	json_object_set_new(line, "time", json_string(when));
	json_object_set_new(line, "level", json_string(level_names[lvl]));
	json_object_set_new(line, "event", json_string(event));
	if (request_id)
		json_object_set_new(line, "request_id", json_string(request_id));
	/* A line whose fields could not all be redacted is dropped whole. */
	int printable = 1;
	if (json_is_object(obj)) {
		printable = redact(obj, 0) == 0;
		if (printable)
			json_object_update_missing(line, obj);
	}
	json_decref(obj);
	char *text = NULL;
	if (printable)
		text = json_dumps(line,
				  JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
	json_decref(line);
	if (!text)
		return;
	/* One write per line (stderr is unbuffered: fputs + fputc would be two). */
	size_t n = strlen(text);
	char *full = realloc(text, n + 2);
	if (!full) {
		free(text);
		return;
	}
	full[n] = '\n';
	full[n + 1] = '\0';
	FILE *out = log_out ? log_out : stderr;
	pthread_mutex_lock(&log_lock);
	fwrite(full, 1, n + 1, out);
	fflush(out);
	pthread_mutex_unlock(&log_lock);
	free(full);
}

void log_msg(enum log_level lvl, const char *event, const char *request_id, const char *fmt, ...)
{
	if (lvl < min_level && strncmp(event, "node.", 5) != 0)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap); /* truncation is acceptable for a message */
	va_end(ap);
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "msg", json_string(msg));
	log_event(lvl, event, request_id, o);
}
