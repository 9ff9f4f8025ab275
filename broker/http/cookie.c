#include "cookie.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "app.h"
#include "crypto.h"
#include "jparse.h"
#include "num.h"

#define CONSENT_MAX COOKIE_CONSENT_MAX
#define CONSENT_TTL (30L * 86400)
#define BROWSER_TTL (400L * 86400)

static int https(const struct http_req *r)
{
	return strncasecmp(r->app->cfg->public_url, "https://", 8) == 0;
}

static int cookie_name(const struct http_req *r, const char *base, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%s", https(r) ? "__Host-" : "", base);
	return n >= 0 && (size_t)n < cap ? 0 : -1;
}

const char *cookie_get(struct http_req *r, const char *base)
{
	char name[64];
	if (cookie_name(r, base, name, sizeof(name)) < 0)
		return NULL;
	const char *v = MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
	return v && strlen(v) <= COOKIE_VALUE_MAX ? v : NULL;
}

int cookie_set(struct http_req *r, const char *base, const char *value, long max_age)
{
	char name[64], line[COOKIE_VALUE_MAX + 256];
	if (cookie_name(r, base, name, sizeof(name)) < 0)
		return -1;
	int n = snprintf(line, sizeof(line), "%s=%s; Path=/; Max-Age=%ld; HttpOnly; SameSite=Lax%s", name, value,
			 max_age, https(r) ? "; Secure" : "");
	int rc = n >= 0 && (size_t)n < sizeof(line) ? 0 : -1;
	if (rc == 0)
		http_add_header(r, "Set-Cookie", line); /* a failure sticks to r: the answer becomes a 500 */
	OPENSSL_cleanse(line, sizeof(line)); /* the value is sealed state of the flow: no copy left on the stack */
	return rc;
}

int cookie_browser_is(struct http_req *r, const char *hash_hex)
{
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	char got[65];
	if (!browser || !hash_hex)
		return 0;
	crypto_sha256_hex(browser, strlen(browser), got);
	int same = crypto_ct_equal(got, 64, hash_hex, strlen(hash_hex));
	crypto_wipe(got, sizeof(got));
	return same;
}

static int valid_b64url(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);
	if (n < min || n > max)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_'))
			return 0;
	}
	return 1;
}

int cookie_browser(struct http_req *r, char out[64])
{
	const char *have = cookie_get(r, COOKIE_BROWSER);
	if (have && valid_b64url(have, 43, 43)) {
		memcpy(out, have, 44);
		return 0;
	}
	uint8_t rnd[32];
	if (crypto_random(rnd, sizeof(rnd)) < 0)
		return -1;
	crypto_b64url_encode(rnd, sizeof(rnd), out);
	crypto_wipe(rnd, sizeof(rnd));
	return cookie_set(r, COOKIE_BROWSER, out, BROWSER_TTL);
}

int cookie_derive(struct http_req *r, const char *purpose, const char *input, char out[64])
{
	return cookie_derive_with(r->app->cfg->cookie_secret, purpose, input, out);
}

int cookie_derive_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const char *input, char out[64])
{
	struct buf b;
	uint8_t mac[CRYPTO_SHA256_LEN];
	buf_init(&b, 8192);
	b.secret = 1;
	int rc = -1;
	if (buf_adds(&b, purpose) < 0 || buf_add(&b, "|", 1) < 0 || buf_adds(&b, input) < 0)
		goto out;
	if (crypto_hmac_sha256(secret, CRYPTO_KEY_LEN, b.ptr, b.len, mac) < 0)
		goto out;
	crypto_b64url_encode(mac, sizeof(mac), out);
	rc = 0;
out:
	crypto_wipe(mac, sizeof(mac));
	buf_free(&b);
	return rc;
}

int cookie_csrf(struct http_req *r, const char *browser, const char *client_id, char out[64])
{
	struct buf in;
	buf_init(&in, 4096);
	int rc = -1;
	if (buf_adds(&in, browser) == 0 && buf_add(&in, "|", 1) == 0 && buf_adds(&in, client_id) == 0)
		rc = cookie_derive(r, "csrf", in.ptr, out);
	buf_free(&in);
	return rc;
}

int cookie_csrf_ok(struct http_req *r, const char *client_id, const char *token)
{
	const char *browser = cookie_get(r, COOKIE_BROWSER);
	char want[64];
	if (!browser || !token || !valid_b64url(browser, 43, 43))
		return 0;
	if (cookie_csrf(r, browser, client_id, want) < 0)
		return 0;
	int ok = crypto_ct_equal(want, strlen(want), token, strlen(token));
	crypto_wipe(want, sizeof(want));
	return ok;
}

/* Consent cookie: "<exp>.<h1>,<h2>,...,<hN>.<mac>" where each h is the hex
 * of 12 bytes of SHA-256(key) and mac covers everything before it. */
static void consent_parse(struct http_req *r, char entries[CONSENT_MAX][25], size_t *n)
{
	cookie_consent_parse(r->app->cfg->cookie_secret, cookie_get(r, COOKIE_CONSENT), time(NULL), entries, n);
}

