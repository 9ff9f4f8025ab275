/* register.c: the pure step of POST /register (RFC 7591): every refusal the
 * endpoint makes of a registration document, and what an accepted one
 * yields. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "register.h"
#include "test.h"

static struct config cfg;
static struct register_refusal why;

#define JSON "application/json"

/* Parses body as ct; NULL when accepted (rq filled, to be freed), else the
 * refusal's description (why.error holds the code) and rq left empty. */
static const char *parse_ct(const char *ct, const char *body, size_t len, struct register_request *rq)
{
	enum register_parse rc = register_parse(&cfg, ct, body, len, rq, &why);
	if (rc == REGISTER_OK) {
		CHECK(rq->doc && rq->redirect_uris && rq->auth_method && rq->grant_types && rq->metadata);
		return NULL;
	}
	CHECK(rc == REGISTER_INVALID);
	CHECK(rq->doc == NULL && rq->grant_types == NULL && rq->metadata == NULL && rq->name == NULL);
	CHECK(why.error && why.description);
	return why.description ? why.description : "?";
}

/* The description of the refusal of body (NULL when accepted). */
static const char *refusal(const char *body)
{
	struct register_request rq;
	const char *d = parse_ct(JSON, body, strlen(body), &rq);
	register_request_free(&rq);
	return d;
}

/* Appends s to the string in dst[cap]. */
static void append(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(dst);
	snprintf(dst + n, cap - n, "%s", s);
}

/* A document whose member key holds a string of n bytes 'a' after prefix. */
static char *long_member(const char *head, size_t n, const char *tail)
{
	size_t cap = strlen(head) + n + strlen(tail) + 1;
	char *s = malloc(cap);
	snprintf(s, cap, "%s", head);
	memset(s + strlen(head), 'a', n);
	snprintf(s + strlen(head) + n, cap - strlen(head) - n, "%s", tail);
	return s;
}

#define RU "\"redirect_uris\":[\"https://app.example.com/cb\"]"
#define META_ERR "invalid_client_metadata"
#define URI_ERR "invalid_redirect_uri"

static void test_content_type_and_body(void)
{
	struct register_request rq;
	const char *ok = "{" RU "}";
	CHECK_STR(parse_ct(NULL, ok, strlen(ok), &rq), "the body must be application/json");
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(parse_ct("text/plain", ok, strlen(ok), &rq), "the body must be application/json");
	CHECK_STR(parse_ct("application/x-www-form-urlencoded", ok, strlen(ok), &rq),
		  "the body must be application/json");
	CHECK(parse_ct("Application/JSON; charset=utf-8", ok, strlen(ok), &rq) == NULL);
	register_request_free(&rq);
	/* No body at all. */
	CHECK_STR(parse_ct(JSON, NULL, 0, &rq), "the body must be a JSON object");
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(refusal(""), "the body must be a JSON object");
	CHECK_STR(refusal("[]"), "the body must be a JSON object");
	CHECK_STR(refusal("\"x\""), "the body must be a JSON object");
	CHECK_STR(refusal("{" RU ","), "the body must be a JSON object");
	CHECK_STR(refusal("{" RU "," RU "}"), "the body must be a JSON object"); /* duplicate member */
	CHECK_STR(refusal("{" RU ",\"client_name\":\"a\\u0000b\"}"), "the body must be a JSON object");
	/* A raw NUL after the object: jansson alone would accept it. */
	const char nul[] = "{" RU "}\0";
	CHECK_STR(parse_ct(JSON, nul, sizeof(nul) - 1, &rq), "the body must be a JSON object");
	/* Nesting beyond LIM_JSON_DEPTH in an ignored member is refused too. */
	char deep[256] = "{" RU ",\"x\":";
	for (int i = 0; i < LIM_JSON_DEPTH; i++)
		append(deep, sizeof(deep), "[");
	for (int i = 0; i < LIM_JSON_DEPTH; i++)
		append(deep, sizeof(deep), "]");
	append(deep, sizeof(deep), "}");
	CHECK_STR(refusal(deep), "the body must be a JSON object");
}

