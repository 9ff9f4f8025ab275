#include "upstream.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "form.h"
#include "limits.h"
#include "log.h"

#define UP_USER_AGENT "mcp-broker/" MCPB_VERSION
#define UP_MAX_TOKEN 8192
#define UP_DISCOVERY_TTL_S 3600

struct preset {
	const char *name;
	const char *authorize, *token, *userinfo, *revoke;
	int pkce, identity_from_token, github;
	const char *extra;
};

static const struct preset presets[] = {
	{ "github", "https://github.com/login/oauth/authorize",
	  "https://github.com/login/oauth/access_token", "https://api.github.com/user",
	  "https://api.github.com/applications/{client_id}/grant", 1, 0, 1, NULL },
	{ "sentry", "https://sentry.io/oauth/authorize/", "https://sentry.io/oauth/token/",
	  "https://sentry.io/api/0/", NULL, 0, 1, 0, NULL },
	{ "google", "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
	  "https://openidconnect.googleapis.com/v1/userinfo", "https://oauth2.googleapis.com/revoke", 1, 0,
	  0, "access_type=offline&prompt=consent" },
	{ "oidc", NULL, NULL, NULL, NULL, 1, 0, 0, NULL },
};

/* ---- one bounded HTTP exchange ---------------------------------------- */

struct up_resp {
	long status;
	struct buf body;
	int too_large;
};

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

