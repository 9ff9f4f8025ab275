#include "cimd.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app_type.h"
#include "jparse.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "num.h"
#include "uri.h"

int cimd_is_url(const char *client_id)
{
	/* http:// too (any case), so that check_url refuses it with its own
	 * reason instead of it passing for an unregistered opaque id. */
	return client_id && (strncasecmp(client_id, "https://", 8) == 0 || strncasecmp(client_id, "http://", 7) == 0);
}

/* 1 when a Content-Type is application/json, parameters allowed
 * ("application/jsonp" and "application/json-seq" are other types). */
static int is_json_type(const char *ctype)
{
	if (!ctype || strncasecmp(ctype, "application/json", 16) != 0)
		return 0;
	return ctype[16] == '\0' || ctype[16] == ';' || ctype[16] == ' ' || ctype[16] == '\t';
}

/* The reason of an allocation failure while fetching or checking a
 * document: the lookup is then unavailable (503), not refused. */
static const char cimd_oom[] = "out of memory";

/* ---- address policy ----------------------------------------------------- */

/* Ranges never fetched from: RFC 6890 special-purpose and private space. */
static const char *const blocked_v4[] = {
	"0.0.0.0/8",     "10.0.0.0/8",      "100.64.0.0/10",  "127.0.0.0/8",    "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24",    "192.0.2.0/24",   "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",    "240.0.0.0/4",
};
static const char *const blocked_v6[] = {
	"::/128",        "::1/128",  "64:ff9b:1::/48", "100::/64",  "2001::/23",
	"2001:db8::/32", "fc00::/7", "fe80::/10",      "fec0::/10", "ff00::/8",
};

static int v4_blocked(const struct config *cfg, const uint8_t a[4])
{
	struct cidr c;
	for (size_t i = 0; i < cfg->registration.n_cimd_allow_private_cidrs; i++)
		if (cidr_parse(cfg->registration.cimd_allow_private_cidrs[i], &c) == 0 && cidr_contains(&c, AF_INET, a))
			return 0;
	for (size_t i = 0; i < sizeof(blocked_v4) / sizeof(blocked_v4[0]); i++)
		if (cidr_parse(blocked_v4[i], &c) == 0 && cidr_contains(&c, AF_INET, a))
			return 1;
	return 0;
}

int cimd_address_allowed(const struct config *cfg, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		return !v4_blocked(cfg, (const uint8_t *)&in->sin_addr);
	}
	if (sa->sa_family != AF_INET6)
		return 0;
	const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
	/* IPv4-mapped, NAT64 and IPv4-compatible forms hide an IPv4 address. */
	if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
		return !v4_blocked(cfg, a + 12);
	static const uint8_t zero12[12] = { 0 };
	if (memcmp(a, zero12, 12) == 0 && (a[12] | a[13] | a[14] | a[15]) > 1)
		return !v4_blocked(cfg, a + 12);
	struct cidr c;
	for (size_t i = 0; i < cfg->registration.n_cimd_allow_private_cidrs; i++)
		if (cidr_parse(cfg->registration.cimd_allow_private_cidrs[i], &c) == 0 &&
		    cidr_contains(&c, AF_INET6, a))
			return 1;
	for (size_t i = 0; i < sizeof(blocked_v6) / sizeof(blocked_v6[0]); i++)
		if (cidr_parse(blocked_v6[i], &c) == 0 && cidr_contains(&c, AF_INET6, a))
			return 0;
	return 1;
}

int cimd_host_matches(const char *pattern, const char *host)
{
	/* A fully qualified name's trailing dot names the same host
	 * ("evil.example.com." must not slip past a deny of "evil.example.com"). */
	size_t pl = strlen(pattern), hl = strlen(host);
	while (pl && pattern[pl - 1] == '.')
		pl--;
	while (hl && host[hl - 1] == '.')
		hl--;
	if (pl > 2 && strncmp(pattern, "*.", 2) == 0) {
		size_t sl = pl - 1; /* ".example.com" */
		return hl > sl && strncasecmp(host + hl - sl, pattern + 1, sl) == 0;
	}
	return pl == hl && strncasecmp(pattern, host, hl) == 0;
}

/* ---- the fetch ---------------------------------------------------------- */

