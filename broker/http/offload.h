/* A pool of threads for the handlers that block (the database, an
 * upstream call, a CIMD fetch), so that they never hold a worker's event
 * loop and with it every connection and downstream transfer that loop
 * serves. Jobs run in the order pushed. The queue is bounded, and a job
 * that waited too long, or had not started when the pool stops, is
 * refused rather than run: its owner answers 503 at once. */
#ifndef MCPB_OFFLOAD_H
#define MCPB_OFFLOAD_H
#include <stddef.h>
#include "buf.h"
#include "lim.h"

/* refused: 0 to do the work; 1 when it must not be done (waited longer
 * than the pool's max_wait, or the pool stops): answer that the node is
 * busy, without blocking (a refusal may run on the pool's reaper, which
 * serves the whole queue). Either way the call ends the job. */
typedef void (*offload_fn)(void *arg, int refused);

/* A job's link: embedded in what the job is about (no allocation). */
struct offload_job {
	offload_fn fn;
	void *arg;
	long long queued_ms;
	struct offload_job *next;
};

/* Starts n threads (1..LIM_OFFLOAD_THREADS), each calling thread_init
 * (when not NULL) before its first job, and a reaper that refuses a job
 * still queued after max_wait ms (LIM_OFFLOAD_WAIT_MS in the broker) even
 * while every thread is busy. 0, or -1 with none left running. */
int offload_start(size_t n, long long max_wait, void (*thread_init)(void)) WUR;
/* 1 while the pool runs. */
int offload_running(void);
/* Queues fn(arg) on j (which must stay valid until fn has run). 0; -1 when
 * the pool was never started (the caller runs it itself); -2 when the pool
 * stops or its queue holds LIM_OFFLOAD_QUEUE_PER_THREAD jobs a thread
 * already (the caller answers 503). */
int offload_push(struct offload_job *j, offload_fn fn, void *arg) WUR;
/* The same, but queues only when a thread is free for it now; -2 otherwise
 * (the caller runs it itself: for the few requests that must be answered
 * however busy the pool is, such as an operator's revocation). */
int offload_push_idle(struct offload_job *j, offload_fn fn, void *arg) WUR;
/* 1 from the start of offload_stop until it returns. */
int offload_stopping(void);
/* Jobs queued or running. */
long offload_pending(void);
/* Refuses what is still queued, lets what runs finish, then joins the
 * threads. */
void offload_stop(void);

#endif
