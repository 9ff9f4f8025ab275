#include "upstream.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "form.h"
#include "jparse.h"
#include "lim.h"
#include "log.h"
#include "metrics.h"
#include "num.h"

#define UP_USER_AGENT "mcp-broker/" MCPB_VERSION
#define UP_DISCOVERY_TTL_S 3600
#define UP_MAX_SCOPE 2048
#define UP_MAX_EXPIRES_IN (100L * 365 * 86400)
#define UP_RATELIMIT_RESET_MAX 999999999999LL /* GitHub's X-RateLimit-Reset: at most 12 digits */

struct preset {
	const char *name;
	const char *authorize, *token, *userinfo, *revoke;
	int pkce, identity_from_token, github;
	const char *extra;
};

static const struct preset presets[] = {
	{ "github", "https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token",
	  "https://api.github.com/user", "https://api.github.com/applications/{client_id}/grant", 1, 0, 1, NULL },
	{ "sentry", "https://sentry.io/oauth/authorize/", "https://sentry.io/oauth/token/", "https://sentry.io/api/0/",
	  NULL, 0, 1, 0, NULL },
	{ "google", "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
	  "https://openidconnect.googleapis.com/v1/userinfo", "https://oauth2.googleapis.com/revoke", 1, 0, 0,
	  "access_type=offline&prompt=consent" },
	{ "oidc", NULL, NULL, NULL, NULL, 1, 0, 0, NULL },
};

/* ---- names ------------------------------------------------------------ */

const char *upstream_class_name(enum upstream_class cls)
{
	switch (cls) {
	case UPC_OK: return "ok";
	case UPC_GRANT_DEAD: return "grant_dead";
	case UPC_INVALID_CLIENT: return "invalid_client";
	case UPC_UNAUTHORIZED_CLIENT: return "unauthorized_client";
	case UPC_RATE_LIMITED: return "rate_limited";
	case UPC_SERVER_ERROR: return "server_error";
	case UPC_TIMEOUT: return "timeout";
	case UPC_UNREACHABLE: return "unreachable";
	case UPC_GARBAGE: return "garbage";
	case UPC_REFUSED: return "refused";
	default: return "internal";
	}
}

const char *upstream_op_name(enum upstream_op op)
{
	switch (op) {
	case UPOP_EXCHANGE: return "exchange";
	case UPOP_REFRESH: return "refresh";
	case UPOP_USERINFO: return "userinfo";
	case UPOP_REVOKE: return "revoke";
	case UPOP_CLIENT_CREDENTIALS: return "client_credentials";
	default: return "discovery";
	}
}

int upstream_class_http_status(enum upstream_class cls)
{
	switch (cls) {
	case UPC_OK: return 200;
	case UPC_GRANT_DEAD: return 401;
	case UPC_TIMEOUT: return 504;
	case UPC_RATE_LIMITED:
	case UPC_SERVER_ERROR:
	case UPC_UNREACHABLE:
	case UPC_INTERNAL: return 503;
	default: return 502; /* our credentials refused, garbage, another refusal */
	}
}

const char *upstream_rc_name(enum upstream_rc rc)
{
	switch (rc) {
	case UP_OK: return "ok";
	case UP_REJECTED: return "rejected";
	case UP_UNAVAILABLE: return "unavailable";
	case UP_TIMEOUT: return "timeout";
	default: return "internal";
	}
}

/* ---- pure parsing and classification ---------------------------------- */

enum ct_kind { CT_OTHER, CT_JSON, CT_FORM };

/* The media type of a Content-Type value; parameters (charset) are ignored:
 * JSON is UTF-8 by definition and the parsers refuse anything else. */
static enum ct_kind ct_kind(const char *ct)
{
	if (!ct)
		return CT_OTHER;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	size_t n = strcspn(ct, "; \t");
	if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
		return CT_JSON;
	if (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0)
		return CT_FORM;
	if (n > 17 && strncasecmp(ct, "application/", 12) == 0 && strncasecmp(ct + n - 5, "+json", 5) == 0)
		return CT_JSON;
	return CT_OTHER;
}

/* min..max bytes, each one in lo..hi. */
static int chars_in(const char *s, size_t min, size_t max, unsigned char lo, unsigned char hi)
{
	size_t n = 0;
	for (; s[n]; n++)
		if ((unsigned char)s[n] < lo || (unsigned char)s[n] > hi || n >= max)
			return 0;
	return n >= min;
}

/* No C0 control character and no DEL; UTF-8 beyond ASCII is fine. */
static int no_controls(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] == 0x7f || n >= max)
			return 0;
	return 1;
}

/* A token goes into an HTTP header: visible ASCII only (RFC 6749 A.12
 * without the space), so that no answer can inject a header line. */
static char *token_string(const json_t *v)
{
	const char *s = json_string_value(v);
	if (!s || strlen(s) != json_string_length(v) || !chars_in(s, 1, UP_MAX_TOKEN, 0x21, 0x7e))
		return NULL;
	return strdup(s);
}

/* expires_in as a JSON integer or (GitHub's form answers) a decimal string
 * of at most 10 digits; -1 when absent or not in 1..UP_MAX_EXPIRES_IN. */
