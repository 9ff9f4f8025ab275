/* Token buckets in this node's memory, keyed by (space, key): a grant id, a
 * client id, a client address. A fixed table (RL_SLOTS buckets, RL_PROBE-way
 * probing under a per-process random hash key, so nobody outside can aim
 * keys at one probe window). When a window is full the bucket that holds the
 * least information is recycled: an empty slot, else the fullest bucket (a
 * full bucket and a fresh one behave alike). A bucket that is limiting
 * somebody is recycled only when every bucket in its window is limiting
 * somebody too; see ratelimit.c for the bound. */
#ifndef MCPB_RATELIMIT_H
#define MCPB_RATELIMIT_H
#include "buf.h" /* WUR */

/* Takes one token from bucket (space, key), refilled at rate per second up
 * to burst tokens. 1 allowed; 0 limited with *retry_after_s (>= 1) set. */
int ratelimit_take(const char *space, const char *key, double rate, double burst, int *retry_after_s) WUR;

/* 1 when bucket (space, key) holds at least one token (an unknown bucket is
 * full); 0 with *retry_after_s set otherwise. Takes nothing, creates nothing. */
int ratelimit_peek(const char *space, const char *key, double rate, double burst, int *retry_after_s) WUR;

/* Takes one token whatever the level: the bucket may go into debt, down to
 * -burst. Meant for events counted after the fact (failures), with
 * ratelimit_peek as the gate: requests that passed the gate together are
 * all counted, and the debt is paid back as a longer wait. */
void ratelimit_charge(const char *space, const char *key, double rate, double burst);

/* Failure accounting (DESIGN 3.5): failures are counted per (who, address)
 * and per address, never in a bucket that valid requests use. who is the
 * client id a request names (any string: it is hashed); addr is the client
 * address as text (an IPv6 address counts by its /64, which one subscriber
 * holds whole). Each bucket allows per_min failures per minute with a burst
 * of a minute's worth; a limit <= 0 is off.
 * ratelimit_failures_ok: 1 when both buckets still have room (the request may
 * be evaluated), 0 with *retry_after_s set when either is exhausted.
 * ratelimit_failure: counts one failure in both. */
int ratelimit_failures_ok(const char *who, const char *addr, long per_who_addr_min, long per_addr_min,
			  int *retry_after_s) WUR;
void ratelimit_failure(const char *who, const char *addr, long per_who_addr_min, long per_addr_min);

#endif
