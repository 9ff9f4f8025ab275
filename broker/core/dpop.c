#include "dpop.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jose.h"
#include "lim.h"

/* ---- keys already built --------------------------------------------------- */

/* The keys of recent proofs by thumbprint and alg: a client proves with the
 * same key on every request, and building it from its JWK is a fifth of a
 * proof's cost. Equal thumbprints mean equal key members (RFC 7638: the
 * required members, hashed), so a key built for one is the key of the
 * other; the members the thumbprint leaves out (alg, use, d) are checked on
 * every proof (jose_jwk_fits). Direct-mapped: a collision evicts, which
 * costs a rebuild, never a wrong key. Keys are shared by reference. */
#define KEYCACHE_SLOTS 1024 /* a power of two */

static struct {
	pthread_mutex_t lock;
	struct {
		char jkt[DPOP_JKT_LEN + 1];
		enum jose_alg alg;
		EVP_PKEY *key;
	} slot[KEYCACHE_SLOTS];
} keycache = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t keycache_once = PTHREAD_ONCE_INIT;
static uint64_t keycache_seed; /* nobody outside can aim at a slot */

static void keycache_seed_init(void)
{
	if (crypto_random(&keycache_seed, sizeof(keycache_seed)) < 0)
		keycache_seed = 0; /* aimable evictions cost rebuilds, nothing else */
}

