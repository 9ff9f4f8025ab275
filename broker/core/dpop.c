#include "dpop.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jose.h"
#include "lim.h"

/* ---- the jti memory ----------------------------------------------------- */

/* Two generations of a set of 64-bit keyed hashes of (jkt, jti). A
 * generation takes inserts for W seconds (W = the longest a proof is
 * acceptable: max age and future skew), then becomes the old one, and the
 * old one is dropped: an entry lives between W and 2W seconds, long enough
 * for its proof's iat to leave the window (generations turn on the
 * monotonic clock, so a step of the wall clock cannot drop one early). A generation holds at most
 * REPLAY_MAX entries; past that, proofs are refused (fail closed) until it
 * turns over. Hashes are keyed with a per-process random secret, so nobody
 * outside can aim collisions; a false "replayed" needs a 64-bit collision. */
#define REPLAY_MAX (1u << 19)
#define REPLAY_MIN_SLOTS 1024u

struct generation {
	uint64_t *slot; /* 0: empty */
	size_t cap, n;  /* cap: a power of two, or 0 */
	time_t start;
};

static struct {
	pthread_mutex_t lock;
	struct generation cur, old;
	uint8_t secret[CRYPTO_KEY_LEN];
	int seeded;
} replay = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int gen_has(const struct generation *g, uint64_t h)
{
	for (size_t i = g->cap ? h & (g->cap - 1) : 0; g->cap && g->slot[i]; i = (i + 1) & (g->cap - 1))
		if (g->slot[i] == h)
			return 1;
	return 0;
}

static void gen_put(struct generation *g, uint64_t h)
{
	size_t i = h & (g->cap - 1);
	while (g->slot[i])
		i = (i + 1) & (g->cap - 1);
	g->slot[i] = h;
	g->n++;
}

/* Room for one more entry at load <= 1/2: 0, or -1 (full, or no memory). */
static int gen_reserve(struct generation *g)
{
	if (g->n >= REPLAY_MAX)
		return -1;
	if (g->cap && (g->n + 1) * 2 <= g->cap)
		return 0;
	size_t cap = g->cap ? g->cap * 2 : REPLAY_MIN_SLOTS;
	uint64_t *slot = calloc(cap, sizeof(*slot));
	if (!slot)
		return -1;
	struct generation bigger = { slot, cap, 0, g->start };
	for (size_t i = 0; i < g->cap; i++)
		if (g->slot[i])
			gen_put(&bigger, g->slot[i]);
	free(g->slot);
	*g = bigger;
	return 0;
}

static void gen_free(struct generation *g)
{
	free(g->slot);
	memset(g, 0, sizeof(*g));
}

/* The keyed hash of (jkt, jti), or 0 when it cannot be made (no memory:
 * crypto_sha256 then gives zeros), which replay_check refuses. 0 also marks
 * an empty slot; a real hash of 0 (odds 2^-64) is refused the same way. */
static uint64_t replay_hash(const char *jkt, const char *jti)
{
	struct buf b;
	uint8_t d[CRYPTO_SHA256_LEN];
	uint64_t h = 0;
	buf_init(&b, 512);
	if (buf_add(&b, replay.secret, sizeof(replay.secret)) == 0 && buf_adds(&b, jkt) == 0 &&
	    buf_add(&b, "", 1) == 0 && buf_adds(&b, jti) == 0) {
		crypto_sha256(b.ptr, b.len, d);
		memcpy(&h, d, sizeof(h));
	}
	buf_free(&b);
	return h;
}

/* 0 when (jkt, jti) was not seen within the window (now recorded), 1 when
 * it was, -1 when it cannot be recorded (full, no memory, no randomness). */
static int replay_check(const char *jkt, const char *jti, long window_s)
{
	int rc = -1;
	pthread_mutex_lock(&replay.lock);
	if (!replay.seeded)
		replay.seeded = crypto_random(replay.secret, sizeof(replay.secret)) == 0;
	if (!replay.seeded)
		goto out;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	time_t now = ts.tv_sec;
	if (!replay.cur.start || now - replay.cur.start >= window_s) {
		gen_free(&replay.old);
		replay.old = replay.cur;
		memset(&replay.cur, 0, sizeof(replay.cur));
		replay.cur.start = now;
	}
	uint64_t h = replay_hash(jkt, jti);
	if (!h)
		goto out;
	if (gen_has(&replay.cur, h) || gen_has(&replay.old, h))
		rc = 1;
	else if (gen_reserve(&replay.cur) == 0) {
		gen_put(&replay.cur, h);
		rc = 0;
	}
out:
	pthread_mutex_unlock(&replay.lock);
	return rc;
}

