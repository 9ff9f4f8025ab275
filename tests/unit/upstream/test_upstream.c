/* upstream.c: the classification of upstream answers (only a definitive
 * "this grant is dead" is UPC_GRANT_DEAD), the pure parsers of token and
 * userinfo answers on (data, size), Retry-After, the status a client gets
 * for each class, the OIDC discovery document, and the
 * mcpb_upstream_errors_total counter. upstream.c is included to reach its
 * statics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "metrics.h"
#include "../../../broker/upstream/upstream.c"
#include "test.h"

#define JSON "application/json; charset=utf-8"
#define FORM "application/x-www-form-urlencoded; charset=utf-8"
#define HTML "text/html; charset=utf-8"

static enum upstream_class cls(enum upstream_op op, long status, const char *ct, const char *body)
{
	return upstream_classify(op, status, ct, body, body ? strlen(body) : 0);
}

#define REFRESH(status, ct, body) cls(UPOP_REFRESH, status, ct, body)
#define USERINFO(status, ct, body) cls(UPOP_USERINFO, status, ct, body)

static void test_token_definitive(void)
{
	/* RFC 6749 §5.2 and GitHub's 200-with-error dialect, JSON and form. */
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_grant\"}") == UPC_GRANT_DEAD);
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_grant\",\"error_description\":\"revoked\"}") == UPC_GRANT_DEAD);
	CHECK(REFRESH(200, JSON, "{\"error\":\"bad_refresh_token\",\"error_description\":\"x\"}") == UPC_GRANT_DEAD);
	CHECK(REFRESH(200, FORM, "error=bad_refresh_token&error_description=The+refresh+token") == UPC_GRANT_DEAD);
	CHECK(REFRESH(200, FORM, "error=invalid_grant") == UPC_GRANT_DEAD);
	CHECK(REFRESH(401, JSON, "{\"error\":\"invalid_grant\"}") == UPC_GRANT_DEAD);
	CHECK(cls(UPOP_EXCHANGE, 400, JSON, "{\"error\":\"invalid_grant\"}") == UPC_GRANT_DEAD);
	CHECK(cls(UPOP_EXCHANGE, 200, JSON, "{\"error\":\"bad_verification_code\"}") == UPC_GRANT_DEAD);
	/* An error wins over a token in the same answer. */
	CHECK(REFRESH(200, JSON, "{\"error\":\"invalid_grant\",\"access_token\":\"gho_x\"}") == UPC_GRANT_DEAD);
}

static void test_token_not_definitive(void)
{
	/* The broker's own credentials: never the user's fault. */
	CHECK(REFRESH(401, JSON, "{\"error\":\"invalid_client\"}") == UPC_INVALID_CLIENT);
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_client\"}") == UPC_INVALID_CLIENT);
	CHECK(REFRESH(200, JSON, "{\"error\":\"incorrect_client_credentials\"}") == UPC_INVALID_CLIENT);
	CHECK(REFRESH(200, FORM, "error=incorrect_client_credentials&error_uri=https%3A%2F%2Fdocs") ==
	      UPC_INVALID_CLIENT);
	CHECK(REFRESH(401, HTML, "<html>Unauthorized</html>") == UPC_INVALID_CLIENT);
	CHECK(REFRESH(401, NULL, "") == UPC_INVALID_CLIENT);
	CHECK(REFRESH(400, JSON, "{\"error\":\"unauthorized_client\"}") == UPC_UNAUTHORIZED_CLIENT);
	CHECK(REFRESH(200, JSON, "{\"error\":\"unauthorized_client\"}") == UPC_UNAUTHORIZED_CLIENT);
	/* Rate limiting and server trouble win over any body. */
	CHECK(REFRESH(429, JSON, "{\"error\":\"invalid_grant\"}") == UPC_RATE_LIMITED);
	CHECK(REFRESH(403, JSON, "{\"error\":\"invalid_grant\"}") == UPC_RATE_LIMITED);
	CHECK(REFRESH(403, HTML, "<html>forbidden</html>") == UPC_RATE_LIMITED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"slow_down\"}") == UPC_RATE_LIMITED);
	CHECK(REFRESH(500, JSON, "{\"error\":\"invalid_grant\"}") == UPC_SERVER_ERROR);
	CHECK(REFRESH(502, HTML, "<html>Bad gateway</html>") == UPC_SERVER_ERROR);
	CHECK(REFRESH(503, NULL, NULL) == UPC_SERVER_ERROR);
	CHECK(REFRESH(599, JSON, "{}") == UPC_SERVER_ERROR);
	CHECK(REFRESH(400, JSON, "{\"error\":\"temporarily_unavailable\"}") == UPC_SERVER_ERROR);
	CHECK(REFRESH(200, JSON, "{\"error\":\"server_error\"}") == UPC_SERVER_ERROR);
	CHECK(REFRESH(408, NULL, NULL) == UPC_TIMEOUT);
	/* Other OAuth errors refuse the request, not the grant. */
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_request\"}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_scope\"}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"access_denied\"}") == UPC_REFUSED);
	CHECK(REFRESH(200, JSON, "{\"error\":\"unsupported_grant_type\"}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":123}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid grant\"}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"INVALID_GRANT\"}") == UPC_REFUSED);
	CHECK(REFRESH(400, JSON, "{\"error\":\"invalid_grant \"}") == UPC_REFUSED);
}

