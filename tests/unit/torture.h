/* Allocation-failure torture, as curl's: a unit-test binary linked with
 * torture.c and -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,
 * --wrap=strndup,--wrap=json_loadb,--wrap=json_loads counts every allocation
 * made by the broker objects and the test, and those jansson, OpenSSL and
 * libcurl make for them (their allocators are routed to the same counter),
 * and makes one of them fail.
 *
 *   MCPB_TORTURE unset   nothing is counted or failed: the test runs as is.
 *   MCPB_TORTURE=N       one run of main() in which the N-th allocation
 *                        fails (to reproduce a report under a debugger).
 *   MCPB_TORTURE=all     a counting run (nothing fails) finds the number T
 *                        of allocations; then main() runs in a forked child
 *                        once per N = 1, 2, ... with the N-th failing, until
 *                        a run makes fewer than N allocations. With
 *                        MCPB_TORTURE_RUNS=R (0: no bound) and T > R, only
 *                        every ceil(T/R)-th N is failed, from
 *                        MCPB_TORTURE_OFFSET (default 0) + 1, so that a long
 *                        test stays within its time; another offset tries
 *                        other allocations.
 * A child may fail its CHECKs (the code under test rightly reports an
 * error); it must exit 0 or 1 normally, within TORTURE_CHILD_S seconds: a
 * signal (a sanitizer report with abort_on_error=1, a crash, a hang) or any
 * other status is a failure, reported with N and the child's output. The
 * process exits 1 when any run failed, 0 otherwise. */
#ifndef MCPB_TORTURE_H
#define MCPB_TORTURE_H
#include <jansson.h>
#include <stddef.h>

#define TORTURE_CHILD_S 20

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

/* json_loadb and json_loads (also wrapped) count as one allocation each,
 * and nothing fails inside them: see torture.c. */
json_t *__real_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
json_t *__real_json_loads(const char *s, size_t flags, json_error_t *error);
json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *error);

#endif
