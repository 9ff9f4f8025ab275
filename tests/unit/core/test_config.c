/* config.c: a valid minimal config and its defaults, then every class of
 * error, each reported with its JSON path; several errors in one call;
 * ${NAME} expansion; the resources/upstreams cross-checks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "crypto.h"
#include "lim.h"
#include "test.h"

#define KEY_A "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"" /* bytes 0..31 */
#define KEY_B "\"ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=\"" /* bytes 100..131 */
#define KEY_16 "\"AAECAwQFBgcICQoLDA0ODw==\""
#define OMIT "\x01" /* leave the key out */

#define UPSTREAM_GH "\"gh\":{\"preset\":\"github\",\"client_id\":\"cid\",\"client_secret\":\"csecret\"}"
#define RESOURCE_MCP                                                                           \
	"{\"path\":\"/mcp\",\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:9000/mcp\"," \
	"\"scopes\":{\"read\":[\"*\"],\"write\":[\"create_issue\"]},\"default_scopes\":[\"read\"]}"

/* Raw JSON fragments for the required keys (NULL: a valid default, OMIT:
 * absent) and extra text appended inside the top-level object. */
struct cfgt {
	const char *listen, *public_url, *database_url, *keys, *cookie, *extra;
};

static char text[16384];

static const char *build(struct cfgt t)
{
	struct {
		const char *name, *val, *def;
	} f[] = {
		{ "listen", t.listen, "\"127.0.0.1:8080\"" },
		{ "public_url", t.public_url, "\"https://broker.example.com\"" },
		{ "database_url", t.database_url, "\"postgres://mcpb@db/mcpb\"" },
		{ "encryption_keys", t.keys, "[{\"id\":\"k1\",\"key\":" KEY_A "}]" },
		{ "cookie_secret", t.cookie, KEY_B },
	};
	size_t o = 0;
	int first = 1;
	o += (size_t)snprintf(text + o, sizeof(text) - o, "{");
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		const char *v = f[i].val ? f[i].val : f[i].def;
		if (strcmp(v, OMIT) == 0)
			continue;
		o += (size_t)snprintf(text + o, sizeof(text) - o, "%s\"%s\":%s", first ? "" : ",", f[i].name, v);
		first = 0;
	}
	if (t.extra)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "%s%s", first ? "" : ",", t.extra);
	snprintf(text + o, sizeof(text) - o, "}");
	return text;
}

static struct config *parse(const char *s, struct cfg_errors *e)
{
	return config_parse(s, strlen(s), e);
}

static int has_err(const struct cfg_errors *e, const char *prefix)
{
	for (size_t i = 0; i < e->n; i++)
		if (strncmp(e->msg[i], prefix, strlen(prefix)) == 0)
			return 1;
	return 0;
}

static void dump_errs(const char *what, const struct cfg_errors *e)
{
	fprintf(stderr, "  for %s:\n", what);
	for (size_t i = 0; i < e->n; i++)
		fprintf(stderr, "    %s\n", e->msg[i]);
}

/* Parsing s must fail with an error starting with prefix. */
static void fails_at(int line, const char *s, const char *prefix)
{
	struct cfg_errors e;
	struct config *c = parse(s, &e);
	test_checks++;
	if (c || !has_err(&e, prefix)) {
		test_failures++;
		fprintf(stderr, "%s:%d: expected failure \"%s\"%s\n", __FILE__, line, prefix,
			c ? " but the config parsed" : "");
		dump_errs(s, &e);
	}
	config_free(&c);
	config_errors_free(&e);
}
#define FAILS(s, prefix) fails_at(__LINE__, (s), (prefix))

/* Parsing s must succeed; returns the config (caller frees). */
static struct config *passes_at(int line, const char *s)
{
	struct cfg_errors e;
	struct config *c = parse(s, &e);
	test_checks++;
	if (!c || e.n) {
		test_failures++;
		fprintf(stderr, "%s:%d: expected success\n", __FILE__, line);
		dump_errs(s, &e);
	}
	config_errors_free(&e);
	return c;
}
#define PASSES(s) passes_at(__LINE__, (s))

static void pass_and_free(int line, const char *s)
{
	struct config *c = passes_at(line, s);
	config_free(&c);
}
#define PASSES_FREE(s) pass_and_free(__LINE__, (s))

static void test_minimal_and_defaults(void)
{
	struct config *c = PASSES(build((struct cfgt){ 0 }));
	if (!c)
		return;
	CHECK_STR(c->listen, "127.0.0.1:8080");
	CHECK_STR(c->listen_host, "127.0.0.1");
	CHECK(c->listen_port == 8080);
	CHECK_STR(c->public_url, "https://broker.example.com");
	CHECK_STR(c->database_url, "postgres://mcpb@db/mcpb");
	CHECK(c->n_encryption_keys == 1);
	CHECK_STR(c->encryption_keys[0].id, "k1");
	int ok = 1;
	for (int i = 0; i < 32; i++)
		ok &= c->encryption_keys[0].key[i] == i && c->cookie_secret[i] == 100 + i;
	CHECK(ok);
	CHECK(c->tokens.access_ttl == 300);
	CHECK(c->tokens.code_ttl == 60);
	CHECK(c->tokens.refresh_ttl == 2592000);
	CHECK(c->tokens.refresh_grace == 10);
	CHECK(c->database.pool_size == 8);
	CHECK(c->database.statement_timeout_ms == 5000);
	CHECK(c->registration.dynamic == 1);
	CHECK(c->registration.client_id_metadata_documents == 0);
	CHECK(c->registration.has_initial_access_token == 0);
	CHECK(c->http.threads == 8 && c->http.max_connections >= 64 && c->http.max_connections <= 32768);
	CHECK(c->http.drain_timeout_s == 25 && c->http.connection_timeout_s == 60);
	CHECK(c->limits.register_per_ip_per_hour == 20);
	CHECK_STR(c->log.level, "info");
	CHECK(c->n_clients == 0 && c->n_upstreams == 0 && c->n_resources == 0);
	CHECK(c->n_admin_tokens == 0);
	CHECK(config_upstream(c, "gh") == NULL);
	CHECK(config_client(c, "x") == NULL);
	config_free(&c);
	CHECK(c == NULL);
	config_free(&c); /* NULL is fine */
	config_free(NULL);

	/* Overriding one value in a block keeps the other defaults. */
	c = PASSES(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":600},"
						 "\"database\":{\"pool_size\":2},"
						 "\"registration\":{\"dynamic\":false},"
						 "\"log\":{\"level\":\"debug\"}" }));
	if (c) {
		CHECK(c->tokens.access_ttl == 600 && c->tokens.code_ttl == 60);
		CHECK(c->database.pool_size == 2 && c->database.connect_timeout_s == 3);
		CHECK(c->registration.dynamic == 0);
		CHECK_STR(c->log.level, "debug");
	}
	config_free(&c);

	/* public_url loses its trailing slashes. */
	c = PASSES(build((struct cfgt){ .public_url = "\"https://broker.example.com/\"" }));
	if (c)
		CHECK_STR(c->public_url, "https://broker.example.com");
	config_free(&c);
	c = PASSES(build((struct cfgt){ .public_url = "\"https://broker.example.com:8443//\"" }));
	if (c)
		CHECK_STR(c->public_url, "https://broker.example.com:8443");
	config_free(&c);
}

static void test_unknown_keys(void)
{
	FAILS(build((struct cfgt){ .extra = "\"bogus\":1" }), "$.bogus: unknown key");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"bogus\":1}" }), "$.tokens.bogus: unknown key");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\",\"key\":" KEY_A ",\"bogus\":true}]" }),
	      "$.encryption_keys[0].bogus: unknown key");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"github\",\"client_id\":\"c\","
					    "\"client_secret\":\"s\",\"bogus\":1}}" }),
	      "$.upstreams.gh.bogus: unknown key");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{" UPSTREAM_GH "},"
					    "\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\","
					    "\"downstream\":\"http://127.0.0.1:1/\",\"bogus\":1}]" }),
	      "$.resources[0].bogus: unknown key");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{" UPSTREAM_GH "},"
					    "\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\","
					    "\"downstream\":\"http://127.0.0.1:1/\",\"inject\":{\"x\":1}}]" }),
	      "$.resources[0].inject.x: unknown key");
	/* Key names are case-sensitive. */
	FAILS(build((struct cfgt){ .extra = "\"Tokens\":{}" }), "$.Tokens: unknown key");
}