/* method: "GET", "POST" (form body) or "DELETE" (JSON body). */
static enum upstream_rc up_call(const struct cfg_upstream *up, const char *method, const char *url,
				const char *body, const char *content_type, const char *auth_header,
				const char *userpwd, struct up_resp *out)
{
	CURL *h = thread_handle();
	struct curl_slist *hdr = NULL;
	enum upstream_rc rc = UP_INTERNAL;
	buf_init(&out->body, LIM_UPSTREAM_BODY);
	out->body.secret = 1;
	out->status = 0;
	out->too_large = 0;
	if (!h)
		return UP_INTERNAL;
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
	if (auth_header)
		hdr = curl_slist_append(hdr, auth_header);
	if (content_type)
		hdr = curl_slist_append(hdr, content_type);
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
	if (cc == CURLE_OK)
		rc = UP_OK;
	else if (cc == CURLE_OPERATION_TIMEDOUT)
		rc = UP_TIMEOUT;
	else
		rc = UP_UNAVAILABLE;
	if (rc != UP_OK) {
		json_t *f = json_pack("{s:s, s:s, s:i, s:b}", "upstream", up->name, "curl", curl_easy_strerror(cc),
				      "status", (int)out->status, "too_large", out->too_large);
		log_event(LOG_WARN, "upstream.call_failed", NULL, f);
	}
out:
	/* The handle must not keep pointers to this call's data. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_USERPWD, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_slist_free_all(hdr);
	return rc;
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

static int discover(const struct cfg_upstream *up, struct discovered *out)
{
	pthread_mutex_lock(&disc_lock);
	for (size_t i = 0; i < ndisc; i++)
		if (strcmp(disc[i].name, up->name) == 0 && strcmp(disc[i].issuer, up->issuer) == 0 &&
		    now_s() - disc[i].fetched < UP_DISCOVERY_TTL_S) {
			*out = disc[i];
			pthread_mutex_unlock(&disc_lock);
			return 0;
		}
	pthread_mutex_unlock(&disc_lock);

	char url[1200];
	size_t n = strlen(up->issuer);
	snprintf(url, sizeof(url), "%s%s.well-known/openid-configuration", up->issuer,
		 n && up->issuer[n - 1] == '/' ? "" : "/");
	struct up_resp r;
	int rc = -1;
	if (up_call(up, "GET", url, NULL, NULL, NULL, NULL, &r) != UP_OK || r.status != 200)
		goto out;
	json_t *doc = json_loadb(r.body.ptr ? r.body.ptr : "", r.body.len, 0, NULL);
	const char *iss = json_string_value(json_object_get(doc, "issuer"));
	if (!iss || strcmp(iss, up->issuer) != 0) {
		log_msg(LOG_ERROR, "upstream.discovery_mismatch", NULL,
			"upstream %s: discovery document issuer does not equal the configured issuer", up->name);
		json_decref(doc);
		goto out;
	}
	memset(out, 0, sizeof(*out));
	copy_str(out->name, sizeof(out->name), up->name);
	copy_str(out->issuer, sizeof(out->issuer), up->issuer);
	copy_str(out->authorize, sizeof(out->authorize), json_string_value(json_object_get(doc, "authorization_endpoint")));
	copy_str(out->token, sizeof(out->token), json_string_value(json_object_get(doc, "token_endpoint")));
	copy_str(out->userinfo, sizeof(out->userinfo), json_string_value(json_object_get(doc, "userinfo_endpoint")));
	copy_str(out->revoke, sizeof(out->revoke), json_string_value(json_object_get(doc, "revocation_endpoint")));
	out->fetched = now_s();
	json_decref(doc);
	pthread_mutex_lock(&disc_lock);
	size_t slot = ndisc;
	for (size_t i = 0; i < ndisc; i++)
		if (strcmp(disc[i].name, up->name) == 0)
			slot = i;
	if (slot < sizeof(disc) / sizeof(disc[0])) {
		disc[slot] = *out;
		if (slot == ndisc)
			ndisc++;
	}
	pthread_mutex_unlock(&disc_lock);
	rc = 0;
out:
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

char *upstream_authorize_url(const struct cfg_upstream *up, const struct upstream_ep *ep,
			     const char *redirect_uri, const char *state, const char *challenge)
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
	if (challenge && (form_add(&q, "code_challenge", challenge) < 0 ||
			  form_add(&q, "code_challenge_method", "S256") < 0))
		goto fail;
	if (ep->extra_authorize_params &&
	    (buf_add(&q, "&", 1) < 0 || buf_adds(&q, ep->extra_authorize_params) < 0))
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

/* ---- token answers ---------------------------------------------------- */

static json_t *parse_answer(struct up_resp *r)
{
	if (!r->body.ptr || r->body.len == 0)
		return NULL;
	json_t *j = json_loadb(r->body.ptr, r->body.len, JSON_REJECT_DUPLICATES, NULL);
	if (j && json_is_object(j))
		return j;
	json_decref(j);
	int dup = 0;
	j = form_parse(r->body.ptr, r->body.len, &dup); /* GitHub's default answer */
	if (j && !dup && (json_object_get(j, "access_token") || json_object_get(j, "error")))
		return j;
	json_decref(j);
	return NULL;
}

static char *dup_bounded(const char *s)
{
	if (!s || !*s || strlen(s) > UP_MAX_TOKEN)
		return NULL;
	return strdup(s);
}

/* Interprets a token endpoint answer. for_refresh: errors that mean the
 * grant is dead upstream become UP_REJECTED, the rest UP_UNAVAILABLE. */
static enum upstream_rc token_answer(const struct cfg_upstream *up, struct up_resp *r,
				     struct upstream_tokens *out, const char *what)
{
	enum upstream_rc rc = UP_UNAVAILABLE;
	json_t *j = parse_answer(r);
	const char *err = json_string_value(json_object_get(j, "error"));
	memset(out, 0, sizeof(*out));
	out->expires_in = -1;
	if (r->status == 429 || r->status >= 500 || !j) {
		rc = UP_UNAVAILABLE;
	} else if (err || r->status == 400 || r->status == 401 || r->status == 403) {
		/* invalid_grant, bad_verification_code, bad_refresh_token, access_denied, ... */
		rc = err && (strcmp(err, "temporarily_unavailable") == 0 || strcmp(err, "server_error") == 0 ||
			     strcmp(err, "slow_down") == 0)
			     ? UP_UNAVAILABLE
			     : UP_REJECTED;
	} else if (r->status == 200 || r->status == 201) {
		out->access_token = dup_bounded(json_string_value(json_object_get(j, "access_token")));
		out->refresh_token = dup_bounded(json_string_value(json_object_get(j, "refresh_token")));
		const char *scope = json_string_value(json_object_get(j, "scope"));
		out->scope = scope && strlen(scope) < 2048 ? strdup(scope) : NULL;
		json_t *exp = json_object_get(j, "expires_in");
		if (json_is_integer(exp) && json_integer_value(exp) > 0)
			out->expires_in = (long)json_integer_value(exp);
		else if (json_is_string(exp)) {
			char *end = NULL;
			long v = strtol(json_string_value(exp), &end, 10);
			if (end && !*end && v > 0 && v < 100L * 365 * 86400)
				out->expires_in = v;
		}
		json_t *user = json_object_get(j, "user");
		if (json_is_object(user))
			out->user = json_incref(user);
		rc = out->access_token ? UP_OK : UP_UNAVAILABLE;
	}
	if (rc != UP_OK) {
		json_t *f = json_pack("{s:s, s:s, s:i, s:s?}", "upstream", up->name, "call", what, "status",
				      (int)r->status, "error", err && strlen(err) < 64 ? err : NULL);
		log_event(LOG_WARN, "upstream.token_error", NULL, f);
		upstream_tokens_free(out);
	}
	json_decref(j);
	return rc;
}

static enum upstream_rc token_call(const struct cfg_upstream *up, const struct upstream_ep *ep,
				   struct buf *form, struct upstream_tokens *out, const char *what)
{
	struct up_resp r;
	if (form_add(form, "client_id", up->client_id) < 0 ||
	    form_add(form, "client_secret", up->client_secret) < 0) {
		buf_free(form);
		return UP_INTERNAL;
	}
	enum upstream_rc rc = up_call(up, "POST", ep->token, form->ptr,
				      "Content-Type: application/x-www-form-urlencoded", NULL, NULL, &r);
	buf_free(form);
	if (rc == UP_OK)
		rc = token_answer(up, &r, out, what);
	buf_free(&r.body);
	return rc;
}

enum upstream_rc upstream_exchange_code(const struct cfg_upstream *up, const struct upstream_ep *ep,
					const char *code, const char *redirect_uri,
					const char *verifier, struct upstream_tokens *out)
{
	struct buf f;
	buf_init(&f, 16384);
	f.secret = 1;
	memset(out, 0, sizeof(*out));
	if (form_add(&f, "grant_type", "authorization_code") < 0 || form_add(&f, "code", code) < 0 ||
	    form_add(&f, "redirect_uri", redirect_uri) < 0 ||
	    (verifier && form_add(&f, "code_verifier", verifier) < 0)) {
		buf_free(&f);
		return UP_INTERNAL;
	}
	return token_call(up, ep, &f, out, "exchange");
}

enum upstream_rc upstream_refresh(const struct cfg_upstream *up, const struct upstream_ep *ep,
				  const char *refresh_token, struct upstream_tokens *out)
{
	struct buf f;
	buf_init(&f, 16384);
	f.secret = 1;
	memset(out, 0, sizeof(*out));
	if (form_add(&f, "grant_type", "refresh_token") < 0 ||
	    form_add(&f, "refresh_token", refresh_token) < 0) {
		buf_free(&f);
		return UP_INTERNAL;
	}
	return token_call(up, ep, &f, out, "refresh");
}

static char *id_string(json_t *v)
{
	char tmp[64];
	if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= 255)
		return strdup(json_string_value(v));
	if (json_is_integer(v)) {
		snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return strdup(tmp);
	}
	return NULL;
}

