/* GET /metrics: the Prometheus text exposition of the node's counters
 * (core/metrics) and of its HTTP and database pool gauges. */
#ifndef MCPB_METRICS_PAGE_H
#define MCPB_METRICS_PAGE_H
#include "http.h"

/* 200 text/plain (version 0.0.4) with every series; 500 server_error when
 * the page does not fit METRICS_PAGE_MAX or memory is lacking. */
void metrics_page_get(struct http_req *r);

#endif
