/* token.c: the pure steps of POST /token: the grant type, each grant's
 * parameters (RFC 6749 section 4.1.3 and 6, RFC 7636, RFC 8707), the
 * stored code or refresh token against the request and the client, scope
 * narrowing, and the sealed successor pair of the refresh grace window.
 * token.c is included to reach its statics. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../../broker/oauth/token.c"
#include "test.h"

#define VERIFIER "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" /* RFC 7636 appendix B */
#define CHALLENGE "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
#define CB "https://app.example.com/cb"

static struct tk_refusal why;

/* The refusal's code and description, "" when rc is not TK_REFUSED. */
static int refused(enum tk_rc rc, const char *error, const char *description)
{
	int ok = rc == TK_REFUSED && strcmp(why.error, error) == 0 && strcmp(why.description, description) == 0;
	if (!ok)
		fprintf(stderr, "  got rc %d: %s / %s\n", (int)rc, rc == TK_REFUSED ? why.error : "",
			rc == TK_REFUSED ? why.description : "");
	memset(&why, 0, sizeof(why));
	return ok;
}

static void test_grant_type(void)
{
	enum tk_grant gt = TG_REFRESH;
	json_t *f = json_pack("{s:s}", "grant_type", "authorization_code");
	CHECK(parse_grant_type(f, 0, &gt, &why) == TK_OK && gt == TG_CODE);
	/* A repeated parameter is refused before anything else is read. */
	CHECK(refused(parse_grant_type(f, 1, &gt, &why), "invalid_request", "a parameter was given more than once"));
	json_decref(f);
	f = json_pack("{s:s}", "grant_type", "refresh_token");
	CHECK(parse_grant_type(f, 0, &gt, &why) == TK_OK && gt == TG_REFRESH);
	json_decref(f);
	f = json_pack("{s:s}", "grant_type", "client_credentials");
	CHECK(parse_grant_type(f, 0, &gt, &why) == TK_OK && gt == TG_CLIENT_CREDENTIALS);
	json_decref(f);
	f = json_pack("{s:s}", "code", "x");
	CHECK(refused(parse_grant_type(f, 0, &gt, &why), "invalid_request", "grant_type is required"));
	json_decref(f);
	static const char *const other[] = {
		"password",           "Client_Credentials",  "",
		"Authorization_Code", "authorization_code ", "urn:ietf:params:oauth:grant-type:device_code"
	};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		f = json_pack("{s:s}", "grant_type", other[i]);
		CHECK(refused(parse_grant_type(f, 0, &gt, &why), "unsupported_grant_type",
			      "grant_type must be authorization_code, refresh_token, client_credentials or "
			      "urn:ietf:params:oauth:grant-type:jwt-bearer"));
		json_decref(f);
	}
	f = json_pack("{s:s}", "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
	CHECK(parse_grant_type(f, 0, &gt, &why) == TK_OK && gt == TG_JWT_BEARER);
	json_decref(f);
}

static enum tk_rc code_form(const char *code, const char *verifier, struct code_req *q)
{
	json_t *f = json_object();
	if (code)
		json_object_set_new(f, "code", json_string(code));
	if (verifier)
		json_object_set_new(f, "code_verifier", json_string(verifier));
	json_object_set_new(f, "redirect_uri", json_string(CB));
	enum tk_rc rc = parse_code(f, q, &why);
	if (rc == TK_OK)
		CHECK(strcmp(q->code, code) == 0 && strcmp(q->redirect_uri, CB) == 0 && q->resource == NULL);
	json_decref(f);
	return rc;
}