void dpop_replay_reset(void)
{
	pthread_mutex_lock(&replay.lock);
	gen_free(&replay.cur);
	gen_free(&replay.old);
	pthread_mutex_unlock(&replay.lock);
}

/* ---- nonces ------------------------------------------------------------- */

static int nonce_mac(const uint8_t key[CRYPTO_KEY_LEN], uint64_t slot, uint8_t raw[24])
{
	uint8_t mac[CRYPTO_SHA256_LEN];
	uint8_t in[8 + 16] = "mcpb-dpop-nonce";
	for (int i = 0; i < 8; i++)
		raw[i] = (uint8_t)(slot >> (56 - 8 * i));
	memcpy(in + 16, raw, 8);
	if (crypto_hmac_sha256(key, CRYPTO_KEY_LEN, in, sizeof(in), mac) < 0)
		return -1;
	memcpy(raw + 8, mac, 16);
	crypto_wipe(mac, sizeof(mac));
	return 0;
}

int dpop_nonce(const uint8_t key[CRYPTO_KEY_LEN], long ttl_s, time_t now, char out[DPOP_NONCE_LEN + 1])
{
	uint8_t raw[24];
	if (ttl_s <= 0 || now < 0 || nonce_mac(key, (uint64_t)now / (uint64_t)ttl_s, raw) < 0)
		return -1;
	crypto_b64url_encode(raw, sizeof(raw), out);
	return 0;
}

int dpop_nonce_ok(const uint8_t key[CRYPTO_KEY_LEN], long ttl_s, time_t now, const char *nonce)
{
	uint8_t got[24], want[24];
	size_t n = nonce ? strlen(nonce) : 0;
	if (ttl_s <= 0 || now < 0 || n != DPOP_NONCE_LEN || crypto_b64url_decode(nonce, n, got, sizeof(got)) != 24)
		return 0;
	uint64_t slot = 0, cur = (uint64_t)now / (uint64_t)ttl_s;
	for (int i = 0; i < 8; i++)
		slot = slot << 8 | got[i];
	int ok = (slot == cur || slot + 1 == cur) && nonce_mac(key, slot, want) == 0 &&
		 crypto_ct_equal(got + 8, 16, want + 8, 16);
	crypto_wipe(want, sizeof(want));
	return ok;
}

/* ---- htu ---------------------------------------------------------------- */

/* s normalised into out: scheme and host lowercase, the scheme's default
 * port dropped, an empty path "/", query and fragment cut. 0, or -1 for
 * anything but an absolute http(s) URL without userinfo. */
static int htu_normalise(const char *s, struct buf *out)
{
	size_t n = strcspn(s, "?#");
	int https = strncasecmp(s, "https://", 8) == 0;
	if (!https && strncasecmp(s, "http://", 7) != 0)
		return -1;
	const char *auth = s + (https ? 8 : 7), *end = s + n;
	const char *path = auth + strcspn(auth, "/?#");
	if (path > end)
		path = end;
	size_t alen = (size_t)(path - auth);
	if (alen == 0 || memchr(auth, '@', alen))
		return -1;
	const char *colon = NULL;
	for (const char *p = auth; p < path; p++)
		if (*p == ':')
			colon = p;
	if (colon && memchr(colon, ']', (size_t)(path - colon)))
		colon = NULL; /* inside an IPv6 literal */
	const char *dflt = https ? ":443" : ":80";
	size_t hlen = colon && (size_t)(path - colon) == strlen(dflt) && memcmp(colon, dflt, strlen(dflt)) == 0
			      ? (size_t)(colon - auth)
			      : alen;
	if (buf_adds(out, https ? "https://" : "http://") < 0)
		return -1;
	for (size_t i = 0; i < hlen; i++) {
		char c[1] = { auth[i] };
		if (c[0] >= 'A' && c[0] <= 'Z')
			c[0] = (char)(c[0] | 0x20);
		if (buf_add(out, c, 1) < 0)
			return -1;
	}
	if (path == end)
		return buf_adds(out, "/");
	return buf_add(out, path, (size_t)(end - path));
}

int dpop_htu_equal(const char *a, const char *b)
{
	struct buf x, y;
	buf_init(&x, 4096);
	buf_init(&y, 4096);
	int eq = a && b && htu_normalise(a, &x) == 0 && htu_normalise(b, &y) == 0 && x.len == y.len &&
		 memcmp(x.ptr, y.ptr, x.len) == 0;
	buf_free(&x);
	buf_free(&y);
	return eq;
}

/* ---- the proof ---------------------------------------------------------- */