static long expires_value(const json_t *v)
{
	const char *s = json_string_value(v);
	long long x = -1;
	if (json_is_integer(v))
		x = json_integer_value(v);
	else if (s && strlen(s) <= 10 && num_parse(s, 1, UP_MAX_EXPIRES_IN, &x) < 0)
		x = -1;
	return x > 0 && x <= UP_MAX_EXPIRES_IN ? (long)x : -1;
}

static void error_code(const json_t *v, char error[UP_ERROR_MAX])
{
	const char *s = json_string_value(v);
	error[0] = '\0';
	if (!v)
		return;
	if (!s || strlen(s) != json_string_length(v) || !*s || strlen(s) >= UP_ERROR_MAX ||
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != strlen(s)) {
		snprintf(error, UP_ERROR_MAX, "invalid");
		return;
	}
	snprintf(error, UP_ERROR_MAX, "%s", s);
}

int upstream_parse_token_answer(const char *data, size_t size, int form, struct upstream_tokens *out,
				char error[UP_ERROR_MAX])
{
	json_t *j = NULL;
	int rc = -1, dup = 0;
	memset(out, 0, sizeof(*out));
	out->expires_in = -1;
	error[0] = '\0';
	if (!data || size == 0 || size > LIM_UPSTREAM_BODY)
		goto out;
	j = form ? form_parse(data, size, &dup) : jparse(data, size, 0, LIM_JSON_DEPTH);
	if (!json_is_object(j) || dup)
		goto out;
	error_code(json_object_get(j, "error"), error);
	out->access_token = token_string(json_object_get(j, "access_token"));
	out->refresh_token = token_string(json_object_get(j, "refresh_token"));
	const char *scope = json_string_value(json_object_get(j, "scope"));
	if (scope && no_controls(scope, UP_MAX_SCOPE))
		out->scope = strdup(scope);
	out->expires_in = expires_value(json_object_get(j, "expires_in"));
	json_t *user = json_object_get(j, "user");
	if (json_is_object(user))
		out->user = json_incref(user);
	rc = 0;
out:
	if (rc < 0)
		error[0] = '\0';
	form_free(&j); /* wipes the token values, whichever parser made them */
	return rc;
}

static char *id_string(const json_t *v)
{
	char tmp[32];
	const char *s = json_string_value(v);
	if (s)
		return strlen(s) == json_string_length(v) && chars_in(s, 1, UP_MAX_ID_FIELD, 0x21, 0x7e) ? strdup(s)
													 : NULL;
	if (json_is_integer(v)) {
		snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return strdup(tmp);
	}
	return NULL;
}

static char *opt_string(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);
	const char *s = json_string_value(v);
	return s && strlen(s) == json_string_length(v) && no_controls(s, UP_MAX_ID_FIELD) ? strdup(s) : NULL;
}

/* The identity in a userinfo document (or Sentry's token answer "user"). */
static int identity_from_json(const json_t *doc, struct upstream_identity *out)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(doc))
		return -1;
	/* Sentry's /api/0/ wraps the user. */
	const json_t *u = json_object_get(doc, "user");
	if (json_is_object(u) && !json_object_get(doc, "sub") && !json_object_get(doc, "id"))
		doc = u;
	const json_t *sub = json_object_get(doc, "sub");
	out->subject = id_string(sub ? sub : json_object_get(doc, "id"));
	if (!out->subject)
		return -1;
	out->login = opt_string(doc, "login");
	if (!out->login)
		out->login = opt_string(doc, "preferred_username");
	if (!out->login)
		out->login = opt_string(doc, "username");
	out->email = opt_string(doc, "email");
	out->name = opt_string(doc, "name");
	return 0;
}

int upstream_parse_userinfo(const char *data, size_t size, struct upstream_identity *out)
{
	memset(out, 0, sizeof(*out));
	if (!data || size == 0 || size > LIM_UPSTREAM_BODY)
		return -1;
	json_t *doc = jparse(data, size, 0, LIM_JSON_DEPTH);
	int rc = identity_from_json(doc, out);
	json_decref(doc);
	if (rc < 0)
		upstream_identity_free(out);
	return rc;
}

enum upstream_class upstream_error_class(const char *error)
{
	static const struct {
		const char *code;
		enum upstream_class cls;
	} map[] = {
		{ "invalid_grant", UPC_GRANT_DEAD },
		{ "bad_refresh_token", UPC_GRANT_DEAD },     /* GitHub, refresh */
		{ "bad_verification_code", UPC_GRANT_DEAD }, /* GitHub, code exchange */
		{ "invalid_client", UPC_INVALID_CLIENT },
		{ "incorrect_client_credentials", UPC_INVALID_CLIENT }, /* GitHub */
		{ "unauthorized_client", UPC_UNAUTHORIZED_CLIENT },
		{ "slow_down", UPC_RATE_LIMITED },
		{ "server_error", UPC_SERVER_ERROR },
		{ "temporarily_unavailable", UPC_SERVER_ERROR },
	};
	for (size_t i = 0; error && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(error, map[i].code) == 0)
			return map[i].cls;
	return UPC_REFUSED;
}

/* Statuses that mean the same whatever the endpoint and the body. */
static int status_class(long status, enum upstream_class *cls)
{
	if (status == 429 || status == 403)
		*cls = UPC_RATE_LIMITED;
	else if (status >= 500 && status <= 599)
		*cls = UPC_SERVER_ERROR;
	else if (status == 408)
		*cls = UPC_TIMEOUT;
	else
		return 0;
	return 1;
}