static void test_parse_code(void)
{
	struct code_req q;
	char s[LIM_TOKEN + 2];
	CHECK(code_form("mcpb_ac_x", VERIFIER, &q) == TK_OK);
	CHECK(refused(code_form(NULL, VERIFIER, &q), "invalid_request", "code is required"));
	CHECK(refused(code_form("", VERIFIER, &q), "invalid_request", "code is required"));
	memset(s, 'c', LIM_TOKEN);
	s[LIM_TOKEN] = '\0';
	CHECK(code_form(s, VERIFIER, &q) == TK_OK);
	s[LIM_TOKEN] = 'c';
	s[LIM_TOKEN + 1] = '\0';
	CHECK(refused(code_form(s, VERIFIER, &q), "invalid_request", "code is required"));
	/* The code is checked before the verifier. */
	CHECK(refused(code_form(NULL, NULL, &q), "invalid_request", "code is required"));
	CHECK(refused(code_form("c", NULL, &q), "invalid_request", "code_verifier is required"));

	/* RFC 7636 section 4.1: 43..128 of [A-Za-z0-9-._~]. */
	char v[LIM_PKCE_VERIFIER_MAX + 2];
	memset(v, 'a', sizeof(v));
	v[LIM_PKCE_VERIFIER_MIN] = '\0';
	CHECK(code_form("c", v, &q) == TK_OK);
	v[LIM_PKCE_VERIFIER_MIN - 1] = '\0';
	CHECK(refused(code_form("c", v, &q), "invalid_grant", "code_verifier is malformed"));
	memset(v, 'a', sizeof(v));
	v[LIM_PKCE_VERIFIER_MAX] = '\0';
	CHECK(code_form("c", v, &q) == TK_OK);
	v[LIM_PKCE_VERIFIER_MAX] = 'a';
	v[LIM_PKCE_VERIFIER_MAX + 1] = '\0';
	CHECK(refused(code_form("c", v, &q), "invalid_grant", "code_verifier is malformed"));
	CHECK(refused(code_form("c", "", &q), "invalid_grant", "code_verifier is malformed"));
	CHECK(code_form("c", "AZaz09-._~AZaz09-._~AZaz09-._~AZaz09-._~AZaz", &q) == TK_OK);
	static const char bad[] = { '+', '/', '=', ' ', '%', '!', '*', ':', '\x7f' };
	for (size_t i = 0; i < sizeof(bad); i++) {
		memset(v, 'a', 50);
		v[20] = bad[i];
		v[50] = '\0';
		CHECK(refused(code_form("c", v, &q), "invalid_grant", "code_verifier is malformed"));
	}
	CHECK(refused(code_form("c",
				"caf\xc3\xa9"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
				&q),
		      "invalid_grant", "code_verifier is malformed"));
}

static char *one_uri[] = { CB }, *two_uris[] = { CB, "https://app.example.com/other" };

static struct client client(const char *id, char **uris, size_t n)
{
	struct client cl;
	memset(&cl, 0, sizeof(cl));
	snprintf(cl.client_id, sizeof(cl.client_id), "%s", id);
	cl.redirect_uris = uris;
	cl.n_redirect_uris = n;
	return cl;
}

static void test_code_check(void)
{
	struct client cl = client("app", one_uri, 1), cl2 = client("app", two_uris, 2);
	struct code_req q = { "c", CB, VERIFIER, NULL };
	struct code_row ok = { "g", "app", CB, CHALLENGE, "https://b/mcp", "read", 1, 0 }, row;
	CHECK(code_check(&q, &ok, &cl, &why) == TK_OK);
	CHECK(code_check(&q, &ok, &cl2, &why) == TK_OK);
	/* Redeemed before wins over every other verdict: the replay is the news. */
	row = ok;
	row.used = 1;
	row.live = 0;
	row.client_id = "other";
	CHECK(code_check(&q, &row, &cl, &why) == TK_REUSED);
	row = ok;
	row.live = 0;
	CHECK(refused(code_check(&q, &row, &cl, &why), "invalid_grant", "the code has expired"));
	row = ok;
	row.client_id = "app2";
	CHECK(refused(code_check(&q, &row, &cl, &why), "invalid_grant", "the code was issued to another client"));
	row.client_id = "ap";
	CHECK(refused(code_check(&q, &row, &cl, &why), "invalid_grant", "the code was issued to another client"));

	/* redirect_uri may be left out only with one registered URI the code is bound to. */
	struct code_req no_uri = { "c", NULL, VERIFIER, NULL };
	CHECK(code_check(&no_uri, &ok, &cl, &why) == TK_OK);
	CHECK(refused(code_check(&no_uri, &ok, &cl2, &why), "invalid_request", "redirect_uri is required"));
	row = ok;
	row.redirect_uri = "https://app.example.com/cb2";
	CHECK(refused(code_check(&no_uri, &row, &cl, &why), "invalid_request", "redirect_uri is required"));
	struct code_req other_uri = { "c", "https://app.example.com/cb/", VERIFIER, NULL };
	CHECK(refused(code_check(&other_uri, &ok, &cl, &why), "invalid_grant",
		      "redirect_uri does not match the authorization request"));
	struct code_req empty_uri = { "c", "", VERIFIER, NULL };
	CHECK(refused(code_check(&empty_uri, &ok, &cl, &why), "invalid_grant",
		      "redirect_uri does not match the authorization request"));

	/* PKCE S256. */
	struct code_req wrong = { "c", CB, "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", NULL };
	CHECK(refused(code_check(&wrong, &ok, &cl, &why), "invalid_grant",
		      "code_verifier does not match the code_challenge"));
	row = ok;
	row.challenge = VERIFIER; /* plain is not S256 */
	CHECK(refused(code_check(&q, &row, &cl, &why), "invalid_grant",
		      "code_verifier does not match the code_challenge"));
	row.challenge = "";
	CHECK(refused(code_check(&q, &row, &cl, &why), "invalid_grant",
		      "code_verifier does not match the code_challenge"));
	CHECK(pkce_ok(VERIFIER, CHALLENGE) && !pkce_ok(VERIFIER, CHALLENGE "A") && !pkce_ok(VERIFIER, "E9Mel"));
}