struct fetch {
	const struct config *cfg;
	struct buf body;
	int blocked, too_large;
};

static curl_socket_t open_socket(void *cls, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct fetch *f = cls;
	if (purpose != CURLSOCKTYPE_IPCXN || !cimd_address_allowed(f->cfg, &addr->addr)) {
		f->blocked = 1;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t on_body(char *data, size_t size, size_t n, void *cls)
{
	struct fetch *f = cls;
	if (buf_add(&f->body, data, size * n) < 0) {
		f->too_large = 1;
		return 0;
	}
	return size * n;
}

/* max-age from Cache-Control (no-store/no-cache: 0); -1 when absent or not
 * delta-seconds (1*DIGIT). A value too large to hold is 2^31 (RFC 9111
 * section 1.2.2); the caller clamps it to cimd_max_ttl_s anyway. */
static long max_age(const char *cc)
{
	if (!cc)
		return -1;
	if (strstr(cc, "no-store") || strstr(cc, "no-cache"))
		return 0;
	const char *m = strstr(cc, "max-age=");
	if (!m)
		return -1;
	m += 8;
	size_t n = strspn(m, "0123456789");
	long long v = 0;
	if (n == 0)
		return -1;
	if (n > 10 || num_parse_n(m, n, 0, 2147483648LL, &v) < 0)
		return 2147483648L;
	return (long)v;
}

struct header_cb {
	char cache_control[256];
};

static size_t on_header(char *data, size_t size, size_t n, void *cls)
{
	struct header_cb *h = cls;
	size_t len = size * n;
	if (len > 14 && strncasecmp(data, "cache-control:", 14) == 0) {
		size_t vl = len - 14;
		if (vl >= sizeof(h->cache_control))
			vl = sizeof(h->cache_control) - 1;
		memcpy(h->cache_control, data + 14, vl);
		h->cache_control[vl] = '\0';
	}
	return len;
}

/* The fetched bytes: one JSON object, no duplicate keys. */
static const char *parse_doc(const char *body, size_t len, json_t **doc)
{
	*doc = jparse(body, len, 0, LIM_JSON_DEPTH);
	if (json_is_object(*doc))
		return NULL;
	json_decref(*doc);
	*doc = NULL;
	return "the client metadata document is not a JSON object";
}

/* A handle that fetches url as the policy says (https only, no redirect,
 * no proxy, bounded, connecting only to allowed addresses) into f and hc.
 * NULL when out of memory; *resolve and *hdr (freed by the caller, even
 * then) are the lists it uses. */
static CURL *fetch_handle(const struct config *cfg, const char *url, size_t limit, struct fetch *f,
			  struct header_cb *hc, struct curl_slist **resolve, struct curl_slist **hdr)
{
	for (size_t i = 0; i < cfg->registration.n_cimd_resolve; i++) {
		struct curl_slist *l = curl_slist_append(*resolve, cfg->registration.cimd_resolve[i]);
		if (!l)
			return NULL;
		*resolve = l;
	}
	if (!(*hdr = curl_slist_append(NULL, "Accept: application/json")))
		return NULL;
	CURL *h = curl_easy_init();
	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, cfg->registration.cimd_timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 cfg->registration.cimd_timeout_ms < 3000 ? cfg->registration.cimd_timeout_ms : 3000L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)limit);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, f);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, hc);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mcp-broker/" MCPB_VERSION " (client metadata)");
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	if (*resolve)
		curl_easy_setopt(h, CURLOPT_RESOLVE, *resolve);
	if (cfg->registration.cimd_ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, cfg->registration.cimd_ca_file);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdr);
	return h;
}

/* What a finished transfer says of the document: NULL when it is a 200
 * application/json answer within the limits, else a fixed reason. */
static const char *fetch_verdict(const struct fetch *f, CURLcode rc, long status, const char *ctype)
{
	if (f->blocked)
		return "the client_id host resolves to a forbidden address";
	if (f->too_large || rc == CURLE_FILESIZE_EXCEEDED)
		return "the client metadata document is too large";
	if (rc == CURLE_OPERATION_TIMEDOUT)
		return "the client metadata document did not arrive in time";
	if (rc != CURLE_OK)
		return "the client metadata document could not be fetched";
	if (status >= 300 && status < 400)
		return "the client metadata URL redirects";
	if (status != 200)
		return "the client metadata URL did not answer 200";
	if (!is_json_type(ctype))
		return "the client metadata document is not application/json";
	return NULL;
}

