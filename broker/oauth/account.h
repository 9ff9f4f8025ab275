/* The user's own page, GET /account: sign in with any configured upstream
 * (an upstream OAuth flow through /callback, state and PKCE, bound to the
 * browser), then see every active grant of that account — client,
 * resource, scopes, created, last used — with its connected accounts, and
 * revoke a grant or disconnect an account. Forms carry CSRF tokens bound
 * to the browser; the sign-in lives only in a sealed cookie (15 minutes,
 * bound to the browser cookie too); pages carry the consent page's
 * headers and escape every value. Enterprise users (a trusted issuer's)
 * sign in at the issuer's login_upstream. */
#ifndef MCPB_ACCOUNT_H
#define MCPB_ACCOUNT_H
#include "db.h"
#include "http.h"

#define ACCOUNT_SESSION_S 900

void account_get(struct http_req *r);
/* POST /account/login {csrf, upstream}: starts the sign-in. */
void account_login(struct http_req *r);
/* POST /account/revoke {csrf, grant}; POST /account/disconnect {csrf,
 * grant, upstream}; POST /account/logout {csrf}: each answers 303 to
 * /account. */
void account_revoke(struct http_req *r);
void account_disconnect(struct http_req *r);
void account_logout(struct http_req *r);

/* /callback for an account sign-in: 1 when state is one (answered), 0 when
 * it is not (nothing sent), -1 on a database error (nothing sent). */
int account_callback(struct http_req *r, struct db_conn *c, const char *state) WUR;

#endif