static const char *str_claim(const json_t *o, const char *name, size_t max)
{
	const json_t *v = json_object_get(o, name);
	size_t n = json_is_string(v) ? json_string_length(v) : 0;
	return n > 0 && n <= max ? json_string_value(v) : NULL;
}

/* The claims against e (all but the replay check). */
static enum dpop_rc claims_check(const json_t *c, const struct dpop_expect *e, const char **why)
{
	const json_t *iat = json_object_get(c, "iat");
	const char *htm = str_claim(c, "htm", 32), *htu = str_claim(c, "htu", LIM_DPOP_HTU);
	long long t = json_is_integer(iat) ? (long long)json_integer_value(iat) : 0;
	if (!str_claim(c, "jti", LIM_DPOP_JTI))
		*why = "the proof has no jti";
	else if (!htm || strcmp(htm, e->htm) != 0)
		*why = "the proof's htm is not the request's method";
	else if (!htu || !dpop_htu_equal(htu, e->htu))
		*why = "the proof's htu is not the request's URL";
	else if (!json_is_integer(iat) || t > (long long)e->now + DPOP_FUTURE_S || t < (long long)e->now - e->max_age_s)
		*why = "the proof's iat is outside the accepted window";
	else
		*why = NULL;
	if (!*why && e->access_token) {
		uint8_t d[CRYPTO_SHA256_LEN];
		char want[48];
		const char *ath = str_claim(c, "ath", 64);
		crypto_sha256(e->access_token, strlen(e->access_token), d);
		crypto_b64url_encode(d, sizeof(d), want);
		if (!ath || !crypto_ct_equal(ath, strlen(ath), want, strlen(want)))
			*why = "the proof's ath is not the access token's hash";
	}
	if (*why)
		return DPOP_INVALID;
	if (e->nonce_key && !dpop_nonce_ok(e->nonce_key, e->nonce_ttl_s, e->now, str_claim(c, "nonce", 64))) {
		*why = "a current DPoP nonce is required";
		return DPOP_NONCE;
	}
	return DPOP_OK;
}

/* The proof's key: the header's jwk, public, fitting alg; its thumbprint. */
static EVP_PKEY *header_key(const struct jws *j, char jkt[DPOP_JKT_LEN + 1], const char **why)
{
	const json_t *jwk = json_object_get(j->header, "jwk");
	const char *typ = json_string_value(json_object_get(j->header, "typ"));
	EVP_PKEY *key = NULL;
	char tp[44];
	*why = NULL;
	if (!typ || strcasecmp(typ, "dpop+jwt") != 0)
		*why = "the proof's typ is not dpop+jwt";
	else if (!json_is_object(jwk) || jose_jwk_key(jwk, j->alg, &key) < 0 || jose_jwk_thumbprint(jwk, tp) < 0)
		*why = "the proof's jwk is not a public key of its alg";
	if (*why) {
		EVP_PKEY_free(key);
		return NULL;
	}
	memcpy(jkt, tp, DPOP_JKT_LEN);
	jkt[DPOP_JKT_LEN] = '\0';
	return key;
}

enum dpop_rc dpop_verify(const char *proof, const struct dpop_expect *e, char jkt_out[DPOP_JKT_LEN + 1],
			 const char **why)
{
	struct jws j;
	EVP_PKEY *key = NULL;
	enum dpop_rc rc = DPOP_INVALID;
	jkt_out[0] = '\0';
	*why = "the proof is not a signed JWT of a supported alg";
	if (!proof || jose_parse(proof, strlen(proof), &j) < 0)
		return rc;
	if (!(key = header_key(&j, jkt_out, why)))
		goto out;
	if (jose_verify(j.alg, key, j.input, j.input_len, j.sig, j.sig_len) < 0) {
		*why = "the proof's signature does not verify";
		goto out;
	}
	if ((rc = claims_check(j.payload, e, why)) != DPOP_OK)
		goto out;
	rc = DPOP_INVALID;
	if (e->jkt && strcmp(e->jkt, jkt_out) != 0) {
		*why = "the proof's key is not the one the token is bound to";
		goto out;
	}
	switch (replay_check(jkt_out, json_string_value(json_object_get(j.payload, "jti")),
			     e->max_age_s + DPOP_FUTURE_S)) {
	case 0: rc = DPOP_OK; break;
	case 1: *why = "the proof's jti was used before"; break;
	default: *why = "the proof cannot be checked for replay now"; break;
	}
out:
	if (rc != DPOP_OK)
		jkt_out[0] = '\0';
	EVP_PKEY_free(key);
	jose_free(&j);
	return rc;
}