/* The cache lifetime of a fetched document: its max-age (3600 s when it
 * has none) within [cimd_min_ttl_s, cimd_max_ttl_s]. */
static long cache_ttl(const struct config *cfg, const char *cache_control)
{
	long age = max_age(cache_control[0] ? cache_control : NULL);
	long ttl = age < 0 ? 3600 : age;
	if (ttl < cfg->registration.cimd_min_ttl_s)
		ttl = cfg->registration.cimd_min_ttl_s;
	if (ttl > cfg->registration.cimd_max_ttl_s)
		ttl = cfg->registration.cimd_max_ttl_s;
	return ttl;
}

/* Fetches url (a client metadata document, or a JWKS: what, for the log),
 * at most limit bytes; on success *doc is the parsed object and *ttl the
 * cache lifetime. Returns NULL or a fixed reason. */
static const char *fetch_doc(const struct config *cfg, const char *url, size_t limit, const char *what, json_t **doc,
			     long *ttl)
{
	struct fetch f = { .cfg = cfg };
	struct header_cb hc = { "" };
	struct curl_slist *resolve = NULL, *hdr = NULL;
	const char *why = cimd_oom;
	long status = 0;
	buf_init(&f.body, limit);
	CURL *h = fetch_handle(cfg, url, limit, &f, &hc, &resolve, &hdr);
	if (h) {
		CURLcode rc = curl_easy_perform(h);
		char *ctype = NULL;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
		why = fetch_verdict(&f, rc, status, ctype);
	}
	if (!why) {
		why = parse_doc(f.body.ptr ? f.body.ptr : "", f.body.len, doc);
		*ttl = cache_ttl(cfg, hc.cache_control);
	}
	json_t *lf = json_pack("{s:s, s:s, s:i, s:s?}", "document", what, "result", why ? "refused" : "ok", "status",
			       (int)status, "why", why);
	log_event(why ? LOG_WARN : LOG_INFO, "cimd.fetch", NULL, lf);
	metrics_count("cimd_fetch_total", why ? "refused" : "ok", 1);
	curl_slist_free_all(hdr);
	curl_slist_free_all(resolve);
	curl_easy_cleanup(h);
	buf_free(&f.body);
	return why;
}

/* Fetches in flight on this node. Each one holds an HTTP worker thread and
 * the caller's database connection for up to cimd_timeout_ms, talking to a
 * host that an anonymous party chose: at most half of the workers or of the
 * pool may be spent on them, so that a tarpit document host cannot stall the
 * node (everything else, cached documents included, keeps being served). */
static long fetches_in_flight;

static int fetch_slot_take(const struct config *cfg)
{
	long cap = cfg->http.threads < cfg->database.pool_size ? cfg->http.threads : cfg->database.pool_size;
	cap /= 2;
	if (cap < 1)
		cap = 1;
	if (__atomic_add_fetch(&fetches_in_flight, 1, __ATOMIC_ACQ_REL) > cap) {
		__atomic_sub_fetch(&fetches_in_flight, 1, __ATOMIC_ACQ_REL);
		return 0;
	}
	return 1;
}

/* The allow and deny lists on the client_id host (deny wins). NULL or a
 * fixed reason. */
static const char *host_policy(const struct config *cfg, const char *host)
{
	for (size_t i = 0; i < cfg->registration.n_cimd_deny_hosts; i++)
		if (cimd_host_matches(cfg->registration.cimd_deny_hosts[i], host))
			return "the client_id host is not allowed by policy";
	if (!cfg->registration.n_cimd_allow_hosts)
		return NULL;
	for (size_t i = 0; i < cfg->registration.n_cimd_allow_hosts; i++)
		if (cimd_host_matches(cfg->registration.cimd_allow_hosts[i], host))
			return NULL;
	return "the client_id host is not allowed by policy";
}

/* An IP literal host is checked now, without a connection attempt. NULL or
 * a fixed reason. */