static void test_resource(void)
{
	struct cfg_resource res[2];
	struct config cfg;
	memset(res, 0, sizeof(res));
	memset(&cfg, 0, sizeof(cfg));
	res[0].path = "/mcp/github";
	res[1].path = "/mcp/sentry";
	cfg.public_url = "https://broker.example.com";
	cfg.resources = res;
	cfg.n_resources = 2;
	const char *bound = "https://broker.example.com/mcp/github", *d = "resource does not match";
	CHECK(resource_check(&cfg, NULL, bound, d, &why) == TK_OK);
	CHECK(resource_check(&cfg, bound, bound, d, &why) == TK_OK);
	/* Any canonical form of the bound resource. */
	CHECK(resource_check(&cfg, "HTTPS://Broker.Example.com:443/mcp/github/", bound, d, &why) == TK_OK);
	CHECK(refused(resource_check(&cfg, "https://broker.example.com/mcp/sentry", bound, d, &why), "invalid_target",
		      d));
	CHECK(refused(resource_check(&cfg, "https://broker.example.com/mcp/gitlab", bound, d, &why), "invalid_target",
		      d));
	CHECK(refused(resource_check(&cfg, "https://broker.example.com/mcp/github?x=1", bound, d, &why),
		      "invalid_target", d));
	CHECK(refused(resource_check(&cfg, "", bound, d, &why), "invalid_target", d));
	CHECK(refused(resource_check(&cfg, "github", bound, d, &why), "invalid_target", d));
	CHECK(refused(resource_check(&cfg, bound, "https://broker.example.com/mcp/sentry", d, &why), "invalid_target",
		      d));
}

/* A client_credentials request with resource and scope (either may be NULL). */
static enum tk_rc cc_form(const struct config *cfg, const struct cfg_client *mc, const char *resource,
			  const char *scope, struct cc_req *q)
{
	json_t *f = json_object();
	if (resource)
		json_object_set_new(f, "resource", json_string(resource));
	if (scope)
		json_object_set_new(f, "scope", json_string(scope));
	memset(q, 0, sizeof(*q));
	enum tk_rc rc = parse_client_credentials(cfg, f, mc, q, &why);
	json_decref(f);
	return rc;
}