static void test_token_garbage(void)
{
	char big[UP_MAX_TOKEN + 64];
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"gho_abc\",\"token_type\":\"bearer\"}") == UPC_OK);
	CHECK(REFRESH(201, JSON, "{\"access_token\":\"gho_abc\"}") == UPC_OK);
	CHECK(REFRESH(200, FORM, "access_token=gho_abc&scope=repo&token_type=bearer") == UPC_OK);
	CHECK(REFRESH(200, "Application/JSON", "{\"access_token\":\"a\"}") == UPC_OK);
	CHECK(REFRESH(200, "application/vnd.example+json", "{\"access_token\":\"a\"}") == UPC_OK);
	/* Wrong or missing content type: garbage, however good the body. */
	CHECK(REFRESH(200, "text/plain", "{\"access_token\":\"gho_abc\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, NULL, "{\"access_token\":\"gho_abc\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, "application/jsonx", "{\"access_token\":\"gho_abc\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, "+json", "{\"access_token\":\"gho_abc\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, HTML, "<html>oops") == UPC_GARBAGE);
	CHECK(REFRESH(400, HTML, "error=invalid_grant") == UPC_GARBAGE); /* not definitive when unparsed */
	CHECK(REFRESH(400, NULL, NULL) == UPC_GARBAGE);
	/* A body that is not one well-formed answer. */
	CHECK(REFRESH(200, JSON, "") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "[]") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "null") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"a\",\"access_token\":\"b\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, FORM, "access_token=a&access_token=b") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"token_type\":\"bearer\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":123}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":[\"a\"]}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"a\\u0000b\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"a\\r\\nX-Evil: 1\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"a b\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, JSON, "{\"access_token\":\"caf\\u00e9\"}") == UPC_GARBAGE);
	CHECK(REFRESH(200, FORM, "access_token=a%0d%0aX-Evil%3a1") == UPC_GARBAGE);
	snprintf(big, sizeof(big), "{\"access_token\":\"%0*d\"}", UP_MAX_TOKEN + 1, 0);
	CHECK(REFRESH(200, JSON, big) == UPC_GARBAGE);
	snprintf(big, sizeof(big), "{\"access_token\":\"%0*d\"}", UP_MAX_TOKEN, 0);
	CHECK(REFRESH(200, JSON, big) == UPC_OK);
	/* Statuses no token endpoint answers with. */
	CHECK(REFRESH(302, JSON, "{\"access_token\":\"gho_abc\"}") == UPC_GARBAGE);
	CHECK(REFRESH(404, JSON, "{\"error\":\"invalid_grant\"}") == UPC_GARBAGE);
	CHECK(REFRESH(204, NULL, NULL) == UPC_GARBAGE);
	CHECK(REFRESH(0, NULL, NULL) == UPC_GARBAGE);
}