static const char *ip_literal_check(const struct config *cfg, const char *host)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;
	char lit[64];
	size_t hl = strlen(host);
	memset(&s6, 0, sizeof(s6));
	memset(&s4, 0, sizeof(s4));
	if (host[0] == '[' && hl > 2 && hl - 2 < sizeof(lit)) {
		memcpy(lit, host + 1, hl - 2);
		lit[hl - 2] = '\0';
		s6.sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, lit, &s6.sin6_addr) == 1 && !cimd_address_allowed(cfg, (struct sockaddr *)&s6))
			return "the client_id host resolves to a forbidden address";
		return NULL;
	}
	s4.sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &s4.sin_addr) == 1 && !cimd_address_allowed(cfg, (struct sockaddr *)&s4))
		return "the client_id host resolves to a forbidden address";
	return NULL;
}

/* The client_id URL itself: https, a host the policy allows, a path, no
 * fragment, query or credentials; IP literals in forbidden ranges are
 * refused before any connection. */
static const char *check_url(const struct config *cfg, const char *url)
{
	if (strlen(url) > LIM_CLIENT_ID)
		return "the client_id URL is too long";
	CURLU *u = curl_url();
	char *host = NULL, *path = NULL, *query = NULL, *frag = NULL, *user = NULL, *pass = NULL, *scheme = NULL;
	const char *why = NULL;
	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		why = "the client_id is not a valid URL";
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	curl_url_get(u, CURLUPART_QUERY, &query, 0);
	curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
	if (!scheme || strcmp(scheme, "https") != 0)
		why = "the client_id URL must be https";
	else if (strchr(url, '#') || frag)
		why = "the client_id URL must not have a fragment";
	else if (user || pass || strchr(url, '@'))
		why = "the client_id URL must not contain credentials";
	else if (query)
		why = "the client_id URL must not have a query";
	else if (!path || strcmp(path, "/") == 0 || !*path)
		why = "the client_id URL must have a path";
	/* Exactly "https://host": curl also reads https:/host and https:///host,
	 * which are other strings naming the same document. */
	else if (strncasecmp(url, "https://", 8) != 0 || url[8] == '/')
		why = "the client_id URL must begin with https:// and the host";
	else if (!host || !*host)
		why = "the client_id URL has no host";
	if (why)
		goto out;
	if (!(why = host_policy(cfg, host)))
		why = ip_literal_check(cfg, host);
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(path);
	curl_free(query);
	curl_free(frag);
	curl_free(user);
	curl_free(pass);
	curl_url_cleanup(u);
	return why;
}

/* The document's token_endpoint_auth_method: absent or "none", or
 * "private_key_jwt" with exactly one of jwks (an object) and jwks_uri (an
 * https URL the fetch policy allows), which go to out. */
static const char *doc_auth(const struct config *cfg, const json_t *doc, struct client *out)
{
	const json_t *m = json_object_get(doc, "token_endpoint_auth_method");
	const json_t *jwks = json_object_get(doc, "jwks"), *uri = json_object_get(doc, "jwks_uri");
	const char *method = json_string_value(m);
	if (!m || (method && strcmp(method, "none") == 0))
		return jwks || uri ? "jwks and jwks_uri need token_endpoint_auth_method \"private_key_jwt\"" : NULL;
	if (!method || strcmp(method, "private_key_jwt") != 0)
		return "token_endpoint_auth_method must be \"none\" or \"private_key_jwt\"";
	if (!jwks == !uri)
		return "private_key_jwt needs exactly one of jwks and jwks_uri";
	if (uri && (!json_is_string(uri) || check_url(cfg, json_string_value(uri))))
		return "the document's jwks_uri is not acceptable";
	if (jwks && (!json_is_object(jwks) || !json_is_array(json_object_get(jwks, "keys"))))
		return "the document's jwks is not a JWKS object";
	char *text = jwks ? json_dumps(jwks, JSON_COMPACT) : NULL;
	int rc = jwks && !text ? -1 : client_set_keys(out, text, json_string_value(uri));
	free(text);
	return rc < 0 ? cimd_oom : NULL;
}

