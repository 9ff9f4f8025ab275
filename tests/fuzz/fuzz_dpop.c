/* DPoP (core/dpop.c): a proof from outside checked against a request, and
 * the htu and nonce comparisons. The input is one flags byte, then lines
 * "htm\nhtu\naccess_token\njkt\nstring\nproof" (a missing line is empty):
 * bit 0 uses access_token (ath must match), bit 1 requires a nonce under a
 * fixed key, bit 2 binds to jkt, bit 3 takes the proof line as
 * "header JSON\tpayload JSON" that the driver signs with a fixed Ed25519
 * key (RFC 8037 A.1; its jwk is in the seeds), putting the current nonce
 * for "@nonce@" and the access token's hash for "@ath@", so that the claim
 * checks are reached behind a good signature.
 * - dpop_verify answers OK, INVALID or NONCE (NONCE only when a nonce is
 *   required); a refusal has a reason and an empty jkt; an accepted proof
 *   parses, has the expected htm, an htu equal to the expected one, an iat
 *   in the window, its jkt is 43 base64url characters (the bound one, when
 *   bound; the driver key's, when signed here), and the same proof a
 *   second time is refused as a replay;
 * - dpop_htu_matches, for strings without '%' (where decoding the
 *   proof's path changes nothing), is symmetric; a string matching
 *   anything matches itself, starts with http:// or https://, and still
 *   matches with a query or fragment appended or its scheme in capitals;
 *   with '%' it must only not crash;
 * - dpop_nonce_ok takes only 32 characters, takes the nonces dpop_nonce
 *   made for this slot and the one before, and refuses any of them with
 *   one character changed (from the input) or under another key. */
#include <ctype.h>
#include <strings.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "crypto.h"
#include "dpop.h"
#include "fuzz.h"
#include "jose.h"

#define NOW 1700000000L
#define MAX_AGE 120
#define TTL 300

static const uint8_t nonce_key[CRYPTO_KEY_LEN] = "fuzz-dpop-nonce-key-32-bytes-lon";
static const uint8_t other_key[CRYPTO_KEY_LEN] = "fuzz-dpop-other-key-32-bytes-lon";
/* RFC 8037 A.1: d, and the thumbprint of its public jwk (A.3) */
static const char ed_d[] = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
static const char ed_jkt[] = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
static EVP_PKEY *ed;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t d[32];
	(void)argc;
	(void)argv;
	if (crypto_b64url_decode(ed_d, strlen(ed_d), d, sizeof(d)) != 32 ||
	    !(ed = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, sizeof(d))))
		abort();
	return 0;
}

/* The next line of *p (cut at '\n'), or "" past the end. */
static char *line(char **p)
{
	char *s = *p, *nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = s + strlen(s);
	}
	return s;
}

/* s with every "@nonce@" and "@ath@" replaced (malloc'd). */
static char *fill(const char *s, const char *nonce, const char *ath)
{
	size_t cap = strlen(s) * 9 + 1, n = 0; /* "@ath@": 5 characters for 43 */
	char *out = malloc(cap);
	FUZZ_CHECK(out);
	while (*s) {
		const char *put = NULL;
		size_t skip = 1;
		if (strncmp(s, "@nonce@", 7) == 0)
			put = nonce, skip = 7;
		else if (strncmp(s, "@ath@", 5) == 0)
			put = ath, skip = 5;
		if (put) {
			memcpy(out + n, put, strlen(put));
			n += strlen(put);
		} else {
			out[n++] = *s;
		}
		s += skip;
	}
	out[n] = '\0';
	return out;
}

/* header and payload signed with the driver's key (malloc'd). */
static char *sign(const char *header, const char *payload)
{
	size_t hl = strlen(header), pl = strlen(payload);
	char *t = malloc(crypto_b64url_len(hl) + crypto_b64url_len(pl) + 100);
	uint8_t sig[64];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	FUZZ_CHECK(t && m);
	crypto_b64url_encode(header, hl, t);
	size_t n = strlen(t);
	t[n++] = '.';
	crypto_b64url_encode(payload, pl, t + n);
	n = strlen(t);
	FUZZ_CHECK(EVP_DigestSignInit(m, NULL, NULL, NULL, ed) == 1 &&
		   EVP_DigestSign(m, sig, &sl, (const uint8_t *)t, n) == 1 && sl == 64);
	EVP_MD_CTX_free(m);
	t[n++] = '.';
	crypto_b64url_encode(sig, sl, t + n);
	return t;
}

static int b64url_only(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return 0;
	return 1;
}