static void test_wrong_types(void)
{
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":\"300\"}" }),
	      "$.tokens.access_ttl: expected an integer");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":300.0}" }),
	      "$.tokens.access_ttl: expected an integer");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":true}" }),
	      "$.tokens.access_ttl: expected an integer");
	FAILS(build((struct cfgt){ .database_url = "5" }), "$.database_url: expected a string");
	FAILS(build((struct cfgt){ .listen = "[\"127.0.0.1:1\"]" }), "$.listen: expected a string");
	FAILS(build((struct cfgt){ .keys = "{\"id\":\"k1\",\"key\":" KEY_A "}" }),
	      "$.encryption_keys: expected an array");
	FAILS(build((struct cfgt){ .keys = "[\"k1\"]" }), "$.encryption_keys[0]: expected an object");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":[]" }), "$.tokens: expected an object");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":[]" }), "$.upstreams: expected an object");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":1}" }), "$.upstreams.gh: expected an object");
	FAILS(build((struct cfgt){ .extra = "\"registration\":{\"dynamic\":1}" }),
	      "$.registration.dynamic: expected true or false");
	FAILS(build((struct cfgt){ .extra = "\"admin_tokens\":\"0123456789abcdef\"" }),
	      "$.admin_tokens: expected an array of strings");
	FAILS(build((struct cfgt){ .extra = "\"admin_tokens\":[7]" }), "$.admin_tokens[0]: expected a string");
	FAILS(build((struct cfgt){ .extra = "\"log\":null" }), "$.log: expected an object, got null");
	FAILS(build((struct cfgt){ .listen = "null" }), "$.listen: expected a string, got null");
	FAILS("[]", "$: expected an object");
	FAILS("\"config\"", "line 1 column"); /* jansson wants an object or array on top */
}

static void test_missing_required(void)
{
	FAILS(build((struct cfgt){ .listen = OMIT }), "$.listen: missing required key");
	FAILS(build((struct cfgt){ .public_url = OMIT }), "$.public_url: missing required key");
	FAILS(build((struct cfgt){ .database_url = OMIT }), "$.database_url: missing required key");
	FAILS(build((struct cfgt){ .cookie = OMIT }), "$.cookie_secret: missing required key");
	FAILS(build((struct cfgt){ .keys = OMIT }), "$.encryption_keys: missing required key");
	FAILS(build((struct cfgt){ .keys = "[{\"key\":" KEY_A "}]" }), "$.encryption_keys[0].id: missing required key");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\"}]" }), "$.encryption_keys[0].key: missing required key");
	FAILS(build((struct cfgt){ .keys = "[]" }), "$.encryption_keys: expected between 1 and 16 entries");
	FAILS(build((struct cfgt){ .database_url = "\"\"" }), "$.database_url: expected a non-empty string");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"github\"}}" }),
	      "$.upstreams.gh.client_id: missing required key");
	FAILS(build((struct cfgt){ .extra = "\"clients\":[{\"client_id\":\"c\"}]" }),
	      "$.clients[0].redirect_uris: missing required key");
	/* Everything missing: each required key is named. */
	struct cfg_errors e;
	struct config *c = parse("{}", &e);
	CHECK(c == NULL);
	CHECK(e.n == 5);
	CHECK(has_err(&e, "$.listen:") && has_err(&e, "$.public_url:") && has_err(&e, "$.database_url:") &&
	      has_err(&e, "$.encryption_keys:") && has_err(&e, "$.cookie_secret:"));
	config_errors_free(&e);
	CHECK(e.n == 0 && e.msg == NULL);
}

static void test_urls(void)
{
	FAILS(build((struct cfgt){ .public_url = "\"not a url\"" }), "$.public_url: expected an absolute");
	FAILS(build((struct cfgt){ .public_url = "\"broker.example.com\"" }), "$.public_url: ");
	FAILS(build((struct cfgt){ .public_url = "\"ftp://x\"" }), "$.public_url: ");
	FAILS(build((struct cfgt){ .public_url = "\"https://broker.example.com/#frag\"" }),
	      "$.public_url: URL must not have a fragment");
	FAILS(build((struct cfgt){ .public_url = "\"https://broker.example.com/?a=b\"" }),
	      "$.public_url: must not have a query");
	FAILS(build((struct cfgt){ .public_url = "\"https://broker.example.com/auth\"" }),
	      "$.public_url: must be an origin without a path");
	FAILS(build((struct cfgt){ .public_url = "\"http://127.0.0.1:8080/x/\"" }),
	      "$.public_url: must be an origin without a path");
	FAILS(build((struct cfgt){ .public_url = "\"http://127.0.0.1.nip.io\"" }),
	      "$.public_url: expected an https URL");
	FAILS(build((struct cfgt){ .public_url = "\"http://broker.example.com\"" }),
	      "$.public_url: expected an https URL");
	FAILS(build((struct cfgt){ .public_url = "\"http://10.0.0.1:8080\"" }), "$.public_url: expected an https URL");
	FAILS(build((struct cfgt){ .public_url = "\"http://localhost.example.com\"" }),
	      "$.public_url: expected an https URL");
	/* http is fine on loopback. */
	PASSES_FREE(build((struct cfgt){ .public_url = "\"http://127.0.0.1\"" }));
	PASSES_FREE(build((struct cfgt){ .public_url = "\"http://localhost:8080\"" }));
	PASSES_FREE(build((struct cfgt){ .public_url = "\"http://[::1]:8080\"" }));
	PASSES_FREE(build((struct cfgt){ .public_url = "\"HTTPS://Broker.Example.com\"" }));
	/* The same URL validator guards the other URL fields. */
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"github\",\"client_id\":\"c\","
					    "\"client_secret\":\"s\",\"token_url\":\"file:///etc/passwd\"}}" }),
	      "$.upstreams.gh.token_url: ");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{" UPSTREAM_GH "},"
					    "\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\","
					    "\"downstream\":\"mcp-server:9000\"}]" }),
	      "$.resources[0].downstream: ");
}

static void test_keys(void)
{
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\",\"key\":" KEY_16 "}]" }),
	      "$.encryption_keys[0].key: expected base64 of exactly 32 bytes");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\",\"key\":\"not base64 at all!\"}]" }),
	      "$.encryption_keys[0].key: expected base64 of exactly 32 bytes");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\",\"key\":" KEY_A "},{\"id\":\"k2\",\"key\":"
					   "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}]" }),
	      "$.encryption_keys[1].key: expected base64 of exactly 32 bytes"); /* unpadded */
	FAILS(build((struct cfgt){ .cookie = KEY_16 }), "$.cookie_secret: expected base64 of exactly 32 bytes");
	FAILS(build((struct cfgt){ .cookie = "\"\"" }), "$.cookie_secret: ");
	/* 48 bytes: too long. */
	FAILS(build((struct cfgt){ .cookie = "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\"" }),
	      "$.cookie_secret: expected base64 of exactly 32 bytes");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"k1\",\"key\":" KEY_A "},{\"id\":\"k1\",\"key\":" KEY_B "}]" }),
	      "$.encryption_keys[1].id: duplicate key id");
	/* Two keys: both kept in order. */
	struct config *c = PASSES(build(
		(struct cfgt){ .keys = "[{\"id\":\"new\",\"key\":" KEY_B "},{\"id\":\"old\",\"key\":" KEY_A "}]" }));
	if (c) {
		CHECK(c->n_encryption_keys == 2);
		CHECK_STR(c->encryption_keys[0].id, "new");
		CHECK_STR(c->encryption_keys[1].id, "old");
		CHECK(c->encryption_keys[0].key[0] == 100 && c->encryption_keys[1].key[31] == 31);
	}
	config_free(&c);
}

