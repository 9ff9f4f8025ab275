#include "offload.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t reap_cv; /* CLOCK_MONOTONIC; made by offload_start */
static struct offload_job *head, *tail;
static pthread_t *threads, reaper;
static size_t n_threads;
static int reaper_up, reap_cv_made;
static void (*init_fn)(void);
static long long max_wait_ms;
static int stopping, running;
/* Under mu: queued; queued + running; threads waiting for a job. */
static long queued, pending, waiting;

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
		while (!head && !stopping) {
			waiting++;
			pthread_cond_wait(&cv, &mu);
			waiting--;
		}
		struct offload_job *j = head;
		if (!j)
			break; /* stopping, and nothing left */
		head = j->next;
		if (!head)
			tail = NULL;
		queued--;
		int refused = stopping || now_ms() - j->queued_ms > max_wait_ms;
		pthread_mutex_unlock(&mu);
		/* j belongs to its owner from here: fn may end its life. */
		j->fn(j->arg, refused);
		pthread_mutex_lock(&mu);
		pending--;
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

/* Refuses the jobs that waited longer than max_wait_ms while every thread
 * is busy (a thread would refuse them only once it is free, which behind
 * slow upstreams can be minutes). The queue is in push order, so only its
 * head is looked at, and the reaper sleeps until that head's deadline. */
static void *reaper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	while (!stopping) {
		long long now = now_ms();
		if (head && now - head->queued_ms > max_wait_ms) {
			struct offload_job *j = head;
			head = j->next;
			if (!head)
				tail = NULL;
			queued--;
			pthread_mutex_unlock(&mu);
			j->fn(j->arg, 1); /* only answers: no database, no upstream */
			pthread_mutex_lock(&mu);
			pending--;
			continue;
		}
		/* An empty queue is looked at again after a quarter of the wait,
		 * before any job pushed meanwhile is due: each is refused on time. */
		long long wake = head ? head->queued_ms + max_wait_ms + 1 : now + max_wait_ms / 4 + 1;
		struct timespec ts = { (time_t)(wake / 1000), (long)(wake % 1000) * 1000000L };
		pthread_cond_timedwait(&reap_cv, &mu, &ts);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static int reap_cv_init(void)
{
	pthread_condattr_t a;
	if (pthread_condattr_init(&a) != 0)
		return -1;
	int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&reap_cv, &a) == 0 ? 0 : -1;
	pthread_condattr_destroy(&a);
	return rc;
}

int offload_start(size_t n, long long max_wait, void (*thread_init)(void))
{
	if (n == 0 || n > LIM_OFFLOAD_THREADS || max_wait < 1 || offload_running())
		return -1;
	if (reap_cv_init() < 0)
		return -1;
	reap_cv_made = 1;
	threads = calloc(n, sizeof(*threads));
	if (!threads) {
		pthread_cond_destroy(&reap_cv);
		reap_cv_made = 0;
		return -1;
	}
	stopping = 0;
	init_fn = thread_init;
	max_wait_ms = max_wait;
	reaper_up = pthread_create(&reaper, NULL, reaper_main, NULL) == 0;
	for (n_threads = 0; reaper_up && n_threads < n; n_threads++)
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

static int push(struct offload_job *j, offload_fn fn, void *arg, int idle_only)
{
	j->fn = fn;
	j->arg = arg;
	j->next = NULL;
	j->queued_ms = now_ms();
	pthread_mutex_lock(&mu);
	int rc = 0;
	if (!running)
		rc = -1;
	else if (stopping || queued >= (long)(n_threads * LIM_OFFLOAD_QUEUE_PER_THREAD) ||
		 (idle_only && waiting <= queued))
		rc = -2; /* idle_only: no thread free for it now */
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

int offload_push(struct offload_job *j, offload_fn fn, void *arg)
{
	return push(j, fn, arg, 0);
}

int offload_push_idle(struct offload_job *j, offload_fn fn, void *arg)
{
	return push(j, fn, arg, 1);
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
	if (reap_cv_made)
		pthread_cond_signal(&reap_cv);
	pthread_mutex_unlock(&mu);
	for (size_t i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	if (reaper_up)
		pthread_join(reaper, NULL);
	reaper_up = 0;
	if (reap_cv_made)
		pthread_cond_destroy(&reap_cv);
	reap_cv_made = 0;
	free(threads);
	threads = NULL;
	pthread_mutex_lock(&mu);
	n_threads = 0;
	stopping = 0;
	__atomic_store_n(&running, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&mu);
}
