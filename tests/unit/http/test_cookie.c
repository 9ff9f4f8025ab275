/* cookie.c: the browser state the broker reads back, under a fixed cookie
 * secret: derived values, the consent cookie (built, parsed, tampered with,
 * expired, bounded) and sealed blobs (round trips, tampering, purposes,
 * and what a blob may hold once opened). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../../broker/http/cookie.c"
#include "test.h"

static const uint8_t secret[CRYPTO_KEY_LEN] = "unit-cookie-secret-32-bytes-long";
static const uint8_t other[CRYPTO_KEY_LEN] = "another-secret-of-32-bytes-long!";
#define NOW 1700000000L

static void test_derive(void)
{
	char a[64], b[64];
	CHECK(cookie_derive_with(secret, "csrf", "browser|client", a) == 0 && strlen(a) == 43);
	CHECK(cookie_derive_with(secret, "csrf", "browser|client", b) == 0 && strcmp(a, b) == 0);
	CHECK(cookie_derive_with(secret, "consent", "browser|client", b) == 0 && strcmp(a, b) != 0);
	CHECK(cookie_derive_with(secret, "csrf", "browser|client2", b) == 0 && strcmp(a, b) != 0);
	CHECK(cookie_derive_with(other, "csrf", "browser|client", b) == 0 && strcmp(a, b) != 0);
	CHECK(valid_b64url(a, 43, 43));
}

/* The consent cookie value remembering key on top of value v (may be NULL)
 * at now; malloc'd. */
static char *consent_add(const char *v, const char *key, time_t now)
{
	char entries[COOKIE_CONSENT_MAX][25];
	size_t n;
	struct buf b;
	cookie_consent_parse(secret, v, now, entries, &n);
	buf_init(&b, CONSENT_MAX * 26 + 128);
	if (cookie_consent_build(secret, entries, n, key, now, &b) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, NULL);
}

static size_t consent_n(const char *v, time_t now, char entries[COOKIE_CONSENT_MAX][25])
{
	size_t n = 99;
	cookie_consent_parse(secret, v, now, entries, &n);
	return n;
}

static void test_consent_round_trip(void)
{
	char entries[COOKIE_CONSENT_MAX][25], h1[25], h2[25];
	consent_hash("k1", h1);
	consent_hash("k2", h2);
	char *v = consent_add(NULL, "k1", NOW);
	CHECK(v && consent_n(v, NOW, entries) == 1);
	CHECK_STR(entries[0], h1);
	char *v2 = consent_add(v, "k2", NOW + 10);
	CHECK(v2 && consent_n(v2, NOW + 10, entries) == 2);
	CHECK_STR(entries[0], h2); /* newest first */
	CHECK_STR(entries[1], h1);
	char *v3 = consent_add(v2, "k1", NOW + 20); /* again: moves to the front, once */
	CHECK(v3 && consent_n(v3, NOW + 20, entries) == 2);
	CHECK_STR(entries[0], h1);
	CHECK_STR(entries[1], h2);
	/* Expiry: CONSENT_TTL after the last addition, the second included. */
	CHECK(consent_n(v3, NOW + 20 + CONSENT_TTL, entries) == 2);
	CHECK(consent_n(v3, NOW + 21 + CONSENT_TTL, entries) == 0);
	CHECK(consent_n(v, NOW + 1 + CONSENT_TTL, entries) == 0);
	/* Another secret reads nothing. */
	size_t n = 99;
	cookie_consent_parse(other, v3, NOW, entries, &n);
	CHECK(n == 0);
	free(v);
	free(v2);
	free(v3);
}

static void test_consent_bound(void)
{
	char entries[COOKIE_CONSENT_MAX][25], h[25];
	char *v = NULL;
	for (int i = 0; i < 20; i++) {
		char key[16];
		snprintf(key, sizeof(key), "key%d", i);
		char *next = consent_add(v, key, NOW);
		CHECK(next != NULL);
		free(v);
		v = next;
	}
	CHECK(consent_n(v, NOW, entries) == COOKIE_CONSENT_MAX);
	consent_hash("key19", h);
	CHECK_STR(entries[0], h);
	consent_hash("key4", h); /* the oldest kept */
	CHECK_STR(entries[COOKIE_CONSENT_MAX - 1], h);
	consent_hash("key3", h);
	for (size_t i = 0; i < COOKIE_CONSENT_MAX; i++)
		CHECK(strcmp(entries[i], h) != 0);
	CHECK(strlen(v) <= COOKIE_VALUE_MAX);
	free(v);
	/* Too small a buffer is an error, not a cut cookie. */
	struct buf b;
	buf_init(&b, 40);
	CHECK(cookie_consent_build(secret, entries, COOKIE_CONSENT_MAX, "k", NOW, &b) < 0);
	buf_free(&b);
}