/* Validates the document for client_id into out. */
static const char *check_doc(const struct config *cfg, const char *client_id, json_t *doc, struct client *out,
			     json_t **uris_out)
{
	const char *id = json_string_value(json_object_get(doc, "client_id"));
	if (!id || strcmp(id, client_id) != 0)
		return "the document's client_id differs from its URL";
	json_t *ru = json_object_get(doc, "redirect_uris");
	if (!json_is_array(ru) || json_array_size(ru) == 0 || json_array_size(ru) > LIM_REDIRECT_URIS)
		return "the document has no valid redirect_uris";
	size_t i;
	json_t *v;
	const char *why = NULL;
	json_array_foreach(ru, i, v)
	{
		if (!json_is_string(v) || uri_redirect_allowed(json_string_value(v), &why) < 0 ||
		    !client_redirect_policy_ok(cfg, json_string_value(v)))
			return "the document's redirect_uris are not acceptable";
	}
	const char *app_type = NULL;
	switch (app_type_check(json_object_get(doc, "application_type"), ru, &app_type)) {
	case APP_TYPE_OK: break;
	case APP_TYPE_BAD_VALUE: return "the document's application_type must be web or native";
	default: return "the document's application_type does not allow its redirect_uris";
	}
	if ((why = doc_auth(cfg, doc, out)))
		return why;
	json_t *gt = json_object_get(doc, "grant_types");
	if (gt) {
		if (!json_is_array(gt))
			return "the document's grant_types are not acceptable";
		json_array_foreach(gt, i, v)
		{
			const char *g = json_string_value(v);
			if (!g || (strcmp(g, "authorization_code") != 0 && strcmp(g, "refresh_token") != 0))
				return "the document's grant_types are not acceptable";
		}
	}
	json_t *name = json_object_get(doc, "client_name");
	if (name && (!json_is_string(name) || json_string_length(name) > LIM_CLIENT_NAME))
		return "the document's client_name is not acceptable";
	snprintf(out->client_id, sizeof(out->client_id), "%s", client_id);
	snprintf(out->kind, sizeof(out->kind), "cimd");
	*uris_out = json_incref(ru);
	return NULL;
}

const char *cimd_check_url(const struct config *cfg, const char *url)
{
	return check_url(cfg, url);
}

long cimd_max_age(const char *cache_control)
{
	return max_age(cache_control);
}

const char *cimd_check_document(const struct config *cfg, const char *client_id, const char *body, size_t len,
				struct client *out, json_t **uris)
{
	json_t *doc = NULL;
	const char *why = parse_doc(body, len, &doc);
	*uris = NULL;
	if (!why)
		why = check_doc(cfg, client_id, doc, out, uris);
	json_decref(doc);
	return why;
}

/* The cached row of client_id when a node fetched its document and it is
 * still fresh: 1 (out's name, URIs and disabled filled), 0 none, -1 error. */
static int cache_get(struct db_conn *c, const char *client_id, struct client *out)
{
	static struct db_stmt q_fresh = DB_STMT(
		"SELECT client_name, array_to_json(redirect_uris), disabled_at IS NOT NULL, "
		"token_endpoint_auth_method = 'private_key_jwt', metadata->'jwks', metadata->>'jwks_uri' FROM clients "
		"WHERE client_id = $1 AND kind = 'cimd' AND cimd_expires_at > now()");
	const char *p[] = { client_id };
	json_t *uris = NULL;
	int rc = -1;
	PGresult *res = db_exec_ok(c, &q_fresh, 1, p);
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		rc = 0;
		goto out;
	}
	out->disabled = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	if (!PQgetisnull(res, 0, 0) && !(out->name = strdup(PQgetvalue(res, 0, 0))))
		goto out;
	uris = jparse_str(PQgetvalue(res, 0, 1), 0, LIM_JSON_DEPTH);
	if (client_set_uris_json(out, uris) < 0)
		goto out;
	/* A private_key_jwt row without its keys fails closed: never a public client. */
	const char *jwks = PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4);
	const char *jwks_uri = PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5);
	if (strcmp(PQgetvalue(res, 0, 3), "t") == 0 &&
	    ((!jwks && !jwks_uri) || client_set_keys(out, jwks, jwks_uri) < 0))
		goto out;
	rc = 1;
