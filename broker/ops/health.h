/* GET /healthz (liveness), /readyz (database reachable and schema current,
 * not draining) and /metrics (Prometheus text). */
#ifndef MCPB_HEALTH_H
#define MCPB_HEALTH_H
#include "http.h"

void health_healthz(struct http_req *r);
void health_readyz(struct http_req *r);
void health_metrics(struct http_req *r);

#endif