static void test_client_credentials(void)
{
	struct cfg_scope_rule gh_scopes[] = { { "repo:read", NULL, 0 }, { "repo:write", NULL, 0 } };
	struct cfg_scope_rule se_scopes[] = { { "events:read", NULL, 0 } };
	struct cfg_resource res[3];
	struct config cfg;
	struct cc_req q;
	char *one[] = { "/mcp/github" }, *two[] = { "/mcp/github", "/mcp/sentry" };
	char *allowed[] = { "repo:read", "events:read", "unknown:scope" };
	struct cfg_client mc = { .resources = one, .n_resources = 1, .scopes = allowed, .n_scopes = 3 };
	const char *target = "the client may not get tokens for this resource";
	memset(res, 0, sizeof(res));
	memset(&cfg, 0, sizeof(cfg));
	res[0] = (struct cfg_resource){ .path = "/mcp/github", .scopes = gh_scopes, .n_scopes = 2 };
	res[1] = (struct cfg_resource){ .path = "/mcp/sentry", .scopes = se_scopes, .n_scopes = 1 };
	res[2] = (struct cfg_resource){ .path = "/mcp/gitlab", .scopes = gh_scopes, .n_scopes = 2 };
	cfg.public_url = "https://broker.example.com";
	cfg.resources = res;
	cfg.n_resources = 3;
	/* Its only resource is the default; the default scope is what it may
	 * get there (scopes the resource does not define are not granted). */
	CHECK(cc_form(&cfg, &mc, NULL, NULL, &q) == TK_OK && q.res == &res[0] && strcmp(q.scope, "repo:read") == 0);
	CHECK(cc_form(&cfg, &mc, "HTTPS://Broker.Example.com/mcp/github/", "", &q) == TK_OK && q.res == &res[0] &&
	      strcmp(q.scope, "repo:read") == 0);
	CHECK(cc_form(&cfg, &mc, NULL, " repo:read  repo:read ", &q) == TK_OK && strcmp(q.scope, "repo:read") == 0);
	/* A scope outside what the client may get, or that the resource lacks. */
	CHECK(refused(cc_form(&cfg, &mc, NULL, "repo:write", &q), "invalid_scope",
		      "scope is not one the client may get"));
	CHECK(refused(cc_form(&cfg, &mc, NULL, "events:read", &q), "invalid_scope",
		      "scope is not one the client may get"));
	CHECK(refused(cc_form(&cfg, &mc, NULL, "unknown:scope", &q), "invalid_scope",
		      "scope is not one the client may get"));
	CHECK(refused(cc_form(&cfg, &mc, NULL, "bad\"scope", &q), "invalid_scope",
		      "scope is not one the client may get"));
	/* A resource it was not given, unknown, or not a URL of this broker. */
	CHECK(refused(cc_form(&cfg, &mc, "https://broker.example.com/mcp/gitlab", NULL, &q), "invalid_target", target));
	CHECK(refused(cc_form(&cfg, &mc, "https://broker.example.com/mcp/nope", NULL, &q), "invalid_target", target));
	CHECK(refused(cc_form(&cfg, &mc, "https://evil.example.com/mcp/github", NULL, &q), "invalid_target", target));
	CHECK(refused(cc_form(&cfg, &mc, "/mcp/github", NULL, &q), "invalid_target", target));
	/* With two resources the request must name one. */
	mc.resources = two;
	mc.n_resources = 2;
	CHECK(refused(cc_form(&cfg, &mc, NULL, NULL, &q), "invalid_request", "resource is required"));
	CHECK(cc_form(&cfg, &mc, "https://broker.example.com/mcp/sentry", NULL, &q) == TK_OK && q.res == &res[1] &&
	      strcmp(q.scope, "events:read") == 0);
	/* No scope it may get there: an empty grant, not a refusal. */
	mc.n_scopes = 0;
	CHECK(cc_form(&cfg, &mc, "https://broker.example.com/mcp/sentry", NULL, &q) == TK_OK && q.scope[0] == '\0');
}

static enum tk_rc refresh_form(const char *token, const char *scope, struct refresh_req *q)
{
	json_t *f = json_object();
	if (token)
		json_object_set_new(f, "refresh_token", json_string(token));
	if (scope)
		json_object_set_new(f, "scope", json_string(scope));
	enum tk_rc rc = parse_refresh(f, q, &why);
	json_decref(f);
	return rc;
}

static void test_parse_refresh(void)
{
	struct refresh_req q;
	char s[LIM_TOKEN + 2];
	CHECK(refresh_form("mcpb_rt_x", NULL, &q) == TK_OK && q.scope == NULL && q.resource == NULL);
	CHECK(refused(refresh_form(NULL, NULL, &q), "invalid_request", "refresh_token is required"));
	CHECK(refused(refresh_form("", "read", &q), "invalid_request", "refresh_token is required"));
	memset(s, 't', LIM_TOKEN);
	s[LIM_TOKEN] = '\0';
	CHECK(refresh_form(s, NULL, &q) == TK_OK);
	s[LIM_TOKEN] = 't';
	s[LIM_TOKEN + 1] = '\0';
	CHECK(refused(refresh_form(s, NULL, &q), "invalid_request", "refresh_token is required"));
	/* An empty scope is an absent one. */
	CHECK(refresh_form("t", "", &q) == TK_OK && q.scope == NULL);
	CHECK(refresh_form("t", "   ", &q) == TK_OK && q.scope == NULL);
	CHECK(refresh_form("t", " read", &q) == TK_OK && q.scope != NULL);
}