static void test_listen(void)
{
	static const char *const bad[] = { "\"nohost\"",         "\"1.2.3.4:99999\"",  "\"[::1]8080\"",
					   "\"example.com:80\"", "\"1.2.3.4:\"",       "\":80\"",
					   "\"1.2.3.4:8o\"",     "\"1.2.3.4:-1\"",     "\"[::1\"",
					   "\"[nothex]:80\"",    "\"1.2.3.4:123456\"", "\"::1:80\"",
					   "\"256.1.1.1:80\"",   "\"1.2.3.4: 80\"" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		FAILS(build((struct cfgt){ .listen = bad[i] }), "$.listen: expected");

	struct {
		const char *json, *host;
		int port;
	} good[] = {
		{ "\"127.0.0.1:0\"", "127.0.0.1", 0 },   { "\"[::1]:8080\"", "::1", 8080 },
		{ "\"localhost:80\"", "127.0.0.1", 80 }, { "\"0.0.0.0:65535\"", "0.0.0.0", 65535 },
		{ "\"[::]:443\"", "::", 443 },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct config *c = PASSES(build((struct cfgt){ .listen = good[i].json }));
		if (!c)
			continue;
		CHECK_STR(c->listen_host, good[i].host);
		CHECK(c->listen_port == good[i].port);
		config_free(&c);
	}
}

static void test_env(void)
{
	setenv("MCPB_TEST_DB", "postgres://from-env/db", 1);
	setenv("MCPB_TEST_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 1);
	setenv("MCPB_TEST_PORT", "9090", 1);
	unsetenv("MCPB_TEST_UNSET_VAR");

	struct config *c = PASSES(build((struct cfgt){ .listen = "\"127.0.0.1:${MCPB_TEST_PORT}\"",
						       .database_url = "\"${MCPB_TEST_DB}\"",
						       .cookie = "\"${MCPB_TEST_KEY}\"" }));
	if (c) {
		CHECK_STR(c->database_url, "postgres://from-env/db");
		CHECK(c->listen_port == 9090);
		CHECK(c->cookie_secret[0] == 0 && c->cookie_secret[31] == 31);
	}
	config_free(&c);

	/* A missing variable names itself and the path. */
	struct cfg_errors e;
	c = parse(build((struct cfgt){ .database_url = "\"postgres://${MCPB_TEST_UNSET_VAR}/x\"" }), &e);
	CHECK(c == NULL);
	CHECK(e.n == 1);
	CHECK(e.n >= 1 && strncmp(e.msg[0], "$.database_url: ", 16) == 0 &&
	      strstr(e.msg[0], "MCPB_TEST_UNSET_VAR") != NULL);
	if (e.n)
		CHECK_STR(e.msg[0], "$.database_url: environment variable MCPB_TEST_UNSET_VAR is not set");
	config_errors_free(&e);

	FAILS(build((struct cfgt){ .database_url = "\"postgres://${MCPB_TEST_DB\"" }),
	      "$.database_url: unterminated ${");
	FAILS(build((struct cfgt){ .database_url = "\"${1X}\"" }), "$.database_url: bad environment variable name");
	FAILS(build((struct cfgt){ .database_url = "\"${}\"" }), "$.database_url: bad environment variable name");
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"${MCPB_TEST_UNSET_VAR}\",\"key\":" KEY_A "}]" }),
	      "$.encryption_keys[0].id: environment variable MCPB_TEST_UNSET_VAR is not set");
	/* A variable expanding to nothing trips the length check. */
	setenv("MCPB_TEST_EMPTY", "", 1);
	FAILS(build((struct cfgt){ .database_url = "\"${MCPB_TEST_EMPTY}\"" }),
	      "$.database_url: expected a non-empty string");
	unsetenv("MCPB_TEST_EMPTY");
}

/* config_expand_env through its contract: 0 with a string, or -1 with none
 * and an explanation in why (which is "" before every call). */
static char why[CONFIG_WHY_LEN];

static char *expand(const char *in)
{
	char *out = (char *)1;
	why[0] = '\0';
	int rc = config_expand_env(in, &out, why, sizeof(why));
	CHECK((rc == 0) == (out != NULL));
	CHECK(rc == 0 ? why[0] == '\0' : why[0] != '\0');
	return out;
}

static void test_expand_env_direct(void)
{
	char *s;
	setenv("MCPB_X", "1", 1);
	setenv("MCPB_Y", "two", 1);
	setenv("MCPB_NESTED", "${MCPB_X}", 1);
	unsetenv("MCPB_NOPE");

	struct {
		const char *in, *out;
	} ok[] = {
		{ "", "" },
		{ "plain", "plain" },
		{ "a${MCPB_X}b", "a1b" },
		{ "${MCPB_X}${MCPB_Y}", "1two" },
		{ "${MCPB_Y}", "two" },
		{ "$MCPB_X", "$MCPB_X" },
		{ "cost: $5 {x}", "cost: $5 {x}" },
		{ "trailing $", "trailing $" },
		{ "${MCPB_NESTED}", "${MCPB_X}" }, /* values are not expanded again */
		{ "${_u9}", NULL },
	};
	setenv("_u9", "underscore", 1);
	ok[sizeof(ok) / sizeof(ok[0]) - 1].out = "underscore";
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		s = expand(ok[i].in);
		CHECK_STR(s, ok[i].out);
		free(s);
	}

	struct {
		const char *in, *why;
	} bad[] = {
		{ "${", "unterminated" },
		{ "abc ${MCPB_X", "unterminated" },
		{ "${}", "bad environment variable name" },
		{ "${1X}", "bad environment variable name" },
		{ "${A-B}", "bad environment variable name" },
		{ "${A B}", "bad environment variable name" },
		{ "${MCPB_X}${", "unterminated" },
		{ "${MCPB_NOPE}", "environment variable MCPB_NOPE is not set" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = expand(bad[i].in);
		CHECK(s == NULL);
		CHECK(strstr(why, bad[i].why) != NULL);
		if (!strstr(why, bad[i].why))
			fprintf(stderr, "  for \"%s\": %s\n", bad[i].in, why);
		free(s);
	}

	/* Names: at most LIM_ENV_NAME characters. */
	char name[200], in[220];
	memset(name, 'A', 129);
	name[129] = '\0';
	snprintf(in, sizeof(in), "${%s}", name);
	CHECK(expand(in) == NULL && strstr(why, "bad environment variable name"));
	/* Exactly LIM_ENV_NAME: a name (unset here). */
	name[128] = '\0';
	snprintf(in, sizeof(in), "${%s}", name);
	CHECK(expand(in) == NULL && strstr(why, "is not set"));
	/* The explanation is cut to the caller's buffer, never overrun. */
	char small[12];
	char *out = NULL;
	memset(small, 'x', sizeof(small));
	CHECK(config_expand_env("${MCPB_NOPE}", &out, small, 8) < 0 && out == NULL);
	CHECK(strlen(small) == 7 && small[8] == 'x');

	/* Results: at most LIM_CONFIG_STRING bytes. */
	static char big[6000];
	memset(big, 'v', 5999);
	big[5999] = '\0';
	setenv("MCPB_BIG", big, 1);
	s = expand("${MCPB_BIG}");
	CHECK(s != NULL && strlen(s) == 5999);
	free(s);
	s = expand("${MCPB_BIG}${MCPB_BIG}");
	CHECK_STR(why, "string too long (at most 8192 bytes, after ${...} expansion)");
	CHECK(s == NULL);
	free(s);
	unsetenv("MCPB_BIG");
}

static void test_invalid_json(void)
{
	struct cfg_errors e;
	struct config *c = parse("{", &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "invalid JSON") != NULL);
	CHECK(e.n == 1 && strncmp(e.msg[0], "line ", 5) == 0);
	config_errors_free(&e);

	c = config_parse("", 0, &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "invalid JSON") != NULL);
	config_errors_free(&e);

	c = parse("{\"listen\":\"127.0.0.1:1\",}", &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "invalid JSON") != NULL);
	config_errors_free(&e);

	/* Duplicate keys, at the top and nested. */
	c = parse("{\"listen\":\"127.0.0.1:1\",\"listen\":\"127.0.0.1:2\"}", &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "duplicate") != NULL);
	config_errors_free(&e);
	c = parse(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":60,\"access_ttl\":61}" }), &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "duplicate") != NULL);
	config_errors_free(&e);

	/* An integer jansson cannot hold. */
	c = parse(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":99999999999999999999999}" }), &e);
	CHECK(c == NULL && e.n >= 1);
	config_errors_free(&e);

	/* A length shorter than the text: only that much is parsed. */
	const char *t = build((struct cfgt){ 0 });
	c = config_parse(t, strlen(t) - 1, &e);
	CHECK(c == NULL && e.n == 1 && strstr(e.msg[0], "invalid JSON") != NULL);
	config_errors_free(&e);

	/* \u0000 inside a string is refused. */
	FAILS(build((struct cfgt){ .database_url = "\"a\\u0000b\"" }), "");
}

/* Outside JSON is refused by jparse (core/jparse.h) with a reason: a raw
 * NUL byte, nesting past LIM_JSON_DEPTH; jansson's own refusals keep their
 * line and column. */
