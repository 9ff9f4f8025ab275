/* authorize.c: the pure parse step of GET/POST /authorize. Every refusal it
 * makes, whether it is an error page (before the redirect URI is verified)
 * or an error sent back to the client (after), and what a valid request
 * becomes; the consent page's HTML for hostile values. */
#include <stdlib.h>
#include <string.h>

#include "../../../broker/oauth/authorize.c"
#include "test.h"

#define PUB "https://broker.example.com"
#define CB "https://app.example.com/cb"
#define CHALLENGE "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" /* RFC 7636 appendix B */

static struct cfg_scope_rule mcp_scopes[] = { { "issues:read", NULL, 0 }, { "issues:write", NULL, 0 } };
static char *mcp_defaults[] = { "issues:read" };
static struct cfg_scope_rule docs_scopes[] = { { "docs:read", NULL, 0 }, { "docs:write", NULL, 0 } };
static struct cfg_resource resources[2];
static struct config cfg;
static char *one_uri[] = { CB };
static char *two_uris[] = { CB, "http://127.0.0.1/cb" };
static struct client cl;

static void setup(size_t n_resources)
{
	memset(resources, 0, sizeof(resources));
	resources[0] = (struct cfg_resource){ .path = "/mcp",
					      .upstream = "github",
					      .scopes = mcp_scopes,
					      .n_scopes = 2,
					      .default_scopes = mcp_defaults,
					      .n_default_scopes = 1 };
	resources[1] = (struct cfg_resource){
		.path = "/docs", .upstream = "google", .scopes = docs_scopes, .n_scopes = 2
	};
	memset(&cfg, 0, sizeof(cfg));
	cfg.public_url = PUB;
	cfg.resources = resources;
	cfg.n_resources = n_resources;
	memset(&cl, 0, sizeof(cl));
	memcpy(cl.client_id, "app", 4);
	memcpy(cl.kind, "dynamic", 8);
	cl.redirect_uris = one_uri;
	cl.n_redirect_uris = 1;
}

/* A valid request for the single resource. */
static struct authorize_params valid(void)
{
	struct authorize_params p;
	memset(&p, 0, sizeof(p));
	p.v[AUTHZ_P_CLIENT_ID] = "app";
	p.v[AUTHZ_P_REDIRECT_URI] = CB;
	p.v[AUTHZ_P_RESPONSE_TYPE] = "code";
	p.v[AUTHZ_P_STATE] = "xyz";
	p.v[AUTHZ_P_CODE_CHALLENGE] = CHALLENGE;
	p.v[AUTHZ_P_CODE_CHALLENGE_METHOD] = "S256";
	return p;
}

static struct authorize_request req;
static struct authorize_error err;

static int parse(const struct authorize_params *p)
{
	authorize_request_free(&req);
	memset(&err, 0, sizeof(err));
	int rc = authorize_parse(&cfg, &cl, p, &req, &err);
	if (rc < 0)
		CHECK(req.scope == NULL); /* a refusal owns nothing */
	return rc;
}

/* Refused with an error page of this status whose message is msg. */
static int page(const struct authorize_params *p, int status, const char *msg)
{
	return parse(p) < 0 && !err.redirect && err.status == status && strcmp(err.description, msg) == 0;
}

/* Refused with error code sent back to the verified redirect URI. */
static int back(const struct authorize_params *p, const char *code, const char *desc)
{
	return parse(p) < 0 && err.redirect && strcmp(err.code, code) == 0 && strcmp(err.description, desc) == 0 &&
	       strcmp(req.redirect_uri, p->v[AUTHZ_P_REDIRECT_URI] ? p->v[AUTHZ_P_REDIRECT_URI] : CB) == 0;
}

