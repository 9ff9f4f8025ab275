/* GET /callback: the upstream identity provider's redirect back, the second
 * leg of the double flow. It takes the pending authorization its state
 * names (single use, bound to the browser that started it), exchanges the
 * upstream code, stores user, grant (upstream tokens sealed), consent and
 * the broker's one-time code in one transaction, and sends that code back
 * to the client's redirect URI. */
#ifndef MCPB_CALLBACK_H
#define MCPB_CALLBACK_H
#include "http.h"

void callback_get(struct http_req *r);

#endif
