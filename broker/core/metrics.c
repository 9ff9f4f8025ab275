#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const double bucket_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))
#define MAX_SERIES 512
#define MAX_COUNTERS 128

struct series {
	const char *route;
	int status;
	unsigned long count;
	double sum;
	unsigned long buckets[NBUCKETS];
};

struct counter {
	const char *name;
	char label[64];
	long value;
};

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static struct series series[MAX_SERIES];
static size_t nseries;
static struct counter counters[MAX_COUNTERS];
static size_t ncounters;

void metrics_observe(const char *route, int status, double seconds)
{
	pthread_mutex_lock(&mlock);
	struct series *s = NULL;
	for (size_t i = 0; i < nseries; i++)
		if (series[i].status == status && series[i].route == route) {
			s = &series[i];
			break;
		}
	if (!s && nseries < MAX_SERIES) {
		s = &series[nseries++];
		s->route = route;
		s->status = status;
	}
	if (s) {
		s->count++;
		s->sum += seconds;
		for (size_t b = 0; b < NBUCKETS; b++)
			if (seconds <= bucket_le[b])
				s->buckets[b]++;
	}
	pthread_mutex_unlock(&mlock);
}

void metrics_count(const char *name, const char *label, long delta)
{
	pthread_mutex_lock(&mlock);
	struct counter *c = NULL;
	for (size_t i = 0; i < ncounters; i++)
		if (strcmp(counters[i].name, name) == 0 && strcmp(counters[i].label, label ? label : "") == 0) {
			c = &counters[i];
			break;
		}
	if (!c && ncounters < MAX_COUNTERS) {
		/* Keep each metric family contiguous, as the exposition format wants. */
		size_t at = ncounters;
		for (size_t i = 0; i < ncounters; i++)
			if (strcmp(counters[i].name, name) == 0)
				at = i + 1;
		memmove(&counters[at + 1], &counters[at], (ncounters - at) * sizeof(counters[0]));
		ncounters++;
		c = &counters[at];
		memset(c, 0, sizeof(*c));
		c->name = name;
		snprintf(c->label, sizeof(c->label), "%s", label ? label : "");
	}
	if (c)
		c->value += delta;
	pthread_mutex_unlock(&mlock);
}

/* ---- mcpb_upstream_errors_total{upstream, op, class} ------------------ */

#define MAX_UPSTREAM_ERROR_SERIES 256

struct upstream_error_series {
	char upstream[65];
	const char *op, *cls;
	unsigned long count;
};

static struct upstream_error_series up_errors[MAX_UPSTREAM_ERROR_SERIES];
static size_t n_up_errors;

void metrics_upstream_error(const char *upstream, const char *op, const char *cls)
{
	char name[65];
	snprintf(name, sizeof(name), "%s", upstream ? upstream : "");
	pthread_mutex_lock(&mlock);
	struct upstream_error_series *s = NULL;
	for (size_t i = 0; i < n_up_errors && !s; i++)
		if (strcmp(up_errors[i].upstream, name) == 0 && strcmp(up_errors[i].op, op) == 0 &&
		    strcmp(up_errors[i].cls, cls) == 0)
			s = &up_errors[i];
	if (!s && n_up_errors < MAX_UPSTREAM_ERROR_SERIES) {
		s = &up_errors[n_up_errors++];
		memcpy(s->upstream, name, sizeof(name));
		s->op = op;
		s->cls = cls;
	}
	if (s)
		s->count++;
	pthread_mutex_unlock(&mlock);
}

/* A label value in the exposition format: backslash, quote and newline escaped. */
static int add_label_value(struct buf *out, const char *v)
{
	int rc = 0;
	for (; *v && rc == 0; v++)
		rc = *v == '\\'   ? buf_adds(out, "\\\\")
		     : *v == '"'  ? buf_adds(out, "\\\"")
		     : *v == '\n' ? buf_adds(out, "\\n")
				  : buf_add(out, v, 1);
	return rc;
}

static int render_upstream_errors(struct buf *out)
{
	int rc = buf_adds(out,
			  "# HELP mcpb_upstream_errors_total Failed upstream calls by upstream, operation and class.\n"
			  "# TYPE mcpb_upstream_errors_total counter\n");
	for (size_t i = 0; i < n_up_errors && rc == 0; i++)
		rc = buf_adds(out, "mcpb_upstream_errors_total{upstream=\"") < 0 ||
				     add_label_value(out, up_errors[i].upstream) < 0 ||
				     buf_printf(out, "\",op=\"%s\",class=\"%s\"} %lu\n", up_errors[i].op,
						up_errors[i].cls, up_errors[i].count) < 0
			     ? -1
			     : 0;
	return rc;
}

int metrics_render(struct buf *out)
{
	int rc = 0;
	pthread_mutex_lock(&mlock);
	rc |= buf_adds(out, "# HELP mcpb_http_requests_total HTTP requests by route and status.\n"
			    "# TYPE mcpb_http_requests_total counter\n");
	for (size_t i = 0; i < nseries && rc == 0; i++)
		rc |= buf_printf(out, "mcpb_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n", series[i].route,
				 series[i].status, series[i].count);
	rc |= buf_adds(out, "# HELP mcpb_http_request_duration_seconds HTTP request latency.\n"
			    "# TYPE mcpb_http_request_duration_seconds histogram\n");
	for (size_t i = 0; i < nseries && rc == 0; i++) {
		struct series *s = &series[i];
		for (size_t b = 0; b < NBUCKETS && rc == 0; b++)
			rc |= buf_printf(
				out,
				"mcpb_http_request_duration_seconds_bucket{route=\"%s\",status=\"%d\",le=\"%g\"} %lu\n",
				s->route, s->status, bucket_le[b], s->buckets[b]);
		rc |= buf_printf(
			out,
			"mcpb_http_request_duration_seconds_bucket{route=\"%s\",status=\"%d\",le=\"+Inf\"} %lu\n"
			"mcpb_http_request_duration_seconds_sum{route=\"%s\",status=\"%d\"} %.6f\n"
			"mcpb_http_request_duration_seconds_count{route=\"%s\",status=\"%d\"} %lu\n",
			s->route, s->status, s->count, s->route, s->status, s->sum, s->route, s->status, s->count);
	}
	const char *last = NULL;
	for (size_t i = 0; i < ncounters && rc == 0; i++) {
		struct counter *c = &counters[i];
		if (!last || strcmp(last, c->name) != 0) {
			rc |= buf_printf(out, "# TYPE mcpb_%s counter\n", c->name);
			last = c->name;
		}
		if (c->label[0])
			rc |= buf_printf(out, "mcpb_%s{kind=\"%s\"} %ld\n", c->name, c->label, c->value);
		else
			rc |= buf_printf(out, "mcpb_%s %ld\n", c->name, c->value);
	}
	if (rc == 0)
		rc |= render_upstream_errors(out);
	pthread_mutex_unlock(&mlock);
	return rc ? -1 : 0;
}