/* A token endpoint answer (code exchange or refresh). parsed: the body was a
 * JSON object or a form of the announced type. */
static enum upstream_class token_class(long status, int parsed, const char *error, int has_access)
{
	enum upstream_class cls;
	if (status_class(status, &cls))
		return cls;
	if (status != 200 && status != 201 && status != 400 && status != 401)
		return UPC_GARBAGE;
	if (parsed && error[0])
		return upstream_error_class(error); /* GitHub answers its errors with 200 */
	if (status == 401)
		return UPC_INVALID_CLIENT; /* RFC 6749 §5.2: 401 is client authentication */
	if (status == 400 || !parsed || !has_access)
		return UPC_GARBAGE;
	return UPC_OK;
}

static enum upstream_class userinfo_class(long status, int parsed)
{
	enum upstream_class cls;
	if (status == 401)
		return UPC_GRANT_DEAD; /* the user's token is refused */
	if (status_class(status, &cls))
		return cls;
	return status == 200 && parsed ? UPC_OK : UPC_GARBAGE;
}

static enum upstream_class revoke_class(long status, int parsed, const char *error)
{
	enum upstream_class cls;
	if (status == 200 || status == 204)
		return UPC_OK;
	if (status_class(status, &cls))
		return cls;
	if ((status == 400 || status == 401) && parsed && error[0]) {
		cls = upstream_error_class(error);
		return cls == UPC_GRANT_DEAD ? UPC_REFUSED : cls; /* no verdict on a grant here */
	}
	return status == 401 ? UPC_INVALID_CLIENT : UPC_GARBAGE;
}

static enum upstream_class discovery_class(long status, int parsed)
{
	enum upstream_class cls;
	if (status_class(status, &cls))
		return cls;
	return status == 200 && parsed ? UPC_OK : UPC_GARBAGE;
}

/* Parses a token-endpoint-style body of the announced type; -1 when the
 * type is neither JSON nor a form, or the body is not well formed. */
static int parse_token_body(const char *ct, const char *body, size_t len, struct upstream_tokens *t,
			    char error[UP_ERROR_MAX])
{
	enum ct_kind k = ct_kind(ct);
	memset(t, 0, sizeof(*t));
	t->expires_in = -1;
	error[0] = '\0';
	if (k == CT_OTHER)
		return -1;
	return upstream_parse_token_answer(body, len, k == CT_FORM, t, error);
}

enum upstream_class upstream_classify(enum upstream_op op, long status, const char *content_type, const char *body,
				      size_t len)
{
	struct upstream_tokens t = { 0 };
	struct upstream_identity id = { 0 };
	char error[UP_ERROR_MAX] = "";
	enum upstream_class cls = UPC_GARBAGE;
	switch (op) {
	case UPOP_EXCHANGE:
	case UPOP_REFRESH:
	case UPOP_CLIENT_CREDENTIALS: {
		int parsed = parse_token_body(content_type, body, len, &t, error) == 0;
		cls = token_class(status, parsed, error, t.access_token != NULL);
		upstream_tokens_free(&t);
		break;
	}
	case UPOP_USERINFO: {
		int parsed = ct_kind(content_type) == CT_JSON && upstream_parse_userinfo(body, len, &id) == 0;
		cls = userinfo_class(status, parsed);
		upstream_identity_free(&id);
		break;
	}
	case UPOP_REVOKE: {
		int parsed = parse_token_body(content_type, body, len, &t, error) == 0;
		cls = revoke_class(status, parsed, error);
		upstream_tokens_free(&t);
		break;
	}
	case UPOP_DISCOVERY: {
		json_t *doc = ct_kind(content_type) == CT_JSON && body && len && len <= LIM_UPSTREAM_BODY
				      ? jparse(body, len, 0, LIM_JSON_DEPTH)
				      : NULL;
		cls = discovery_class(status, json_is_object(doc));
		json_decref(doc);
		break;
	}
	}
	return cls;
}

static long wait_until(long long t, long long now)
{
	if (t <= now)
		return 0;
	return t - now > UP_RETRY_AFTER_MAX ? UP_RETRY_AFTER_MAX : (long)(t - now);
}

long upstream_parse_retry_after(const char *value, long long now)
{
	if (!value)
		return 0;
	while (*value == ' ' || *value == '\t')
		value++;
	size_t n = strlen(value);
	while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	if (n == 0 || n > 64)
		return 0;
	size_t digits = strspn(value, "0123456789");
	if (digits == n) {
		long long s = 0;
		for (size_t i = 0; i < n && s <= UP_RETRY_AFTER_MAX; i++)
			s = s * 10 + (value[i] - '0');
		return s > UP_RETRY_AFTER_MAX ? UP_RETRY_AFTER_MAX : (long)s;
	}
	char date[65];
	memcpy(date, value, n);
	date[n] = '\0';
	/* An HTTP-date names a day: "Sun, 06 Nov 1994 08:49:37 GMT". */
	if (digits != 0 || !strchr(date, ','))
		return 0;
	time_t t = curl_getdate(date, NULL);
	return t == (time_t)-1 ? 0 : wait_until((long long)t, now);
}

