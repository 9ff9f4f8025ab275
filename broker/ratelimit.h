/* Token buckets in this node's memory, keyed by a short string (grant id,
 * client id, ...). A bounded table: when full, the least recently used
 * bucket in the probe window is recycled (which can only be generous). */
#ifndef MCPB_RATELIMIT_H
#define MCPB_RATELIMIT_H

/* Takes one token from bucket key, refilled at rate per second with a
 * burst of burst tokens. 1 allowed; 0 limited with *retry_after_s set. */
int ratelimit_take(const char *space, const char *key, double rate, double burst, int *retry_after_s);

#endif