static void test_redirect_uris(void)
{
	const char *count = "redirect_uris must be an array of 1 to 10 URIs";
	CHECK_STR(refusal("{}"), count);
	CHECK_STR(why.error, URI_ERR);
	CHECK_STR(refusal("{\"redirect_uris\":\"https://app.example.com/cb\"}"), count);
	CHECK_STR(refusal("{\"redirect_uris\":null}"), count);
	CHECK_STR(refusal("{\"redirect_uris\":[]}"), count);
	char many[1024] = "{\"redirect_uris\":[\"https://a.example/cb\"";
	for (int i = 1; i < LIM_REDIRECT_URIS; i++)
		append(many, sizeof(many), ",\"https://a.example/cb\"");
	char ten[sizeof(many) + 2];
	CHECK(snprintf(ten, sizeof(ten), "%s]}", many) < (int)sizeof(ten));
	CHECK(refusal(ten) == NULL);
	append(many, sizeof(many), ",\"https://a.example/cb\"]}");
	CHECK_STR(refusal(many), count);
	CHECK_STR(refusal("{\"redirect_uris\":[1]}"), "redirect_uris must be strings");
	CHECK_STR(why.error, URI_ERR);
	CHECK_STR(refusal("{\"redirect_uris\":[\"https://a.example/cb\",null]}"), "redirect_uris must be strings");
	CHECK_STR(refusal("{\"redirect_uris\":[\"https://a.example/cb#f\"]}"),
		  "redirect_uri must not contain a fragment");
	CHECK_STR(why.error, URI_ERR);
	CHECK_STR(refusal("{\"redirect_uris\":[\"javascript://x/%0aalert(1)\"]}"),
		  "redirect_uri scheme is not allowed");
	CHECK_STR(refusal("{\"redirect_uris\":[\"https://u:p@a.example/cb\"]}"),
		  "redirect_uri must not contain credentials");
	CHECK_STR(refusal("{\"redirect_uris\":[\"cb\"]}"), "redirect_uri is not an absolute URI");
	CHECK_STR(refusal("{\"redirect_uris\":[\"\"]}"), "redirect_uri is empty or too long");
	char *longu = long_member("{\"redirect_uris\":[\"https://a.example/", LIM_REDIRECT_URI, "\"]}");
	CHECK_STR(refusal(longu), "redirect_uri is empty or too long");
	free(longu);
	/* The registration policy on kinds. */
	const char *policy = "this redirect_uri kind is disabled by the server's registration policy";
	CHECK(refusal("{\"redirect_uris\":[\"http://127.0.0.1:3000/cb\"]}") == NULL);
	CHECK(refusal("{\"redirect_uris\":[\"cursor://oauth/cb\"]}") == NULL);
	cfg.registration.allow_loopback_redirects = 0;
	CHECK_STR(refusal("{\"redirect_uris\":[\"http://127.0.0.1:3000/cb\"]}"), policy);
	CHECK_STR(why.error, URI_ERR);
	cfg.registration.allow_loopback_redirects = 1;
	cfg.registration.allow_private_schemes = 0;
	CHECK_STR(refusal("{\"redirect_uris\":[\"https://a.example/cb\",\"cursor://oauth/cb\"]}"), policy);
	cfg.registration.allow_private_schemes = 1;
	/* The first refusal wins: redirect URIs are checked before the rest. */
	CHECK_STR(refusal("{\"redirect_uris\":[],\"grant_types\":[\"implicit\"]}"), count);
}

