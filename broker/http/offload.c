#include "offload.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct offload_job *head, *tail;
static pthread_t *threads;
static size_t n_threads;
static void (*init_fn)(void);
static int stopping, running;
static long queued, pending; /* queued; queued + running; under mu */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *pool_main(void *arg)
{
	(void)arg;
	if (init_fn)
		init_fn();
	pthread_mutex_lock(&mu);
	for (;;) {
		while (!head && !stopping)
			pthread_cond_wait(&cv, &mu);
		struct offload_job *j = head;
		if (!j)
			break; /* stopping, and nothing left */
		head = j->next;
		if (!head)
			tail = NULL;
		queued--;
		int refused = stopping || now_ms() - j->queued_ms > LIM_OFFLOAD_WAIT_MS;
		pthread_mutex_unlock(&mu);
		/* j belongs to its owner from here: fn may end its life. */
		j->fn(j->arg, refused);
		pthread_mutex_lock(&mu);
		pending--;
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

int offload_start(size_t n, void (*thread_init)(void))
{
	if (n == 0 || n > LIM_OFFLOAD_THREADS || offload_running())
		return -1;
	threads = calloc(n, sizeof(*threads));
	if (!threads)
		return -1;
	stopping = 0;
	init_fn = thread_init;
	for (n_threads = 0; n_threads < n; n_threads++)
		if (pthread_create(&threads[n_threads], NULL, pool_main, NULL) != 0)
			break;
	if (n_threads < n) {
		offload_stop();
		return -1;
	}
	pthread_mutex_lock(&mu);
	__atomic_store_n(&running, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&mu);
	return 0;
}

int offload_running(void)
{
	return __atomic_load_n(&running, __ATOMIC_ACQUIRE);
}

int offload_push(struct offload_job *j, offload_fn fn, void *arg)
{
	j->fn = fn;
	j->arg = arg;
	j->next = NULL;
	j->queued_ms = now_ms();
	pthread_mutex_lock(&mu);
	int rc = 0;
	if (!running)
		rc = -1;
	else if (stopping || queued >= (long)(n_threads * LIM_OFFLOAD_QUEUE_PER_THREAD))
		rc = -2;
	if (rc == 0) {
		if (tail)
			tail->next = j;
		else
			head = j;
		tail = j;
		queued++;
		pending++;
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int offload_stopping(void)
{
	pthread_mutex_lock(&mu);
	int s = stopping;
	pthread_mutex_unlock(&mu);
	return s;
}

long offload_pending(void)
{
	pthread_mutex_lock(&mu);
	long n = pending;
	pthread_mutex_unlock(&mu);
	return n;
}

void offload_stop(void)
{
	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (size_t i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	threads = NULL;
	pthread_mutex_lock(&mu);
	n_threads = 0;
	stopping = 0;
	__atomic_store_n(&running, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&mu);
}
