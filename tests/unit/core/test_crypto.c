/* crypto.c: base64/base64url (strictness and round trips), known-answer
 * tests for SHA-256, HMAC, HKDF and the RFC 7636 PKCE example, constant-time
 * comparison, tokens and AES-256-GCM tamper detection. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "crypto.h"
#include "test.h"

/* A fixed-seed generator: the round trips are the same on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint8_t rng_byte(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint8_t)(rng_state >> 24);
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int url_alphabet_only(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '_'))
			return 0;
	return 1;
}

/* Decodes s (its strlen) as base64url; -1 or the decoded length. */
static long url_dec(const char *s, uint8_t *out, size_t cap)
{
	return crypto_b64url_decode(s, strlen(s), out, cap);
}

static void test_b64url_round_trip(void)
{
	uint8_t in[100], out[100];
	char enc[140];
	for (size_t n = 0; n <= 100; n++) {
		for (size_t i = 0; i < n; i++)
			in[i] = rng_byte();
		crypto_b64url_encode(in, n, enc);
		CHECK(strlen(enc) == crypto_b64url_len(n));
		CHECK(url_alphabet_only(enc));
		memset(out, 0xAA, sizeof(out));
		long got = crypto_b64url_decode(enc, strlen(enc), out, n);
		CHECK(got == (long)n);
		CHECK(n == 0 || memcmp(in, out, n) == 0);
		/* One byte short of room is refused, never truncated. */
		if (n > 0)
			CHECK(crypto_b64url_decode(enc, strlen(enc), out, n - 1) == -1);
	}
	/* Every byte value survives (both alphabet tails, '-' and '_'). */
	uint8_t all[256], back[256];
	char big[400];
	for (size_t i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	crypto_b64url_encode(all, sizeof(all), big);
	CHECK(strlen(big) == crypto_b64url_len(256));
	CHECK(strchr(big, '-') != NULL && strchr(big, '_') != NULL);
	CHECK(url_dec(big, back, sizeof(back)) == 256);
	CHECK(memcmp(all, back, sizeof(all)) == 0);
}

static void test_b64url_vectors(void)
{
	/* RFC 4648 section 10, without padding (section 5 alphabet). */
	static const struct {
		const char *plain, *enc;
	} v[] = {
		{ "", "" },           { "f", "Zg" },          { "fo", "Zm8" },          { "foo", "Zm9v" },
		{ "foob", "Zm9vYg" }, { "fooba", "Zm9vYmE" }, { "foobar", "Zm9vYmFy" },
	};
	char enc[32];
	uint8_t dec[32];
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = strlen(v[i].plain);
		crypto_b64url_encode(v[i].plain, n, enc);
		CHECK_STR(enc, v[i].enc);
		CHECK(url_dec(v[i].enc, dec, sizeof(dec)) == (long)n);
		CHECK(memcmp(dec, v[i].plain, n) == 0);
	}
	/* Bytes whose standard encoding uses '+' and '/'. */
	static const uint8_t plus[] = { 0xfb, 0xef, 0xbe };  /* std "++++" */
	static const uint8_t slash[] = { 0xff, 0xff, 0xff }; /* std "////" */
	static const uint8_t mixed[] = { 0xfb, 0xff };       /* std "+/8=" */
	crypto_b64url_encode(plus, sizeof(plus), enc);
	CHECK_STR(enc, "----");
	crypto_b64url_encode(slash, sizeof(slash), enc);
	CHECK_STR(enc, "____");
	crypto_b64url_encode(mixed, sizeof(mixed), enc);
	CHECK_STR(enc, "-_8");
	CHECK(url_dec("-_8", dec, sizeof(dec)) == 2 && dec[0] == 0xfb && dec[1] == 0xff);
	CHECK(crypto_b64url_len(0) == 0 && crypto_b64url_len(1) == 2 && crypto_b64url_len(2) == 3 &&
	      crypto_b64url_len(3) == 4 && crypto_b64url_len(32) == 43);
}