static void test_strings(void)
{
	const char *shorts = "client_name, scope and token_endpoint_auth_method must be short strings";
	char body[2048];
	char name[LIM_CLIENT_NAME + 2];
	memset(name, 'n', LIM_CLIENT_NAME);
	name[LIM_CLIENT_NAME] = '\0';
	snprintf(body, sizeof(body), "{" RU ",\"client_name\":\"%s\"}", name);
	CHECK(refusal(body) == NULL);
	append(name, sizeof(name), "n");
	snprintf(body, sizeof(body), "{" RU ",\"client_name\":\"%s\"}", name);
	CHECK_STR(refusal(body), shorts);
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(refusal("{" RU ",\"client_name\":7}"), shorts);
	CHECK_STR(refusal("{" RU ",\"client_name\":[\"x\"]}"), shorts);
	CHECK(refusal("{" RU ",\"client_name\":null}") == NULL);
	char scope[LIM_SCOPE + 2];
	memset(scope, 's', LIM_SCOPE + 1);
	scope[LIM_SCOPE + 1] = '\0';
	snprintf(body, sizeof(body), "{" RU ",\"scope\":\"%s\"}", scope);
	CHECK_STR(refusal(body), shorts);
	scope[LIM_SCOPE] = '\0';
	snprintf(body, sizeof(body), "{" RU ",\"scope\":\"%s\"}", scope);
	CHECK(refusal(body) == NULL);
	CHECK_STR(refusal("{" RU ",\"scope\":true}"), shorts);
	char method[80];
	memset(method, 'm', 65);
	method[65] = '\0';
	snprintf(body, sizeof(body), "{" RU ",\"token_endpoint_auth_method\":\"%s\"}", method);
	CHECK_STR(refusal(body), shorts);
}

static void test_auth_method(void)
{
	const char *methods = "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post";
	struct register_request rq;
	const char *b = "{" RU "}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	CHECK_STR(rq.auth_method, "client_secret_basic"); /* RFC 7591 section 2 default */
	CHECK(rq.confidential == 1);
	register_request_free(&rq);
	b = "{" RU ",\"token_endpoint_auth_method\":\"none\"}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	CHECK_STR(rq.auth_method, "none");
	CHECK(rq.confidential == 0);
	register_request_free(&rq);
	b = "{" RU ",\"token_endpoint_auth_method\":\"client_secret_post\"}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	CHECK(rq.confidential == 1);
	register_request_free(&rq);
	CHECK_STR(refusal("{" RU ",\"token_endpoint_auth_method\":\"private_key_jwt\"}"), methods);
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(refusal("{" RU ",\"token_endpoint_auth_method\":\"NONE\"}"), methods);
	CHECK_STR(refusal("{" RU ",\"token_endpoint_auth_method\":\"\"}"), methods);
}

static void test_grant_and_response_types(void)
{
	const char *grants = "grant_types may contain only authorization_code and refresh_token";
	const char *responses = "response_types must be [\"code\"]";
	struct register_request rq;
	const char *b = "{" RU "}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	char *t = json_dumps(rq.grant_types, JSON_COMPACT);
	CHECK_STR(t, "[\"authorization_code\",\"refresh_token\"]");
	free(t);
	register_request_free(&rq);
	b = "{" RU ",\"grant_types\":[\"refresh_token\"],\"response_types\":[\"code\"]}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	t = json_dumps(rq.grant_types, JSON_COMPACT);
	CHECK_STR(t, "[\"refresh_token\"]");
	free(t);
	register_request_free(&rq);
	CHECK(refusal("{" RU ",\"grant_types\":[\"authorization_code\",\"refresh_token\",\"authorization_code\","
		      "\"refresh_token\"]}") == NULL);
	CHECK_STR(refusal("{" RU ",\"grant_types\":[\"authorization_code\",\"refresh_token\",\"authorization_code\","
			  "\"refresh_token\",\"refresh_token\"]}"),
		  grants);
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(refusal("{" RU ",\"grant_types\":[]}"), grants);
	CHECK_STR(refusal("{" RU ",\"grant_types\":null}"), grants);
	CHECK_STR(refusal("{" RU ",\"grant_types\":\"authorization_code\"}"), grants);
	CHECK_STR(refusal("{" RU ",\"grant_types\":[\"implicit\"]}"), grants);
	CHECK_STR(refusal("{" RU ",\"grant_types\":[\"authorization_code\",\"client_credentials\"]}"), grants);
	CHECK_STR(refusal("{" RU ",\"grant_types\":[1]}"), grants);
	CHECK_STR(refusal("{" RU ",\"response_types\":[\"token\"]}"), responses);
	CHECK_STR(why.error, META_ERR);
	CHECK_STR(refusal("{" RU ",\"response_types\":[\"code\",\"code\"]}"), responses);
	CHECK_STR(refusal("{" RU ",\"response_types\":\"code\"}"), responses);
	CHECK_STR(refusal("{" RU ",\"response_types\":[]}"), responses);
	CHECK_STR(refusal("{" RU ",\"response_types\":[null]}"), responses);
	/* grant_types is judged before response_types. */
	CHECK_STR(refusal("{" RU ",\"response_types\":[\"token\"],\"grant_types\":[\"implicit\"]}"), grants);
}

