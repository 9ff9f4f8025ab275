/* offload.c: the handler pool. A pool never started refuses to queue (the
 * caller runs the job itself); each thread runs its init once; jobs run in
 * the order pushed; the queue holds LIM_OFFLOAD_QUEUE_PER_THREAD a thread
 * and says -2 beyond; a job queued longer than the pool's wait is refused
 * even while every thread is busy (the reaper); offload_push_idle queues
 * only for a free thread; stopping refuses what is queued (refused = 1),
 * lets what runs finish, and leaves a pool that is not running. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "offload.h"
#include "test.h"

#define N_JOBS 32
#define WAIT_MS 10000 /* the broker's LIM_OFFLOAD_WAIT_MS: never reached here */
#define SHORT_WAIT_MS 150

static int inits;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int gate_open, blocker_started;
static int order[N_JOBS], n_done, n_refused;

struct job {
	struct offload_job link;
	int id;
	int block; /* waits for the gate */
};

static void count_init(void)
{
	__atomic_add_fetch(&inits, 1, __ATOMIC_SEQ_CST);
}

static void run(void *arg, int refused)
{
	struct job *j = arg;
	pthread_mutex_lock(&mu);
	if (j->block) {
		blocker_started = 1;
		pthread_cond_broadcast(&cv);
		while (!gate_open)
			pthread_cond_wait(&cv, &mu);
	}
	if (refused)
		n_refused++;
	else if (n_done < N_JOBS)
		order[n_done++] = j->id;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void reset(void)
{
	pthread_mutex_lock(&mu);
	gate_open = blocker_started = n_done = n_refused = 0;
	pthread_mutex_unlock(&mu);
}

static void wait_for(int *counter, int n)
{
	pthread_mutex_lock(&mu);
	while (*counter < n)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void open_gate(void)
{
	pthread_mutex_lock(&mu);
	while (!blocker_started)
		pthread_cond_wait(&cv, &mu);
	gate_open = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* A fresh pool of one thread, held by blocker until open_gate(). */
static void hold_one_thread(struct job *blocker, long long wait_ms)
{
	reset();
	CHECK(offload_start(1, wait_ms, NULL) == 0);
	blocker->block = 1;
	CHECK(offload_push(&blocker->link, run, blocker) == 0);
	pthread_mutex_lock(&mu);
	while (!blocker_started)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void *stopper(void *arg)
{
	(void)arg;
	offload_stop();
	return NULL;
}

int main(void)
{
	static struct job jobs[N_JOBS];
	for (int i = 0; i < N_JOBS; i++)
		jobs[i].id = i;

	/* Never started: the caller runs it. */
	CHECK(!offload_running());
	CHECK(offload_push(&jobs[0].link, run, &jobs[0]) == -1);
	CHECK(offload_start(0, WAIT_MS, NULL) == -1);
	CHECK(offload_start(LIM_OFFLOAD_THREADS + 1, WAIT_MS, NULL) == -1);
	CHECK(offload_start(1, 0, NULL) == -1);

	/* Each thread's init runs once. */
	CHECK(offload_start(3, WAIT_MS, count_init) == 0);
	CHECK(offload_running());
	CHECK(offload_start(3, WAIT_MS, count_init) == -1); /* one pool */
	for (int i = 0; i < 200 && __atomic_load_n(&inits, __ATOMIC_SEQ_CST) < 3; i++)
		usleep(5000);
	CHECK(__atomic_load_n(&inits, __ATOMIC_SEQ_CST) == 3);
	offload_stop();
	CHECK(!offload_running());
	CHECK(offload_pending() == 0);

	/* One thread: order kept, the queue bounded, nothing lost. */
	hold_one_thread(&jobs[0], WAIT_MS);
	int queued = 0;
	for (int i = 1; i <= LIM_OFFLOAD_QUEUE_PER_THREAD; i++)
		queued += offload_push(&jobs[i].link, run, &jobs[i]) == 0;
	CHECK(queued == LIM_OFFLOAD_QUEUE_PER_THREAD);
	int over = LIM_OFFLOAD_QUEUE_PER_THREAD + 1;
	CHECK(offload_push(&jobs[over].link, run, &jobs[over]) == -2);
	CHECK(offload_pending() == LIM_OFFLOAD_QUEUE_PER_THREAD + 1);
	open_gate();
	wait_for(&n_done, LIM_OFFLOAD_QUEUE_PER_THREAD + 1);
	CHECK(n_refused == 0);
	int in_order = 1;
	for (int i = 0; i <= LIM_OFFLOAD_QUEUE_PER_THREAD; i++)
		in_order &= order[i] == i;
	CHECK(in_order);
	/* Room again once the queue drained. */
	jobs[0].block = 0;
	CHECK(offload_push(&jobs[over].link, run, &jobs[over]) == 0);
	wait_for(&n_done, LIM_OFFLOAD_QUEUE_PER_THREAD + 2);
	for (int i = 0; i < 200 && offload_pending() > 0; i++)
		usleep(5000);
	CHECK(offload_pending() == 0);
	offload_stop();

	/* The only thread held: a job waiting past the wait is refused while
	 * the thread is still busy, in about the wait (not when it frees). */
	hold_one_thread(&jobs[0], SHORT_WAIT_MS);
	/* No thread free: the idle-only push says so, and queues nothing. */
	CHECK(offload_push_idle(&jobs[1].link, run, &jobs[1]) == -2);
	CHECK(offload_pending() == 1);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 2; i <= 3; i++)
		CHECK(offload_push(&jobs[i].link, run, &jobs[i]) == 0);
	wait_for(&n_refused, 2);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long waited = (t1.tv_sec - t0.tv_sec) * 1000LL + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	CHECK(waited >= SHORT_WAIT_MS);
	CHECK(n_done == 0); /* the held job is still held */
	CHECK(offload_pending() == 1);
	open_gate();
	wait_for(&n_done, 1);
	for (int i = 0; i < 200 && offload_pending() > 0; i++)
		usleep(5000);
	CHECK(offload_pending() == 0);
	/* A free thread: the idle-only push queues, and the job runs. */
	jobs[0].block = 0;
	CHECK(offload_push_idle(&jobs[4].link, run, &jobs[4]) == 0);
	wait_for(&n_done, 2);
	CHECK(order[1] == 4 && n_refused == 2);
	offload_stop();

	/* Stopping: the running job finishes, the queued ones are refused. */
	reset();
	CHECK(offload_start(1, WAIT_MS, NULL) == 0);
	jobs[0].block = 1;
	CHECK(offload_push(&jobs[0].link, run, &jobs[0]) == 0);
	for (int i = 1; i <= 3; i++)
		CHECK(offload_push(&jobs[i].link, run, &jobs[i]) == 0);
	pthread_mutex_lock(&mu);
	while (!blocker_started)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, stopper, NULL) == 0);
	/* Once the pool says it stops, nothing more is queued. */
	while (!offload_stopping())
		usleep(1000);
	CHECK(offload_push(&jobs[10].link, run, &jobs[10]) == -2);
	open_gate();
	pthread_join(t, NULL);
	CHECK(!offload_running());
	CHECK(n_done == 1 && order[0] == 0);
	CHECK(n_refused >= 3);
	CHECK(offload_pending() == 0);
	CHECK(offload_push(&jobs[1].link, run, &jobs[1]) == -1);
	TEST_DONE();
}
