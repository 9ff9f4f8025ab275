/* Prometheus metrics: request counts and latency histograms by route and
 * status, plus gauges supplied at render time. Thread-safe. */
#ifndef MCPB_METRICS_H
#define MCPB_METRICS_H
#include "buf.h"

/* route must be a string that lives as long as the process (route labels). */
void metrics_observe(const char *route, int status, double seconds);
/* Counts a named event (e.g. "upstream_refresh_total"); name must be static. */
void metrics_count(const char *name, const char *label, long delta);
/* Counts one failed upstream call as
 * mcpb_upstream_errors_total{upstream, op, class}. upstream is copied (at
 * most 64 bytes, escaped on output); op and cls must be static strings. */
void metrics_upstream_error(const char *upstream, const char *op, const char *cls);
/* Appends the exposition text to out. */
int metrics_render(struct buf *out) WUR;

#endif
