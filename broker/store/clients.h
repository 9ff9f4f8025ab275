/* The clients table: pre-registered clients (configuration is their truth;
 * the row carries the operator's disable switch) and dynamically registered
 * ones (RFC 7591). URL client ids (Client ID Metadata Documents) are
 * oauth/cimd's; oauth/client_resolve decides which of the two an id is. */
#ifndef MCPB_CLIENTS_H
#define MCPB_CLIENTS_H
#include <jansson.h>
#include "app.h"
#include "client.h"
#include "db.h"

/* Looks up a static or dynamically registered client into *out (cleared
 * first). CLIENT_UNKNOWN for an id that client_id_ok refuses or that no
 * usable row has; CLIENT_UNAVAILABLE on a database or allocation failure. */
enum client_find clients_lookup(struct app *app, struct db_conn *c, const char *client_id, struct client *out) WUR;

/* Upserts the configured clients (kind static) so the database knows them. */
int clients_sync_static(struct app *app) WUR;

/* A dynamic client to insert: every pointer borrowed. */
struct clients_new {
	const char *client_id;
	const char *name;            /* may be NULL */
	const char *secret_hash_hex; /* SHA-256 hex of the secret; NULL: public client */
	const char *auth_method;     /* token_endpoint_auth_method */
	const char *registration_ip;
	const json_t *redirect_uris; /* array of strings */
	const json_t *grant_types;   /* array of strings */
	const json_t *metadata;      /* object stored as metadata */
};

enum clients_create {
	CLIENTS_CREATED = 0,
	CLIENTS_OVER_LIMIT, /* per_ip_per_hour registrations from that address in the last hour */
	CLIENTS_ERROR,      /* database or allocation failure */
};

/* Inserts n as a dynamic client inside c's open transaction; *issued_at is
 * its creation time (epoch seconds). When per_ip_per_hour > 0, registrations
 * from the same address are first serialised (transaction-scoped advisory
 * lock) and counted, so that concurrent ones cannot all pass the limit. */
enum clients_create clients_create_dynamic(struct db_conn *c, const struct clients_new *n, long per_ip_per_hour,
					   long long *issued_at) WUR;

#endif