void cookie_consent_parse(const uint8_t secret[CRYPTO_KEY_LEN], const char *v, time_t now,
			  char entries[CONSENT_MAX][25], size_t *n)
{
	*n = 0;
	if (!v)
		return;
	const char *dot = strrchr(v, '.');
	if (!dot || dot == v)
		return;
	char payload[CONSENT_MAX * 26 + 32], mac[64];
	size_t plen = (size_t)(dot - v);
	if (plen >= sizeof(payload))
		return;
	memcpy(payload, v, plen);
	payload[plen] = '\0';
	if (cookie_derive_with(secret, "consent", payload, mac) < 0 ||
	    !crypto_ct_equal(mac, strlen(mac), dot + 1, strlen(dot + 1)))
		return;
	char *p = payload, *sep = strchr(p, '.');
	if (!sep)
		return;
	*sep = '\0';
	long long exp;
	if (num_parse(p, 0, LLONG_MAX, &exp) < 0 || exp < (long long)now)
		return;
	p = sep + 1;
	while (*p && *n < CONSENT_MAX) {
		char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 24) {
			memcpy(entries[*n], p, 24);
			entries[*n][24] = '\0';
			(*n)++;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
}

static void consent_hash(const char *key, char out[25])
{
	char hex[65];
	crypto_sha256_hex(key, strlen(key), hex);
	memcpy(out, hex, 24);
	out[24] = '\0';
}

int cookie_consent_has(struct http_req *r, const char *key)
{
	char entries[CONSENT_MAX][25], h[25];
	size_t n;
	consent_parse(r, entries, &n);
	consent_hash(key, h);
	for (size_t i = 0; i < n; i++)
		if (strcmp(entries[i], h) == 0)
			return 1;
	return 0;
}

int cookie_consent_build(const uint8_t secret[CRYPTO_KEY_LEN], const char entries[CONSENT_MAX][25], size_t n,
			 const char *key, time_t now, struct buf *out)
{
	char h[25], mac[64];
	consent_hash(key, h);
	int rc = buf_printf(out, "%lld.%s", (long long)now + CONSENT_TTL, h);
	/* Newest first; drop the oldest beyond the bound. */
	for (size_t i = 0; rc == 0 && i < n && i < CONSENT_MAX - 1; i++)
		if (strcmp(entries[i], h) != 0)
			rc = buf_printf(out, ",%s", entries[i]);
	if (rc == 0)
		rc = cookie_derive_with(secret, "consent", out->ptr, mac);
	if (rc == 0)
		rc = buf_printf(out, ".%s", mac);
	return rc;
}

int cookie_consent_add(struct http_req *r, const char *key)
{
	char entries[CONSENT_MAX][25];
	size_t n;
	struct buf b;
	consent_parse(r, entries, &n);
	buf_init(&b, CONSENT_MAX * 26 + 128);
	int rc = cookie_consent_build(r->app->cfg->cookie_secret, entries, n, key, time(NULL), &b);
	if (rc == 0)
		rc = cookie_set(r, COOKIE_CONSENT, b.ptr, CONSENT_TTL);
	buf_free(&b);
	return rc;
}

static int seal_key(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, uint8_t key[CRYPTO_KEY_LEN])
{
	return crypto_hkdf(secret, CRYPTO_KEY_LEN, "mcp-broker", 10, purpose, key, CRYPTO_KEY_LEN);
}

char *cookie_seal(struct http_req *r, const char *purpose, const json_t *obj)
{
	return cookie_seal_with(r->app->cfg->cookie_secret, purpose, obj);
}

char *cookie_seal_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const json_t *obj)
{
	uint8_t key[CRYPTO_KEY_LEN];
	char *text = json_dumps(obj, JSON_COMPACT);
	char *out = NULL;
	/* Never sealed deeper than cookie_open_with opens. */
	if (!text || jparse_depth(text, strlen(text), LIM_JSON_DEPTH) > LIM_JSON_DEPTH ||
	    seal_key(secret, purpose, key) < 0)
		goto done;
	size_t n = strlen(text), total = CRYPTO_NONCE_LEN + n + CRYPTO_TAG_LEN;
	uint8_t *blob = malloc(total);
	if (!blob)
		goto done;
	if (crypto_aead_seal(key, purpose, strlen(purpose), text, n, blob, blob + CRYPTO_NONCE_LEN,
			     blob + CRYPTO_NONCE_LEN + n) == 0) {
		out = malloc(crypto_b64url_len(total) + 1);
		if (out)
			crypto_b64url_encode(blob, total, out);
	}
	free(blob);
done:
	if (text) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	crypto_wipe(key, sizeof(key));
	return out;
}

json_t *cookie_open(struct http_req *r, const char *purpose, const char *sealed)
{
	return cookie_open_with(r->app->cfg->cookie_secret, purpose, sealed);
}

json_t *cookie_open_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const char *sealed)
{
	uint8_t key[CRYPTO_KEY_LEN];
	size_t slen = sealed ? strlen(sealed) : 0;
	uint8_t *blob = NULL;
	char *text = NULL;
	json_t *obj = NULL;
	if (slen < 40 || slen > COOKIE_SEALED_MAX || seal_key(secret, purpose, key) < 0 || !(blob = malloc(slen)))
		goto done;
	long total = crypto_b64url_decode(sealed, slen, blob, slen);
	if (total < CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN + 2)
		goto done;
	size_t n = (size_t)total - CRYPTO_NONCE_LEN - CRYPTO_TAG_LEN;
	if (!(text = malloc(n)))
		goto done;
	if (crypto_aead_open(key, purpose, strlen(purpose), blob, blob + CRYPTO_NONCE_LEN, n,
			     blob + CRYPTO_NONCE_LEN + n, (uint8_t *)text) == 0)
		obj = jparse(text, n, 0, LIM_JSON_DEPTH);
	crypto_wipe(text, n);
done:
	free(text);
	free(blob);
	crypto_wipe(key, sizeof(key));
	return obj;
}