static void test_jparse_refusals(void)
{
	struct cfg_errors e;
	char deep[256];
	size_t o = 0;
	o += (size_t)snprintf(deep, sizeof(deep), "{\"x\":");
	for (int i = 0; i < 16; i++)
		deep[o++] = '[';
	for (int i = 0; i < 16; i++)
		deep[o++] = ']';
	deep[o++] = '}';
	deep[o] = '\0';
	/* 17 levels: refused before jansson builds it. */
	struct config *c = parse(deep, &e);
	CHECK(c == NULL && e.n == 1);
	if (e.n)
		CHECK_STR(e.msg[0], "$: invalid JSON: nested deeper than 16 levels");
	config_errors_free(&e);
	/* 16 levels parse: the error is the schema's. */
	memmove(deep + 5, deep + 6, o - 5);
	memmove(deep + 5 + 15, deep + 5 + 16, o - 5 - 16);
	c = parse(deep, &e);
	CHECK(c == NULL && e.n >= 1 && has_err(&e, "$.x: unknown key in config"));
	config_errors_free(&e);

	/* A raw NUL after a literal, which jansson alone would skip. */
	static const char nul[] = "{\"listen\":true\0}";
	c = config_parse(nul, sizeof(nul) - 1, &e);
	CHECK(c == NULL && e.n == 1);
	if (e.n)
		CHECK_STR(e.msg[0], "$: invalid JSON: contains a NUL byte");
	config_errors_free(&e);
	/* Where jansson refuses itself, its message stays. */
	static const char tail[] = "{\"listen\":1}\0";
	c = config_parse(tail, sizeof(tail) - 1, &e);
	CHECK(c == NULL && e.n == 1);
	if (e.n)
		CHECK_STR(e.msg[0], "line 1 column 13: invalid JSON: end of file expected near end of file");
	config_errors_free(&e);
}

/* Parsing s must fail with exactly the message msg among its errors. */
static void fails_exactly_at(int line, const char *s, const char *msg)
{
	struct cfg_errors e;
	struct config *c = parse(s, &e);
	int found = 0;
	for (size_t i = 0; i < e.n; i++)
		found |= strcmp(e.msg[i], msg) == 0;
	test_checks++;
	if (c || !found) {
		test_failures++;
		fprintf(stderr, "%s:%d: expected the error \"%s\"\n", __FILE__, line, msg);
		dump_errs(s, &e);
	}
	config_free(&c);
	config_errors_free(&e);
}
#define FAILS_EXACTLY(s, msg) fails_exactly_at(__LINE__, (s), (msg))

/* The full text of messages check-config prints, one per handler and rule
 * (the tests above match most by prefix). */
static void test_exact_messages(void)
{
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"tokens\":{\"bogus\":1}" }),
		      "$.tokens.bogus: unknown key in tokens");
	FAILS_EXACTLY(build((struct cfgt){ .listen = OMIT }), "$.listen: missing required key (a string)");
	FAILS_EXACTLY(build((struct cfgt){ .keys = OMIT }),
		      "$.encryption_keys: missing required key (an array of objects)");
	FAILS_EXACTLY(build((struct cfgt){ .keys = "{}" }), "$.encryption_keys: expected an array of objects");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"admin_tokens\":null" }),
		      "$.admin_tokens: expected an array of strings, got null");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"upstreams\":null" }),
		      "$.upstreams: expected an object, got null");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"registration\":{\"dynamic\":null}" }),
		      "$.registration.dynamic: expected true or false, got null");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"housekeeping_interval_s\":null" }),
		      "$.housekeeping_interval_s: expected an integer, got null");
	/* \u0000 never reaches a field: jansson refuses it (no JSON_ALLOW_NUL). */
	FAILS_EXACTLY(build((struct cfgt){ .database_url = "\"a\\u0000b\"" }),
		      "line 1 column 94: invalid JSON: \\u0000 is not allowed without JSON_ALLOW_NUL "
		      "near '\"a\\u0000b\"'");
	FAILS_EXACTLY(build((struct cfgt){ .database_url = "\"${MCPB_TEST_DB\"" }),
		      "$.database_url: unterminated ${ in string");
	FAILS_EXACTLY(build((struct cfgt){ .database_url = "\"${1X}\"" }),
		      "$.database_url: bad environment variable name in ${...}");
	FAILS_EXACTLY(build((struct cfgt){ .cookie = "true" }), "$.cookie_secret: expected a string");
	FAILS_EXACTLY(build((struct cfgt){ .cookie = KEY_16 }),
		      "$.cookie_secret: expected base64 of exactly 32 bytes (mcp-broker keygen)");
	FAILS_EXACTLY(build((struct cfgt){ .listen = "\"nohost\"" }), "$.listen: expected host:port");
	FAILS_EXACTLY(build((struct cfgt){ .listen = "\"1.2.3.4:-0\"" }), "$.listen: expected a port number 0-65535");
	FAILS_EXACTLY(build((struct cfgt){ .public_url = "\"ftp://x\"" }),
		      "$.public_url: expected an http or https URL");
	FAILS_EXACTLY(build((struct cfgt){ .public_url = "\"http://broker.example.com\"" }),
		      "$.public_url: expected an https URL (http only for a loopback host)");
	FAILS_EXACTLY(build((struct cfgt){ .public_url = "\"https://b.example.com/x\"" }),
		      "$.public_url: must be an origin without a path (https://host[:port])");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"log\":{\"level\":\"loud\"}" }),
		      "$.log.level: expected one of debug, info, warn, error");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"http\":{\"trusted_proxies\":[\"10.0.0.0/8\",\"bad/cidr\"]}" }),
		      "$.http.trusted_proxies: expected CIDRs like 10.0.0.0/8 or fd00::/8");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"registration\":{\"cimd_allow_private_cidrs\":[\"x\"]}" }),
		      "$.registration.cimd_allow_private_cidrs: expected CIDRs like 127.0.0.1/32");
	FAILS_EXACTLY(build((struct cfgt){
			      .extra = "\"upstreams\":{\"gh\":{\"client_id\":\"c\",\"client_secret\":\"s\"}}" }),
		      "$.upstreams.gh: without a preset or issuer, authorize_url and token_url are required");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"x\",\"client_id\":\"c\","
						    "\"client_secret\":\"s\",\"timeout_ms\":99}}" }),
		      "$.upstreams.gh.timeout_ms: expected an integer between 100 and 120000");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"x\",\"client_id\":\"c\","
						    "\"client_secret\":\"s\"}}" }),
		      "$.upstreams.gh: preset: expected one of github, sentry, google, oidc");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"clients\":[{\"client_id\":\"a\",\"redirect_uris\":[\"\"]}]" }),
		      "$.clients[0].redirect_uris[0]: expected a non-empty string");
#define RES(more)                                                                                \
	"\"upstreams\":{" UPSTREAM_GH "},\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\"," \
	"\"downstream\":\"http://127.0.0.1:1/\"" more "}]"
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"scopes\":[\"read\"]") }),
		      "$.resources[0].scopes: expected an object of scope -> [tools]");
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"scopes\":{\"read\":[1]}") }),
		      "$.resources[0].scopes.read[0]: expected a string");
	char many[2048], ex[4096];
	size_t o = (size_t)snprintf(many, sizeof(many), ",\"scopes\":{");
	for (int i = 0; i < 33; i++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "%s\"s%d\":[\"*\"]", i ? "," : "", i);
	snprintf(many + o, sizeof(many) - o, "}");
	snprintf(ex, sizeof(ex), RES("%s"), many);
	FAILS_EXACTLY(build((struct cfgt){ .extra = ex }), "$.resources[0].scopes: expected at most 32 scopes");
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"response_headers\":[\"X-Ok\",\"Set-Cookie\"]") }),
		      "$.resources[0]: response_headers: \"Set-Cookie\" is not a header name that may pass "
		      "(never Set-Cookie or hop-by-hop)");
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"response_headers\":[\"Keep-Alive\"]") }),
		      "$.resources[0]: response_headers: \"Keep-Alive\" is not a header name that may pass "
		      "(never Set-Cookie or hop-by-hop)");
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"scopes\":{\"a b\":[\"*\"]}") }),
		      "$.resources[0]: scopes: \"a b\" is not a valid scope name here");
	FAILS_EXACTLY(build((struct cfgt){ .extra = RES(",\"inject\":{\"header\":\"\"}") }),
		      "$.resources[0].inject.header: expected a non-empty string");
#undef RES
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[{\"path\":\"/\","
						    "\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:1/\"}]" }),
		      "$.resources[0]: path: must not be / or under /.well-known");
	FAILS_EXACTLY(build((struct cfgt){ .extra = "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[{\"path\":\"/a/\","
						    "\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:1/\"}]" }),
		      "$.resources[0]: path: expected /segment[/segment...] without a trailing slash, query or %");
	/* Every tools list is freed whatever else failed (run under ASan/valgrind). */
	FAILS_EXACTLY(build((struct cfgt){ .listen = OMIT,
					   .extra = "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[" RESOURCE_MCP
						    "]" }),
		      "$.listen: missing required key (a string)");
}

/* Each resource keeps its URL in canonical form (what resources_find
 * compares with): the public URL's host lower-cased, its default port gone. */