static char *opt_string(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s && strlen(s) <= 255 ? strdup(s) : NULL;
}

enum upstream_rc upstream_identity(const struct cfg_upstream *up, const struct upstream_ep *ep,
				   const struct upstream_tokens *tok, struct upstream_identity *out)
{
	memset(out, 0, sizeof(*out));
	json_t *doc = NULL;
	enum upstream_rc rc = UP_UNAVAILABLE;
	if (ep->identity_from_token && tok->user) {
		doc = json_incref(tok->user);
	} else if (ep->userinfo[0]) {
		struct up_resp r;
		char auth[UP_MAX_TOKEN + 32];
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok->access_token);
		rc = up_call(up, "GET", ep->userinfo, NULL, NULL, auth, NULL, &r);
		crypto_wipe(auth, sizeof(auth));
		if (rc == UP_OK && r.status == 200)
			doc = json_loadb(r.body.ptr ? r.body.ptr : "", r.body.len, 0, NULL);
		else if (rc == UP_OK)
			rc = (r.status == 401 || r.status == 403) ? UP_REJECTED : UP_UNAVAILABLE;
		buf_free(&r.body);
		if (!doc)
			return rc == UP_OK ? UP_UNAVAILABLE : rc;
		/* Sentry's /api/0/ wraps the user. */
		if (json_is_object(json_object_get(doc, "user")) && !json_object_get(doc, "sub") &&
		    !json_object_get(doc, "id")) {
			json_t *u = json_incref(json_object_get(doc, "user"));
			json_decref(doc);
			doc = u;
		}
	} else {
		return UP_INTERNAL;
	}
	json_t *sub = json_object_get(doc, "sub");
	if (!sub)
		sub = json_object_get(doc, "id");
	out->subject = id_string(sub);
	out->login = opt_string(doc, "login");
	if (!out->login)
		out->login = opt_string(doc, "preferred_username");
	if (!out->login)
		out->login = opt_string(doc, "username");
	out->email = opt_string(doc, "email");
	out->name = opt_string(doc, "name");
	json_decref(doc);
	if (!out->subject) {
		upstream_identity_free(out);
		log_msg(LOG_WARN, "upstream.identity_missing", NULL, "upstream %s: no subject in identity", up->name);
		return UP_UNAVAILABLE;
	}
	return UP_OK;
}

