/* Browser state the broker reads back: the consent cookie value
 * (cookie_consent_parse) and sealed form fields (cookie_open_with), under a
 * fixed cookie secret. The input is taken three ways:
 * - as a consent cookie value: entries come back only when its MAC is the
 *   one this secret gives;
 * - as a consent payload the broker signed: what comes back is at most
 *   COOKIE_CONSENT_MAX entries of 24 characters, taken from the payload,
 *   none once expired;
 * - as a sealed blob, which never opens unless it is one the secret made;
 *   and, when it is a JSON object or array, sealed and opened again: equal,
 *   and any one character changed, or another purpose, opens nothing. */
#include <jansson.h>

#include "cookie.h"
#include "jparse.h"
#include "fuzz.h"

static const uint8_t secret[CRYPTO_KEY_LEN] = "fuzz-cookie-secret-32-bytes-long";
#define NOW 1700000000L

static void consent(const char *s)
{
	char entries[COOKIE_CONSENT_MAX][25], mac[64];
	size_t n = 99;
	cookie_consent_parse(secret, s, NOW, entries, &n);
	const char *dot = strrchr(s, '.');
	if (n > 0) {
		FUZZ_CHECK(dot);
		char *payload = fuzz_cstr((const uint8_t *)s, (size_t)(dot - s));
		FUZZ_CHECK(cookie_derive_with(secret, "consent", payload, mac) == 0 && strcmp(mac, dot + 1) == 0);
		free(payload);
	}

	size_t len = strlen(s);
	char *v = malloc(len + 66);
	FUZZ_CHECK(v && cookie_derive_with(secret, "consent", s, mac) == 0);
	snprintf(v, len + 66, "%s.%s", s, mac);
	cookie_consent_parse(secret, v, NOW, entries, &n);
	FUZZ_CHECK(n <= COOKIE_CONSENT_MAX);
	const char *sep = strchr(s, '.');
	if (n > 0)
		FUZZ_CHECK(sep && strtol(s, NULL, 10) >= NOW);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(strlen(entries[i]) == 24 && strstr(sep + 1, entries[i]));
	free(v);
}

static void sealed(const uint8_t *data, size_t size, const char *s)
{
	json_t *o = cookie_open_with(secret, "fuzz", s);
	json_decref(o);
	json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!obj)
		return;
	char *blob = cookie_seal_with(secret, "fuzz", obj);
	FUZZ_CHECK(blob || jparse_depth((const char *)data, size, LIM_JSON_DEPTH) > LIM_JSON_DEPTH);
	size_t n = blob ? strlen(blob) : 0;
	if (blob && n <= 16384) {
		json_t *back = cookie_open_with(secret, "fuzz", blob);
		FUZZ_CHECK(back && json_equal(obj, back));
		json_decref(back);
		FUZZ_CHECK(cookie_open_with(secret, "fuzz2", blob) == NULL);
		size_t i = size % n;
		blob[i] = blob[i] == 'A' ? 'B' : 'A';
		FUZZ_CHECK(cookie_open_with(secret, "fuzz", blob) == NULL);
	}
	free(blob);
	json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	consent(s);
	sealed(data, size, s);
	free(s);
	return 0;
}
