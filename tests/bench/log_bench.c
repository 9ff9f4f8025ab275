/* ns per log_event from 2 threads to /dev/null, a pipe read at full speed or a slow pipe (argv[1]: null, pipe, slowpipe).
 * Not built by CMake: gcc -O2 -DAFTER -Ibroker/core tests/bench/log_bench.c BUILD/libmcpb.a -ljansson -lpthread
 * (-DAFTER prints log_dropped_total, which the synchronous log.c before it did not have). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#define N 200000
static double ns[2];
static int slow;
static void *run(void *arg)
{
	int t = (int)(long)arg;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < N; i++)
		log_event(LOG_INFO, "http.request", "req-0123456789",
			  json_pack("{s:s, s:i, s:i, s:s, s:s}", "route", "mcp", "status", 200, "i", i, "access_token",
				    "x", "method", "POST"));
	clock_gettime(CLOCK_MONOTONIC, &b);
	ns[t] = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N;
	return NULL;
}
static void *reader(void *arg)
{
	int fd = (int)(long)arg;
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		if (slow)
			usleep(1000); /* a slow consumer: ~4 KiB/ms */
	return NULL;
}
int main(int argc, char **argv)
{
	FILE *out;
	pthread_t r, t[2];
	int fds[2] = { -1, -1 };
	slow = argc > 1 && strcmp(argv[1], "slowpipe") == 0;
	if (argc > 1 && (strcmp(argv[1], "pipe") == 0 || slow)) {
		if (pipe(fds) < 0)
			return 1;
		out = fdopen(fds[1], "w");
		setvbuf(out, NULL, _IONBF, 0); /* as stderr */
		pthread_create(&r, NULL, reader, (void *)(long)fds[0]);
	} else {
		out = fopen("/dev/null", "w");
		setvbuf(out, NULL, _IONBF, 0);
	}
	log_init(LOG_INFO, out);
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, run, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("%s: thread0 %.0f ns/call, thread1 %.0f ns/call\n", argc > 1 ? argv[1] : "null", ns[0], ns[1]);
#ifdef AFTER
	printf("dropped %llu\n", log_dropped_total());
#endif
	log_init(LOG_INFO, stderr);
	fclose(out);
	if (fds[0] >= 0)
		pthread_join(r, NULL);
	return 0;
}