static void test_client(void)
{
	struct authorize_params p = valid();
	const char *id = NULL;
	CHECK(authorize_parse_client(&p, &id, &err) == 0);
	CHECK_STR(id, "app");
	p.dup[AUTHZ_P_CLIENT_ID] = 1;
	CHECK(authorize_parse_client(&p, &id, &err) < 0 && id == NULL && !err.redirect && err.status == 400);
	CHECK_STR(err.description, "A parameter was given more than once.");
	p = valid();
	p.dup[AUTHZ_P_REDIRECT_URI] = 1;
	CHECK(authorize_parse_client(&p, &id, &err) < 0 && !err.redirect);
	p = valid();
	p.v[AUTHZ_P_CLIENT_ID] = NULL;
	CHECK(authorize_parse_client(&p, &id, &err) < 0 && err.status == 400);
	CHECK_STR(err.description, "The request names no client.");
	p.v[AUTHZ_P_CLIENT_ID] = "";
	CHECK(authorize_parse_client(&p, &id, &err) < 0 && err.status == 400);
	/* Repeats of the other parameters are authorize_parse's, sent back. */
	p = valid();
	p.dup[AUTHZ_P_STATE] = 1;
	CHECK(authorize_parse_client(&p, &id, &err) == 0);
}

static void test_valid(void)
{
	struct authorize_params p = valid();
	CHECK(parse(&p) == 0);
	CHECK(req.client == &cl && req.res == &resources[0]);
	CHECK_STR(req.redirect_uri, CB);
	CHECK(req.has_state);
	CHECK_STR(req.state, "xyz");
	CHECK_STR(req.challenge, CHALLENGE);
	CHECK_STR(req.resource_url, PUB "/mcp");
	CHECK_STR(req.scope, "issues:read"); /* the resource's default */

	p.v[AUTHZ_P_STATE] = NULL;
	p.v[AUTHZ_P_SCOPE] = "issues:write offline_access issues:read";
	CHECK(parse(&p) == 0 && !req.has_state && req.state[0] == '\0');
	CHECK_STR(req.scope, "issues:write issues:read"); /* refresh tokens are always issued */
	p.v[AUTHZ_P_SCOPE] = "offline_access";
	CHECK(parse(&p) == 0);
	CHECK_STR(req.scope, "issues:read");
}

static void test_redirect_uri(void)
{
	struct authorize_params p = valid();
	p.v[AUTHZ_P_REDIRECT_URI] = NULL; /* one registered: it is the one */
	CHECK(parse(&p) == 0);
	CHECK_STR(req.redirect_uri, CB);
	cl.redirect_uris = two_uris;
	cl.n_redirect_uris = 2;
	CHECK(page(&p, 400, "The request has no redirect URI."));
	p.v[AUTHZ_P_REDIRECT_URI] = "http://127.0.0.1:5173/cb"; /* RFC 8252: any loopback port */
	CHECK(parse(&p) == 0);
	CHECK_STR(req.redirect_uri, "http://127.0.0.1:5173/cb");
	const char *bad[] = { "https://app.example.com/cb/", "https://app.example.com/cb?x=1",
			      "https://evil.example/cb",     "HTTPS://app.example.com/cb",
			      "http://localhost/cb",         "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.v[AUTHZ_P_REDIRECT_URI] = bad[i];
		CHECK(page(&p, 400, "The redirect URI is not registered for this application."));
		CHECK_STR(err.code, "Invalid redirect URI");
	}
	/* Over the limit even when registered. */
	char *longuri = malloc(LIM_REDIRECT_URI + 2);
	memcpy(longuri, "https://app.example.com/", 24);
	memset(longuri + 24, 'a', LIM_REDIRECT_URI + 1 - 24);
	longuri[LIM_REDIRECT_URI + 1] = '\0';
	char *reg[] = { longuri };
	cl.redirect_uris = reg;
	cl.n_redirect_uris = 1;
	p.v[AUTHZ_P_REDIRECT_URI] = longuri;
	CHECK(page(&p, 400, "The redirect URI is not registered for this application."));
	longuri[LIM_REDIRECT_URI] = '\0';
	CHECK(parse(&p) == 0);
	free(longuri);
	cl.redirect_uris = one_uri;
	/* Nothing after the redirect URI is looked at before it is verified. */
	p = valid();
	p.v[AUTHZ_P_REDIRECT_URI] = "https://evil.example/cb";
	p.v[AUTHZ_P_RESPONSE_TYPE] = NULL;
	CHECK(page(&p, 400, "The redirect URI is not registered for this application."));
}