static void check_verify(const char *proof, const struct dpop_expect *e, int signed_here)
{
	char jkt[DPOP_JKT_LEN + 1];
	const char *why = "unset";
	enum dpop_rc rc = dpop_verify(proof, e, jkt, &why);
	FUZZ_CHECK(rc == DPOP_OK || rc == DPOP_INVALID || rc == DPOP_NONCE);
	FUZZ_CHECK(rc != DPOP_NONCE || e->nonce_key);
	if (rc != DPOP_OK) {
		FUZZ_CHECK(jkt[0] == '\0' && why && why[0]);
		return;
	}
	FUZZ_CHECK(why == NULL);
	FUZZ_CHECK(strlen(jkt) == DPOP_JKT_LEN && b64url_only(jkt));
	FUZZ_CHECK(!e->jkt || strcmp(e->jkt, jkt) == 0);
	FUZZ_CHECK(!signed_here || strcmp(jkt, ed_jkt) == 0);
	struct jws j;
	FUZZ_CHECK(jose_parse(proof, strlen(proof), &j) == 0);
	const json_t *iat = json_object_get(j.payload, "iat");
	FUZZ_CHECK(strcmp(json_string_value(json_object_get(j.payload, "htm")), e->htm) == 0);
	FUZZ_CHECK(dpop_htu_matches(json_string_value(json_object_get(j.payload, "htu")), e->htu));
	FUZZ_CHECK(json_is_integer(iat) && json_integer_value(iat) >= NOW - MAX_AGE &&
		   json_integer_value(iat) <= NOW + DPOP_FUTURE_S);
	FUZZ_CHECK(json_is_string(json_object_get(j.payload, "jti")));
	jose_free(&j);
	char again[DPOP_JKT_LEN + 1];
	FUZZ_CHECK(dpop_verify(proof, e, again, &why) == DPOP_INVALID && strstr(why, "used before"));
}

static void check_htu(const char *a, const char *b)
{
	/* Decoding the proof's path, or cutting its query, makes the relation
	 * one-sided: such strings must only not crash. */
	if (strpbrk(a, "%?#") || strpbrk(b, "%?#")) {
		(void)dpop_htu_matches(a, b);
		(void)dpop_htu_matches(b, a);
		return;
	}
	int eq = dpop_htu_matches(a, b);
	FUZZ_CHECK(eq == dpop_htu_matches(b, a));
	if (eq)
		FUZZ_CHECK(dpop_htu_matches(a, a) && dpop_htu_matches(b, b));
	if (!dpop_htu_matches(a, a))
		return;
	FUZZ_CHECK(strncasecmp(a, "http://", 7) == 0 || strncasecmp(a, "https://", 8) == 0);
	size_t n = strlen(a);
	char *v = malloc(n + 3);
	FUZZ_CHECK(v);
	/* A proof's query or fragment is ignored; the request URL's path is
	 * taken whole (a '?' there is a decoded one, part of the path). */
	snprintf(v, n + 3, "%s?q", a);
	FUZZ_CHECK(dpop_htu_matches(v, a));
	FUZZ_CHECK(!dpop_htu_matches(a, v));
	snprintf(v, n + 3, "%s#f", a);
	FUZZ_CHECK(dpop_htu_matches(v, a));
	snprintf(v, n + 3, "%s", a);
	for (char *p = v; *p && *p != ':'; p++)
		*p = (char)toupper((unsigned char)*p);
	FUZZ_CHECK(dpop_htu_matches(a, v));
	free(v);
}

static void check_nonce(const char *s, uint8_t pos, uint8_t c)
{
	char n[DPOP_NONCE_LEN + 1];
	if (dpop_nonce_ok(nonce_key, TTL, NOW, s))
		FUZZ_CHECK(strlen(s) == DPOP_NONCE_LEN);
	for (long back = 0; back <= 2; back++) {
		FUZZ_CHECK(dpop_nonce(nonce_key, TTL, NOW - back * TTL, n) == 0 && strlen(n) == DPOP_NONCE_LEN);
		FUZZ_CHECK(dpop_nonce_ok(nonce_key, TTL, NOW, n) == (back < 2));
		FUZZ_CHECK(!dpop_nonce_ok(other_key, TTL, NOW, n));
		size_t i = pos % DPOP_NONCE_LEN;
		if (c && (char)c != n[i]) {
			n[i] = (char)c;
			FUZZ_CHECK(!dpop_nonce_ok(nonce_key, TTL, NOW, n));
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	char *s = fuzz_cstr(data + 1, size - 1), *p = s;
	char *htm = line(&p), *htu = line(&p), *at = line(&p), *bound = line(&p), *str = line(&p), *proof = p;
	char nonce[DPOP_NONCE_LEN + 1], ath[48];
	uint8_t d[CRYPTO_SHA256_LEN];
	FUZZ_CHECK(dpop_nonce(nonce_key, TTL, NOW, nonce) == 0);
	crypto_sha256(at, strlen(at), d);
	crypto_b64url_encode(d, sizeof(d), ath);

	struct dpop_expect e = { .space = flags & 16 ? DPOP_SPACE_TOKEN : DPOP_SPACE_RESOURCE,
				 .htm = htm,
				 .htu = htu,
				 .access_token = flags & 1 ? at : NULL,
				 .jkt = flags & 4 ? bound : NULL,
				 .nonce_key = flags & 2 ? nonce_key : NULL,
				 .nonce_ttl_s = TTL,
				 .max_age_s = MAX_AGE,
				 .now = NOW };
	dpop_replay_reset(0, 0); /* each input on its own */
	char *tab = strchr(proof, '\t');
	if (flags & 8 && tab) {
		*tab = '\0';
		char *h = fill(proof, nonce, ath), *pl = fill(tab + 1, nonce, ath);
		char *t = sign(h, pl);
		check_verify(t, &e, 1);
		free(t);
		free(h);
		free(pl);
	} else {
		check_verify(proof, &e, 0);
	}
	check_htu(htu, str);
	check_nonce(str, size > 1 ? data[1] : 0, size > 2 ? data[size - 1] : 0);
	free(s);
	return 0;
}
