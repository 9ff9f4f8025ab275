/* log.c: which field names count as secrets, redaction at depth inside real
 * log lines (read back and parsed), reserved fields, level filtering. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "test.h"

static FILE *out;

/* Everything written to out since the last call, as one string. */
static char *drain(void)
{
	static long at;
	log_flush(); /* lines are written by the log's own thread */
	fflush(out);
	long end = ftell(out);
	size_t n = (size_t)(end - at);
	char *s = calloc(1, n + 1);
	if (!s)
		return NULL;
	fseek(out, at, SEEK_SET);
	if (fread(s, 1, n, out) != n)
		s[0] = '\0';
	fseek(out, end, SEEK_SET);
	at = end;
	return s;
}

static void test_secret_keys(void)
{
	static const char *const secret[] = {
		"access_token",
		"refresh_token",
		"client_secret",
		"code",
		"code_verifier",
		"Authorization",
		"cookie",
		"password",
		"key",
		"state",
		"csrf_token",
		/* and the families they stand for */
		"id_token",
		"upstream_token",
		"Set-Cookie",
		"COOKIE",
		"Proxy-Authorization",
		"initial_access_token",
		"passwd",
		"client_assertion",
		"nonce",
		"api_key",
		"auth_code",
		"device_code",
		"credentials",
		"KEY",
		"State",
		"a_name_far_too_long_to_be_one_of_ours_so_it_is_hidden_just_in_case_x",
	};
	static const char *const plain[] = {
		"route",    "status",       "client_id",  "path",      "event",
		"method",   "duration_ms",  "request_id", "error",     "error_description",
		"scope",    "redirect_uri", "grant_type", "msg",       "client",
		"keyboard", "monkey",       "codec",      "statement", "",
		"upstream", "resource",
	};
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
		if (!log_is_secret_key(secret[i]))
			fprintf(stderr, "  \"%s\" not treated as secret\n", secret[i]);
		CHECK(log_is_secret_key(secret[i]) == 1);
	}
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		if (log_is_secret_key(plain[i]))
			fprintf(stderr, "  \"%s\" treated as secret\n", plain[i]);
		CHECK(log_is_secret_key(plain[i]) == 0);
	}
}

/* Exits 3 when any of the planted values shows up in text: a secret in the
 * log is never excused by an allocation failure, so this holds in torture
 * mode too (torture.h), where a failed CHECK is allowed and this is not. */
static void check_no_secrets(const char *text)
{
	static const char *const planted[] = { "S3CR3T",   "SECRET_1", "SECRET_2", "SECRET_3", "SECRET_4",
					       "SECRET_5", "SECRET_6", "SECRET_7", "SECRET_8" };
	for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++) {
		if (strstr(text, planted[i])) {
			fprintf(stderr, "  secret %s leaked in: %s\n", planted[i], text);
			exit(3);
		}
	}
}

static void test_redaction(void)
{
	log_init(LOG_DEBUG, out);
	json_t *f = json_pack("{s:s, s:s, s:{s:s, s:{s:s, s:s}}, s:[{s:s}, {s:s}, s], s:{s:s}, s:{s:s}, s:i}", "route",
			      "token", "access_token", "SECRET_1", "nested", "refresh_token", "SECRET_2", "inner",
			      "client_secret", "SECRET_3", "ok", "visible", "list", "code", "SECRET_4", "Authorization",
			      "Bearer SECRET_5", "plain-array-item", "headers", "Cookie", "sid=SECRET_6", "password",
			      "an", "object SECRET_7", "status", 200);
	CHECK(f != NULL);
	log_event(LOG_INFO, "oauth.token", "req-123", f);
	char *text = drain();
	CHECK(text != NULL && strlen(text) > 0);
	if (!text)
		return;
	check_no_secrets(text);
	CHECK(strstr(text, "[redacted]") != NULL);
	/* Exactly one line of JSON. */
	char *nl = strchr(text, '\n');
	CHECK(nl != NULL && nl[1] == '\0');

	json_error_t err;
	json_t *line = json_loads(text, 0, &err);
	CHECK(line != NULL);
	if (line) {
		CHECK_STR(json_string_value(json_object_get(line, "event")), "oauth.token");
		CHECK_STR(json_string_value(json_object_get(line, "level")), "info");
		CHECK_STR(json_string_value(json_object_get(line, "request_id")), "req-123");
		CHECK(json_is_string(json_object_get(line, "time")));
		CHECK_STR(json_string_value(json_object_get(line, "route")), "token");
		CHECK(json_integer_value(json_object_get(line, "status")) == 200);
		CHECK_STR(json_string_value(json_object_get(line, "access_token")), "[redacted]");
		json_t *nested = json_object_get(line, "nested");
		CHECK_STR(json_string_value(json_object_get(nested, "refresh_token")), "[redacted]");
		json_t *inner = json_object_get(nested, "inner");
		CHECK_STR(json_string_value(json_object_get(inner, "client_secret")), "[redacted]");
		CHECK_STR(json_string_value(json_object_get(inner, "ok")), "visible");
		json_t *list = json_object_get(line, "list");
		CHECK(json_array_size(list) == 3);
		CHECK_STR(json_string_value(json_object_get(json_array_get(list, 0), "code")), "[redacted]");
		CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "Authorization")), "[redacted]");
		CHECK_STR(json_string_value(json_array_get(list, 2)), "plain-array-item");
		CHECK_STR(json_string_value(json_object_get(json_object_get(line, "headers"), "Cookie")), "[redacted]");
		/* A secret-named object is replaced whole. */
		CHECK_STR(json_string_value(json_object_get(line, "password")), "[redacted]");
		json_decref(line);
	}
	free(text);

	/* Secrets inside arrays of arrays, a few levels down. */
	f = json_pack("{s:[[{s:{s:s}}]]}", "a", "b", "state", "SECRET_8");
	log_event(LOG_WARN, "deep", NULL, f);
	text = drain();
	if (text) {
		check_no_secrets(text);
		CHECK(strstr(text, "\"request_id\"") == NULL); /* none given */
		CHECK(strstr(text, "\"level\":\"warn\"") != NULL);
	}
	free(text);
}

