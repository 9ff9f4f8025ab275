/* Shared by the libFuzzer drivers: the entry point's prototype, a
 * NUL-terminated copy of the input for parsers that take C strings, and an
 * invariant check that crashes (so libFuzzer saves the input). */
#ifndef MCPB_FUZZ_H
#define MCPB_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* data[0..size) + '\0' (the parser sees up to the first NUL, as it would a
 * header or a libmicrohttpd value); abort()s on allocation failure. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#define FUZZ_CHECK(cond)                                                                             \
	do {                                                                                         \
		if (!(cond)) {                                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                     \
		}                                                                                    \
	} while (0)

#endif