static void test_refresh_check(void)
{
	struct client cl = client("app", one_uri, 1);
	struct refresh_row ok = { "g", "app", "https://b/mcp", "read write", NULL, NULL, 1, 0, 1, 0, 0 }, row;
	CHECK(refresh_check(&ok, &cl, "", &why) == TK_OK);
	/* Another client's token is refused before anything about it is told. */
	row = ok;
	row.client_id = "app2";
	row.revoked = 1;
	row.used = 1;
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_grant",
		      "the refresh token was issued to another client"));
	row = ok;
	row.revoked = 1;
	row.used = 1;
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_grant", "the authorization was revoked"));
	row = ok;
	row.active = 0;
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_grant", "the authorization was revoked"));
	row = ok;
	row.used = 1;
	row.live = 0;
	CHECK(refresh_check(&row, &cl, "", &why) == TK_REUSED);
	row = ok;
	row.live = 0;
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_grant", "the refresh token has expired"));
	/* A DPoP-bound refresh token (RFC 9449 section 5): only with a proof of
	 * its key, checked before reuse so that a thief without the key cannot
	 * make the grant die. */
	const char *k = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
	row = ok;
	row.jkt = k;
	CHECK(refresh_check(&row, &cl, k, &why) == TK_OK);
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_dpop_proof",
		      "the refresh token is DPoP-bound: a DPoP proof is required"));
	CHECK(refused(refresh_check(&row, &cl, "1ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", &why),
		      "invalid_dpop_proof", "the refresh token is bound to another DPoP key"));
	row.used = 1;
	CHECK(refused(refresh_check(&row, &cl, "", &why), "invalid_dpop_proof",
		      "the refresh token is DPoP-bound: a DPoP proof is required"));
	CHECK(refresh_check(&row, &cl, k, &why) == TK_REUSED);
	/* An unbound one takes a proof or none. */
	row = ok;
	CHECK(refresh_check(&row, &cl, k, &why) == TK_OK);
}

static void test_scope_narrow(void)
{
	char out[LIM_SCOPE + 1];
	const char *d = "scope may only be narrowed on refresh";
	CHECK(scope_narrow("read", "read write", out, &why) == TK_OK);
	CHECK_STR(out, "read");
	CHECK(scope_narrow("write  read", "read write", out, &why) == TK_OK);
	CHECK(strstr(out, "read") && strstr(out, "write") && !strstr(out, "  "));
	CHECK(scope_narrow("read read", "read", out, &why) == TK_OK);
	CHECK_STR(out, "read");
	CHECK(refused(scope_narrow("admin", "read write", out, &why), "invalid_scope", d));
	CHECK(refused(scope_narrow("read admin", "read write", out, &why), "invalid_scope", d));
	CHECK(refused(scope_narrow("rea", "read", out, &why), "invalid_scope", d));
	CHECK(refused(scope_narrow("read", "", out, &why), "invalid_scope", d));
}

static void test_successor(void)
{
	struct issued t, back;
	const char *hash = "\\x00112233";
	memset(&t, 0, sizeof(t));
	memset(&back, 0, sizeof(back));
	snprintf(t.access, sizeof(t.access), "mcpb_at_access");
	snprintf(t.refresh, sizeof(t.refresh), "mcpb_rt_refresh");
	snprintf(t.scope, sizeof(t.scope), "read write");
	char *blob = seal_successor("mcpb_rt_presented", hash, &t, time(NULL) + 600);
	CHECK(blob != NULL);
	CHECK(blob && !strstr(blob, "mcpb_at_access"));
	CHECK(blob && open_successor("mcpb_rt_presented", hash, blob, &back) == 0);
	CHECK_STR(back.access, "mcpb_at_access");
	CHECK_STR(back.refresh, "mcpb_rt_refresh");
	CHECK_STR(back.scope, "read write");
	CHECK(back.expires_in > 590 && back.expires_in <= 600);
	issued_wipe(&back);
	/* Only the holder of the rotated token reads it, only beside its hash. */
	CHECK(blob && open_successor("mcpb_rt_presenteD", hash, blob, &back) == -1);
	CHECK(blob && open_successor("mcpb_rt_presented", "\\x00112234", blob, &back) == -1);
	CHECK(back.access[0] == '\0');
	if (blob) {
		blob[strlen(blob) / 2] = blob[strlen(blob) / 2] == 'a' ? 'b' : 'a';
		CHECK(open_successor("mcpb_rt_presented", hash, blob, &back) == -1);
	}
	CHECK(open_successor("mcpb_rt_presented", hash, "", &back) == -1);
	free(blob);
	/* An expired successor answers expires_in 0, never a negative one. */
	blob = seal_successor("p", hash, &t, time(NULL) - 5);
	CHECK(blob && open_successor("p", hash, blob, &back) == 0 && back.expires_in == 0);
	free(blob);
	issued_wipe(&back);
}

int main(void)
{
	test_grant_type();
	test_parse_code();
	test_code_check();
	test_resource();
	test_client_credentials();
	test_parse_refresh();
	test_refresh_check();
	test_scope_narrow();
	test_successor();
	TEST_DONE();
}