static void test_resource_canonical(void)
{
	struct config *c = PASSES(
		build((struct cfgt){ .public_url = "\"HTTPS://Broker.Example.com:443/\"",
				     .extra = "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[" RESOURCE_MCP "]" }));
	if (!c)
		return;
	CHECK(c->n_resources == 1 && c->resources[0].canonical);
	CHECK_STR(c->resources[0].canonical, "https://broker.example.com/mcp");
	config_free(&c);
}

static void test_int_ranges(void)
{
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"code_ttl\":61}" }),
	      "$.tokens.code_ttl: expected an integer between 5 and 60");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"code_ttl\":4}" }),
	      "$.tokens.code_ttl: expected an integer between 5 and 60");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"access_ttl\":29}" }),
	      "$.tokens.access_ttl: expected an integer between 30 and 86400");
	FAILS(build((struct cfgt){ .extra = "\"tokens\":{\"refresh_grace\":-1}" }),
	      "$.tokens.refresh_grace: expected an integer between 0 and 300");
	FAILS(build((struct cfgt){ .extra = "\"database\":{\"pool_size\":0}" }),
	      "$.database.pool_size: expected an integer between 1 and 256");
	FAILS(build((struct cfgt){ .extra = "\"http\":{\"threads\":9223372036854775807}" }),
	      "$.http.threads: expected an integer between 1 and 256");
	FAILS(build((struct cfgt){ .extra = "\"http\":{\"threads\":-9223372036854775807}" }),
	      "$.http.threads: expected an integer between 1 and 256");
	/* Bounds are inclusive. */
	struct config *c = PASSES(build(
		(struct cfgt){ .extra = "\"tokens\":{\"code_ttl\":5,\"access_ttl\":86400,\"refresh_grace\":0}" }));
	if (c)
		CHECK(c->tokens.code_ttl == 5 && c->tokens.access_ttl == 86400 && c->tokens.refresh_grace == 0);
	config_free(&c);
	/* String lengths and list sizes. */
	FAILS(build((struct cfgt){ .keys = "[{\"id\":\"01234567890123456789012345678901234567890123456789"
					   "0123456789abcdef\",\"key\":" KEY_A "}]" }),
	      "$.encryption_keys[0].id: expected at most 64 characters");
	FAILS(build((struct cfgt){ .extra = "\"admin_tokens\":[\"short\"]" }),
	      "$.admin_tokens[0]: expected at least 16 characters");
	FAILS(build((struct cfgt){ .extra = "\"log\":{\"level\":\"verbose\"}" }), "$.log.level: expected one of");
}

static void test_multiple_errors(void)
{
	struct cfg_errors e;
	struct config *c = parse(build((struct cfgt){ .listen = "\"nohost\"",
						      .cookie = OMIT,
						      .keys = "[{\"id\":\"k1\",\"key\":" KEY_16 "}]",
						      .extra = "\"bogus\":1,\"tokens\":{\"code_ttl\":600,\"other\":1},"
							       "\"database\":{\"pool_size\":\"8\"}" }),
				 &e);
	CHECK(c == NULL);
	CHECK(e.n >= 7);
	CHECK(has_err(&e, "$.listen: "));
	CHECK(has_err(&e, "$.cookie_secret: missing required key"));
	CHECK(has_err(&e, "$.encryption_keys[0].key: expected base64 of exactly 32 bytes"));
	CHECK(has_err(&e, "$.bogus: unknown key"));
	CHECK(has_err(&e, "$.tokens.code_ttl: expected an integer between"));
	CHECK(has_err(&e, "$.tokens.other: unknown key"));
	CHECK(has_err(&e, "$.database.pool_size: expected an integer"));
	if (e.n < 7)
		dump_errs("multiple", &e);
	config_free(&c);
	config_errors_free(&e);

	/* Cross-checks also report every problem. */
	c = parse(
		build((struct cfgt){
			.extra =
				"\"upstreams\":{\"gh\":{\"preset\":\"bogus\",\"client_id\":\"c\",\"client_secret\":\"s\"}},"
				"\"resources\":[{\"path\":\"mcp\",\"upstream\":\"nope\",\"downstream\":\"http://127.0.0.1:1/\"}]" }),
		&e);
	CHECK(c == NULL);
	CHECK(e.n >= 3);
	CHECK(has_err(&e, "$.upstreams.gh: preset"));
	CHECK(has_err(&e, "$.resources[0]: path"));
	CHECK(has_err(&e, "$.resources[0]: upstream"));
	config_free(&c);
	config_errors_free(&e);
}

static void test_resources_upstreams(void)
{
	char extra[4096];
	/* A complete config with an upstream, a resource and a client. */
	snprintf(extra, sizeof(extra),
		 "\"upstreams\":{" UPSTREAM_GH ",\"corp\":{\"preset\":\"oidc\",\"issuer\":\"https://id.example.com\","
		 "\"client_id\":\"c2\",\"client_secret\":\"s2\",\"pkce\":true,\"scopes\":[\"openid\",\"email\"]}},"
		 "\"resources\":[" RESOURCE_MCP "],"
		 "\"clients\":[{\"client_id\":\"cli\",\"client_secret\":\"0123456789abcdef-secret\","
		 "\"redirect_uris\":[\"http://127.0.0.1/cb\"]}],"
		 "\"admin_tokens\":[\"admin-token-0123456789\"],"
		 "\"registration\":{\"initial_access_token\":\"initial-access-0123456789\"}");
	struct config *c = PASSES(build((struct cfgt){ .extra = extra }));
	if (c) {
		CHECK(c->n_upstreams == 2);
		const struct cfg_upstream *gh = config_upstream(c, "gh");
		const struct cfg_upstream *corp = config_upstream(c, "corp");
		CHECK(gh && corp && config_upstream(c, "nope") == NULL);
		if (gh && corp) {
			CHECK_STR(gh->name, "gh");
			CHECK_STR(gh->preset, "github");
			CHECK_STR(gh->client_secret, "csecret");
			CHECK(gh->pkce == -1 && gh->timeout_ms == 10000);
			CHECK(corp->pkce == 1 && corp->n_scopes == 2);
			CHECK_STR(corp->issuer, "https://id.example.com");
		}
		CHECK(c->n_resources == 1);
		const struct cfg_resource *r = &c->resources[0];
		CHECK_STR(r->path, "/mcp");
		CHECK_STR(r->upstream, "gh");
		CHECK_STR(r->inject->header, "Authorization");
		CHECK_STR(r->inject->value, "Bearer {upstream_token}");
		CHECK(r->n_scopes == 2 && r->n_default_scopes == 1);
		CHECK(r->connect_timeout_ms == 5000 && r->idle_timeout_ms == 300000);
		const struct cfg_client *cl = config_client(c, "cli");
		CHECK(cl != NULL && config_client(c, "other") == NULL);
		if (cl) {
			uint8_t h[CRYPTO_SHA256_LEN];
			crypto_sha256("0123456789abcdef-secret", 23, h);
			CHECK(cl->has_secret == 1 && memcmp(cl->secret_hash, h, sizeof(h)) == 0);
			CHECK(cl->n_redirect_uris == 1);
		}
		uint8_t h[CRYPTO_SHA256_LEN];
		crypto_sha256("admin-token-0123456789", 22, h);
		CHECK(c->n_admin_tokens == 1 && memcmp(c->admin_token_hashes[0], h, sizeof(h)) == 0);
		CHECK(c->registration.has_initial_access_token == 1);
	}
	config_free(&c);

#define WITH_GH(res) "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[" res "]"
	FAILS(build((struct cfgt){ .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gitlab\","
						    "\"downstream\":\"http://127.0.0.1:1/\"}") }),
	      "$.resources[0]: upstream: no upstream named \"gitlab\"");
	FAILS(build((struct cfgt){ .extra = "\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\","
					    "\"downstream\":\"http://127.0.0.1:1/\"}]" }),
	      "$.resources[0]: upstream: no upstreams are configured");
	FAILS(build((struct cfgt){ .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gh\","
						    "\"downstream\":\"http://127.0.0.1:1/\","
						    "\"scopes\":{\"read\":[\"*\"]},\"default_scopes\":[\"admin\"]}") }),
	      "$.resources[0]: default_scopes: \"admin\"");
	FAILS(build((struct cfgt){
		      .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gh\","
				       "\"downstream\":\"http://127.0.0.1:1/\",\"default_scopes\":[\"read\"]}") }),
	      "$.resources[0]: default_scopes: ");
	FAILS(build((struct cfgt){ .extra = WITH_GH(RESOURCE_MCP "," RESOURCE_MCP) }),
	      "$.resources[1]: path: duplicate resource path");
	static const char *const bad_paths[] = {
		"mcp", "/mcp/", "/mcp?x", "/mcp#x", "/m%63p", "/", "/.well-known/oauth"
	};
	for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
		char res[512], ex[1024];
		snprintf(res, sizeof(res),
			 "{\"path\":\"%s\",\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:1/\"}", bad_paths[i]);
		snprintf(ex, sizeof(ex), "\"upstreams\":{" UPSTREAM_GH "},\"resources\":[%s]", res);
		FAILS(build((struct cfgt){ .extra = ex }), "$.resources[0]: path: ");
	}
	FAILS(build((struct cfgt){ .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gh\","
						    "\"downstream\":\"http://127.0.0.1:1/\","
						    "\"scopes\":{\"offline_access\":[\"*\"]}}") }),
	      "$.resources[0]: scopes: \"offline_access\"");
	FAILS(build((struct cfgt){ .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gh\","
						    "\"downstream\":\"http://127.0.0.1:1/\","
						    "\"scopes\":{\"read\":\"*\"}}") }),
	      "$.resources[0].scopes.read: expected an array of strings");
	FAILS(build((struct cfgt){ .extra = WITH_GH("{\"path\":\"/mcp\",\"upstream\":\"gh\","
						    "\"downstream\":\"http://127.0.0.1:1/\","
						    "\"inject\":{\"value\":\"Bearer token\"}}") }),
	      "$.resources[0]: inject.value: expected a template");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"preset\":\"bogus\",\"client_id\":\"c\","
					    "\"client_secret\":\"s\"}}" }),
	      "$.upstreams.gh: preset: expected one of");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"client_id\":\"c\",\"client_secret\":\"s\"}}" }),
	      "$.upstreams.gh: without a preset or issuer");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"gh\":{\"client_id\":\"c\",\"client_secret\":\"s\","
					    "\"authorize_url\":\"https://idp.example.com/authorize\"}}" }),
	      "$.upstreams.gh: without a preset or issuer");
	FAILS(build((struct cfgt){ .extra = "\"upstreams\":{\"corp\":{\"preset\":\"oidc\",\"client_id\":\"c\","
					    "\"client_secret\":\"s\"}}" }),
	      "$.upstreams.corp: preset oidc needs an issuer");
	/* Explicit endpoints without a preset are enough. */
	PASSES_FREE(build((struct cfgt){ .extra = "\"upstreams\":{\"x\":{\"client_id\":\"c\",\"client_secret\":\"s\","
						  "\"authorize_url\":\"https://idp.example.com/authorize\","
						  "\"token_url\":\"https://idp.example.com/token\"}}" }));
	FAILS(build((struct cfgt){
		      .extra = "\"clients\":[{\"client_id\":\"a\",\"redirect_uris\":[\"http://127.0.0.1/\"]},"
			       "{\"client_id\":\"a\",\"redirect_uris\":[\"http://127.0.0.1/\"]}]" }),
	      "$.clients[1].client_id: duplicate client_id");
	FAILS(build((struct cfgt){ .extra = "\"clients\":[{\"client_id\":\"a\",\"redirect_uris\":[]}]" }),
	      "$.clients[0].redirect_uris: expected between 1 and 10 entries");
	FAILS(build((struct cfgt){ .extra = "\"clients\":[{\"client_id\":\"a\",\"client_secret\":\"short\","
					    "\"redirect_uris\":[\"http://127.0.0.1/\"]}]" }),
	      "$.clients[0].client_secret: expected at least 16 characters");