/* ---- one bounded HTTP exchange ---------------------------------------- */

struct up_resp {
	long status;     /* 0 when no answer arrived */
	struct buf body; /* secret: token answers */
	char content_type[128];
	long retry_after; /* seconds, 0 when the upstream asked for no wait */
	int too_large;
	const char *transport; /* curl's static text of a failed transfer, or NULL */
};

static void resp_init(struct up_resp *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, LIM_UPSTREAM_BODY);
	r->body.secret = 1;
}

static size_t on_body(char *data, size_t size, size_t n, void *cls)
{
	struct up_resp *r = cls;
	if (buf_add(&r->body, data, size * n) < 0) {
		r->too_large = 1;
		return 0; /* aborts the transfer */
	}
	return size * n;
}

/* One handle per worker thread keeps upstream connections alive; a
 * thread-specific key frees it (and its connections) when the thread ends,
 * so that a stopped server leaks nothing. */
static pthread_key_t handle_key;
static pthread_once_t handle_once = PTHREAD_ONCE_INIT;
static int handle_key_ok;

static void handle_free(void *h)
{
	curl_easy_cleanup(h);
}

static void handle_key_init(void)
{
	handle_key_ok = pthread_key_create(&handle_key, handle_free) == 0;
}

static CURL *thread_handle(void)
{
	pthread_once(&handle_once, handle_key_init);
	if (!handle_key_ok)
		return NULL;
	CURL *h = pthread_getspecific(handle_key);
	if (h) {
		curl_easy_reset(h);
		return h;
	}
	h = curl_easy_init();
	if (h && pthread_setspecific(handle_key, h) != 0) {
		curl_easy_cleanup(h);
		h = NULL;
	}
	return h;
}

static const char *header_value(CURL *h, const char *name)
{
	struct curl_header *hv = NULL;
	return curl_easy_header(h, name, 0, CURLH_HEADER, -1, &hv) == CURLHE_OK && hv ? hv->value : NULL;
}

/* How long the upstream asked us to wait: Retry-After, or GitHub's rate
 * limit reset (an epoch second) once the remaining budget is 0. */
static long answer_wait(CURL *h)
{
	long long now = (long long)time(NULL);
	long s = upstream_parse_retry_after(header_value(h, "Retry-After"), now);
	const char *left = header_value(h, "X-RateLimit-Remaining"), *reset = header_value(h, "X-RateLimit-Reset");
	long long at = 0;
	if (s == 0 && left && strcmp(left, "0") == 0 && reset && num_parse(reset, 0, UP_RATELIMIT_RESET_MAX, &at) == 0)
		s = wait_until(at, now);
	return s;
}

static enum upstream_class transport_class(CURLcode cc, int too_large)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT: return UPC_TIMEOUT;
	case CURLE_OUT_OF_MEMORY:
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL: return UPC_INTERNAL;
	case CURLE_FILESIZE_EXCEEDED: return UPC_GARBAGE;
	case CURLE_WRITE_ERROR: return too_large ? UPC_GARBAGE : UPC_INTERNAL;
	default: return UPC_UNREACHABLE;
	}
}

/* method: "GET", "POST" (form body) or "DELETE" (JSON body). UPC_OK when an
 * answer (any status) arrived whole; out is filled in any case and the
 * caller frees out->body. */
static enum upstream_class up_call(const struct cfg_upstream *up, const char *method, const char *url, const char *body,
				   const char *content_type, const char *auth_header, const char *userpwd,
				   struct up_resp *out)
{
	CURL *h = thread_handle();
	struct curl_slist *hdr = NULL;
	enum upstream_class cls = UPC_INTERNAL;
	resp_init(out);
	if (!h)
		return UPC_INTERNAL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, up->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, up->timeout_ms < 5000 ? up->timeout_ms : 5000L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, UP_USER_AGENT);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)LIM_UPSTREAM_BODY);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (up->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, up->ca_file);
	hdr = curl_slist_append(hdr, "Accept: application/json");
	if (hdr && auth_header) {
		struct curl_slist *n = curl_slist_append(hdr, auth_header);
		if (!n)
			goto out;
		hdr = n;
	}
	if (hdr && content_type) {
		struct curl_slist *n = curl_slist_append(hdr, content_type);
		if (!n)
			goto out;
		hdr = n;
	}
	if (!hdr)
		goto out;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	if (userpwd) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
	}
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
	} else if (strcmp(method, "DELETE") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
		if (body)
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	}
	CURLcode cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (cc != CURLE_OK) {
		out->transport = curl_easy_strerror(cc);
		cls = transport_class(cc, out->too_large);
		goto out;
	}
	char *ct = NULL;
	if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct &&
	    strlen(ct) < sizeof(out->content_type))
		memcpy(out->content_type, ct, strlen(ct) + 1);
	if (out->status < 200 || out->status > 299)
		out->retry_after = answer_wait(h);
	cls = UPC_OK;
out:
	/* The handle must not keep pointers to this call's data. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_USERPWD, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	if (hdr && auth_header)
		for (struct curl_slist *l = hdr; l; l = l->next)
			crypto_wipe(l->data, strlen(l->data));
	curl_slist_free_all(hdr);
	return cls;
}

/* One line and one count per failed call. Never a token: only the class,
 * the status, a validated OAuth error code and curl's own text. */
