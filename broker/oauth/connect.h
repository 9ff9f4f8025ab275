/* In-band connect of an upstream account (DESIGN: connected accounts).
 * A URL elicitation sends the user to GET /connect?ticket=…, a page that
 * names the application and the account asked for; POST /connect spends
 * the one-time ticket and runs two upstream legs through /callback:
 *  1. identity: the grant's sign-in upstream, whose account must be the
 *     grant's user (a forwarded link cannot attach someone else's account
 *     to a grant: SEP-1036's phishing case);
 *  2. account: the connect upstream's OAuth flow (state, PKCE), whose
 *     tokens are sealed and attached to the grant.
 * Every step is stored in PostgreSQL and bound to the browser's cookie, so
 * any node serves any step. */
#ifndef MCPB_CONNECT_H
#define MCPB_CONNECT_H
#include "config.h"
#include "db.h"
#include "http.h"
#include "upstream.h"

void connect_get(struct http_req *r);
void connect_post(struct http_req *r);

/* /callback for a connect leg: 1 when state is one (answered), 0 when it is
 * not (nothing sent), -1 on a database error (nothing sent). */
int connect_callback(struct http_req *r, struct db_conn *c, const char *state) WUR;

/* The upstream legs of the broker's own pages (connect, account): a fresh
 * state (64 bytes, wiped by the caller) and the authorization URL of up
 * with PKCE derived from it (*url malloc'd). 0, or -1 with the page sent. */
int connect_leg_prepare(struct http_req *r, const struct cfg_upstream *up, char state[64], char **url) WUR;
/* In the callback of such a leg: exchanges the code (PKCE verifier derived
 * from state again) and reads the account's identity. 0, or -1 with the
 * page sent (nothing stored). */
int connect_leg_exchange(struct http_req *r, const struct cfg_upstream *up, const char *state,
			 struct upstream_tokens *tok, struct upstream_identity *id) WUR;
/* A leg's tokens that only proved who the user is: revoked where the
 * upstream can revoke that one token alone (GitHub, whose tokens never
 * expire and count against its ten per user, app and scope); dropped as
 * they are elsewhere. The caller wipes them. */
void connect_drop_proof(struct http_req *r, const struct cfg_upstream *up, const struct upstream_tokens *tok);
/* A 302 to location, no-store, no referrer. */
void connect_redirect(struct http_req *r, const char *location);

#endif