enum upstream_rc upstream_revoke(const struct cfg_upstream *up, const struct upstream_ep *ep,
				 const char *access_token, const char *refresh_token)
{
	if (!ep->revoke[0])
		return UP_OK;
	struct up_resp r;
	enum upstream_rc rc;
	if (ep->github) {
		/* DELETE /applications/{client_id}/grant with Basic client credentials. */
		char url[1400], userpwd[2048];
		const char *tpl = strstr(ep->revoke, "{client_id}");
		char *cid = curl_easy_escape(NULL, up->client_id, 0);
		if (!cid)
			return UP_INTERNAL;
		if (tpl)
			snprintf(url, sizeof(url), "%.*s%s%s", (int)(tpl - ep->revoke), ep->revoke, cid, tpl + 11);
		else
			snprintf(url, sizeof(url), "%s", ep->revoke);
		curl_free(cid);
		snprintf(userpwd, sizeof(userpwd), "%s:%s", up->client_id, up->client_secret);
		json_t *b = json_pack("{s:s}", "access_token", access_token);
		char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
		json_decref(b);
		if (!body)
			return UP_INTERNAL;
		rc = up_call(up, "DELETE", url, body, "Content-Type: application/json", NULL, userpwd, &r);
		crypto_wipe(body, strlen(body));
		free(body);
		crypto_wipe(userpwd, sizeof(userpwd));
		if (rc == UP_OK && r.status != 204 && r.status != 200 && r.status != 404)
			rc = r.status == 429 || r.status >= 500 ? UP_UNAVAILABLE : UP_REJECTED;
	} else {
		struct buf f;
		buf_init(&f, 16384);
		f.secret = 1;
		const char *tok = refresh_token ? refresh_token : access_token;
		if (form_add(&f, "token", tok) < 0 ||
		    form_add(&f, "token_type_hint", refresh_token ? "refresh_token" : "access_token") < 0 ||
		    form_add(&f, "client_id", up->client_id) < 0 ||
		    form_add(&f, "client_secret", up->client_secret) < 0) {
			buf_free(&f);
			return UP_INTERNAL;
		}
		rc = up_call(up, "POST", ep->revoke, f.ptr, "Content-Type: application/x-www-form-urlencoded",
			     NULL, NULL, &r);
		buf_free(&f);
		if (rc == UP_OK && r.status != 200 && r.status != 204)
			rc = r.status == 429 || r.status >= 500 ? UP_UNAVAILABLE : UP_REJECTED;
	}
	buf_free(&r.body);
	return rc;
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