static size_t keycache_index(const char *jkt, enum jose_alg alg)
{
	pthread_once(&keycache_once, keycache_seed_init);
	uint64_t h = 1469598103934665603ull ^ keycache_seed; /* FNV-1a, seeded */
	for (const char *p = jkt; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ull;
	return (size_t)((h ^ (uint64_t)alg) & (KEYCACHE_SLOTS - 1));
}

/* A new reference to the cached key, or NULL. */
static EVP_PKEY *keycache_get(const char *jkt, enum jose_alg alg)
{
	size_t i = keycache_index(jkt, alg);
	EVP_PKEY *k = NULL;
	pthread_mutex_lock(&keycache.lock);
	if (keycache.slot[i].key && keycache.slot[i].alg == alg && strcmp(keycache.slot[i].jkt, jkt) == 0 &&
	    EVP_PKEY_up_ref(keycache.slot[i].key) == 1)
		k = keycache.slot[i].key;
	pthread_mutex_unlock(&keycache.lock);
	return k;
}

static void keycache_put(const char *jkt, enum jose_alg alg, EVP_PKEY *key)
{
	size_t i = keycache_index(jkt, alg);
	EVP_PKEY *old = NULL;
	if (EVP_PKEY_up_ref(key) != 1)
		return;
	pthread_mutex_lock(&keycache.lock);
	old = keycache.slot[i].key;
	snprintf(keycache.slot[i].jkt, sizeof(keycache.slot[i].jkt), "%s", jkt);
	keycache.slot[i].alg = alg;
	keycache.slot[i].key = key;
	pthread_mutex_unlock(&keycache.lock);
	EVP_PKEY_free(old);
}

static void keycache_clear(void)
{
	pthread_mutex_lock(&keycache.lock);
	for (size_t i = 0; i < KEYCACHE_SLOTS; i++) {
		EVP_PKEY_free(keycache.slot[i].key);
		keycache.slot[i].key = NULL;
	}
	pthread_mutex_unlock(&keycache.lock);
}

/* ---- the jti memory ----------------------------------------------------- */

/* Two generations of a set of 64-bit keyed hashes of (jkt, jti). A
 * generation takes inserts for W seconds (W = the longest a proof is
 * acceptable: max age and future skew), then becomes the old one, and the
 * old one is dropped: an entry lives between W and 2W seconds, long enough
 * for its proof's iat to leave the window (generations turn on the
 * monotonic clock, so a step of the wall clock cannot drop one early).
 *
 * A generation holds at most REPLAY_MAX jtis (8-byte slots at load <= 1/2:
 * 32 MiB), at most REPLAY_PER_KEY of one key, and at most REPLAY_MAX / 8
 * distinct keys (counted in a second table, 12 bytes a slot: 6 MiB): a
 * client flooding proofs of its own key locks out only that key, and past
 * REPLAY_MAX (eight such keys at least) proofs are refused (fail closed)
 * until the generation turns over. Two generations per space, two spaces
 * (the token endpoint's fills only with proofs that got tokens). At the
 * proxy the proof is recorded after the grant's rate limit, so
 * limits.proxy_per_grant_per_second bounds what one grant can add. Hashes are keyed with a per-process random secret, so nobody
 * outside can aim collisions; a false "replayed" needs a 64-bit collision. */
#define REPLAY_MAX (1u << 21)     /* jtis of a generation: at most 32 MiB (load <= 1/2) */
#define REPLAY_PER_KEY (1u << 18) /* ~3,700 proofs/s of one key, sustained over 70 s */
#define REPLAY_MIN_SLOTS 1024u

static size_t replay_max = REPLAY_MAX, replay_per_key = REPLAY_PER_KEY; /* tests lower them */

/* An open-addressing set of nonzero 64-bit hashes; the key table counts
 * (n), the jti table does not (8 bytes a slot). */
struct table {
	uint64_t *h;   /* 0: empty */
	uint32_t *cnt; /* NULL in the jti table */
	size_t cap, n; /* cap: a power of two, or 0 */
};

struct generation {
	struct table jtis, keys;
	time_t start;
};

struct replay_space {
	pthread_mutex_t lock;
	struct generation cur, old;
	uint8_t secret[CRYPTO_KEY_LEN]; /* set once for all spaces (replay_seed) */
};

static struct replay_space spaces[DPOP_SPACES] = {
	{ .lock = PTHREAD_MUTEX_INITIALIZER },
	{ .lock = PTHREAD_MUTEX_INITIALIZER },
};

/* The slot holding h, or the empty one where it would go (cap > 0). */
static size_t table_find(const struct table *t, uint64_t h)
{
	size_t i = h & (t->cap - 1);
	while (t->h[i] && t->h[i] != h)
		i = (i + 1) & (t->cap - 1);
	return i;
}

/* The count of h (the jti table: 1) when present, else 0. */
static uint32_t table_get(const struct table *t, uint64_t h)
{
	size_t i = t->cap ? table_find(t, h) : 0;
	return t->cap && t->h[i] ? (t->cnt ? t->cnt[i] : 1) : 0;
}

/* Room for one more entry at load <= 1/2: 0, or -1 (full, or no memory). */
static int table_reserve(struct table *t, int counted, size_t max)
{
	if (t->n >= max)
		return -1;
	if (t->cap && (t->n + 1) * 2 <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap * 2 : REPLAY_MIN_SLOTS;
	struct table bigger = { calloc(cap, sizeof(uint64_t)), counted ? calloc(cap, sizeof(uint32_t)) : NULL, cap,
				t->n };
	if (!bigger.h || (counted && !bigger.cnt)) {
		free(bigger.h);
		free(bigger.cnt);
		return -1;
	}
	for (size_t i = 0; i < t->cap; i++)
		if (t->h[i]) {
			size_t k = table_find(&bigger, t->h[i]);
			bigger.h[k] = t->h[i];
			if (counted)
				bigger.cnt[k] = t->cnt[i];
		}
	free(t->h);
	free(t->cnt);
	*t = bigger;
	return 0;
}

/* Adds h (present or not) with its count raised by one; room reserved. */
static void table_add(struct table *t, uint64_t h)
{
	size_t i = table_find(t, h);
	if (!t->h[i]) {
		t->h[i] = h;
		t->n++;
	}
	if (t->cnt)
		t->cnt[i]++;
}

static void gen_free(struct generation *g)
{
	free(g->jtis.h);
	free(g->jtis.cnt);
	free(g->keys.h);
	free(g->keys.cnt);
	memset(g, 0, sizeof(*g));
}

/* The keyed hash of label and a, then b when given; 0 when it cannot be
 * made (memory exhaustion), which the caller refuses. */
static uint64_t replay_hash(const struct replay_space *sp, const char *label, const char *a, const char *b)
{
	struct buf in;
	uint8_t d[CRYPTO_SHA256_LEN];
	uint64_t h = 0;
	buf_init(&in, 512);
	if (buf_add(&in, sp->secret, sizeof(sp->secret)) == 0 && buf_add(&in, label, strlen(label) + 1) == 0 &&
	    buf_add(&in, a, strlen(a) + 1) == 0 && (!b || buf_adds(&in, b) == 0)) {
		crypto_sha256(in.ptr, in.len, d);
		memcpy(&h, d, sizeof(h));
	}
	buf_free(&in);
	return h;
}

/* The replay verdict on (jkt, jti) in sp: 0 not seen within the window
 * (recorded when record), 1 seen, 2 the key has used its share, -1 it
 * cannot be recorded (full, no memory, no randomness). */
static pthread_once_t replay_once = PTHREAD_ONCE_INIT;
static int replay_seeded;

static void replay_seed(void)
{
	int ok = 1;
	for (size_t i = 0; i < DPOP_SPACES; i++)
		ok &= crypto_random(spaces[i].secret, sizeof(spaces[i].secret)) == 0;
	replay_seeded = ok;
}

/* The keyed hashes of (jkt, jti) and of jkt in sp, made outside its lock:
 * 0, or -1 (no randomness, no memory: no verdict, so refused). */
static int proof_id(const struct replay_space *sp, const char *jkt, const char *jti, uint64_t *h, uint64_t *k)
{
	pthread_once(&replay_once, replay_seed);
	if (!replay_seeded)
		return -1;
	*h = replay_hash(sp, "jti", jkt, jti);
	*k = replay_hash(sp, "key", jkt, NULL);
	return *h && *k ? 0 : -1; /* a genuine 0 is a 2^-64 refusal */
}

/* The replay verdict on the proof (h, k) in sp: 0 not seen within the
 * window (recorded when record), 1 seen, 2 the key has used its share, -1
 * it cannot be recorded (full, no memory). */
static int replay_check(struct replay_space *sp, uint64_t h, uint64_t k, long window_s, int record)
{
	int rc = -1;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	time_t now = ts.tv_sec;
	pthread_mutex_lock(&sp->lock);
	if (!sp->cur.start || now - sp->cur.start >= window_s) {
		gen_free(&sp->old);
		sp->old = sp->cur;
		memset(&sp->cur, 0, sizeof(sp->cur));
		sp->cur.start = now;
	}
	if (table_get(&sp->cur.jtis, h) || table_get(&sp->old.jtis, h))
		rc = 1;
	else if (table_get(&sp->cur.keys, k) >= replay_per_key)
		rc = 2;
	else if (!record)
		rc = sp->cur.jtis.n >= replay_max || (!table_get(&sp->cur.keys, k) && sp->cur.keys.n >= replay_max / 8)
			     ? -1 /* it could not be recorded */
			     : 0;
	else if (table_reserve(&sp->cur.jtis, 0, replay_max) == 0 &&
		 (table_get(&sp->cur.keys, k) || table_reserve(&sp->cur.keys, 1, replay_max / 8) == 0)) {
		table_add(&sp->cur.jtis, h);
		table_add(&sp->cur.keys, k);
		rc = 0;
	}
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

void dpop_replay_reset(size_t max, size_t per_key)
{
	keycache_clear();
	for (size_t i = 0; i < DPOP_SPACES; i++) {
		pthread_mutex_lock(&spaces[i].lock);
		replay_max = max ? max : REPLAY_MAX;
		replay_per_key = per_key ? per_key : REPLAY_PER_KEY;
		gen_free(&spaces[i].cur);
		gen_free(&spaces[i].old);
		pthread_mutex_unlock(&spaces[i].lock);
	}
}

static const char *replay_why(int rc)
{
	switch (rc) {
	case 0: return NULL;
	case 1: return "the proof's jti was used before";
	case 2: return "too many proofs of this key for now";
	default: return "the proof cannot be checked for replay now";
	}
}

int dpop_record(const struct dpop_pending *p, const char **why)
{
	*why = "the proof cannot be checked for replay now";
	if (!p->set || (unsigned)p->space >= DPOP_SPACES)
		return -1;
	int rc = replay_check(&spaces[p->space], p->h, p->k, p->window_s, 1);
	*why = replay_why(rc);
	return rc == 0 ? 0 : -1;
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

struct dpop_expect dpop_expect_for(const struct config *cfg, enum dpop_space space, const char *htm, const char *htu)
{
	return (struct dpop_expect){ .space = space,
				     .htm = htm,
				     .htu = htu,
				     .nonce_key = cfg->dpop.require_nonce ? cfg->dpop.nonce_key : NULL,
				     .nonce_ttl_s = cfg->dpop.nonce_ttl_s,
				     .max_age_s = cfg->dpop.proof_max_age_s,
				     .now = time(NULL) };
}

int dpop_current_nonce(const struct config *cfg, char out[DPOP_NONCE_LEN + 1])
{
	return cfg->dpop.require_nonce ? dpop_nonce(cfg->dpop.nonce_key, cfg->dpop.nonce_ttl_s, time(NULL), out) : -1;
}

/* ---- htu ---------------------------------------------------------------- */

static int hex_digit(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* p[0..n) percent-decoded into out, as the HTTP server decodes the path it
 * routes (and the broker forwards): 0, or -1 for a broken escape or a NUL. */
static int path_decode(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		char c[1] = { p[i] };
		if (p[i] == '%') {
			int hi = i + 2 < n ? hex_digit(p[i + 1]) : -1;
			int lo = hi >= 0 ? hex_digit(p[i + 2]) : -1;
			if (lo < 0 || (hi == 0 && lo == 0))
				return -1;
			c[0] = (char)(hi << 4 | lo);
			i += 2;
		}
		if (buf_add(out, c, 1) < 0)
			return -1;
	}
	return 0;
}

/* s normalised into out: scheme and host lowercase, the scheme's default
 * port dropped, an empty path "/", query and fragment cut; with decode, the
 * path percent-decoded. 0, or -1 for anything but an absolute http(s) URL
 * without userinfo. */
static int htu_normalise(const char *s, int decode, struct buf *out)
{
	/* The proof's htu loses its query and fragment; the request URL has
	 * none (its path is decoded: a '?' or '#' there is the path's own). */
	size_t n = decode ? strcspn(s, "?#") : strlen(s);
	int https = strncasecmp(s, "https://", 8) == 0;
	if (!https && strncasecmp(s, "http://", 7) != 0)
		return -1;
	const char *auth = s + (https ? 8 : 7), *end = s + n;
	const char *path = auth + strcspn(auth, decode ? "/?#" : "/");
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
	return decode ? path_decode(path, (size_t)(end - path), out) : buf_add(out, path, (size_t)(end - path));
}

int dpop_htu_matches(const char *htu, const char *request_url)
{
	struct buf x, y;
	buf_init(&x, 4096);
	buf_init(&y, 4096);
	int eq = htu && request_url && htu_normalise(htu, 1, &x) == 0 && htu_normalise(request_url, 0, &y) == 0 &&
		 x.len == y.len && memcmp(x.ptr, y.ptr, x.len) == 0;
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
	else if (!htu || !dpop_htu_matches(htu, e->htu))
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

/* The proof's key: the header's jwk, public, fitting alg, and (when e
 * names one) the key the token is bound to; jkt gets its thumbprint. The
 * thumbprint is compared before any key is built or signature checked, and
 * RSA keys are held to 4096 bits with e = 65537: a proof by a key it cannot
 * be costs no modular arithmetic. */
static int header_check(const struct jws *j, const struct dpop_expect *e, char jkt[DPOP_JKT_LEN + 1], const char **why)
{
	const json_t *jwk = json_object_get(j->header, "jwk");
	const char *typ = json_string_value(json_object_get(j->header, "typ"));
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const json_t *n = json_object_get(jwk, "n");
	char tp[44];
	*why = NULL;
	if (!typ || strcasecmp(typ, "dpop+jwt") != 0)
		*why = "the proof's typ is not dpop+jwt";
	else if (!json_is_object(jwk) || jose_jwk_thumbprint(jwk, tp) < 0 || !jose_jwk_fits(jwk, j->alg))
		*why = "the proof's jwk is not a public key of its alg";
	else if (e->jkt && (strlen(e->jkt) != DPOP_JKT_LEN || memcmp(e->jkt, tp, DPOP_JKT_LEN) != 0))
		*why = "the proof's key is not the one the token is bound to";
	else if (kty && strcmp(kty, "RSA") == 0 &&
		 (!json_is_string(n) || json_string_length(n) > DPOP_RSA_N_CHARS ||
		  strcmp(json_string_value(json_object_get(jwk, "e")) ? json_string_value(json_object_get(jwk, "e"))
								      : "",
			 "AQAB") != 0))
		*why = "the proof's RSA key is over 4096 bits or its exponent is not 65537";
	if (*why)
		return -1;
	memcpy(jkt, tp, DPOP_JKT_LEN);
	jkt[DPOP_JKT_LEN] = '\0';
	return 0;
}

/* The key of a proof header_check passed: the cached one (*cached 1), or
 * built from its jwk; NULL with *why. */
static EVP_PKEY *header_key(const struct jws *j, const char *jkt, int *cached, const char **why)
{
	EVP_PKEY *key = keycache_get(jkt, j->alg);
	*cached = key != NULL;
	if (!key && jose_jwk_key(json_object_get(j->header, "jwk"), j->alg, &key) < 0)
		*why = "the proof's jwk is not a public key of its alg";
	return key;
}

enum dpop_rc dpop_verify(const char *proof, const struct dpop_expect *e, char jkt_out[DPOP_JKT_LEN + 1],
			 const char **why)
{
	struct jws j;
	EVP_PKEY *key = NULL;
	enum dpop_rc rc = DPOP_INVALID;
	jkt_out[0] = '\0';
	if (e->pending)
		memset(e->pending, 0, sizeof(*e->pending));
	*why = "the proof is not a signed JWT of a supported alg";
	if (!proof || jose_parse(proof, strlen(proof), &j) < 0)
		return rc;
	/* Everything cheap first (header, binding, claims, nonce: JSON, a
	 * SHA-256, an HMAC), so that a proof that fails anyway costs no
	 * signature check; then the key and the signature. */
	int cached = 0;
	if (header_check(&j, e, jkt_out, why) < 0 || (rc = claims_check(j.payload, e, why)) != DPOP_OK)
		goto out;
	rc = DPOP_INVALID;
	if (!(key = header_key(&j, jkt_out, &cached, why)))
		goto out;
	if (jose_verify(j.alg, key, j.input, j.input_len, j.sig, j.sig_len) < 0) {
		*why = "the proof's signature does not verify";
		goto out;
	}
	/* Only a key that verified a proof is kept. */
	if (!cached)
		keycache_put(jkt_out, j.alg, key);
	const char *jti = json_string_value(json_object_get(j.payload, "jti"));
	long window = e->max_age_s + DPOP_FUTURE_S;
	uint64_t h = 0, k = 0;
	if ((unsigned)e->space >= DPOP_SPACES || proof_id(&spaces[e->space], jkt_out, jti, &h, &k) < 0) {
		*why = replay_why(-1);
		goto out;
	}
	if ((*why = replay_why(replay_check(&spaces[e->space], h, k, window, !e->pending))) != NULL)
		goto out;
	if (e->pending)
		*e->pending = (struct dpop_pending){ 1, e->space, window, h, k };
	rc = DPOP_OK;
out:
	if (rc != DPOP_OK)
		jkt_out[0] = '\0';
	EVP_PKEY_free(key);
	jose_free(&j);
	return rc;
}