static void test_state(void)
{
	struct authorize_params p = valid();
	char state[LIM_STATE + 2];
	memset(state, 's', LIM_STATE + 1);
	state[LIM_STATE + 1] = '\0';
	p.v[AUTHZ_P_STATE] = state;
	CHECK(back(&p, "invalid_request", "state is too long"));
	CHECK(!req.has_state); /* not echoed */
	state[LIM_STATE] = '\0';
	CHECK(parse(&p) == 0 && req.has_state && strlen(req.state) == LIM_STATE);
	const char *bad[] = { "a\tb", "a\x7f", "caf\xc3\xa9", "\x01" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.v[AUTHZ_P_STATE] = bad[i];
		CHECK(back(&p, "invalid_request", "state may hold only printable ASCII"));
		CHECK(!req.has_state);
	}
	p.v[AUTHZ_P_STATE] = " ~!\"<>";
	CHECK(parse(&p) == 0);
	CHECK_STR(req.state, " ~!\"<>");
}

static void test_repeats(void)
{
	for (size_t i = AUTHZ_P_RESPONSE_TYPE; i < AUTHZ_P_N; i++) {
		struct authorize_params p = valid();
		p.dup[i] = 1;
		if (i == AUTHZ_P_RESOURCE)
			CHECK(back(&p, "invalid_target", "only one resource per request is supported"));
		else
			CHECK(back(&p, "invalid_request", "a parameter was given more than once"));
		CHECK(req.has_state); /* the state is valid: it goes back */
	}
	/* Another repeat is reported before the resource's. */
	struct authorize_params p = valid();
	p.dup[AUTHZ_P_RESOURCE] = p.dup[AUTHZ_P_SCOPE] = 1;
	CHECK(back(&p, "invalid_request", "a parameter was given more than once"));
}

static void test_code_flow(void)
{
	struct authorize_params p = valid();
	p.v[AUTHZ_P_RESPONSE_TYPE] = NULL;
	CHECK(back(&p, "invalid_request", "response_type is required"));
	const char *rts[] = { "token", "code token", "CODE", "" };
	for (size_t i = 0; i < sizeof(rts) / sizeof(rts[0]); i++) {
		p.v[AUTHZ_P_RESPONSE_TYPE] = rts[i];
		CHECK(back(&p, "unsupported_response_type", "only response_type=code is supported"));
	}
	p = valid();
	p.v[AUTHZ_P_CODE_CHALLENGE] = NULL;
	CHECK(back(&p, "invalid_request", "code_challenge (PKCE) is required"));
	p.v[AUTHZ_P_CODE_CHALLENGE] = "";
	CHECK(back(&p, "invalid_request", "code_challenge (PKCE) is required"));
	p = valid();
	const char *methods[] = { NULL, "plain", "s256", "S256 " };
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		p.v[AUTHZ_P_CODE_CHALLENGE_METHOD] = methods[i];
		CHECK(back(&p, "invalid_request", "code_challenge_method must be S256"));
	}
	p = valid();
	char ch[LIM_PKCE_VERIFIER_MAX + 2];
	memset(ch, 'A', sizeof(ch) - 1);
	ch[LIM_PKCE_VERIFIER_MAX + 1] = '\0';
	p.v[AUTHZ_P_CODE_CHALLENGE] = ch;
	CHECK(back(&p, "invalid_request", "code_challenge is malformed"));
	ch[LIM_PKCE_VERIFIER_MAX] = '\0';
	CHECK(parse(&p) == 0 && strlen(req.challenge) == LIM_PKCE_VERIFIER_MAX);
	ch[LIM_PKCE_VERIFIER_MIN] = '\0';
	CHECK(parse(&p) == 0);
	ch[LIM_PKCE_VERIFIER_MIN - 1] = '\0';
	CHECK(back(&p, "invalid_request", "code_challenge is malformed"));
	const char *bad[] = { "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
			      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
			      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw cM" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.v[AUTHZ_P_CODE_CHALLENGE] = bad[i];
		CHECK(back(&p, "invalid_request", "code_challenge is malformed"));
	}
	p.v[AUTHZ_P_CODE_CHALLENGE] = "abcdefghijklmnopqrstuvwxyz0123456789-._~ABCD";
	CHECK(parse(&p) == 0);
}