static void test_userinfo(void)
{
	CHECK(USERINFO(200, JSON, "{\"id\":1001,\"login\":\"alice\"}") == UPC_OK);
	CHECK(USERINFO(200, JSON, "{\"sub\":\"248289761001\",\"name\":\"Jane\"}") == UPC_OK);
	CHECK(USERINFO(200, JSON, "{\"version\":\"0\",\"user\":{\"id\":\"1001\"}}") == UPC_OK);
	/* 401 for the user's token is the definitive answer, whatever the body. */
	CHECK(USERINFO(401, JSON, "{\"message\":\"Bad credentials\"}") == UPC_GRANT_DEAD);
	CHECK(USERINFO(401, HTML, "<html>") == UPC_GRANT_DEAD);
	CHECK(USERINFO(401, NULL, NULL) == UPC_GRANT_DEAD);
	/* GitHub's rate limit is a 403 (or 429); neither is a verdict. */
	CHECK(USERINFO(403, JSON, "{\"message\":\"API rate limit exceeded\"}") == UPC_RATE_LIMITED);
	CHECK(USERINFO(429, JSON, "{}") == UPC_RATE_LIMITED);
	CHECK(USERINFO(500, JSON, "{}") == UPC_SERVER_ERROR);
	CHECK(USERINFO(503, NULL, NULL) == UPC_SERVER_ERROR);
	CHECK(USERINFO(408, NULL, NULL) == UPC_TIMEOUT);
	CHECK(USERINFO(400, JSON, "{\"error\":\"invalid_token\"}") == UPC_GARBAGE);
	CHECK(USERINFO(404, JSON, "{\"id\":1}") == UPC_GARBAGE);
	CHECK(USERINFO(200, HTML, "<html>oops") == UPC_GARBAGE);
	CHECK(USERINFO(200, "text/plain", "{\"id\":1001}") == UPC_GARBAGE);
	CHECK(USERINFO(200, "application/jwt", "eyJ.eyJ.sig") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"login\":\"alice\"}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":\"\"}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":\"a b\"}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":\"a\\r\\nb\"}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"id\":1.5}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"id\":true}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":\"a\",\"sub\":\"b\"}") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":null,\"id\":5}") == UPC_GARBAGE); /* a bad sub is not replaced */
	CHECK(USERINFO(200, JSON, "[{\"sub\":\"a\"}]") == UPC_GARBAGE);
	CHECK(USERINFO(200, JSON, "{\"sub\":") == UPC_GARBAGE);
}

static void test_revoke_and_discovery(void)
{
	CHECK(cls(UPOP_REVOKE, 200, JSON, "{}") == UPC_OK);
	CHECK(cls(UPOP_REVOKE, 200, NULL, NULL) == UPC_OK);
	CHECK(cls(UPOP_REVOKE, 204, NULL, NULL) == UPC_OK);
	CHECK(cls(UPOP_REVOKE, 401, JSON, "{\"error\":\"invalid_client\"}") == UPC_INVALID_CLIENT);
	CHECK(cls(UPOP_REVOKE, 401, JSON, "{\"message\":\"Bad credentials\"}") == UPC_INVALID_CLIENT);
	CHECK(cls(UPOP_REVOKE, 400, JSON, "{\"error\":\"unsupported_token_type\"}") == UPC_REFUSED);
	CHECK(cls(UPOP_REVOKE, 400, JSON, "{\"error\":\"invalid_grant\"}") == UPC_REFUSED);
	CHECK(cls(UPOP_REVOKE, 503, NULL, NULL) == UPC_SERVER_ERROR);
	CHECK(cls(UPOP_REVOKE, 429, NULL, NULL) == UPC_RATE_LIMITED);
	CHECK(cls(UPOP_REVOKE, 404, JSON, "{}") == UPC_GARBAGE);
	CHECK(cls(UPOP_REVOKE, 422, JSON, "{\"message\":\"x\"}") == UPC_GARBAGE);
	CHECK(cls(UPOP_DISCOVERY, 200, JSON, "{\"issuer\":\"https://x\"}") == UPC_OK);
	CHECK(cls(UPOP_DISCOVERY, 200, HTML, "<html>") == UPC_GARBAGE);
	CHECK(cls(UPOP_DISCOVERY, 200, JSON, "[]") == UPC_GARBAGE);
	CHECK(cls(UPOP_DISCOVERY, 404, JSON, "{}") == UPC_GARBAGE);
	CHECK(cls(UPOP_DISCOVERY, 503, JSON, "{}") == UPC_SERVER_ERROR);
}