out:
	json_decref(uris);
	PQclear(res);
	return rc;
}

/* Fetches client_id's document in one of the node's fetch slots and checks
 * it: CLIENT_FOUND with *doc, *uris (new references) and *ttl set;
 * CLIENT_UNKNOWN (refused) or CLIENT_UNAVAILABLE (no slot free) with *why. */
static enum client_find fetch_checked(const struct config *cfg, const char *client_id, json_t **doc, json_t **uris,
				      long *ttl, struct client *out, const char **why)
{
	if (!fetch_slot_take(cfg)) {
		/* Busy, not invalid: the caller answers 503 as for a database
		 * outage, and the client may simply retry. */
		log_msg(LOG_WARN, "cimd.busy", NULL, "too many client metadata fetches in flight");
		metrics_count("cimd_fetch_total", "busy", 1);
		*why = "too many client metadata documents are being fetched; try again in a moment";
		return CLIENT_UNAVAILABLE;
	}
	*why = fetch_doc(cfg, client_id, LIM_CIMD_BODY, "client metadata", doc, ttl);
	__atomic_sub_fetch(&fetches_in_flight, 1, __ATOMIC_ACQ_REL);
	if (!*why)
		*why = check_doc(cfg, client_id, *doc, out, uris);
	return !*why ? CLIENT_FOUND : *why == cimd_oom ? CLIENT_UNAVAILABLE : CLIENT_UNKNOWN;
}

/* Caches a checked document for every node and completes out from it.
 * CLIENT_UNKNOWN (with *why) when the id belongs to a client of another kind. */
static enum client_find cache_put(struct db_conn *c, const char *client_id, const json_t *doc, const json_t *uris,
				  long ttl, struct client *out, const char **why)
{
	static struct db_stmt q_store = DB_STMT(
		"INSERT INTO clients(client_id, kind, client_name, redirect_uris, token_endpoint_auth_method, "
		"metadata, cimd_expires_at) VALUES ($1, 'cimd', $2, array(SELECT json_array_elements_text($3::json)), "
		"$6, $4::jsonb, now() + make_interval(secs => $5::int)) "
		"ON CONFLICT (client_id) DO UPDATE SET client_name = EXCLUDED.client_name, "
		"redirect_uris = EXCLUDED.redirect_uris, metadata = EXCLUDED.metadata, "
		"token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method, "
		"cimd_expires_at = EXCLUDED.cimd_expires_at WHERE clients.kind = 'cimd' "
		"RETURNING disabled_at IS NOT NULL");
	const char *name = json_string_value(json_object_get(doc, "client_name"));
	char *uris_text = json_dumps(uris, JSON_COMPACT), *doc_text = json_dumps(doc, JSON_COMPACT);
	char ttls[24];
	enum client_find rc = CLIENT_UNAVAILABLE;
	PGresult *res = NULL;
	snprintf(ttls, sizeof(ttls), "%ld", ttl);
	const char *p[] = { client_id, name, uris_text,
			    doc_text,  ttls, out->private_key_jwt ? "private_key_jwt" : "none" };
	if ((name && !(out->name = strdup(name))) || !uris_text || !doc_text)
		goto out;
	if (!(res = db_exec_ok(c, &q_store, 6, p)))
		goto out;
	if (PQntuples(res) != 1) {
		*why = "the client_id is already registered otherwise";
		rc = CLIENT_UNKNOWN;
		goto out;
	}
	out->disabled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	if (client_set_uris_json(out, uris) == 0)
		rc = CLIENT_FOUND;
out:
	PQclear(res);
	free(uris_text);
	free(doc_text);
	return rc;
}

enum client_find cimd_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out,
			     const char **why)
{
	const struct config *cfg = app->cfg;
	json_t *doc = NULL, *uris = NULL;
	long ttl = 0;
	enum client_find rc = CLIENT_UNKNOWN;
	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (!cfg->registration.client_id_metadata_documents) {
		*why = "this server does not accept URL client identifiers";
		goto out;
	}
	if ((*why = check_url(cfg, client_id)))
		goto out;
	snprintf(out->client_id, sizeof(out->client_id), "%s", client_id);
	snprintf(out->kind, sizeof(out->kind), "cimd");
	int hit = cache_get(c, client_id, out);
	if (hit != 0)
		rc = hit > 0 ? CLIENT_FOUND : CLIENT_UNAVAILABLE;
	else if ((rc = fetch_checked(cfg, client_id, &doc, &uris, &ttl, out, why)) == CLIENT_FOUND)
		rc = cache_put(c, client_id, doc, uris, ttl, out, why);
out:
	json_decref(doc);
	json_decref(uris);
	if (rc != CLIENT_FOUND)
		client_free(out);
	return rc;
}