static void note(const struct cfg_upstream *up, enum upstream_op op, enum upstream_class cls, const struct up_resp *r,
		 const char *error, const char *request_id)
{
	metrics_upstream_error(up->name, upstream_op_name(op), upstream_class_name(cls));
	json_t *f = json_pack("{s:s, s:s, s:s, s:i}", "upstream", up->name, "op", upstream_op_name(op), "class",
			      upstream_class_name(cls), "status", r ? (int)r->status : 0);
	if (f && error && error[0])
		json_object_set_new(f, "error", json_string(error));
	if (f && r && r->retry_after > 0)
		json_object_set_new(f, "retry_after", json_integer(r->retry_after));
	if (f && r && r->transport)
		json_object_set_new(f, "transport", json_string(r->transport));
	/* A dead grant is the user's business (and audited); the rest needs an operator. */
	log_event(cls == UPC_GRANT_DEAD ? LOG_WARN : LOG_ERROR, "upstream.error", request_id, f);
}

/* ---- endpoints -------------------------------------------------------- */

struct discovered {
	char name[64];
	char issuer[1024];
	char authorize[1024], token[1024], userinfo[1024], revoke[1024];
	long long fetched;
};
static pthread_mutex_t disc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct discovered disc[64];
static size_t ndisc;

static long long now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

/* The endpoints of an OIDC discovery document (OpenID Connect Discovery
 * 1.0 section 4) into out: 0, or -1 when doc is not an object whose issuer
 * is exactly the configured one (section 4.3). Absent endpoints are "". */
static int discovery_parse(const json_t *doc, const struct cfg_upstream *up, struct discovered *out)
{
	const char *iss = json_string_value(json_object_get(doc, "issuer"));
	int rc = -1;
	memset(out, 0, sizeof(*out));
	if (iss && strcmp(iss, up->issuer) == 0) {
		copy_str(out->name, sizeof(out->name), up->name);
		copy_str(out->issuer, sizeof(out->issuer), up->issuer);
		copy_str(out->authorize, sizeof(out->authorize),
			 json_string_value(json_object_get(doc, "authorization_endpoint")));
		copy_str(out->token, sizeof(out->token), json_string_value(json_object_get(doc, "token_endpoint")));
		copy_str(out->userinfo, sizeof(out->userinfo),
			 json_string_value(json_object_get(doc, "userinfo_endpoint")));
		copy_str(out->revoke, sizeof(out->revoke),
			 json_string_value(json_object_get(doc, "revocation_endpoint")));
		rc = 0;
	}
	return rc;
}

/* The cached discovery of up when it is fresh: 0, else -1. */
static int disc_get(const struct cfg_upstream *up, struct discovered *out)
{
	int rc = -1;
	pthread_mutex_lock(&disc_lock);
	for (size_t i = 0; rc < 0 && i < ndisc; i++)
		if (strcmp(disc[i].name, up->name) == 0 && strcmp(disc[i].issuer, up->issuer) == 0 &&
		    now_s() - disc[i].fetched < UP_DISCOVERY_TTL_S) {
			*out = disc[i];
			rc = 0;
		}
	pthread_mutex_unlock(&disc_lock);
	return rc;
}

/* Caches d in up's slot (replacing an older discovery) or a free one. */
static void disc_put(const struct discovered *d)
{
	pthread_mutex_lock(&disc_lock);
	size_t slot = ndisc;
	for (size_t i = 0; i < ndisc; i++)
		if (strcmp(disc[i].name, d->name) == 0)
			slot = i;
	if (slot < sizeof(disc) / sizeof(disc[0])) {
		disc[slot] = *d;
		if (slot == ndisc)
			ndisc++;
	}
	pthread_mutex_unlock(&disc_lock);
}

static int discover(const struct cfg_upstream *up, struct discovered *out)
{
	char url[1200];
	size_t n = strlen(up->issuer);
	struct up_resp r;
	json_t *doc = NULL;
	int rc = -1;
	resp_init(&r);
	if (disc_get(up, out) == 0) {
		rc = 0;
		goto out;
	}
	if ((size_t)snprintf(url, sizeof(url), "%s%s.well-known/openid-configuration", up->issuer,
			     n && up->issuer[n - 1] == '/' ? "" : "/") >= sizeof(url)) {
		note(up, UPOP_DISCOVERY, UPC_INTERNAL, NULL, NULL, NULL);
		goto out;
	}
	enum upstream_class cls = up_call(up, "GET", url, NULL, NULL, NULL, NULL, &r);
	if (cls == UPC_OK) {
		if (ct_kind(r.content_type) == CT_JSON && r.body.len)
			doc = jparse(r.body.ptr, r.body.len, 0, LIM_JSON_DEPTH);
		cls = discovery_class(r.status, json_is_object(doc));
	}
	if (cls != UPC_OK) {
		note(up, UPOP_DISCOVERY, cls, &r, NULL, NULL);
		goto out;
	}
	if (discovery_parse(doc, up, out) < 0) {
		log_msg(LOG_ERROR, "upstream.discovery_mismatch", NULL,
			"upstream %s: discovery document issuer does not equal the configured issuer", up->name);
		note(up, UPOP_DISCOVERY, UPC_GARBAGE, &r, NULL, NULL);
		goto out;
	}
	out->fetched = now_s();
	disc_put(out);
	rc = 0;
out:
	json_decref(doc);
	buf_free(&r.body);
	return rc;
}