#undef WITH_GH
}

/* clients[].grant_types/resources/scopes and upstreams.*.client_credentials:
 * a machine client (client_credentials alone) is confidential, has no
 * redirect URIs, and names resources whose upstream grants client
 * credentials (never GitHub) and scopes they define. */
#define CC_UPSTREAMS                                                                                          \
	"\"upstreams\":{" UPSTREAM_GH ",\"corp\":{\"preset\":\"oidc\",\"issuer\":\"https://id.example.com\"," \
	"\"client_id\":\"c2\",\"client_secret\":\"s2\",\"client_credentials\":true}},"
#define CC_RESOURCES                                                                                \
	"\"resources\":[" RESOURCE_MCP ",{\"path\":\"/corp\",\"upstream\":\"corp\",\"downstream\":" \
	"\"http://127.0.0.1:9000/corp\",\"scopes\":{\"read\":[\"list\"],\"admin\":[\"*\"]}}],"
#define CC_SECRET "\"client_secret\":\"0123456789abcdef-secret\","

static void machine_fails(int line, const char *client, const char *msg)
{
	char extra[4096];
	snprintf(extra, sizeof(extra), CC_UPSTREAMS CC_RESOURCES "\"clients\":[%s]", client);
	fails_at(line, build((struct cfgt){ .extra = extra }), msg);
}

static void test_machine_clients(void)
{
	char extra[4096];
	snprintf(extra, sizeof(extra),
		 CC_UPSTREAMS CC_RESOURCES
		 "\"clients\":[{\"client_id\":\"job\"," CC_SECRET
		 "\"grant_types\":[\"client_credentials\"],\"resources\":[\"/corp\"],"
		 "\"scopes\":[\"read\"]},{\"client_id\":\"web\",\"redirect_uris\":[\"http://127.0.0.1/"
		 "cb\"],\"grant_types\":[\"authorization_code\"]}]");
	struct config *c = PASSES(build((struct cfgt){ .extra = extra }));
	if (c) {
		const struct cfg_client *job = config_client(c, "job"), *web = config_client(c, "web");
		CHECK(job && job->client_credentials && job->n_resources == 1 && job->n_scopes == 1 &&
		      job->n_redirect_uris == 0);
		CHECK(web && !web->client_credentials && web->n_grant_types == 1);
		CHECK(config_upstream(c, "corp")->client_credentials == 1 &&
		      config_upstream(c, "gh")->client_credentials == 0);
		config_free(&c);
	}
	/* A key instead of a secret (private_key_jwt): inline or by URL. */
	snprintf(
		extra, sizeof(extra),
		CC_UPSTREAMS CC_RESOURCES
		"\"clients\":[{\"client_id\":\"k1\",\"grant_types\":[\"client_credentials\"],\"resources\":[\"/corp\"],"
		"\"jwks\":{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
		"\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}},"
		"{\"client_id\":\"k2\",\"grant_types\":[\"client_credentials\"],\"resources\":[\"/corp\"],"
		"\"jwks_uri\":\"https://ci.example.com/jwks.json\"}]");
	c = PASSES(build((struct cfgt){ .extra = extra }));
	if (c) {
		CHECK(config_client(c, "k1")->client_credentials && config_client(c, "k1")->jwks);
		CHECK(config_client(c, "k2")->client_credentials && config_client(c, "k2")->jwks_uri);
		config_free(&c);
	}
	const char *cc = "\"client_id\":\"job\",\"grant_types\":[\"client_credentials\"],";
	char buf[1024];
#define MACHINE(fmt, msg)                                      \
	do {                                                   \
		snprintf(buf, sizeof(buf), "{%s" fmt "}", cc); \
		machine_fails(__LINE__, buf, msg);             \
	} while (0)
	MACHINE("\"resources\":[\"/corp\"]", "$.clients[0]: client_credentials needs a client_secret");
	MACHINE(CC_SECRET "\"resources\":[\"/corp\"],\"redirect_uris\":[\"http://127.0.0.1/cb\"]",
		"$.clients[0]: a client_credentials client has no redirect_uris");
	MACHINE(CC_SECRET "\"scopes\":[\"read\"]", "$.clients[0]: client_credentials needs resources");
	MACHINE(CC_SECRET "\"resources\":[\"/nope\"]", "$.clients[0]: resources: no resource with path \"/nope\"");
	MACHINE(CC_SECRET "\"resources\":[\"/mcp\"]",
		"$.clients[0]: resources: the upstream of \"/mcp\" is GitHub, which has no client_credentials grant");
	MACHINE(CC_SECRET "\"resources\":[\"/corp\"],\"scopes\":[\"write\"]",
		"$.clients[0]: scopes: \"write\" is not a scope of any of its resources");
#undef MACHINE
	machine_fails(__LINE__,
		      "{\"client_id\":\"job\"," CC_SECRET
		      "\"grant_types\":[\"client_credentials\",\"refresh_token\"],\"resources\":[\"/corp\"]}",
		      "$.clients[0]: grant_types: expected");
	machine_fails(
		__LINE__,
		"{\"client_id\":\"web\",\"grant_types\":[\"password\"],\"redirect_uris\":[\"http://127.0.0.1/cb\"]}",
		"$.clients[0]: grant_types: expected");
	machine_fails(
		__LINE__,
		"{\"client_id\":\"web\",\"grant_types\":[\"refresh_token\"],\"redirect_uris\":[\"http://127.0.0.1/cb\"]}",
		"$.clients[0]: grant_types: expected");
	machine_fails(__LINE__,
		      "{\"client_id\":\"web\",\"redirect_uris\":[\"http://127.0.0.1/cb\"],\"resources\":[\"/corp\"]}",
		      "$.clients[0]: resources and scopes are for client_credentials clients");
	/* An upstream without the grant. */
	snprintf(extra, sizeof(extra),
		 "\"upstreams\":{\"corp\":{\"preset\":\"oidc\",\"issuer\":\"https://id.example.com\","
		 "\"client_id\":\"c2\",\"client_secret\":\"s2\"}}," CC_RESOURCES "\"clients\":[{%s" CC_SECRET
		 "\"resources\":[\"/corp\"]}]",
		 cc);
	/* (/mcp's upstream gh is absent here too: an error of its own.) */
	FAILS(build((struct cfgt){ .extra = extra }),
	      "$.clients[0]: resources: the upstream of \"/corp\" needs \"client_credentials\": true");
}