static void test_b64url_rejects(void)
{
	uint8_t out[64];
	/* Padding, the standard alphabet, whitespace, other bytes. */
	static const char *const bad[] = {
		"Zg==",
		"Zm8=",
		"Zg=",
		"Zm9v=",
		"+/8",
		"Zm+v",
		"Zm/v",
		"Zm9v YmFy",
		" Zm9v",
		"Zm9v\n",
		"Zm9v\t",
		"Zm9\r",
		"Zm.v",
		"Zm9v*",
		"Zm9v\xc3\xa9",
		"Zm,v",
		/* length % 4 == 1 can never be base64 */
		"Z",
		"Zm9vY",
		"Zm9vYmFyZ",
		/* non-canonical: unused low bits set in the last character */
		"QR",
		"QT",
		"Qf",
		"QUJ",
		"QUK",
		"Zh",
		"Zm9",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long got = url_dec(bad[i], out, sizeof(out));
		if (got != -1)
			fprintf(stderr, "accepted bad base64url \"%s\" (%ld)\n", bad[i], got);
		CHECK(got == -1);
	}
	/* The canonical spellings of the same values do decode. */
	CHECK(url_dec("QQ", out, sizeof(out)) == 1 && out[0] == 'A');
	CHECK(url_dec("QUI", out, sizeof(out)) == 2 && memcmp(out, "AB", 2) == 0);
	/* An embedded NUL inside the given length is not a terminator. */
	CHECK(crypto_b64url_decode("Zm\0v", 4, out, sizeof(out)) == -1);
	/* Only inlen characters are read. */
	CHECK(crypto_b64url_decode("Zm9v!!!", 4, out, sizeof(out)) == 3);
}

static void test_b64_std(void)
{
	uint8_t key[32], back[64];
	char text[64];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 3);
	CHECK(crypto_b64_encode(key, sizeof(key), text, sizeof(text)) == 0);
	CHECK(strlen(text) == 44 && text[43] == '=');
	CHECK(crypto_b64_decode(text, strlen(text), back, 32) == 32);
	CHECK(memcmp(key, back, 32) == 0);
	/* Room for the NUL is required; exactly enough is fine. */
	CHECK(crypto_b64_encode(key, sizeof(key), text, 44) == -1);
	CHECK(crypto_b64_encode(key, sizeof(key), text, 45) == 0);

	/* A key with + and /, as keygen can produce. */
	const char *k = "+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8=";
	CHECK(crypto_b64_decode(k, strlen(k), back, 32) == 32);
	CHECK(back[0] == 0xfb && back[31] == 0xff);

	/* Wrong lengths: the decoder reports the length, or refuses when it does
	 * not fit; the caller (config) insists on exactly 32. */
	const char *k16 = "AAECAwQFBgcICQoLDA0ODw==";
	CHECK(crypto_b64_decode(k16, strlen(k16), back, 32) == 16);
	uint8_t k33[33];
	memset(k33, 0x5a, sizeof(k33));
	CHECK(crypto_b64_encode(k33, sizeof(k33), text, sizeof(text)) == 0);
	CHECK(crypto_b64_decode(text, strlen(text), back, 32) == -1);
	CHECK(crypto_b64_decode(text, strlen(text), back, 33) == 33);
	CHECK(crypto_b64_decode("", 0, back, 32) == 0);

	static const char *const bad[] = {
		"Zm9vYg",  /* unpadded */
		"Zm9vYg=", /* short padding */
		"Zg==Zg==", "AB=C", "A===", "====", "Zm9v YmFy", "Zm9v\nYmFy", "-_8=", "Zm9v!", "Zm9",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long got = crypto_b64_decode(bad[i], strlen(bad[i]), back, sizeof(back));
		if (got != -1)
			fprintf(stderr, "accepted bad base64 \"%s\" (%ld)\n", bad[i], got);
		CHECK(got == -1);
	}
}

