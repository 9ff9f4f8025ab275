/* The allocation counter and the loop over N of torture mode (torture.h). */
#include "torture.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "num.h"

/* Shared with the parent in the loop (an anonymous shared mapping), so that
 * it learns whether the child reached its N-th allocation. */
struct torture_state {
	long calls;   /* allocations counted so far in this run */
	long fail_at; /* the one that fails; 0: count, never fail */
	int failed;   /* the fail_at-th allocation happened (and failed) */
};

static struct torture_state single, *st; /* NULL: not torturing */
static __thread int paused;              /* inside a parse (see __wrap_json_loadb) */

static int torture_fail(void)
{
	if (!st || paused)
		return 0;
	long n = __atomic_add_fetch(&st->calls, 1, __ATOMIC_RELAXED);
	if (n != st->fail_at)
		return 0;
	st->failed = 1;
	errno = ENOMEM;
	return 1;
}

void *__wrap_malloc(size_t n)
{
	return torture_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return torture_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return torture_fail() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return torture_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return torture_fail() ? NULL : __real_strndup(s, n);
}

/* jansson 2.14 drops a failed allocation in its lexer (lex_save ignores
 * strbuffer_append_byte's -1), then asserts or reads past its buffer:
 * akheron/jansson#362, open. A parse is therefore one allocation point of
 * its own: it fails whole, as jansson does when out of memory, or it runs
 * with no allocation failing inside it. */
static json_t *parse_failed(json_error_t *error)
{
	if (error) {
		memset(error, 0, sizeof(*error));
		error->line = error->column = -1;
		snprintf(error->source, sizeof(error->source), "<torture>");
		snprintf(error->text, sizeof(error->text), "out of memory");
	}
	return NULL;
}

json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
	if (torture_fail())
		return parse_failed(error);
	paused++;
	json_t *j = __real_json_loadb(buf, len, flags, error);
	paused--;
	return j;
}

json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *error)
{
	if (torture_fail())
		return parse_failed(error);
	paused++;
	json_t *j = __real_json_loads(s, flags, error);
	paused--;
	return j;
}

/* The libraries' allocators, on the same counter. */
static void *ossl_malloc(size_t n, const char *file, int line)
{
	return __wrap_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	return __wrap_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	free(p);
}

static void *lib_malloc(size_t n)
{
	return __wrap_malloc(n);
}

static void lib_free(void *p)
{
	free(p);
}

static void *lib_realloc(void *p, size_t n)
{
	return __wrap_realloc(p, n);
}

static char *lib_strdup(const char *s)
{
	return __wrap_strdup(s);
}

static void *lib_calloc(size_t n, size_t size)
{
	return __wrap_calloc(n, size);
}

/* First use of an OpenSSL algorithm loads providers and fills method caches
 * (thousands of allocations, OpenSSL's own start-up, not the code under
 * test): done once before the loop so that each run does not pay for it
 * again, and N walks over the allocations made for the code under test. */
static int warm_up(void)
{
	unsigned char d[EVP_MAX_MD_SIZE], r[16];
	unsigned int dl = 0;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_CIPHER *gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	int ok = kdf && gcm && mac && EVP_Digest("", 0, d, &dl, EVP_sha256(), NULL) == 1 &&
		 RAND_bytes(r, sizeof(r)) == 1;
	/* The public-key algorithms of core/jose.c (keys and signatures). */
	static const char *const keys[] = { "RSA", "EC", "ED25519" }, *const sigs[] = { "RSA", "ECDSA", "ED25519" };
	for (size_t i = 0; ok && i < sizeof(keys) / sizeof(keys[0]); i++) {
		EVP_KEYMGMT *km = EVP_KEYMGMT_fetch(NULL, keys[i], NULL);
		EVP_SIGNATURE *sg = EVP_SIGNATURE_fetch(NULL, sigs[i], NULL);
		ok = km && sg;
		EVP_KEYMGMT_free(km);
		EVP_SIGNATURE_free(sg);
	}
	EVP_KDF_free(kdf);
	EVP_CIPHER_free(gcm);
	EVP_MAC_free(mac);
	return ok ? 0 : -1;
}

static void show_output(int fd)
{
	static char out[32768];
	ssize_t n;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return;
	while ((n = read(fd, out, sizeof(out))) > 0)
		if (write(2, out, (size_t)n) != n)
			return;
}

/* One run with the N-th allocation failing, in a child: 0 when it ended as
 * it may (exit 0 or 1), -1 otherwise (reported). */