static void test_error_class(void)
{
	CHECK(upstream_error_class("invalid_grant") == UPC_GRANT_DEAD);
	CHECK(upstream_error_class("bad_refresh_token") == UPC_GRANT_DEAD);
	CHECK(upstream_error_class("bad_verification_code") == UPC_GRANT_DEAD);
	CHECK(upstream_error_class("invalid_client") == UPC_INVALID_CLIENT);
	CHECK(upstream_error_class("incorrect_client_credentials") == UPC_INVALID_CLIENT);
	CHECK(upstream_error_class("unauthorized_client") == UPC_UNAUTHORIZED_CLIENT);
	CHECK(upstream_error_class("slow_down") == UPC_RATE_LIMITED);
	CHECK(upstream_error_class("server_error") == UPC_SERVER_ERROR);
	CHECK(upstream_error_class("temporarily_unavailable") == UPC_SERVER_ERROR);
	CHECK(upstream_error_class("invalid_grant_x") == UPC_REFUSED);
	CHECK(upstream_error_class("") == UPC_REFUSED);
	CHECK(upstream_error_class(NULL) == UPC_REFUSED);
}

static void test_parse_token_answer(void)
{
	struct upstream_tokens t;
	char err[UP_ERROR_MAX];
	const char *j = "{\"access_token\":\"sntr_a\",\"refresh_token\":\"sntrr_b\",\"expires_in\":3600,"
			"\"scope\":\"org:read project:read\",\"user\":{\"id\":\"1001\",\"name\":\"Alice\"}}";
	CHECK(upstream_parse_token_answer(j, strlen(j), 0, &t, err) == 0);
	CHECK_STR(t.access_token, "sntr_a");
	CHECK_STR(t.refresh_token, "sntrr_b");
	CHECK_STR(t.scope, "org:read project:read");
	CHECK(t.expires_in == 3600);
	CHECK(json_is_object(t.user));
	CHECK_STR(err, "");
	upstream_tokens_free(&t);
	CHECK(t.access_token == NULL && t.user == NULL && t.expires_in == -1);

	/* GitHub's form: expires_in is a string; (data, size) need not be NUL-terminated. */
	const char *f = "access_token=gho_abc&expires_in=28800&refresh_token=ghr_def&token_type=bearerTRAILING";
	CHECK(upstream_parse_token_answer(f, strlen(f) - 8, 1, &t, err) == 0);
	CHECK_STR(t.access_token, "gho_abc");
	CHECK_STR(t.refresh_token, "ghr_def");
	CHECK(t.expires_in == 28800);
	upstream_tokens_free(&t);
	CHECK(upstream_parse_token_answer(f, 15, 1, &t, err) == 0);
	CHECK_STR(t.access_token, "gh");
	upstream_tokens_free(&t);

	/* Invalid expiries and scopes are dropped, not fatal. */
	static const char *const bad_exp[] = {
		"{\"access_token\":\"a\",\"expires_in\":-5}",
		"{\"access_token\":\"a\",\"expires_in\":0}",
		"{\"access_token\":\"a\",\"expires_in\":\"12x\"}",
		"{\"access_token\":\"a\",\"expires_in\":\"\"}",
		"{\"access_token\":\"a\",\"expires_in\":1e9}",
		"{\"access_token\":\"a\",\"expires_in\":99999999999}",
		"{\"access_token\":\"a\",\"expires_in\":\"-1\"}",
		"{\"access_token\":\"a\",\"expires_in\":\"99999999999\"}",
	};
	for (size_t i = 0; i < sizeof(bad_exp) / sizeof(bad_exp[0]); i++) {
		CHECK(upstream_parse_token_answer(bad_exp[i], strlen(bad_exp[i]), 0, &t, err) == 0);
		CHECK(t.expires_in == -1 && t.access_token != NULL);
		upstream_tokens_free(&t);
	}
	const char *sc = "{\"access_token\":\"a\",\"scope\":\"repo\\nX\",\"refresh_token\":\"\"}";
	CHECK(upstream_parse_token_answer(sc, strlen(sc), 0, &t, err) == 0);
	CHECK(t.scope == NULL && t.refresh_token == NULL);
	upstream_tokens_free(&t);

	/* error codes: kept when they look like one, "invalid" otherwise. */
	const char *e1 = "{\"error\":\"invalid_grant\",\"error_description\":\"gone\"}";
	CHECK(upstream_parse_token_answer(e1, strlen(e1), 0, &t, err) == 0);
	CHECK_STR(err, "invalid_grant");
	upstream_tokens_free(&t);
	const char *e2 = "{\"error\":{\"code\":1}}";
	CHECK(upstream_parse_token_answer(e2, strlen(e2), 0, &t, err) == 0);
	CHECK_STR(err, "invalid");
	upstream_tokens_free(&t);
	char longerr[200];
	snprintf(longerr, sizeof(longerr), "{\"error\":\"%0*d\"}", UP_ERROR_MAX, 7);
	CHECK(upstream_parse_token_answer(longerr, strlen(longerr), 0, &t, err) == 0);
	CHECK_STR(err, "invalid");
	upstream_tokens_free(&t);

	/* Not answers: -1, nothing kept. */
	static const char *const junk[] = { "", "[]", "\"x\"", "{", "{\"a\":1}{", "{\"a\":1,\"a\":2}" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		snprintf(err, sizeof(err), "x");
		CHECK(upstream_parse_token_answer(junk[i], strlen(junk[i]), 0, &t, err) == -1);
		CHECK(t.access_token == NULL && t.user == NULL && err[0] == '\0');
		upstream_tokens_free(&t);
	}
	CHECK(upstream_parse_token_answer(NULL, 0, 0, &t, err) == -1);
	CHECK(upstream_parse_token_answer("a=%00", 5, 1, &t, err) == -1); /* NUL */
	CHECK(upstream_parse_token_answer("a=1&a=2", 7, 1, &t, err) == -1);
	char *huge = malloc(70 * 1024);
	if (huge) {
		memset(huge, ' ', 70 * 1024);
		memcpy(huge, "{\"access_token\":\"a\"}", 20);
		CHECK(upstream_parse_token_answer(huge, 70 * 1024, 0, &t, err) == -1); /* over LIM_UPSTREAM_BODY */
		free(huge);
	}
	upstream_tokens_free(&t);
}