static void test_resource(void)
{
	struct authorize_params p = valid();
	const char *same[] = { PUB "/mcp", "HTTPS://Broker.Example.COM/mcp", PUB ":443/mcp", PUB "/mcp/" };
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		p.v[AUTHZ_P_RESOURCE] = same[i];
		CHECK(parse(&p) == 0 && req.res == &resources[0]);
		CHECK_STR(req.resource_url, PUB "/mcp"); /* the configured form, whatever was asked */
	}
	const char *other[] = {
		PUB "/MCP", PUB "/mcp/x", "http://broker.example.com/mcp", PUB ":8443/mcp", "/mcp", PUB "/docs", ""
	};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		p.v[AUTHZ_P_RESOURCE] = other[i];
		CHECK(back(&p, "invalid_target", "the resource is not served by this authorization server"));
	}
	setup(2);
	p.v[AUTHZ_P_RESOURCE] = NULL;
	CHECK(back(&p, "invalid_target", "resource is required: this server protects several resources"));
	p.v[AUTHZ_P_RESOURCE] = PUB "/docs";
	CHECK(parse(&p) == 0 && req.res == &resources[1]);
	CHECK_STR(req.scope, "docs:read docs:write"); /* no defaults: all it offers */
	p.v[AUTHZ_P_SCOPE] = "issues:read";           /* another resource's scope */
	CHECK(back(&p, "invalid_scope", "a requested scope is not offered by this resource"));
	setup(1);
}

static void test_scope(void)
{
	struct authorize_params p = valid();
	const char *bad[] = { "issues:admin", "issues:read issues:admin", "issues:read\"", "issues:read\\x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.v[AUTHZ_P_SCOPE] = bad[i];
		CHECK(back(&p, "invalid_scope", "a requested scope is not offered by this resource"));
	}
	char many[LIM_SCOPE + 2];
	memset(many, 'a', sizeof(many) - 1);
	many[LIM_SCOPE + 1] = '\0';
	p.v[AUTHZ_P_SCOPE] = many;
	CHECK(back(&p, "invalid_scope", "a requested scope is not offered by this resource"));

	/* The scopes a resource offers may join to more than LIM_SCOPE: refused,
	 * never cut. */
	static char names[12][101];
	static struct cfg_scope_rule wide[12];
	for (size_t i = 0; i < 12; i++) {
		memset(names[i], 'a' + (int)i, 100);
		names[i][100] = '\0';
		wide[i].scope = names[i];
	}
	resources[0].scopes = wide;
	resources[0].n_scopes = 12;
	resources[0].n_default_scopes = 0;
	p.v[AUTHZ_P_SCOPE] = NULL;
	CHECK(back(&p, "invalid_scope", "too many scopes requested"));
	resources[0].n_scopes = 10; /* 10 * 100 + 9 spaces */
	CHECK(parse(&p) == 0 && strlen(req.scope) == 1009);
	setup(1);
}

/* Refusals come in the order of the checks: the first failing one wins. */
static void test_order(void)
{
	struct authorize_params p = valid();
	p.v[AUTHZ_P_STATE] = "\x01";
	p.v[AUTHZ_P_RESPONSE_TYPE] = "token";
	CHECK(back(&p, "invalid_request", "state may hold only printable ASCII"));
	p = valid();
	p.v[AUTHZ_P_RESPONSE_TYPE] = "token";
	p.v[AUTHZ_P_CODE_CHALLENGE] = NULL;
	CHECK(back(&p, "unsupported_response_type", "only response_type=code is supported"));
	p = valid();
	p.v[AUTHZ_P_CODE_CHALLENGE_METHOD] = "plain";
	p.v[AUTHZ_P_RESOURCE] = "https://other.example/";
	CHECK(back(&p, "invalid_request", "code_challenge_method must be S256"));
	p = valid();
	p.v[AUTHZ_P_RESOURCE] = "https://other.example/";
	p.v[AUTHZ_P_SCOPE] = "nope";
	CHECK(back(&p, "invalid_target", "the resource is not served by this authorization server"));
}