/* ---- JWKS documents (jwks_uri) ------------------------------------------ */

/* A fetched JWKS: an object whose keys are 1..LIM_JWKS_KEYS objects. */
static const char *check_jwks(const json_t *doc)
{
	const json_t *keys = json_object_get(doc, "keys");
	size_t i;
	const json_t *k;
	if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > LIM_JWKS_KEYS)
		return "the JWKS has no keys array of an acceptable size";
	json_array_foreach(keys, i, k)
	{
		if (!json_is_object(k))
			return "the JWKS holds a key that is not an object";
	}
	return NULL;
}

/* The cached JWKS at uri while fresh: 1 (*jwks set), 0 none, -1 error. */
static int jwks_cache_get(struct db_conn *c, const char *uri, char **jwks)
{
	static struct db_stmt q = DB_STMT("SELECT jwks FROM jwks_cache WHERE jwks_uri = $1 AND expires_at > now()");
	const char *p[] = { uri };
	PGresult *res = db_exec_ok(c, &q, 1, p);
	int rc = -1;
	if (!res)
		return -1;
	if (PQntuples(res) != 1)
		rc = 0;
	else if ((*jwks = strdup(PQgetvalue(res, 0, 0))))
		rc = 1;
	PQclear(res);
	return rc;
}

static int jwks_cache_put(struct db_conn *c, const char *uri, const char *jwks, long ttl)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO jwks_cache(jwks_uri, jwks, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3::int)) "
		"ON CONFLICT (jwks_uri) DO UPDATE SET jwks = EXCLUDED.jwks, expires_at = EXCLUDED.expires_at");
	char ttls[24];
	snprintf(ttls, sizeof(ttls), "%ld", ttl);
	const char *p[] = { uri, jwks, ttls };
	PGresult *res = db_exec_ok(c, &q, 3, p);
	PQclear(res);
	return res ? 0 : -1;
}

enum client_find cimd_jwks(struct app *app, struct db_conn *c, const char *uri, char **jwks, const char **why)
{
	const struct config *cfg = app->cfg;
	json_t *doc = NULL;
	long ttl = 0;
	enum client_find rc = CLIENT_UNKNOWN;
	*jwks = NULL;
	if ((*why = check_url(cfg, uri)))
		goto out;
	int hit = jwks_cache_get(c, uri, jwks);
	if (hit != 0) {
		rc = hit > 0 ? CLIENT_FOUND : CLIENT_UNAVAILABLE;
		goto out;
	}
	if (!fetch_slot_take(cfg)) {
		log_msg(LOG_WARN, "cimd.busy", NULL, "too many client metadata fetches in flight");
		metrics_count("cimd_fetch_total", "busy", 1);
		*why = "too many documents are being fetched; try again in a moment";
		rc = CLIENT_UNAVAILABLE;
		goto out;
	}
	*why = fetch_doc(cfg, uri, LIM_JWKS_BODY, "jwks", &doc, &ttl);
	__atomic_sub_fetch(&fetches_in_flight, 1, __ATOMIC_ACQ_REL);
	if (*why || (*why = check_jwks(doc))) {
		rc = *why == cimd_oom ? CLIENT_UNAVAILABLE : CLIENT_UNKNOWN;
		goto out;
	}
	rc = CLIENT_UNAVAILABLE;
	if (!(*jwks = json_dumps(doc, JSON_COMPACT)) || jwks_cache_put(c, uri, *jwks, ttl) < 0)
		goto out;
	rc = CLIENT_FOUND;
out:
	json_decref(doc);
	if (rc != CLIENT_FOUND) {
		free(*jwks);
		*jwks = NULL;
	}
	return rc;
}