int upstream_endpoints(const struct cfg_upstream *up, struct upstream_ep *ep)
{
	const struct preset *p = NULL;
	memset(ep, 0, sizeof(*ep));
	for (size_t i = 0; up->preset && i < sizeof(presets) / sizeof(presets[0]); i++)
		if (strcmp(presets[i].name, up->preset) == 0)
			p = &presets[i];
	if (p) {
		copy_str(ep->authorize, sizeof(ep->authorize), p->authorize);
		copy_str(ep->token, sizeof(ep->token), p->token);
		copy_str(ep->userinfo, sizeof(ep->userinfo), p->userinfo);
		copy_str(ep->revoke, sizeof(ep->revoke), p->revoke);
		ep->pkce = p->pkce;
		ep->identity_from_token = p->identity_from_token;
		ep->github = p->github;
		ep->extra_authorize_params = p->extra;
	} else {
		ep->pkce = 1;
	}
	/* An issuer means OIDC discovery, unless every endpoint is written out. */
	if (up->issuer && !(up->authorize_url && up->token_url)) {
		struct discovered d;
		if (discover(up, &d) < 0)
			return -1;
		copy_str(ep->authorize, sizeof(ep->authorize), d.authorize);
		copy_str(ep->token, sizeof(ep->token), d.token);
		if (d.userinfo[0])
			copy_str(ep->userinfo, sizeof(ep->userinfo), d.userinfo);
		if (d.revoke[0])
			copy_str(ep->revoke, sizeof(ep->revoke), d.revoke);
	}
	if (up->authorize_url)
		copy_str(ep->authorize, sizeof(ep->authorize), up->authorize_url);
	if (up->token_url)
		copy_str(ep->token, sizeof(ep->token), up->token_url);
	if (up->userinfo_url)
		copy_str(ep->userinfo, sizeof(ep->userinfo), up->userinfo_url);
	if (up->revoke_url)
		copy_str(ep->revoke, sizeof(ep->revoke), up->revoke_url);
	if (up->pkce >= 0)
		ep->pkce = up->pkce;
	if (!ep->authorize[0] || !ep->token[0])
		return -1;
	return 0;
}

char *upstream_authorize_url(const struct cfg_upstream *up, const struct upstream_ep *ep, const char *redirect_uri,
			     const char *state, const char *challenge)
{
	struct buf q;
	buf_init(&q, 8192);
	char *scope = NULL;
	struct buf s;
	buf_init(&s, 4096);
	for (size_t i = 0; i < up->n_scopes; i++)
		if ((i && buf_add(&s, " ", 1) < 0) || buf_adds(&s, up->scopes[i]) < 0)
			goto fail;
	scope = buf_take(&s, NULL);
	if (!scope || form_add(&q, "response_type", "code") < 0 || form_add(&q, "client_id", up->client_id) < 0 ||
	    form_add(&q, "redirect_uri", redirect_uri) < 0 || form_add(&q, "state", state) < 0 ||
	    (scope[0] && form_add(&q, "scope", scope) < 0))
		goto fail;
	if (challenge &&
	    (form_add(&q, "code_challenge", challenge) < 0 || form_add(&q, "code_challenge_method", "S256") < 0))
		goto fail;
	if (ep->extra_authorize_params && (buf_add(&q, "&", 1) < 0 || buf_adds(&q, ep->extra_authorize_params) < 0))
		goto fail;
	free(scope);
	char *query = buf_take(&q, NULL);
	if (!query)
		return NULL;
	size_t n = strlen(ep->authorize) + strlen(query) + 2;
	char *url = malloc(n);
	if (url)
		snprintf(url, n, "%s%c%s", ep->authorize, strchr(ep->authorize, '?') ? '&' : '?', query);
	free(query);
	return url;
fail:
	free(scope);
	buf_free(&s);
	buf_free(&q);
	return NULL;
}

/* ---- calls ------------------------------------------------------------ */

static void set_wait(long *retry_after, const struct up_resp *r)
{
	if (retry_after)
		*retry_after = r->retry_after;
}

static enum upstream_class token_call(const struct cfg_upstream *up, const struct upstream_ep *ep, enum upstream_op op,
				      struct buf *form, const char *request_id, struct upstream_tokens *out,
				      long *retry_after)
{
	struct up_resp r;
	char error[UP_ERROR_MAX] = "";
	enum upstream_class cls = UPC_INTERNAL;
	resp_init(&r);
	if (form_add(form, "client_id", up->client_id) < 0 || form_add(form, "client_secret", up->client_secret) < 0)
		goto out;
	cls = up_call(up, "POST", ep->token, form->ptr, "Content-Type: application/x-www-form-urlencoded", NULL, NULL,
		      &r);
	if (cls == UPC_OK) {
		int parsed = parse_token_body(r.content_type, r.body.ptr, r.body.len, out, error) == 0;
		cls = token_class(r.status, parsed, error, out->access_token != NULL);
	}
out:
	buf_free(form);
	if (cls != UPC_OK) {
		upstream_tokens_free(out);
		note(up, op, cls, &r, error, request_id);
	}
	set_wait(retry_after, &r);
	buf_free(&r.body);
	return cls;
}