static void test_consent_html(void)
{
	struct scopes sc = { 0 };
	CHECK(scopes_parse("issues:read", &sc) == 0);
	struct consent_view v = { "<script>alert(1)</script>",
				  "a\"b'c",
				  "evil.example&<",
				  PUB "/mcp",
				  "git<hub>",
				  "app.example.com\" onload=\"x",
				  &sc,
				  PUB,
				  "sealed\"><x",
				  "csrf'",
				  1,
				  1 };
	struct buf b;
	buf_init(&b, 64 * 1024);
	CHECK(consent_html(&b, &v) == 0 && b.ptr);
	CHECK(b.ptr && !strstr(b.ptr, "<script>") && !strstr(b.ptr, "\" onload") && !strstr(b.ptr, "\"><x") &&
	      !strstr(b.ptr, "'c") && !strstr(b.ptr, "<hub>") && !strstr(b.ptr, "&<"));
	CHECK(b.ptr && strstr(b.ptr, "<title>Authorize &lt;script&gt;alert(1)&lt;/script&gt;</title>"));
	CHECK(b.ptr && strstr(b.ptr, "Client ID: <code>a&quot;b&#39;c</code></p>"));
	CHECK(b.ptr && strstr(b.ptr, "<span class=\"host\">evil.example&amp;&lt;</span>; its name above is what that "
				     "site claims.</p>"));
	CHECK(b.ptr && strstr(b.ptr, "name=\"request\" value=\"sealed&quot;&gt;&lt;x\""));
	CHECK(b.ptr && strstr(b.ptr, "<ul><li>issues:read</li></ul>"));
	CHECK(b.ptr && strstr(b.ptr, "action=\"" PUB "/authorize\""));

	/* Both warnings, fixed sentences, after the client's identity. */
	CHECK(b.ptr && strstr(b.ptr, "site claims.</p><p class=\"warn\"><strong>Unverified application.</strong> "
				     "This application's identity has not been verified by the operator of this "
				     "service.</p><p class=\"warn\">This application will receive the authorization "
				     "on this computer only (localhost).</p><h2>"));
	buf_free(&b);

	/* Each warning alone. */
	v.loopback_only = 0;
	buf_init(&b, 64 * 1024);
	CHECK(consent_html(&b, &v) == 0);
	CHECK(b.ptr && strstr(b.ptr, "Unverified application.") && !strstr(b.ptr, "(localhost)"));
	buf_free(&b);
	v.unverified = 0;
	v.loopback_only = 1;
	buf_init(&b, 64 * 1024);
	CHECK(consent_html(&b, &v) == 0);
	CHECK(b.ptr && !strstr(b.ptr, "Unverified") && strstr(b.ptr, "computer only (localhost).</p><h2>"));
	buf_free(&b);

	/* No CIMD host, no scope, no warning: no such paragraphs, basic access. */
	scopes_free(&sc);
	v.cimd_host = NULL;
	v.loopback_only = 0;
	buf_init(&b, 64 * 1024);
	CHECK(consent_html(&b, &v) == 0);
	CHECK(b.ptr && !strstr(b.ptr, "described by") && !strstr(b.ptr, "class=\"warn\"") &&
	      strstr(b.ptr, "</code></p><h2>Requested permissions</h2>"
			    "<ul><li>basic access</li></ul>"));
	buf_free(&b);

	/* A page over its buffer's cap is an error, not a cut page. */
	buf_init(&b, 512);
	CHECK(consent_html(&b, &v) < 0);
	buf_free(&b);
}

/* Who is unverified: dynamic clients, and CIMD clients whose client_id host
 * is not in registration.cimd_trusted_hosts; configured clients never. */