static void test_load_and_describe(void)
{
	struct cfg_errors e;
	struct config *c = config_load("/nonexistent/mcpb-test.json", &e);
	CHECK(c == NULL && e.n == 1 && strncmp(e.msg[0], "/nonexistent/mcpb-test.json: cannot open", 40) == 0);
	config_errors_free(&e);

	char path[] = "/tmp/mcpb-test-config-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd >= 0) {
		FILE *f = fdopen(fd, "w");
		fputs(build((struct cfgt){ 0 }), f);
		fclose(f);
		c = config_load(path, &e);
		CHECK(c != NULL && e.n == 0);
		config_free(&c);
		config_errors_free(&e);
		remove(path);
	}

	FILE *f = tmpfile();
	CHECK(f != NULL);
	if (f) {
		config_describe(f);
		long n = ftell(f);
		CHECK(n > 0);
		char *all = n > 0 ? calloc(1, (size_t)n + 1) : NULL;
		CHECK(all != NULL);
		if (all) { /* the torture run may fail this allocation */
			rewind(f);
			CHECK(fread(all, 1, (size_t)n, f) == (size_t)n);
			CHECK(strstr(all, "tokens.access_ttl") != NULL);
			CHECK(strstr(all, "upstreams.<name>.preset") != NULL);
			CHECK(strstr(all, "resources[].path") != NULL);
			free(all);
		}
		fclose(f);
	}
}

/* private_key_jwt keys of pre-registered clients: an inline JWKS of usable
 * public keys, or an https jwks_uri; one of them, no secret beside. */
#define ED_JWK "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}"
#define CL(rest) "\"clients\":[{\"client_id\":\"c\",\"redirect_uris\":[\"https://a.example/cb\"]," rest "}]"
static void test_client_keys(void)
{
	struct config *c = passes_at(__LINE__, build((struct cfgt){ .extra = CL("\"jwks\":{\"keys\":[" ED_JWK "]}") }));
	CHECK(c && c->n_clients == 1 && c->clients[0].jwks && strstr(c->clients[0].jwks, "11qYAYKx"));
	config_free(&c);
	c = passes_at(__LINE__, build((struct cfgt){ .extra = CL("\"jwks_uri\":\"https://a.example/jwks.json\"") }));
	CHECK(c && c->clients[0].jwks_uri && !c->clients[0].jwks);
	config_free(&c);
	fails_exactly_at(__LINE__, build((struct cfgt){ .extra = CL("\"jwks\":{\"keys\":[]}") }),
			 "$.clients[0].jwks: expected a JWKS object: {\"keys\": [1..16 public keys]}");
	fails_exactly_at(__LINE__, build((struct cfgt){ .extra = CL("\"jwks\":[" ED_JWK "]") }),
			 "$.clients[0].jwks: expected a JWKS object: {\"keys\": [1..16 public keys]}");
	fails_at(__LINE__,
		 build((struct cfgt){ .extra = CL("\"jwks\":{\"keys\":[{\"kty\":\"oct\",\"k\":\"AQAB\"}]}") }),
		 "$.clients[0].jwks: keys[0]: expected a public signing key");
	fails_at(__LINE__,
		 build((struct cfgt){ .extra = CL("\"jwks\":{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
						  "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\","
						  "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}]}") }),
		 "$.clients[0].jwks: keys[0]: expected a public signing key");
	fails_exactly_at(__LINE__, build((struct cfgt){ .extra = CL("\"jwks_uri\":\"http://a.example/jwks.json\"") }),
			 "$.clients[0].jwks_uri: expected an https URL");
	fails_exactly_at(__LINE__,
			 build((struct cfgt){
				 .extra = CL("\"jwks_uri\":\"https://a.example/j\",\"jwks\":{\"keys\":[" ED_JWK
					     "]}") }),
			 "$.clients[0]: set jwks or jwks_uri, not both");
	fails_exactly_at(
		__LINE__,
		build((struct cfgt){
			.extra = CL("\"jwks_uri\":\"https://a.example/j\",\"client_secret\":\"0123456789abcdef\"") }),
		"$.clients[0]: a client with jwks or jwks_uri authenticates with private_key_jwt: drop client_secret");
}

/* http.max_connections left out: (hard RLIMIT_NOFILE - 256 - threads x
 * (LIM_HTTP_SHARDS + 6)) / 2 within 64..32768 (each proxied connection
 * holds two descriptors, each worker its daemons' epoll sets and wake-ups);
 * a value the config sets wins. Lowers this process's hard limit, so it
 * runs last. */
static long max_conns(const char *extra)
{
	struct config *c = PASSES(build((struct cfgt){ .extra = extra }));
	long n = c ? c->http.max_connections : -1;
	config_free(&c);
	return n;
}

static void test_max_connections_default(void)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	long per = LIM_HTTP_SHARDS + 6, r8 = 256 + 8 * per, r2 = 256 + 2 * per;
	long want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)(r8 + 2 * 32768)
			    ? 32768
			    : ((long)rl.rlim_max - r8) / 2;
	long want2 = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)(r2 + 2 * 32768)
			     ? 32768
			     : ((long)rl.rlim_max - r2) / 2;
	CHECK(max_conns(NULL) == (want < 64 ? 64 : want)); /* 8 workers, the default */
	CHECK(max_conns("\"http\":{\"threads\":2}") == (want2 < 64 ? 64 : want2));
	CHECK(max_conns("\"http\":{\"max_connections\":8}") == 8);
	CHECK(max_conns("\"http\":{\"max_connections\":100000}") == 100000); /* explicit wins (http_start warns) */
	FAILS(build((struct cfgt){ .extra = "\"http\":{\"max_connections\":0}" }),
	      "$.http.max_connections: expected an integer between 1 and 100000");
	rlim_t hard = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = (rlim_t)(1000 + r8);
	if (hard >= rl.rlim_max) {
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
		CHECK(max_conns(NULL) == 500);
		rl.rlim_cur = rl.rlim_max = 300;
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
		CHECK(max_conns(NULL) == 64); /* the floor */
		CHECK(max_conns("\"http\":{\"max_connections\":4096}") == 4096);
	}
}