enum upstream_class upstream_exchange_code(const struct cfg_upstream *up, const struct upstream_ep *ep,
					   const char *code, const char *redirect_uri, const char *verifier,
					   const char *request_id, struct upstream_tokens *out, long *retry_after)
{
	struct buf f;
	buf_init(&f, 16384);
	f.secret = 1;
	memset(out, 0, sizeof(*out));
	out->expires_in = -1;
	if (retry_after)
		*retry_after = 0;
	if (form_add(&f, "grant_type", "authorization_code") < 0 || form_add(&f, "code", code) < 0 ||
	    form_add(&f, "redirect_uri", redirect_uri) < 0 ||
	    (verifier && form_add(&f, "code_verifier", verifier) < 0)) {
		buf_free(&f);
		note(up, UPOP_EXCHANGE, UPC_INTERNAL, NULL, NULL, request_id);
		return UPC_INTERNAL;
	}
	return token_call(up, ep, UPOP_EXCHANGE, &f, request_id, out, retry_after);
}

enum upstream_class upstream_refresh(const struct cfg_upstream *up, const struct upstream_ep *ep,
				     const char *refresh_token, const char *request_id, struct upstream_tokens *out,
				     long *retry_after)
{
	struct buf f;
	buf_init(&f, 16384);
	f.secret = 1;
	memset(out, 0, sizeof(*out));
	out->expires_in = -1;
	if (retry_after)
		*retry_after = 0;
	if (form_add(&f, "grant_type", "refresh_token") < 0 || form_add(&f, "refresh_token", refresh_token) < 0) {
		buf_free(&f);
		note(up, UPOP_REFRESH, UPC_INTERNAL, NULL, NULL, request_id);
		return UPC_INTERNAL;
	}
	return token_call(up, ep, UPOP_REFRESH, &f, request_id, out, retry_after);
}

enum upstream_class upstream_client_credentials(const struct cfg_upstream *up, const struct upstream_ep *ep,
						const char *request_id, struct upstream_tokens *out, long *retry_after)
{
	struct buf f, s;
	buf_init(&f, 16384);
	buf_init(&s, 4096);
	f.secret = 1;
	memset(out, 0, sizeof(*out));
	out->expires_in = -1;
	if (retry_after)
		*retry_after = 0;
	int bad = 0;
	for (size_t i = 0; !bad && i < up->n_scopes; i++)
		bad = (i && buf_add(&s, " ", 1) < 0) || buf_adds(&s, up->scopes[i]) < 0;
	char *scope = bad ? NULL : buf_take(&s, NULL);
	bad = !scope || form_add(&f, "grant_type", "client_credentials") < 0 ||
	      (scope[0] && form_add(&f, "scope", scope) < 0);
	free(scope);
	buf_free(&s);
	if (bad) {
		buf_free(&f);
		note(up, UPOP_CLIENT_CREDENTIALS, UPC_INTERNAL, NULL, NULL, request_id);
		return UPC_INTERNAL;
	}
	return token_call(up, ep, UPOP_CLIENT_CREDENTIALS, &f, request_id, out, retry_after);
}

enum upstream_class upstream_identity(const struct cfg_upstream *up, const struct upstream_ep *ep,
				      const struct upstream_tokens *tok, const char *request_id,
				      struct upstream_identity *out, long *retry_after)
{
	struct up_resp r;
	char auth[UP_MAX_TOKEN + 32];
	enum upstream_class cls = UPC_INTERNAL;
	enum upstream_op op = UPOP_USERINFO;
	resp_init(&r);
	memset(out, 0, sizeof(*out));
	if (ep->identity_from_token && tok->user) {
		op = UPOP_EXCHANGE; /* the identity came with the token answer */
		cls = identity_from_json(tok->user, out) == 0 ? UPC_OK : UPC_GARBAGE;
		goto out;
	}
	if (!ep->userinfo[0] || !tok->access_token ||
	    (size_t)snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok->access_token) >= sizeof(auth))
		goto out;
	cls = up_call(up, "GET", ep->userinfo, NULL, NULL, auth, NULL, &r);
	if (cls == UPC_OK) {
		int parsed = ct_kind(r.content_type) == CT_JSON &&
			     upstream_parse_userinfo(r.body.ptr, r.body.len, out) == 0;
		cls = userinfo_class(r.status, parsed);
	}
out:
	crypto_wipe(auth, sizeof(auth));
	if (cls != UPC_OK) {
		upstream_identity_free(out);
		note(up, op, cls, &r, NULL, request_id);
	}
	set_wait(retry_after, &r);
	buf_free(&r.body);
	return cls;
}

static enum upstream_rc revoke_rc(enum upstream_class cls)
{
	switch (cls) {
	case UPC_OK: return UP_OK;
	case UPC_TIMEOUT: return UP_TIMEOUT;
	case UPC_INTERNAL: return UP_INTERNAL;
	case UPC_GARBAGE:
	case UPC_REFUSED:
	case UPC_GRANT_DEAD: return UP_REJECTED;
	default: return UP_UNAVAILABLE; /* incl. our own credentials refused: fixable, retried */
	}
}