static void test_consent_tampered(void)
{
	char entries[COOKIE_CONSENT_MAX][25];
	char *v = consent_add(NULL, "k1", NOW);
	CHECK(v && consent_n(v, NOW, entries) == 1);
	/* Any one character changed, dropped or added refuses the cookie. */
	size_t len = v ? strlen(v) : 0;
	for (size_t i = 0; i < len; i++) {
		char saved = v[i];
		v[i] = saved == '0' ? '1' : '0';
		CHECK(consent_n(v, NOW, entries) == 0);
		v[i] = saved;
	}
	char *cut = strndup(v, len - 1);
	CHECK(consent_n(cut, NOW, entries) == 0);
	free(cut);
	char longer[512];
	snprintf(longer, sizeof(longer), "%sA", v);
	CHECK(consent_n(longer, NOW, entries) == 0);
	const char *junk[] = { "", ".", "..", "abc", ".abc", "1.2", "9999999999.aaaaaaaaaaaaaaaaaaaaaaaa." };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
		CHECK(consent_n(junk[i], NOW, entries) == 0);
	CHECK(consent_n(NULL, NOW, entries) == 0);
	/* Longer than any cookie the broker writes. */
	char *huge = malloc(COOKIE_VALUE_MAX + 1);
	memset(huge, 'a', COOKIE_VALUE_MAX);
	huge[COOKIE_VALUE_MAX] = '\0';
	huge[100] = '.';
	CHECK(consent_n(huge, NOW, entries) == 0);
	free(huge);
	free(v);
}

/* A payload with a valid MAC but an expiry that is not a plain decimal is
 * refused (strtol read "99999999999999999999" as LONG_MAX and "+2e9abc" as
 * 2000000000: never expiring, or read past junk). */
static void test_consent_expiry_format(void)
{
	char entries[COOKIE_CONSENT_MAX][25], mac[64], v[256];
	const char *bad[] = { "99999999999999999999", "+2000000000", "2000000000abc", " 2000000000", "", "-1",
			      "0x7fffffff",           "2e9" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char payload[128];
		snprintf(payload, sizeof(payload), "%s.0123456789abcdef01234567", bad[i]);
		CHECK(cookie_derive_with(secret, "consent", payload, mac) == 0);
		snprintf(v, sizeof(v), "%s.%s", payload, mac);
		CHECK(consent_n(v, NOW, entries) == 0);
	}
	CHECK(cookie_derive_with(secret, "consent", "2000000000.0123456789abcdef01234567", mac) == 0);
	snprintf(v, sizeof(v), "2000000000.0123456789abcdef01234567.%s", mac);
	CHECK(consent_n(v, NOW, entries) == 1);
	CHECK_STR(entries[0], "0123456789abcdef01234567");
}

/* A blob sealed by hand around text, as the broker would have: what
 * cookie_open_with then refuses, it refuses for what the text holds. */
static char *raw_seal(const char *purpose, const char *text, size_t n)
{
	uint8_t key[CRYPTO_KEY_LEN];
	size_t total = CRYPTO_NONCE_LEN + n + CRYPTO_TAG_LEN;
	uint8_t *blob = malloc(total);
	char *out = malloc(crypto_b64url_len(total) + 1);
	CHECK(seal_key(secret, purpose, key) == 0);
	CHECK(crypto_aead_seal(key, purpose, strlen(purpose), text, n, blob, blob + CRYPTO_NONCE_LEN,
			       blob + CRYPTO_NONCE_LEN + n) == 0);
	crypto_b64url_encode(blob, total, out);
	free(blob);
	return out;
}

static json_t *nested(int depth)
{
	json_t *o = json_object();
	for (int i = 1; i < depth; i++)
		o = json_pack("{s:o}", "a", o);
	return o;
}

