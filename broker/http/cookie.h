/* Browser state of the authorization flow, all keyed by cookie_secret:
 * the browser-binding cookie, CSRF tokens bound to it and the client,
 * consent cookies, and sealed (AEAD) blobs carried through forms. Cookies
 * are __Host- prefixed, Secure, HttpOnly and SameSite=Lax when public_url
 * is https; over plain http (loopback development only) the prefix and
 * Secure are dropped, as browsers refuse them there. */
#ifndef MCPB_COOKIE_H
#define MCPB_COOKIE_H
#include <jansson.h>
#include <stdint.h>
#include <time.h>
#include "crypto.h"
#include "http.h"

#define COOKIE_BROWSER "mcpb_browser"
#define COOKIE_CONSENT "mcpb_consent"
#define COOKIE_VALUE_MAX 2048   /* a longer cookie of ours is ignored */
#define COOKIE_SEALED_MAX 16384 /* characters of a sealed blob that is opened */

/* Value of our cookie base name (prefix added as configured), or NULL. */
const char *cookie_get(struct http_req *r, const char *base);
/* Queues Set-Cookie for base=value with max_age seconds. */
int cookie_set(struct http_req *r, const char *base, const char *value, long max_age) WUR;

/* The browser-binding value: the existing cookie, or a fresh one that is
 * set on this response. out must hold 64 bytes. */
int cookie_browser(struct http_req *r, char out[64]) WUR;

/* 1 when this request carries the browser-binding cookie and its SHA-256
 * (64 hex digits) is hash_hex, compared in constant time: the browser a
 * flow was bound to. */
int cookie_browser_is(struct http_req *r, const char *hash_hex);
/* CSRF token for (browser value, client_id), base64url HMAC; out[64]. */
int cookie_csrf(struct http_req *r, const char *browser, const char *client_id, char out[64]) WUR;
/* 1 when token is the CSRF token of this browser and client. */
int cookie_csrf_ok(struct http_req *r, const char *client_id, const char *token);

/* Consent memory: has this browser approved exactly this request shape? */
int cookie_consent_has(struct http_req *r, const char *key);
/* Adds key to the consent cookie (bounded, oldest dropped). */
int cookie_consent_add(struct http_req *r, const char *key) WUR;

/* Seals obj (JSON, nested at most LIM_JSON_DEPTH) for a form field;
 * malloc'd base64url, NULL on failure. purpose separates uses. Opening
 * checks integrity: NULL when forged, damaged, sealed for another purpose or
 * over COOKIE_SEALED_MAX characters. */
char *cookie_seal(struct http_req *r, const char *purpose, const json_t *obj) WUR;
json_t *cookie_open(struct http_req *r, const char *purpose, const char *sealed) WUR;

/* A value derived from the cookie secret (e.g. the upstream PKCE verifier
 * for a state): base64url(HMAC(cookie_secret, purpose "|" input)); out[64]. */
int cookie_derive(struct http_req *r, const char *purpose, const char *input, char out[64]) WUR;

/* The same over the cookie secret itself, without a request: pure, for unit
 * tests and fuzzing (tests/fuzz/fuzz_cookie.c). */
#define COOKIE_CONSENT_MAX 16
int cookie_derive_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const char *input, char out[64]) WUR;
/* Entries (24 hex characters each, at most COOKIE_CONSENT_MAX) of a consent
 * cookie value v that is intact (its MAC checks) and unexpired at now (its
 * expiry a decimal not before now); *n = 0 otherwise (v may be NULL). */
void cookie_consent_parse(const uint8_t secret[CRYPTO_KEY_LEN], const char *v, time_t now,
			  char entries[COOKIE_CONSENT_MAX][25], size_t *n);
/* Appends to out the consent cookie value that remembers key first, then
 * the n entries of the current cookie (without key's, at most
 * COOKIE_CONSENT_MAX in all), expiring 30 days after now, MAC'd. -1 when out
 * overflows or the MAC fails. */
int cookie_consent_build(const uint8_t secret[CRYPTO_KEY_LEN], const char entries[COOKIE_CONSENT_MAX][25], size_t n,
			 const char *key, time_t now, struct buf *out) WUR;
char *cookie_seal_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const json_t *obj) WUR;
json_t *cookie_open_with(const uint8_t secret[CRYPTO_KEY_LEN], const char *purpose, const char *sealed) WUR;

#endif