static int run_one(long n, int capture)
{
	if (ftruncate(capture, 0) < 0 || lseek(capture, 0, SEEK_SET) < 0)
		return -1;
	st->calls = 0;
	st->fail_at = n;
	st->failed = 0;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("torture: fork");
		return -1;
	}
	if (pid == 0) {
		if (dup2(capture, 1) < 0 || dup2(capture, 2) < 0)
			_exit(3);
		alarm(TORTURE_CHILD_S);
		return 1; /* the child goes on into main() */
	}
	int status = 0;
	if (waitpid(pid, &status, 0) < 0) {
		perror("torture: waitpid");
		return -1;
	}
	if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1))
		return 0;
	fprintf(stderr, "torture: allocation %ld failing (0: none): ", n);
	if (WIFSIGNALED(status))
		fprintf(stderr, "killed by signal %d (%s)\n", WTERMSIG(status),
			WTERMSIG(status) == SIGALRM ? "hung" : strsignal(WTERMSIG(status)));
	else
		fprintf(stderr, "exit status %d\n", WEXITSTATUS(status));
	fflush(stderr);
	show_output(capture);
	return -1;
}

/* All allocations 1..T of the counting run failed in turn when T <= runs
 * (and on past T while runs still reach their N-th); else every stride-th
 * from offset + 1, stride = ceil(T / runs), so that a large test stays
 * within its time and MCPB_TORTURE_OFFSET moves the sample. */
static void torture_loop(long runs, long offset)
{
	char path[] = "/tmp/mcpb-torture-XXXXXX";
	int capture = mkstemp(path), bad = 0;
	long total, stride = 1, done = 0, n;
	if (capture < 0 || unlink(path) < 0) {
		perror("torture: capture file");
		exit(2);
	}
	st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (st == MAP_FAILED) {
		perror("torture: mmap");
		exit(2);
	}
	int rc = run_one(0, capture);
	if (rc == 1)
		return; /* in the child: the counting run */
	bad += rc < 0;
	total = st->calls;
	if (runs > 0 && total > runs)
		stride = (total + runs - 1) / runs;
	for (n = 1 + (stride > 1 ? offset % stride : 0);; n += stride) {
		if (stride > 1 && n > total)
			break;
		rc = run_one(n, capture);
		if (rc == 1)
			return; /* in the child */
		done++;
		if (rc < 0)
			bad++;
		if (stride == 1 && !st->failed)
			break; /* this run made fewer than n allocations */
	}
	if (stride == 1)
		printf("torture: %ld allocations; 1..%ld failed in turn: %ld runs, %d failed\n", total, n - 1, done,
		       bad);
	else
		printf("torture: %ld allocations; one in %ld failed, from %ld: %ld runs, %d failed\n", total, stride,
		       1 + offset % stride, done, bad);
	exit(bad ? 1 : 0);
}

static void single_report(void)
{
	if (single.failed)
		fprintf(stderr, "torture: allocation %ld failed\n", single.fail_at);
	else
		fprintf(stderr, "torture: %ld allocations, allocation %ld never made\n", single.calls, single.fail_at);
}

__attribute__((constructor)) static void torture_init(void)
{
	const char *mode = getenv("MCPB_TORTURE"), *runs_s = getenv("MCPB_TORTURE_RUNS"),
		   *offset_s = getenv("MCPB_TORTURE_OFFSET");
	long long n = 0, runs = 0, offset = 0;
	if (!mode || !*mode)
		return;
	if ((strcmp(mode, "all") != 0 && num_parse(mode, 1, 1000000000, &n) < 0) ||
	    (runs_s && num_parse(runs_s, 0, 1000000000, &runs) < 0) ||
	    (offset_s && num_parse(offset_s, 0, 1000000000, &offset) < 0)) {
		fprintf(stderr, "torture: MCPB_TORTURE is \"all\" or an allocation number >= 1, "
				"MCPB_TORTURE_RUNS and MCPB_TORTURE_OFFSET numbers >= 0\n");
		exit(2);
	}
	/* Before anything is allocated by OpenSSL, which refuses the change
	 * afterwards; curl initialises OpenSSL, so it comes after. */
	if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
		fprintf(stderr, "torture: OpenSSL allocated before the test started\n");
		exit(2);
	}
	json_set_alloc_funcs(lib_malloc, lib_free);
	if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, lib_malloc, lib_free, lib_realloc, lib_strdup, lib_calloc) !=
		    CURLE_OK ||
	    warm_up() < 0) {
		fprintf(stderr, "torture: libcurl or OpenSSL did not initialise\n");
		exit(2);
	}
	if (n > 0) {
		single.fail_at = (long)n;
		st = &single;
		if (atexit(single_report) != 0)
			exit(2);
		return;
	}
	torture_loop((long)runs, (long)offset);
}