static void test_parse_userinfo(void)
{
	struct upstream_identity id;
	const char *gh = "{\"id\":1001,\"login\":\"alice\",\"name\":\"Alice\",\"email\":\"alice@example.com\"}";
	CHECK(upstream_parse_userinfo(gh, strlen(gh), &id) == 0);
	CHECK_STR(id.subject, "1001");
	CHECK_STR(id.login, "alice");
	CHECK_STR(id.name, "Alice");
	CHECK_STR(id.email, "alice@example.com");
	upstream_identity_free(&id);
	CHECK(id.subject == NULL);

	const char *oidc = "{\"sub\":\"u-42\",\"preferred_username\":\"bob\",\"name\":\"Bob \\u00e9\",\"id\":7}";
	CHECK(upstream_parse_userinfo(oidc, strlen(oidc), &id) == 0);
	CHECK_STR(id.subject, "u-42"); /* sub wins over id */
	CHECK_STR(id.login, "bob");
	CHECK_STR(id.name, "Bob \xc3\xa9");
	upstream_identity_free(&id);

	const char *sentry =
		"{\"version\":\"0\",\"user\":{\"id\":\"1003\",\"username\":\"carol\",\"email\":\"c\\u0007@x\"}}";
	CHECK(upstream_parse_userinfo(sentry, strlen(sentry), &id) == 0);
	CHECK_STR(id.subject, "1003");
	CHECK_STR(id.login, "carol");
	CHECK(id.email == NULL); /* a control character drops the field */
	upstream_identity_free(&id);

	char longname[400];
	snprintf(longname, sizeof(longname), "{\"sub\":\"s\",\"name\":\"%0*d\"}", UP_MAX_ID_FIELD + 1, 0);
	CHECK(upstream_parse_userinfo(longname, strlen(longname), &id) == 0);
	CHECK(id.name == NULL);
	upstream_identity_free(&id);
	snprintf(longname, sizeof(longname), "{\"sub\":\"%0*d\"}", UP_MAX_ID_FIELD + 1, 0);
	CHECK(upstream_parse_userinfo(longname, strlen(longname), &id) == -1);
	CHECK(id.subject == NULL);
	snprintf(longname, sizeof(longname), "{\"sub\":\"%0*d\"}", UP_MAX_ID_FIELD, 0);
	CHECK(upstream_parse_userinfo(longname, strlen(longname), &id) == 0);
	upstream_identity_free(&id);

	static const char *const junk[] = {
		"", "{}", "[]", "{\"id\":null}", "{\"user\":{}}", "{\"id\":1}x", "{\"sub\":\"a\\u0000b\"}"
	};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		CHECK(upstream_parse_userinfo(junk[i], strlen(junk[i]), &id) == -1);
		CHECK(id.subject == NULL && id.login == NULL);
	}
	/* (data, size): only size bytes are read. */
	const char *cut = "{\"id\":12}   trailing garbage";
	CHECK(upstream_parse_userinfo(cut, 9, &id) == 0);
	CHECK_STR(id.subject, "12");
	upstream_identity_free(&id);
}