/* connect upstreams and inject arrays with named placeholders. */
static void test_connect(void)
{
#define TWO \
	"\"upstreams\":{" UPSTREAM_GH ",\"sn\":{\"preset\":\"sentry\",\"client_id\":\"c\",\"client_secret\":\"s\"}},"
#define RES(more) \
	TWO "\"resources\":[{\"path\":\"/mcp\",\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:1/\"" more "}]"
	struct cfg_errors e;
	struct config *c =
		parse(build((struct cfgt){
			      .extra = RES(
				      ",\"connect\":[\"sn\"],\"inject\":[{\"value\":\"Bearer {upstream_token:gh}\"},"
				      "{\"header\":\"X-Sentry\",\"value\":\"t={upstream_token:sn};x\"}]") }),
		      &e);
	CHECK(c != NULL);
	if (c) {
		const struct cfg_resource *r = &c->resources[0];
		CHECK(r->n_connect == 1 && r->n_inject == 2);
		CHECK_STR(r->inject[0].header, "Authorization");
		CHECK(r->inject[0].connect == NULL); /* the sign-in upstream, named */
		CHECK(r->inject[1].connect == r->connect[0]);
		config_free(&c);
	}
	config_errors_free(&e);
	/* One object is an array of one; no inject is the default. */
	c = parse(build((struct cfgt){
			  .extra = RES(",\"inject\":{\"header\":\"X-K\",\"value\":\"{upstream_token}\"}") }),
		  &e);
	CHECK(c && c->resources[0].n_inject == 1 && !c->resources[0].inject[0].connect);
	config_free(&c);
	config_errors_free(&e);
	c = parse(build((struct cfgt){ .extra = RES("") }), &e);
	CHECK(c && c->resources[0].n_inject == 1);
	if (c)
		CHECK_STR(c->resources[0].inject[0].value, "Bearer {upstream_token}");
	config_free(&c);
	config_errors_free(&e);
	FAILS(build((struct cfgt){ .extra = RES(",\"connect\":[\"nope\"]") }),
	      "$.resources[0]: connect: no upstream named \"nope\"");
	FAILS(build((struct cfgt){ .extra = RES(",\"connect\":[\"gh\"]") }),
	      "$.resources[0]: connect: \"gh\" is the resource's sign-in upstream");
	FAILS(build((struct cfgt){
		      .extra = RES(
			      ",\"connect\":[\"sn\",\"sn\"],\"inject\":[{},{\"header\":\"X\",\"value\":\"{upstream_token:sn}\"}]") }),
	      "$.resources[0]: connect: \"sn\" is listed twice");
	FAILS(build((struct cfgt){ .extra = RES(",\"connect\":[\"sn\"]") }),
	      "$.resources[0]: connect: \"sn\" is injected by no inject entry");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":{\"value\":\"{upstream_token:sn}\"}") }),
	      "$.resources[0]: inject.value: {upstream_token:sn} names neither");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":{\"value\":\"{upstream_token}{upstream_token}\"}") }),
	      "$.resources[0]: inject.value: one placeholder per header");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":{\"value\":\"{upstream_token_x}\"}") }),
	      "$.resources[0]: inject.value: expected {upstream_token} or {upstream_token:NAME}");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":[{},{\"header\":\"authorization\"}]") }),
	      "$.resources[0]: inject: the header authorization is injected twice");
	static const char *const reserved[] = {
		"Host",     "X-MCP-User",     "content-length",  "Transfer-Encoding", "Connection",  "X_Token",
		"Bad Name", "Mcp-Session-Id", "X-Forwarded-For", "Forwarded",         "x-request-id"
	};
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		char extra[256];
		snprintf(extra, sizeof(extra), ",\"inject\":{\"header\":\"%s\",\"value\":\"{upstream_token}\"}",
			 reserved[i]);
		char doc[8192];
		snprintf(doc, sizeof(doc), "%s",
			 build((struct cfgt){ .extra = TWO
					      "\"resources\":[{\"path\":\"/mcp\","
					      "\"upstream\":\"gh\",\"downstream\":\"http://127.0.0.1:1/\"" }));
		/* build() ends the object: reopen the resource for the inject entry. */
		size_t len = strlen(doc);
		snprintf(doc + len - 1, sizeof(doc) - len + 1, "%s}]}", extra);
		FAILS(doc, "$.resources[0]: inject.header:");
	}
	FAILS(build((struct cfgt){
		      .extra = RES(",\"inject\":{\"value\":\"Bearer {upstream_token}\\r\\nX-Evil: 1\"}") }),
	      "$.resources[0]: inject.value: control bytes");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":[]") }),
	      "$.resources[0].inject: expected between 1 and 9");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":\"x\"") }),
	      "$.resources[0].inject: expected an object or an array of objects");
	FAILS(build((struct cfgt){ .extra = RES(",\"inject\":[{\"x\":1}]") }),
	      "$.resources[0].inject[0].x: unknown key");
#undef RES
#undef TWO
}

/* trusted_issuers and the jwt-bearer client kind. */
static void test_trusted_issuers(void)
{
#define UPS                           \
	"\"upstreams\":{" UPSTREAM_GH \
	",\"corp\":{\"preset\":\"oidc\",\"issuer\":\"https://idp.example\",\"client_id\":\"c\",\"client_secret\":\"s\"}},"
#define TI(more) \
	"\"trusted_issuers\":[{\"issuer\":\"https://idp.example\",\"jwks_uri\":\"https://idp.example/jwks\"" more "}]"
#define AGENT \
	",\"clients\":[{\"client_id\":\"agent\",\"client_secret\":\"0123456789abcdef0\",\"grant_types\":[\"urn:ietf:params:oauth:grant-type:jwt-bearer\"]}]"
	struct cfg_errors e;
	struct config *c = parse(build((struct cfgt){ .extra = UPS TI(",\"login_upstream\":\"corp\"") AGENT }), &e);
	CHECK(c != NULL);
	if (c) {
		CHECK(c->n_trusted_issuers == 1);
		CHECK_STR(c->trusted_issuers[0].subject_claim, "sub");
		CHECK(config_trusted_issuer(c, "https://idp.example") == &c->trusted_issuers[0]);
		CHECK(config_trusted_issuer(c, "https://idp.example/") == NULL);
		CHECK(config_client(c, "agent")->jwt_bearer == 1);
		config_free(&c);
	}
	config_errors_free(&e);
	FAILS(build((struct cfgt){ .extra = UPS TI("") }), "$.trusted_issuers[0].login_upstream: missing required key");
	FAILS(build((struct cfgt){ .extra = UPS TI(",\"login_upstream\":\"nope\"") }),
	      "$.trusted_issuers[0]: login_upstream: no upstream named \"nope\"");
	FAILS(build((struct cfgt){ .extra = UPS "\"trusted_issuers\":[{\"issuer\":\"https://i\",\"jwks_uri\":"
						"\"http://i/jwks\",\"login_upstream\":\"corp\"}]" }),
	      "$.trusted_issuers[0]: jwks_uri: expected an https URL");
	FAILS(build((struct cfgt){ .extra = UPS
				   "\"trusted_issuers\":[{\"issuer\":\"https://i\",\"jwks_uri\":"
				   "\"https://i/j\",\"login_upstream\":\"corp\"},{\"issuer\":\"https://i\","
				   "\"jwks_uri\":\"https://i/j\",\"login_upstream\":\"corp\"}]" }),
	      "$.trusted_issuers[1]: issuer: listed twice");
	FAILS(build((struct cfgt){ .extra = UPS TI(",\"login_upstream\":\"gh\"") }),
	      "$.trusted_issuers[0]: login_upstream: \"gh\" must be the OIDC upstream whose issuer is this issuer");
	FAILS(build((struct cfgt){ .extra = UPS TI(",\"login_upstream\":\"corp\",\"subject_claim\":\"email\"") }),
	      "$.trusted_issuers[0]: subject_claim: only \"sub\"");
	FAILS(build((struct cfgt){ .extra = UPS "\"trusted_issuers\":[{\"issuer\":\"https://idp.example\",\"jwks_uri\":"
						"\"https://idp.example/jwks?v=1\",\"login_upstream\":\"corp\"}]" }),
	      "$.trusted_issuers[0]: jwks_uri: expected an https URL without query or fragment");
	FAILS(build((struct cfgt){ .extra = UPS "\"log\":{}" AGENT }),
	      "$.clients[0]: the jwt-bearer grant needs trusted_issuers");
	FAILS(build((struct cfgt){
		      .extra = UPS TI(
			      ",\"login_upstream\":\"corp\"") ",\"clients\":[{\"client_id\":\"pub\",\"grant_types\":[\"urn:ietf:params:oauth:"
							      "grant-type:jwt-bearer\"]}]" }),
	      "$.clients[0]: the jwt-bearer grant needs a client_secret");
	FAILS(build((struct cfgt){
		      .extra = UPS TI(
			      ",\"login_upstream\":\"corp\"") ",\"clients\":[{\"client_id\":\"x\",\"client_secret\":\"0123456789abcdef0\","
							      "\"grant_types\":[\"urn:ietf:params:oauth:grant-type:jwt-bearer\",\"refresh_token\"]}]" }),
	      "$.clients[0]: grant_types: expected");
#undef AGENT
#undef TI
#undef UPS
}

int main(void)
{
	test_trusted_issuers();
	test_connect();
	test_minimal_and_defaults();
	test_resource_canonical();
	test_unknown_keys();
	test_wrong_types();
	test_missing_required();
	test_urls();
	test_keys();
	test_listen();
	test_env();
	test_expand_env_direct();
	test_invalid_json();
	test_jparse_refusals();
	test_exact_messages();
	test_int_ranges();
	test_multiple_errors();
	test_resources_upstreams();
	test_machine_clients();
	test_load_and_describe();
	test_client_keys();
	test_max_connections_default();
	TEST_DONE();
}
