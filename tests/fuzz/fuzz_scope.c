/* Space-separated scope lists (authorize and token requests, grants):
 * scopes_parse. Accepted tokens are RFC 6749 scope-tokens, distinct, and
 * survive scopes_join + scopes_parse unchanged. */
#include "fuzz.h"
#include "scope.h"

static int scope_char(unsigned char c)
{
	return c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	struct scopes sc, again;
	if (scopes_parse(s, &sc) == 0) {
		FUZZ_CHECK(sc.n <= LIM_SCOPES);
		for (size_t i = 0; i < sc.n; i++) {
			size_t n = strlen(sc.v[i]);
			FUZZ_CHECK(n > 0 && n <= 128);
			for (size_t j = 0; j < n; j++)
				FUZZ_CHECK(scope_char((unsigned char)sc.v[i][j]));
			for (size_t j = 0; j < i; j++)
				FUZZ_CHECK(strcmp(sc.v[i], sc.v[j]) != 0);
		}
		char *joined = scopes_join(&sc);
		FUZZ_CHECK(joined && scopes_parse(joined, &again) == 0);
		FUZZ_CHECK(again.n == sc.n && scopes_subset(&sc, &again) && scopes_subset(&again, &sc));
		scopes_free(&again);
		free(joined);
		scopes_free(&sc);
	}
	free(s);
	return 0;
}
