/* GET /healthz (liveness) and /readyz (database reachable and schema
 * current, not draining); /metrics is ops/metrics_page. */
#ifndef MCPB_HEALTH_H
#define MCPB_HEALTH_H
#include "http.h"

void health_healthz(struct http_req *r);
void health_readyz(struct http_req *r);

#endif