static void test_retry_after(void)
{
	long long now = 1700000000;
	char date[64];
	struct tm tm;
	time_t t = (time_t)(now + 30);
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	CHECK(upstream_parse_retry_after("120", now) == 120);
	CHECK(upstream_parse_retry_after(" 5\t", now) == 5);
	CHECK(upstream_parse_retry_after("0", now) == 0);
	CHECK(upstream_parse_retry_after("3601", now) == UP_RETRY_AFTER_MAX);
	CHECK(upstream_parse_retry_after("99999999999999999999999", now) == UP_RETRY_AFTER_MAX);
	CHECK(upstream_parse_retry_after(date, now) == 30);
	t = (time_t)(now - 30);
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	CHECK(upstream_parse_retry_after(date, now) == 0);
	static const char *const junk[] = { "",    " ",    "-1", "1.5", "12s",
					    "abc", "0x10", "+5", "5 5", "Sun, 99 Foo 1994 08:49:37 GMT" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
		CHECK(upstream_parse_retry_after(junk[i], now) == 0);
	CHECK(upstream_parse_retry_after("1700000030", now) == UP_RETRY_AFTER_MAX); /* an epoch is capped */
	CHECK(upstream_parse_retry_after(NULL, now) == 0);
}

static void test_status_and_names(void)
{
	CHECK(upstream_class_http_status(UPC_OK) == 200);
	CHECK(upstream_class_http_status(UPC_GRANT_DEAD) == 401);
	CHECK(upstream_class_http_status(UPC_INVALID_CLIENT) == 502);
	CHECK(upstream_class_http_status(UPC_UNAUTHORIZED_CLIENT) == 502);
	CHECK(upstream_class_http_status(UPC_GARBAGE) == 502);
	CHECK(upstream_class_http_status(UPC_REFUSED) == 502);
	CHECK(upstream_class_http_status(UPC_RATE_LIMITED) == 503);
	CHECK(upstream_class_http_status(UPC_SERVER_ERROR) == 503);
	CHECK(upstream_class_http_status(UPC_UNREACHABLE) == 503);
	CHECK(upstream_class_http_status(UPC_INTERNAL) == 503);
	CHECK(upstream_class_http_status(UPC_TIMEOUT) == 504);
	/* Labels are distinct and metric-safe. */
	for (int a = UPC_OK; a <= UPC_INTERNAL; a++) {
		const char *n = upstream_class_name((enum upstream_class)a);
		CHECK(n && *n && strspn(n, "abcdefghijklmnopqrstuvwxyz_") == strlen(n));
		for (int b = a + 1; b <= UPC_INTERNAL; b++)
			CHECK(strcmp(n, upstream_class_name((enum upstream_class)b)) != 0);
	}
	CHECK_STR(upstream_class_name(UPC_GRANT_DEAD), "grant_dead");
	CHECK_STR(upstream_class_name(UPC_RATE_LIMITED), "rate_limited");
	CHECK_STR(upstream_op_name(UPOP_REFRESH), "refresh");
	CHECK_STR(upstream_op_name(UPOP_USERINFO), "userinfo");
	CHECK_STR(upstream_op_name(UPOP_EXCHANGE), "exchange");
	CHECK_STR(upstream_op_name(UPOP_REVOKE), "revoke");
}

static void test_metric(void)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	metrics_upstream_error("gh", "refresh", "invalid_client");
	metrics_upstream_error("gh", "refresh", "invalid_client");
	metrics_upstream_error("gh", "userinfo", "rate_limited");
	metrics_upstream_error("we\"ird\\\nname", "refresh", "timeout");
	CHECK(metrics_render(&b) == 0);
	CHECK(b.ptr && strstr(b.ptr, "# TYPE mcpb_upstream_errors_total counter\n") != NULL);
	CHECK(b.ptr &&
	      strstr(b.ptr, "mcpb_upstream_errors_total{upstream=\"gh\",op=\"refresh\",class=\"invalid_client\"} 2\n"));
	CHECK(b.ptr &&
	      strstr(b.ptr, "mcpb_upstream_errors_total{upstream=\"gh\",op=\"userinfo\",class=\"rate_limited\"} 1\n"));
	CHECK(b.ptr && strstr(b.ptr, "{upstream=\"we\\\"ird\\\\\\nname\",op=\"refresh\",class=\"timeout\"} 1\n"));
	buf_free(&b);
}