/* The header promises redaction "at every depth". */
static void test_redaction_very_deep(void)
{
	log_init(LOG_DEBUG, out);
	json_t *leaf = json_pack("{s:s, s:s}", "access_token", "S3CR3T", "ok", "fine");
	for (int i = 0; i < 12; i++)
		leaf = json_pack("{s:o}", "d", leaf);
	log_event(LOG_INFO, "deep.nesting", NULL, leaf);
	char *text = drain();
	CHECK(text != NULL);
	if (text)
		check_no_secrets(text);
	free(text);
}

static void test_reserved_fields(void)
{
	log_init(LOG_DEBUG, out);
	/* Fields cannot masquerade as the line's own time, level, event or id. */
	json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s}", "level", "error", "event", "forged", "time", "1970",
			      "request_id", "forged-id", "extra", "kept");
	log_event(LOG_DEBUG, "real.event", "real-id", f);
	char *text = drain();
	json_t *line = text ? json_loads(text, 0, NULL) : NULL;
	CHECK(line != NULL);
	if (line) {
		CHECK_STR(json_string_value(json_object_get(line, "level")), "debug");
		CHECK_STR(json_string_value(json_object_get(line, "event")), "real.event");
		CHECK_STR(json_string_value(json_object_get(line, "request_id")), "real-id");
		const char *when = json_string_value(json_object_get(line, "time"));
		CHECK(when && strcmp(when, "1970") != 0);
		CHECK_STR(json_string_value(json_object_get(line, "extra")), "kept");
		json_decref(line);
	}
	free(text);

	/* A non-object (stolen) and NULL are accepted. */
	log_event(LOG_INFO, "with.array", NULL, json_pack("[s]", "x"));
	log_event(LOG_INFO, "with.null", NULL, NULL);
	text = drain();
	CHECK(text && strstr(text, "with.array") && strstr(text, "with.null"));
	free(text);

	/* log_msg puts the message in "msg"; a long one is cut, not overflowed. */
	log_msg(LOG_INFO, "m", "rid", "value %d of %s", 7, "eight");
	text = drain();
	line = text ? json_loads(text, 0, NULL) : NULL;
	CHECK_STR(json_string_value(json_object_get(line, "msg")), "value 7 of eight");
	json_decref(line);
	free(text);
	char big[3000];
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_msg(LOG_INFO, "m.big", NULL, "%s", big);
	text = drain();
	line = text ? json_loads(text, 0, NULL) : NULL;
	CHECK(line != NULL);
	const char *msg = json_string_value(json_object_get(line, "msg"));
	CHECK(msg && strlen(msg) == 1023);
	json_decref(line);
	free(text);
}

static void test_levels(void)
{
	enum log_level l = LOG_ERROR;
	CHECK(log_level_parse("debug", &l) == 0 && l == LOG_DEBUG);
	CHECK(log_level_parse("info", &l) == 0 && l == LOG_INFO);
	CHECK(log_level_parse("warn", &l) == 0 && l == LOG_WARN);
	CHECK(log_level_parse("error", &l) == 0 && l == LOG_ERROR);
	l = LOG_WARN;
	CHECK(log_level_parse("INFO", &l) == -1 && l == LOG_WARN);
	CHECK(log_level_parse("warning", &l) == -1);
	CHECK(log_level_parse("", &l) == -1);

	log_init(LOG_WARN, out);
	CHECK(!log_enabled(LOG_DEBUG) && !log_enabled(LOG_INFO));
	CHECK(log_enabled(LOG_WARN) && log_enabled(LOG_ERROR));
	log_event(LOG_DEBUG, "dropped.debug", NULL, json_pack("{s:s}", "a", "b"));
	log_event(LOG_INFO, "dropped.info", NULL, json_pack("{s:s}", "a", "b"));
	log_msg(LOG_INFO, "dropped.msg", NULL, "x");
	log_event(LOG_WARN, "kept.warn", NULL, NULL);
	log_msg(LOG_ERROR, "kept.error", NULL, "y");
	char *text = drain();
	CHECK(text != NULL);
	if (text) {
		CHECK(strstr(text, "dropped") == NULL);
		CHECK(strstr(text, "kept.warn") != NULL && strstr(text, "kept.error") != NULL);
		int lines = 0;
		for (char *p = text; *p; p++)
			lines += *p == '\n';
		CHECK(lines == 2);
	}
	free(text);

	log_init(LOG_ERROR, out);
	log_event(LOG_WARN, "dropped.warn", NULL, NULL);
	text = drain();
	CHECK(text && text[0] == '\0');
	free(text);
}