/* GitHub: DELETE /applications/{client_id}/grant with Basic client
 * credentials (every token of the user for the app, and the app's
 * authorization), or with one_token DELETE /applications/{client_id}/token
 * (that token only): the revoke URL's final "/grant" made "/token". */
static enum upstream_class revoke_github(const struct cfg_upstream *up, const struct upstream_ep *ep,
					 const char *access_token, int one_token, struct up_resp *r)
{
	char url[1400], userpwd[2048];
	char *body = NULL;
	json_t *b = NULL;
	enum upstream_class cls = UPC_INTERNAL;
	const char *tpl = strstr(ep->revoke, "{client_id}");
	char *cid = curl_easy_escape(NULL, up->client_id, 0);
	int n = -1;
	if (!cid)
		goto out;
	if (tpl)
		n = snprintf(url, sizeof(url), "%.*s%s%s", (int)(tpl - ep->revoke), ep->revoke, cid, tpl + 11);
	else
		n = snprintf(url, sizeof(url), "%s", ep->revoke);
	curl_free(cid);
	if (n < 0 || (size_t)n >= sizeof(url))
		goto out;
	if (one_token) {
		size_t len = (size_t)n;
		if (len < 6 || strcmp(url + len - 6, "/grant") != 0)
			goto out; /* no per-token endpoint to derive: nothing sent */
		memcpy(url + len - 6, "/token", 6);
	}
	n = snprintf(userpwd, sizeof(userpwd), "%s:%s", up->client_id, up->client_secret);
	if (n < 0 || (size_t)n >= sizeof(userpwd))
		goto out;
	b = json_pack("{s:s}", "access_token", access_token);
	body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	form_free(&b);
	if (!body)
		goto out;
	cls = up_call(up, "DELETE", url, body, "Content-Type: application/json", NULL, userpwd, r);
	if (cls == UPC_OK)
		cls = r->status == 404
			      ? UPC_OK /* already gone */
			      : upstream_classify(UPOP_REVOKE, r->status, r->content_type, r->body.ptr, r->body.len);
out:
	if (body) {
		crypto_wipe(body, strlen(body));
		free(body);
	}
	crypto_wipe(userpwd, sizeof(userpwd));
	return cls;
}

/* RFC 7009. */
static enum upstream_class revoke_rfc7009(const struct cfg_upstream *up, const struct upstream_ep *ep,
					  const char *access_token, const char *refresh_token, struct up_resp *r)
{
	struct buf f;
	buf_init(&f, 16384);
	f.secret = 1;
	enum upstream_class cls = UPC_INTERNAL;
	const char *tok = refresh_token ? refresh_token : access_token;
	if (form_add(&f, "token", tok) < 0 ||
	    form_add(&f, "token_type_hint", refresh_token ? "refresh_token" : "access_token") < 0 ||
	    form_add(&f, "client_id", up->client_id) < 0 || form_add(&f, "client_secret", up->client_secret) < 0)
		goto out;
	cls = up_call(up, "POST", ep->revoke, f.ptr, "Content-Type: application/x-www-form-urlencoded", NULL, NULL, r);
	if (cls == UPC_OK)
		cls = upstream_classify(UPOP_REVOKE, r->status, r->content_type, r->body.ptr, r->body.len);
out:
	buf_free(&f);
	return cls;
}

enum upstream_rc upstream_revoke(const struct cfg_upstream *up, const struct upstream_ep *ep, const char *access_token,
				 const char *refresh_token)
{
	struct up_resp r;
	enum upstream_class cls;
	resp_init(&r);
	if (!ep->revoke[0])
		return UP_OK;
	if (!access_token && !refresh_token)
		cls = UPC_INTERNAL;
	else if (ep->github)
		cls = access_token ? revoke_github(up, ep, access_token, 0, &r) : UPC_INTERNAL;
	else
		cls = revoke_rfc7009(up, ep, access_token, refresh_token, &r);
	if (cls != UPC_OK)
		note(up, UPOP_REVOKE, cls, &r, NULL, NULL);
	buf_free(&r.body);
	return revoke_rc(cls);
}

enum upstream_rc upstream_revoke_one(const struct cfg_upstream *up, const struct upstream_ep *ep,
				     const char *access_token)
{
	struct up_resp r;
	resp_init(&r);
	if (!ep->github || !ep->revoke[0] || !access_token)
		return UP_REJECTED;
	enum upstream_class cls = revoke_github(up, ep, access_token, 1, &r);
	if (cls != UPC_OK)
		note(up, UPOP_REVOKE, cls, &r, NULL, NULL);
	buf_free(&r.body);
	return revoke_rc(cls);
}

void upstream_tokens_free(struct upstream_tokens *t)
{
	if (t->access_token) {
		crypto_wipe(t->access_token, strlen(t->access_token));
		free(t->access_token);
	}
	if (t->refresh_token) {
		crypto_wipe(t->refresh_token, strlen(t->refresh_token));
		free(t->refresh_token);
	}
	free(t->scope);
	json_decref(t->user);
	memset(t, 0, sizeof(*t));
	t->expires_in = -1;
}

void upstream_identity_free(struct upstream_identity *id)
{
	free(id->subject);
	free(id->login);
	free(id->email);
	free(id->name);
	memset(id, 0, sizeof(*id));
}