/* Any bytes, any status, any op: a class, no crash (ASan/UBSan watch). */
static void test_any_bytes(void)
{
	static const char *const cts[] = { JSON, FORM, HTML, NULL };
	static const long statuses[] = { 200, 400, 401, 403, 429, 500 };
	static const char alphabet[] = "{}[]\":,=&%a_0\\u\x01\xff \"access_token\"error";
	unsigned int seed = 12345;
	char body[96];
	struct upstream_tokens t;
	struct upstream_identity id;
	char err[UP_ERROR_MAX];
	for (int i = 0; i < 3000; i++) {
		size_t n = (size_t)(i % (int)sizeof(body));
		for (size_t k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			body[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		enum upstream_class c = upstream_classify((enum upstream_op)(i % 5), statuses[i % 6], cts[i % 4], body,
							  n);
		CHECK(c >= UPC_OK && c <= UPC_INTERNAL && c != UPC_UNREACHABLE && c != UPC_INTERNAL);
		if (upstream_parse_token_answer(body, n, i & 1, &t, err) == 0)
			CHECK(strlen(err) < UP_ERROR_MAX);
		upstream_tokens_free(&t);
		if (upstream_parse_userinfo(body, n, &id) == 0)
			CHECK(id.subject != NULL);
		upstream_identity_free(&id);
	}
}

/* expires_in: a JSON integer or a decimal string of at most 10 digits
 * (num_parse: no sign, no space), 1..UP_MAX_EXPIRES_IN. */
static long expires(const char *doc)
{
	struct upstream_tokens t;
	char err[UP_ERROR_MAX];
	long e = -2;
	if (upstream_parse_token_answer(doc, strlen(doc), 0, &t, err) == 0)
		e = t.expires_in;
	upstream_tokens_free(&t);
	return e;
}

static void test_expires(void)
{
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":\"28800\"}") == 28800);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":\"0000000005\"}") == 5);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":\"00000000005\"}") == -1); /* 11 digits */
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":\"3153600000\"}") == UP_MAX_EXPIRES_IN);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":\"3153600001\"}") == -1);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":3153600000}") == UP_MAX_EXPIRES_IN);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":3153600001}") == -1);
	static const char *const bad[] = { "+5", " 5", "5 ", "-0", "0", "5s", "0x10", "1e3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[128];
		snprintf(doc, sizeof(doc), "{\"access_token\":\"a\",\"expires_in\":\"%s\"}", bad[i]);
		CHECK(expires(doc) == -1);
	}
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":true}") == -1);
	CHECK(expires("{\"access_token\":\"a\",\"expires_in\":null}") == -1);
}