/* Drops the "time" value of a line (two lines written a moment apart). */
static void untime(char *line)
{
	char *t = strstr(line, "\"time\":\"");
	char *end = t ? strchr(t + 8, '"') : NULL;
	if (t && end)
		memmove(t + 8, end, strlen(end) + 1);
}

/* log_request writes, without jansson, exactly the line log_event writes
 * with it for the same fields: escapes, non-ASCII, reals, the optional
 * field. */
static void test_request_line(void)
{
	static const struct {
		const char *path, *client;
		double ms;
		int terminated;
	} cases[] = {
		{ "/mcp", "127.0.0.1", 1.234567, -1 },
		{ "/a \"quoted\" \\ back\tslash\n", "::1", 0.0, 2 },
		{ "/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", "unknown", 123456.7, -1 },
		{ "/ctl\x01\x1f\x7f", "10.0.0.1", 1234567.0, 1 },
		{ "", "", 0.000012345, -1 },
		{ "/x", "1.2.3.4", 12.0, -1 },
	};
	log_init(LOG_INFO, out);
	free(drain());
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct log_request_line q = { "POST", "resource",  cases[i].path,      cases[i].client,
					      200,    cases[i].ms, cases[i].terminated };
		log_request(LOG_INFO, "rid-1", &q);
		char *mine = drain();
		json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:f, s:s}", "method", "POST", "route", "resource", "path",
				      cases[i].path, "status", 200, "duration_ms", cases[i].ms, "client",
				      cases[i].client);
		CHECK(f != NULL);
		if (f && cases[i].terminated >= 0)
			json_object_set_new(f, "terminated", json_integer(cases[i].terminated));
		log_event(LOG_INFO, "http.request", "rid-1", f);
		char *theirs = drain();
		CHECK(mine && theirs);
		if (mine && theirs) {
			untime(mine);
			untime(theirs);
			if (strcmp(mine, theirs) != 0)
				fprintf(stderr, "case %zu:\n  log_request %s  log_event   %s", i, mine, theirs);
			CHECK(strcmp(mine, theirs) == 0);
		}
		free(mine);
		free(theirs);
	}
	/* A byte that is not UTF-8 (jansson refuses the whole string) is
	 * written as U+FFFD, the line still valid JSON. */
	struct log_request_line bad = { "GET", "r", "/\xff\xc3(", "c", 404, 1.5, -1 };
	log_request(LOG_INFO, NULL, &bad);
	char *line = drain();
	json_t *j = line ? json_loads(line, 0, NULL) : NULL;
	CHECK(j != NULL);
	CHECK(j && strcmp(json_string_value(json_object_get(j, "path")), "/\xef\xbf\xbd\xef\xbf\xbd(") == 0);
	json_decref(j);
	free(line);
	/* Lead bytes F5..FF begin no character: each is U+FFFD. */
	struct log_request_line lead = { "GET", "r", "/\xf8\x88\x80", "c", 404, 1.5, -1 };
	log_request(LOG_INFO, NULL, &lead);
	line = drain();
	CHECK(line && strstr(line, "\"path\":\"/\\uFFFD\\uFFFD\\uFFFD\""));
	free(line);
	/* A client-chosen method of any length is cut, never the line lost. */
	char *method = malloc(4001);
	CHECK(method != NULL);
	if (method) {
		memset(method, 'A', 4000);
		method[4000] = '\0';
		struct log_request_line big = { method, "unmatched", "/", "c", 405, 1.0, -1 };
		log_request(LOG_INFO, "rid", &big);
		line = drain();
		j = line ? json_loads(line, 0, NULL) : NULL;
		CHECK(j != NULL);
		CHECK(j && strlen(json_string_value(json_object_get(j, "method"))) == 32);
		json_decref(j);
		free(line);
		free(method);
	}
	/* Below the level: nothing. */
	log_init(LOG_WARN, out);
	log_request(LOG_INFO, NULL, &bad);
	line = drain();
	CHECK(line && line[0] == '\0');
	free(line);
}

int main(void)
{
	out = tmpfile();
	if (!out) {
		perror("tmpfile");
		return 1;
	}
	test_secret_keys();
	test_redaction();
	test_redaction_very_deep();
	test_reserved_fields();
	test_levels();
	test_request_line();
	log_init(LOG_INFO, NULL);
	fclose(out);
	TEST_DONE();
}
