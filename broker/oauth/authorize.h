/* The authorization endpoint and the upstream leg of the double flow:
 * GET /authorize validates the request and shows the consent page;
 * POST /authorize takes the decision and sends the browser upstream;
 * GET /callback finishes the upstream flow, stores the grant and returns
 * the broker's one-time code to the client. */
#ifndef MCPB_AUTHORIZE_H
#define MCPB_AUTHORIZE_H
#include "http.h"

void authorize_get(struct http_req *r);
void authorize_post(struct http_req *r);
void authorize_callback(struct http_req *r);

#endif