/* Nesting deeper than LIM_JSON_DEPTH, or a NUL byte, is not an answer. */
static void test_json_bounds(void)
{
	char doc[256];
	struct upstream_tokens t;
	struct upstream_identity id;
	char err[UP_ERROR_MAX];
	size_t n = 0;
	n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"access_token\":\"a\",\"x\":");
	for (int i = 0; i < LIM_JSON_DEPTH; i++)
		doc[n++] = '[';
	for (int i = 0; i < LIM_JSON_DEPTH; i++)
		doc[n++] = ']';
	doc[n++] = '}';
	doc[n] = '\0';
	/* depth LIM_JSON_DEPTH + 1 */
	CHECK(upstream_parse_token_answer(doc, n, 0, &t, err) == -1);
	upstream_tokens_free(&t);
	CHECK(REFRESH(200, JSON, doc) == UPC_GARBAGE);
	CHECK(cls(UPOP_DISCOVERY, 200, JSON, doc) == UPC_GARBAGE);
	const char *shallow = "{\"access_token\":\"a\",\"x\":[[[[{\"y\":[1]}]]]]}";
	CHECK(upstream_parse_token_answer(shallow, strlen(shallow), 0, &t, err) == 0);
	upstream_tokens_free(&t);
	const char nul[] = "{\"access_token\":\"a\"}\0";
	CHECK(upstream_parse_token_answer(nul, sizeof(nul) - 1, 0, &t, err) == -1);
	upstream_tokens_free(&t);
	const char unul[] = "{\"sub\":\"a\",\"n\":1\0}";
	CHECK(upstream_parse_userinfo(unul, sizeof(unul) - 1, &id) == -1);
	snprintf(doc, sizeof(doc), "{\"sub\":\"a\",\"x\":%s}", "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]");
	CHECK(upstream_parse_userinfo(doc, strlen(doc), &id) == -1);
	upstream_identity_free(&id);
}

static int discovered(const char *text, const struct cfg_upstream *up, struct discovered *d)
{
	json_t *doc = jparse_str(text, 0, LIM_JSON_DEPTH);
	int rc = discovery_parse(doc, up, d);
	json_decref(doc);
	return rc;
}

static void test_discovery_parse(void)
{
	struct cfg_upstream up;
	struct discovered d;
	memset(&up, 0, sizeof(up));
	up.name = "corp";
	up.issuer = "https://idp.example.com";
	CHECK(discovered("{\"issuer\":\"https://idp.example.com\","
			 "\"authorization_endpoint\":\"https://idp.example.com/a\","
			 "\"token_endpoint\":\"https://idp.example.com/t\","
			 "\"userinfo_endpoint\":\"https://idp.example.com/u\","
			 "\"revocation_endpoint\":\"https://idp.example.com/r\","
			 "\"jwks_uri\":\"https://idp.example.com/k\"}",
			 &up, &d) == 0);
	CHECK_STR(d.name, "corp");
	CHECK_STR(d.issuer, "https://idp.example.com");
	CHECK_STR(d.authorize, "https://idp.example.com/a");
	CHECK_STR(d.token, "https://idp.example.com/t");
	CHECK_STR(d.userinfo, "https://idp.example.com/u");
	CHECK_STR(d.revoke, "https://idp.example.com/r");
	/* Endpoints left out (or not strings) are empty; upstream_endpoints decides. */
	CHECK(discovered("{\"issuer\":\"https://idp.example.com\",\"token_endpoint\":5}", &up, &d) == 0);
	CHECK(d.authorize[0] == '\0' && d.token[0] == '\0' && d.userinfo[0] == '\0' && d.revoke[0] == '\0');
	/* The issuer must be exactly the configured one (Discovery 1.0 section 4.3). */
	static const char *const other[] = {
		"{\"issuer\":\"https://idp.example.com/\"}",
		"{\"issuer\":\"https://IDP.example.com\"}",
		"{\"issuer\":\"https://evil.example.com\"}",
		"{\"issuer\":\"https://idp.example.co\"}",
		"{\"issuer\":null}",
		"{\"token_endpoint\":\"https://idp.example.com/t\"}",
		"[\"https://idp.example.com\"]",
		"\"https://idp.example.com\"",
	};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		CHECK(discovered(other[i], &up, &d) == -1);
		CHECK(d.authorize[0] == '\0' && d.name[0] == '\0');
	}
	CHECK(discovery_parse(NULL, &up, &d) == -1);
}

int main(void)
{
	test_token_definitive();
	test_token_not_definitive();
	test_token_garbage();
	test_userinfo();
	test_revoke_and_discovery();
	test_error_class();
	test_parse_token_answer();
	test_parse_userinfo();
	test_retry_after();
	test_status_and_names();
	test_metric();
	test_any_bytes();
	test_expires();
	test_json_bounds();
	test_discovery_parse();
	TEST_DONE();
}
