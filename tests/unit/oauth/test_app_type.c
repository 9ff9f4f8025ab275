/* app_type.c: the redirect URI kinds and what each application_type
 * (SEP-837) allows, below what /register's own policy already refuses. */
#include <jansson.h>
#include <string.h>

#include "app_type.h"
#include "test.h"

static void test_uri_kind(void)
{
	CHECK(app_type_uri_kind("https://app.example.com/cb") == APP_URI_HTTPS);
	CHECK(app_type_uri_kind("HTTPS://app.example.com/cb") == APP_URI_HTTPS);
	CHECK(app_type_uri_kind("https://localhost.example.com/cb") == APP_URI_HTTPS);
	CHECK(app_type_uri_kind("https://127.0.0.2/cb") == APP_URI_HTTPS);
	CHECK(app_type_uri_kind("http://127.0.0.1:5000/cb") == APP_URI_LOOPBACK);
	CHECK(app_type_uri_kind("http://[::1]/cb") == APP_URI_LOOPBACK);
	CHECK(app_type_uri_kind("http://localhost/cb") == APP_URI_LOOPBACK);
	CHECK(app_type_uri_kind("https://localhost:8443/cb") == APP_URI_LOOPBACK);
	CHECK(app_type_uri_kind("cursor://anysphere.cursor-retrieval/cb") == APP_URI_PRIVATE);
	CHECK(app_type_uri_kind("com.example.app:/cb") == APP_URI_PRIVATE);
	CHECK(app_type_uri_kind("http://app.example.com/cb") == APP_URI_OTHER);
	CHECK(app_type_uri_kind("http://") == APP_URI_OTHER);
	CHECK(app_type_uri_kind("/relative/cb") == APP_URI_OTHER);
	CHECK(app_type_uri_kind("") == APP_URI_OTHER);
	CHECK(app_type_uri_kind(NULL) == APP_URI_OTHER);
}

/* The type recorded for given (a JSON text, NULL: absent) and uris (a JSON
 * array text), or the check's verdict as a name. */
static const char *check(const char *given, const char *uris)
{
	json_t *g = given ? json_loads(given, JSON_DECODE_ANY, NULL) : NULL;
	json_t *u = json_loads(uris, JSON_DECODE_ANY, NULL);
	const char *type = "unset";
	enum app_type_check rc = app_type_check(g, u, &type);
	json_decref(g);
	json_decref(u);
	if (rc == APP_TYPE_OK)
		return type;
	CHECK(type == NULL);
	return rc == APP_TYPE_BAD_VALUE ? "bad value" : "bad uri";
}

static void test_check(void)
{
	CHECK_STR(check(NULL, "[\"https://a.example.com/cb\"]"), "web");
	CHECK_STR(check("null", "[\"https://a.example.com/cb\"]"), "web");
	CHECK_STR(check(NULL, "[\"https://a.example.com/cb\", \"http://[::1]/cb\"]"), "native");
	CHECK_STR(check("\"web\"", "[\"https://a.example.com/cb\", \"http://[::1]/cb\"]"), "bad uri");
	CHECK_STR(check("\"web\"", "[\"cursor://cb\"]"), "bad uri");
	CHECK_STR(check("\"native\"", "[\"https://a.example.com/cb\", \"cursor://cb\"]"), "native");
	/* What /register refuses first is refused here too, whatever the type. */
	CHECK_STR(check("\"native\"", "[\"http://app.example.com/cb\"]"), "bad uri");
	CHECK_STR(check(NULL, "[\"http://app.example.com/cb\"]"), "bad uri");
	CHECK_STR(check("\"native\"", "[42]"), "bad uri");
	CHECK_STR(check("\"web\"", "[]"), "bad uri");
	CHECK_STR(check("\"web\"", "\"https://a.example.com/cb\""), "bad uri");
	CHECK_STR(check("\"web\"", "null"), "bad uri");
	/* The value is checked before the URIs. */
	CHECK_STR(check("\"Native\"", "[\"http://app.example.com/cb\"]"), "bad value");
	CHECK_STR(check("\"\"", "[\"https://a.example.com/cb\"]"), "bad value");
	CHECK_STR(check("1", "[\"https://a.example.com/cb\"]"), "bad value");
	CHECK_STR(check("false", "[\"https://a.example.com/cb\"]"), "bad value");
}

int main(void)
{
	test_uri_kind();
	test_check();
	TEST_DONE();
}