static void test_hashes(void)
{
	char hex[65];
	uint8_t d[CRYPTO_SHA256_LEN];
	crypto_sha256_hex("abc", 3, hex);
	CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	crypto_sha256_hex("", 0, hex);
	CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

	/* RFC 4231 test case 2. */
	static const char data[] = "what do ya want for nothing?";
	CHECK(crypto_hmac_sha256("Jefe", 4, data, strlen(data), d) == 0);
	hex_of(d, sizeof(d), hex);
	CHECK_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	/* RFC 7636 appendix B: S256 challenge of the example verifier. */
	static const char verifier[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
	char challenge[64];
	crypto_sha256(verifier, strlen(verifier), d);
	crypto_b64url_encode(d, sizeof(d), challenge);
	CHECK_STR(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void test_hkdf(void)
{
	/* RFC 5869 test case 1 (SHA-256). */
	uint8_t ikm[22], salt[13], okm[42];
	char info[11], hex[85];
	memset(ikm, 0x0b, sizeof(ikm));
	for (size_t i = 0; i < sizeof(salt); i++)
		salt[i] = (uint8_t)i;
	for (size_t i = 0; i < 10; i++)
		info[i] = (char)(0xf0 + i);
	info[10] = '\0';
	CHECK(crypto_hkdf(ikm, sizeof(ikm), salt, sizeof(salt), info, okm, sizeof(okm)) == 0);
	hex_of(okm, sizeof(okm), hex);
	CHECK_STR(hex, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
		       "34007208d5b887185865");
	/* Different info, different key. */
	uint8_t other[42];
	CHECK(crypto_hkdf(ikm, sizeof(ikm), salt, sizeof(salt), "cookie", other, sizeof(other)) == 0);
	CHECK(memcmp(okm, other, sizeof(okm)) != 0);
}

static void test_ct_equal(void)
{
	CHECK(crypto_ct_equal("secret", 6, "secret", 6) == 1);
	CHECK(crypto_ct_equal("secret", 6, "secreT", 6) == 0);
	CHECK(crypto_ct_equal("secret", 6, "secret!", 7) == 0);
	CHECK(crypto_ct_equal("secret", 6, "secre", 5) == 0);
	CHECK(crypto_ct_equal("", 0, "", 0) == 1);
	CHECK(crypto_ct_equal("", 0, "a", 1) == 0);
	CHECK(crypto_ct_equal("a", 1, "", 0) == 0);
	/* Length is the given one, not strlen. */
	CHECK(crypto_ct_equal("ab\0c", 4, "ab\0d", 4) == 0);
	CHECK(crypto_ct_equal("ab\0c", 4, "ab", 2) == 0);
}

static void test_tokens(void)
{
	char a[64], b[64];
	CHECK(crypto_token_new("mcpb_at_", a, sizeof(a)) == 0);
	CHECK(crypto_token_new("mcpb_at_", b, sizeof(b)) == 0);
	CHECK(strncmp(a, "mcpb_at_", 8) == 0);
	CHECK(strlen(a) == 8 + 43);
	CHECK(url_alphabet_only(a + 8));
	CHECK(strcmp(a, b) != 0);
	uint8_t raw[40];
	CHECK(url_dec(a + 8, raw, sizeof(raw)) == 32);
	/* The header promises strlen(prefix) + 44 bytes is enough; one less is not. */
	CHECK(crypto_token_new("mcpb_at_", a, 8 + 44) == 0 && strlen(a) == 51);
	CHECK(crypto_token_new("mcpb_at_", a, 8 + 43) == -1);
	CHECK(crypto_token_new("", a, 44) == 0 && strlen(a) == 43);
}

static void test_aead(void)
{
	uint8_t key[CRYPTO_KEY_LEN], key2[CRYPTO_KEY_LEN];
	uint8_t nonce[CRYPTO_NONCE_LEN], nonce2[CRYPTO_NONCE_LEN], tag[CRYPTO_TAG_LEN];
	uint8_t ct[64], pt[64], ct2[64], tag2[CRYPTO_TAG_LEN];
	static const char msg[] = "upstream refresh token: gho_0123456789abcdef";
	static const char aad[] = "grant:42|key:k1";
	size_t n = strlen(msg);
	CHECK(crypto_random(key, sizeof(key)) == 0);
	memcpy(key2, key, sizeof(key));
	key2[0] ^= 1;

	CHECK(crypto_aead_seal(key, aad, strlen(aad), msg, n, nonce, ct, tag) == 0);
	CHECK(memcmp(ct, msg, n) != 0);
	memset(pt, 0, sizeof(pt));
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n, tag, pt) == 0);
	CHECK(memcmp(pt, msg, n) == 0);

	/* Each seal draws a fresh nonce. */
	CHECK(crypto_aead_seal(key, aad, strlen(aad), msg, n, nonce2, ct2, tag2) == 0);
	CHECK(memcmp(nonce, nonce2, sizeof(nonce)) != 0);
	CHECK(memcmp(ct, ct2, n) != 0);

	/* Any change is detected, and the output is wiped. */
	uint8_t zero[64] = { 0 };
	ct[n - 1] ^= 0x80;
	memset(pt, 0x55, sizeof(pt));
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n, tag, pt) == -1);
	CHECK(memcmp(pt, zero, n) == 0);
	ct[n - 1] ^= 0x80;

	tag[0] ^= 1;
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n, tag, pt) == -1);
	tag[0] ^= 1;

	CHECK(crypto_aead_open(key, "grant:43|key:k1", strlen(aad), nonce, ct, n, tag, pt) == -1);
	CHECK(crypto_aead_open(key, NULL, 0, nonce, ct, n, tag, pt) == -1);
	CHECK(crypto_aead_open(key, aad, strlen(aad) - 1, nonce, ct, n, tag, pt) == -1);

	nonce[CRYPTO_NONCE_LEN - 1] ^= 1;
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n, tag, pt) == -1);
	nonce[CRYPTO_NONCE_LEN - 1] ^= 1;

	CHECK(crypto_aead_open(key2, aad, strlen(aad), nonce, ct, n, tag, pt) == -1);
	/* Truncated ciphertext. */
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n - 1, tag, pt) == -1);

	/* Untouched, it still opens. */
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, n, tag, pt) == 0);
	CHECK(memcmp(pt, msg, n) == 0);

	/* No AAD and an empty plaintext both work. */
	CHECK(crypto_aead_seal(key, NULL, 0, msg, n, nonce, ct, tag) == 0);
	CHECK(crypto_aead_open(key, NULL, 0, nonce, ct, n, tag, pt) == 0);
	CHECK(memcmp(pt, msg, n) == 0);
	CHECK(crypto_aead_seal(key, aad, strlen(aad), "", 0, nonce, ct, tag) == 0);
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, 0, tag, pt) == 0);
	tag[3] ^= 4;
	CHECK(crypto_aead_open(key, aad, strlen(aad), nonce, ct, 0, tag, pt) == -1);
}

static void test_random(void)
{
	uint8_t a[32], b[32];
	CHECK(crypto_random(a, sizeof(a)) == 0);
	CHECK(crypto_random(b, sizeof(b)) == 0);
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	CHECK(crypto_random(a, 0) == 0);
	crypto_wipe(a, sizeof(a));
	uint8_t zero[32] = { 0 };
	CHECK(memcmp(a, zero, sizeof(a)) == 0);
	crypto_wipe(NULL, 10); /* accepted */
}

int main(void)
{
	test_b64url_round_trip();
	test_b64url_vectors();
	test_b64url_rejects();
	test_b64_std();
	test_hashes();
	test_hkdf();
	test_ct_equal();
	test_tokens();
	test_aead();
	test_random();
	TEST_DONE();
}