static void test_metadata(void)
{
	const char *infos = "client_uri, logo_uri, tos_uri and policy_uri must be http(s) URLs";
	struct register_request rq;
	const char *b = "{" RU ",\"client_name\":\"App\",\"client_uri\":\"https://app.example.com\","
			"\"logo_uri\":\"http://app.example.com/l.png\",\"scope\":\"repo:read\","
			"\"software_id\":\"x\",\"jwks\":{\"keys\":[]},\"tos_uri\":null}";
	CHECK(parse_ct(JSON, b, strlen(b), &rq) == NULL);
	CHECK_STR(rq.name, "App");
	/* Only the informational URIs, scope and application_type are kept;
	 * unknown members are ignored. */
	char *t = json_dumps(rq.metadata, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK_STR(
		t,
		"{\"application_type\":\"web\",\"client_uri\":\"https://app.example.com\",\"logo_uri\":\"http://app.example.com/l.png\","
		"\"scope\":\"repo:read\"}");
	free(t);
	register_request_free(&rq);
	CHECK(rq.doc == NULL && rq.metadata == NULL);
	register_request_free(&rq); /* twice is harmless */
	CHECK_STR(refusal("{" RU ",\"client_uri\":\"ftp://app.example.com\"}"), infos);
	CHECK_STR(why.error, META_ERR);
	/* As today: the scheme's case matters here. */
	CHECK_STR(refusal("{" RU ",\"logo_uri\":\"HTTPS://app.example.com/l.png\"}"), infos);
	CHECK_STR(refusal("{" RU ",\"tos_uri\":\"javascript:alert(1)\"}"), infos);
	CHECK_STR(refusal("{" RU ",\"policy_uri\":42}"), infos);
	char *longu = long_member("{" RU ",\"client_uri\":\"https://", LIM_REDIRECT_URI - 8, "\"}");
	CHECK(refusal(longu) == NULL); /* LIM_REDIRECT_URI bytes */
	free(longu);
	longu = long_member("{" RU ",\"client_uri\":\"https://", LIM_REDIRECT_URI - 7, "\"}");
	CHECK_STR(refusal(longu), infos);
	free(longu);
}

/* The application_type a body is accepted with (NULL when refused). */
static const char *app_type_of(const char *body)
{
	static char got[16];
	struct register_request rq;
	if (parse_ct(JSON, body, strlen(body), &rq) != NULL)
		return NULL;
	const char *stored = json_string_value(json_object_get(rq.metadata, "application_type"));
	CHECK(stored && rq.application_type && strcmp(stored, rq.application_type) == 0);
	snprintf(got, sizeof(got), "%s", stored ? stored : "?");
	register_request_free(&rq);
	return got;
}

/* application_type (SEP-837) x every redirect URI kind: web allows https
 * off localhost only; native allows loopback, private-use schemes and
 * https; absent (or null) infers the type from the URIs. */
static void test_application_type(void)
{
	static const struct {
		const char *uris;
		const char *absent, *web, *native; /* the recorded type, NULL: refused */
	} cases[] = {
		{ "\"https://app.example.com/cb\"", "web", "web", "native" },
		{ "\"http://127.0.0.1:5000/cb\"", "native", NULL, "native" },
		{ "\"http://[::1]:5000/cb\"", "native", NULL, "native" },
		{ "\"http://localhost:5000/cb\"", "native", NULL, "native" },
		{ "\"http://LOCALHOST/cb\"", "native", NULL, "native" },
		{ "\"https://localhost/cb\"", "native", NULL, "native" },
		{ "\"https://127.0.0.1:8443/cb\"", "native", NULL, "native" },
		{ "\"cursor://anysphere.cursor-retrieval/cb\"", "native", NULL, "native" },
		{ "\"com.example.app:/oauth2redirect\"", "native", NULL, "native" },
		{ "\"https://a.example.com/cb\",\"http://127.0.0.1/cb\"", "native", NULL, "native" },
		{ "\"https://a.example.com/cb\",\"https://b.example.com/cb\"", "web", "web", "native" },
		{ "\"https://a.example.com/cb\",\"cursor://cb\"", "native", NULL, "native" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *want[] = { cases[i].absent, cases[i].absent, cases[i].web, cases[i].native };
		const char *member[] = { "", ",\"application_type\":null", ",\"application_type\":\"web\"",
					 ",\"application_type\":\"native\"" };
		for (size_t m = 0; m < 4; m++) {
			char body[512] = "{\"redirect_uris\":[";
			append(body, sizeof(body), cases[i].uris);
			append(body, sizeof(body), "]");
			append(body, sizeof(body), member[m]);
			append(body, sizeof(body), "}");
			const char *got = app_type_of(body);
			if (want[m]) {
				CHECK_STR(got, want[m]);
			} else {
				CHECK(got == NULL);
				CHECK_STR(why.error, URI_ERR);
				CHECK_STR(why.description, "a web application_type allows only https redirect_uris "
							   "that are not on localhost");
			}
		}
	}
	/* Any other value, whatever the URIs. */
	static const char *const bad[] = { "\"Web\"", "\"NATIVE\"", "\"\"", "\"browser\"", "42",
					   "true",    "[\"web\"]",  "{}",   "\"web \"" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char body[256] = "{" RU ",\"application_type\":";
		append(body, sizeof(body), bad[i]);
		append(body, sizeof(body), "}");
		CHECK_STR(refusal(body), "application_type must be web or native");
		CHECK_STR(why.error, META_ERR);
	}
	/* The registration policy still applies to a native client. */
	cfg.registration.allow_loopback_redirects = 0;
	CHECK_STR(refusal("{\"redirect_uris\":[\"http://127.0.0.1/cb\"],\"application_type\":\"native\"}"),
		  "this redirect_uri kind is disabled by the server's registration policy");
	cfg.registration.allow_loopback_redirects = 1;
	cfg.registration.allow_private_schemes = 0;
	CHECK_STR(refusal("{\"redirect_uris\":[\"cursor://cb\"],\"application_type\":\"native\"}"),
		  "this redirect_uri kind is disabled by the server's registration policy");
	cfg.registration.allow_private_schemes = 1;
	/* An explicit type is echoed as given, not inferred. */
	CHECK_STR(app_type_of("{" RU ",\"application_type\":\"native\"}"), "native");
}

int main(void)
{
	cfg.registration.dynamic = 1;
	cfg.registration.allow_loopback_redirects = 1;
	cfg.registration.allow_private_schemes = 1;
	test_content_type_and_body();
	test_redirect_uris();
	test_strings();
	test_auth_method();
	test_grant_and_response_types();
	test_metadata();
	test_application_type();
	TEST_DONE();
}