static void test_client_unverified(void)
{
	char *trusted[] = { "*.trusted.example", "apps.example.com" };
	struct client c;
	memset(&c, 0, sizeof(c));
	memcpy(c.kind, "static", 7);
	memcpy(c.client_id, "cli", 4);
	CHECK(client_unverified(&cfg, &c) == 0);
	memcpy(c.kind, "dynamic", 8);
	CHECK(client_unverified(&cfg, &c) == 1);
	memcpy(c.kind, "cimd", 5);
	snprintf(c.client_id, sizeof(c.client_id), "https://apps.example.com/client.json");
	CHECK(client_unverified(&cfg, &c) == 1); /* no trusted hosts: every document is unverified */
	cfg.registration.cimd_trusted_hosts = trusted;
	cfg.registration.n_cimd_trusted_hosts = 2;
	CHECK(client_unverified(&cfg, &c) == 0);
	snprintf(c.client_id, sizeof(c.client_id), "https://APPS.example.com:8443/client.json");
	CHECK(client_unverified(&cfg, &c) == 0);
	snprintf(c.client_id, sizeof(c.client_id), "https://x.trusted.example/c.json");
	CHECK(client_unverified(&cfg, &c) == 0);
	snprintf(c.client_id, sizeof(c.client_id), "https://trusted.example/c.json");
	CHECK(client_unverified(&cfg, &c) == 1); /* "*." is subdomains only */
	snprintf(c.client_id, sizeof(c.client_id), "https://apps.example.com.evil.example/c.json");
	CHECK(client_unverified(&cfg, &c) == 1);
	snprintf(c.client_id, sizeof(c.client_id), "https://evil.example/apps.example.com");
	CHECK(client_unverified(&cfg, &c) == 1);
	snprintf(c.client_id, sizeof(c.client_id), "https://apps.example.com@evil.example/c.json");
	CHECK(client_unverified(&cfg, &c) == 1);
	snprintf(c.client_id, sizeof(c.client_id), "not a url");
	CHECK(client_unverified(&cfg, &c) == 1);
	memcpy(c.kind, "dynamic", 8);
	snprintf(c.client_id, sizeof(c.client_id), "https://apps.example.com/client.json");
	CHECK(client_unverified(&cfg, &c) == 1); /* trust is for documents, not registrations */
	cfg.registration.cimd_trusted_hosts = NULL;
	cfg.registration.n_cimd_trusted_hosts = 0;
}

/* Localhost only: every redirect URI on 127.0.0.1, [::1] or localhost. */
static void test_client_loopback_only(void)
{
	char *loop[] = { "http://127.0.0.1:9000/cb", "http://[::1]/cb", "http://localhost:3000/cb" };
	char *mixed[] = { "http://127.0.0.1/cb", "https://app.example.com/cb" };
	char *priv[] = { "cursor://localhost/cb" };
	char *near[] = { "https://localhost.example.com/cb" };
	struct client c;
	memset(&c, 0, sizeof(c));
	c.redirect_uris = loop;
	c.n_redirect_uris = 3;
	CHECK(client_loopback_only(&c) == 1);
	c.n_redirect_uris = 1;
	CHECK(client_loopback_only(&c) == 1);
	c.redirect_uris = mixed;
	c.n_redirect_uris = 2;
	CHECK(client_loopback_only(&c) == 0);
	c.n_redirect_uris = 1;
	CHECK(client_loopback_only(&c) == 1);
	c.redirect_uris = priv;
	CHECK(client_loopback_only(&c) == 0); /* goes to whichever app claimed the scheme */
	c.redirect_uris = near;
	CHECK(client_loopback_only(&c) == 0);
	c.redirect_uris = two_uris;
	c.n_redirect_uris = 2;
	CHECK(client_loopback_only(&c) == 0);
	c.n_redirect_uris = 0;
	CHECK(client_loopback_only(&c) == 0);
}

int main(void)
{
	setup(1);
	test_client();
	test_valid();
	test_redirect_uri();
	test_state();
	test_repeats();
	test_code_flow();
	test_resource();
	test_scope();
	test_order();
	test_consent_html();
	test_client_unverified();
	test_client_loopback_only();
	authorize_request_free(&req);
	TEST_DONE();
}
