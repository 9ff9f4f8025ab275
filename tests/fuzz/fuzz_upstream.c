/* Upstream IdP answers: token endpoint bodies (upstream_parse_token_answer,
 * JSON and GitHub's form dialect), userinfo documents
 * (upstream_parse_userinfo), the classification of a whole answer
 * (upstream_classify) and Retry-After (upstream_parse_retry_after). The
 * first input byte picks the call (op), the status and the Content-Type;
 * the rest is the body (and, as text, the Retry-After value).
 * - parsed fields hold what the header promises (tokens of visible ASCII,
 *   1..UP_MAX_TOKEN; error codes [A-Za-z0-9_.-]{1,63} or "invalid";
 *   identity fields bounded, without control bytes); a refused answer
 *   leaves nothing behind;
 * - only a definitive answer kills a grant: UPC_GRANT_DEAD comes from the
 *   token endpoint with invalid_grant / bad_refresh_token /
 *   bad_verification_code in a body of the announced type, or from a 401
 *   at userinfo; never from revocation or discovery; UPC_TIMEOUT only for
 *   408, never UPC_UNREACHABLE or UPC_INTERNAL from a parsed answer;
 * - Retry-After stays within 0..UP_RETRY_AFTER_MAX. */
#include "fuzz.h"
#include "upstream.h"

static const long statuses[10] = { 200, 201, 204, 400, 401, 403, 404, 408, 429, 503 };
static const char *const ctypes[4] = { "application/json; charset=utf-8",
				       "application/x-www-form-urlencoded; charset=utf-8", "text/html", NULL };

static int visible(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);
	if (n < min || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

static int no_controls(const char *s)
{
	if (!s)
		return 1;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return strlen(s) <= UP_MAX_ID_FIELD;
}

static int dead_code(const char *e)
{
	return strcmp(e, "invalid_grant") == 0 || strcmp(e, "bad_refresh_token") == 0 ||
	       strcmp(e, "bad_verification_code") == 0;
}

/* Parses body as a token answer; 1 when its error code is a dead one. */
static int token_answer(const char *body, size_t len, int form)
{
	struct upstream_tokens t;
	char error[UP_ERROR_MAX];
	int rc = upstream_parse_token_answer(body, len, form, &t, error);
	int dead = 0;
	if (rc == 0) {
		FUZZ_CHECK(!t.access_token || visible(t.access_token, 1, UP_MAX_TOKEN));
		FUZZ_CHECK(!t.refresh_token || visible(t.refresh_token, 1, UP_MAX_TOKEN));
		FUZZ_CHECK(t.expires_in >= -1);
		FUZZ_CHECK(!t.user || json_is_object(t.user));
		size_t n = strlen(error);
		FUZZ_CHECK(n < UP_ERROR_MAX);
		FUZZ_CHECK(strspn(error, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n);
		dead = dead_code(error);
	} else {
		FUZZ_CHECK(!t.access_token && !t.refresh_token && !t.scope && !t.user && error[0] == '\0');
	}
	upstream_tokens_free(&t);
	return dead;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned sel = data[0];
	enum upstream_op op = (enum upstream_op)(sel % 5);
	long status = statuses[(sel / 5) % 10];
	const char *ct = ctypes[(sel / 50) % 4];
	const char *body = (const char *)data + 1;
	size_t len = size - 1;

	int dead_json = token_answer(body, len, 0);
	int dead_form = token_answer(body, len, 1);

	struct upstream_identity id;
	if (upstream_parse_userinfo(body, len, &id) == 0) {
		FUZZ_CHECK(id.subject && visible(id.subject, 1, UP_MAX_ID_FIELD));
		FUZZ_CHECK(no_controls(id.login) && no_controls(id.email) && no_controls(id.name));
	} else {
		FUZZ_CHECK(!id.subject && !id.login && !id.email && !id.name);
	}
	upstream_identity_free(&id);

	enum upstream_class cls = upstream_classify(op, status, ct, body, len);
	FUZZ_CHECK(cls != UPC_UNREACHABLE && cls != UPC_INTERNAL);
	FUZZ_CHECK(cls != UPC_TIMEOUT || status == 408);
	if (cls == UPC_OK)
		FUZZ_CHECK(status >= 200 && status <= 204);
	if (cls == UPC_GRANT_DEAD) {
		int token_op = op == UPOP_EXCHANGE || op == UPOP_REFRESH;
		int by_body = token_op && (status == 200 || status == 201 || status == 400 || status == 401) &&
			      ((ct == ctypes[0] && dead_json) || (ct == ctypes[1] && dead_form));
		FUZZ_CHECK(by_body || (op == UPOP_USERINFO && status == 401));
	}
	FUZZ_CHECK(upstream_class_name(cls) != NULL);
	int st = upstream_class_http_status(cls);
	FUZZ_CHECK(st >= 200 && st <= 599);

	char *s = fuzz_cstr((const uint8_t *)body, len);
	long wait = upstream_parse_retry_after(s, 1700000000LL);
	FUZZ_CHECK(wait >= 0 && wait <= UP_RETRY_AFTER_MAX);
	free(s);
	return 0;
}