static void test_seal(void)
{
	json_t *obj = json_pack("{s:s, s:s, s:I, s:s}", "client_id", "app", "state", "\"<x>\"", "exp", (json_int_t)NOW,
				"browser", "caf\xc3\xa9");
	char *a = cookie_seal_with(secret, "consent-request", obj);
	char *b = cookie_seal_with(secret, "consent-request", obj);
	CHECK(a && b && strcmp(a, b) != 0); /* a fresh nonce each time */
	CHECK(a && valid_b64url(a, 40, COOKIE_SEALED_MAX));
	json_t *back = cookie_open_with(secret, "consent-request", a);
	CHECK(back && json_equal(back, obj));
	json_decref(back);
	CHECK(cookie_open_with(secret, "consent", a) == NULL);
	CHECK(cookie_open_with(other, "consent-request", a) == NULL);
	size_t len = a ? strlen(a) : 0;
	for (size_t i = 0; i < len; i++) {
		char saved = a[i];
		a[i] = saved == 'A' ? 'B' : 'A';
		CHECK(cookie_open_with(secret, "consent-request", a) == NULL);
		a[i] = saved;
	}
	a[len - 1] = '\0';
	CHECK(cookie_open_with(secret, "consent-request", a) == NULL);
	CHECK(cookie_open_with(secret, "consent-request", NULL) == NULL);
	CHECK(cookie_open_with(secret, "consent-request", "") == NULL);
	CHECK(cookie_open_with(secret, "consent-request", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!") == NULL);
	free(a);
	free(b);
	json_decref(obj);

	/* Sizes: the largest blob that opens, and one character more. */
	size_t n = (COOKIE_SEALED_MAX / 4) * 3 - CRYPTO_NONCE_LEN - CRYPTO_TAG_LEN - 8;
	char *text = malloc(n + 1);
	memset(text, 'x', n);
	memcpy(text, "{\"a\":\"", 6);
	memcpy(text + n - 2, "\"}", 2);
	text[n] = '\0';
	char *s = raw_seal("p", text, n);
	CHECK(strlen(s) <= COOKIE_SEALED_MAX);
	back = cookie_open_with(secret, "p", s);
	CHECK(back && json_string_length(json_object_get(back, "a")) == n - 8);
	json_decref(back);
	free(s);
	free(text);
	n = (COOKIE_SEALED_MAX / 4) * 3;
	text = malloc(n);
	memset(text, ' ', n);
	memcpy(text, "{}", 2); /* valid, only too long */
	s = raw_seal("p", text, n);
	CHECK(strlen(s) > COOKIE_SEALED_MAX && cookie_open_with(secret, "p", s) == NULL);
	free(s);
	free(text);
}

/* What an authentic blob holds is still parsed as outside JSON. */
static void test_open_contents(void)
{
	struct {
		const char *text;
		size_t n;
		int opens;
	} cases[] = {
		{ "{\"a\":1}", 7, 1 },          { "{\"a\":1}\0", 8, 0 }, /* a NUL byte after the document */
		{ "{\"a\":\"x\0y\"}", 11, 0 },                           /* a NUL byte in a string */
		{ "{\"a\":1,\"a\":2}", 13, 0 },                          /* a repeated member */
		{ "{\"a\":1} x", 9, 0 },        { "[1,2]", 5, 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = raw_seal("p", cases[i].text, cases[i].n);
		json_t *o = cookie_open_with(secret, "p", s);
		CHECK((o != NULL) == cases[i].opens);
		json_decref(o);
		free(s);
	}

	/* Nesting: LIM_JSON_DEPTH seals and opens; one more level neither
	 * seals nor, sealed by hand, opens. */
	json_t *ok = nested(LIM_JSON_DEPTH), *deep = nested(LIM_JSON_DEPTH + 1);
	char *s = cookie_seal_with(secret, "p", ok);
	json_t *back = cookie_open_with(secret, "p", s);
	CHECK(s && back && json_equal(back, ok));
	json_decref(back);
	free(s);
	CHECK(cookie_seal_with(secret, "p", deep) == NULL);
	char *text = json_dumps(deep, JSON_COMPACT);
	s = raw_seal("p", text, strlen(text));
	CHECK(cookie_open_with(secret, "p", s) == NULL);
	free(s);
	free(text);
	json_decref(ok);
	json_decref(deep);
}

int main(void)
{
	test_derive();
	test_consent_round_trip();
	test_consent_bound();
	test_consent_tampered();
	test_consent_expiry_format();
	test_seal();
	test_open_contents();
	TEST_DONE();
}
