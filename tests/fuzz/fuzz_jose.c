/* JOSE (core/jose.c): a compact JWS from outside (a client_assertion) and a
 * JWK (a client's key set). The input is "JWS\nJWK"; a missing part is
 * empty.
 * - an accepted JWS has a known asymmetric alg (never "none" or HS*), object
 *   header and payload, a non-empty bounded signature, and its signing
 *   input is the text before the last '.';
 * - a key built from a JWK only ever fits the algorithm it was built for,
 *   and verification of anything with it answers 0 or -1 without crashing;
 * - a thumbprint, when there is one, is 43 base64url characters. */
#include "fuzz.h"
#include "jose.h"
#include "jparse.h"
#include "lim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char *nl = strchr(s, '\n');
	const char *jwk_text = nl ? nl + 1 : "";
	size_t jws_len = nl ? (size_t)(nl - s) : strlen(s);
	struct jws j;
	int parsed = jose_parse(s, jws_len, &j) == 0;
	if (parsed) {
		FUZZ_CHECK(j.alg >= JOSE_RS256 && j.alg <= JOSE_EDDSA);
		FUZZ_CHECK(json_is_object(j.header) && json_is_object(j.payload));
		FUZZ_CHECK(j.sig_len > 0 && j.sig_len <= LIM_JWS_SIG);
		FUZZ_CHECK(j.input == s && j.input_len < jws_len && s[j.input_len] == '.');
		FUZZ_CHECK(!memchr(s + j.input_len + 1, '.', jws_len - j.input_len - 1));
		FUZZ_CHECK(!j.kid || (strlen(j.kid) > 0 && strlen(j.kid) <= LIM_JWK_KID));
	} else {
		FUZZ_CHECK(j.header == NULL && j.payload == NULL && j.sig == NULL);
	}
	json_t *jwk = jparse(jwk_text, strlen(jwk_text), 0, LIM_JSON_DEPTH);
	static const enum jose_alg algs[] = { JOSE_RS256, JOSE_PS256, JOSE_ES256, JOSE_EDDSA };
	for (size_t i = 0; jwk && i < sizeof(algs) / sizeof(algs[0]); i++) {
		EVP_PKEY *key = NULL;
		if (jose_jwk_key(jwk, algs[i], &key) < 0) {
			FUZZ_CHECK(key == NULL);
			continue;
		}
		FUZZ_CHECK(!json_object_get(jwk, "d"));
		if (parsed) {
			int rc = jose_verify(j.alg, key, j.input, j.input_len, j.sig, j.sig_len);
			FUZZ_CHECK(rc == 0 || rc == -1);
		}
		/* An RSA key is never an EC or Ed25519 one, and so on. */
		uint8_t sig[64] = { 0 };
		FUZZ_CHECK(algs[i] == JOSE_ES256 || jose_verify(JOSE_ES256, key, "x", 1, sig, sizeof(sig)) < 0);
		FUZZ_CHECK(algs[i] == JOSE_EDDSA || jose_verify(JOSE_EDDSA, key, "x", 1, sig, sizeof(sig)) < 0);
		EVP_PKEY_free(key);
	}
	char t[44];
	if (jwk && jose_jwk_thumbprint(jwk, t) == 0)
		FUZZ_CHECK(strlen(t) == 43);
	json_decref(jwk);
	jose_free(&j);
	free(s);
	return 0;
}
