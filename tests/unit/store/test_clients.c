/* clients.c: what a clients row (static or dynamic) becomes. clients.c is
 * included to reach from_row and from_config; the rows are built with
 * libpq's PQmakeEmptyPGresult, no server involved. */
#include <stdlib.h>
#include <string.h>

#include "../../../broker/store/clients.c"
#include "test.h"

/* One row of clients_lookup's SELECT: kind, client_name,
 * array_to_json(redirect_uris), encode(secret_hash, 'hex'), disabled;
 * NULL values are SQL NULL. rows 0 gives a result without a tuple. */
static PGresult *row(int rows, const char *kind, const char *name, const char *uris, const char *hash,
		     const char *disabled)
{
	static char *names[] = { "kind", "client_name", "array_to_json", "encode", "disabled" };
	PGresAttDesc att[5];
	memset(att, 0, sizeof(att));
	for (int i = 0; i < 5; i++) {
		att[i].name = names[i];
		att[i].format = 0;
		att[i].typid = 25; /* text */
		att[i].typlen = -1;
		att[i].atttypmod = -1;
	}
	PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	CHECK(res && PQsetResultAttrs(res, 5, att));
	const char *v[] = { kind, name, uris, hash, disabled };
	for (int i = 0; rows && i < 5; i++)
		CHECK(PQsetvalue(res, 0, i, (char *)v[i], v[i] ? (int)strlen(v[i]) : -1));
	return res;
}

#define HASH_HEX "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"

static enum client_find dynamic(const char *name, const char *uris, const char *hash, const char *disabled,
				struct client *out)
{
	PGresult *res = row(1, "dynamic", name, uris, hash, disabled);
	memset(out, 0, sizeof(*out));
	enum client_find rc = from_row(res, out);
	PQclear(res);
	return rc;
}

static void test_dynamic(void)
{
	struct client cl;
	CHECK(dynamic("App", "[\"https://a.example/cb\",\"http://127.0.0.1/cb\"]", HASH_HEX, "f", &cl) == CLIENT_FOUND);
	CHECK_STR(cl.kind, "dynamic");
	CHECK_STR(cl.name, "App");
	CHECK(cl.n_redirect_uris == 2);
	CHECK_STR(cl.redirect_uris[1], "http://127.0.0.1/cb");
	CHECK(cl.confidential == 1 && cl.disabled == 0);
	static const uint8_t want[32] = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
					  0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
					  0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
	CHECK(memcmp(cl.secret_hash, want, 32) == 0);
	client_free(&cl);

	/* A public client (no hash), no name, disabled by the operator. */
	CHECK(dynamic(NULL, "[\"https://a.example/cb\"]", NULL, "t", &cl) == CLIENT_FOUND);
	CHECK(cl.name == NULL && cl.confidential == 0 && cl.disabled == 1);
	client_free(&cl);

	/* Anything else in a row is a database fault (503), never a client
	 * with a garbled secret hash or without redirect URIs. */
	CHECK(dynamic(NULL, "[\"https://a.example/cb\"]", "00112233", "f", &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
	CHECK(dynamic(NULL, "[\"https://a.example/cb\"]", HASH_HEX "00", "f", &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
	CHECK(dynamic(NULL, "[\"https://a.example/cb\"]",
		      "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "f",
		      &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
	CHECK(dynamic(NULL, "[]", NULL, "f", &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
	CHECK(dynamic(NULL, "not json", NULL, "f", &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
	CHECK(dynamic(NULL, "[1]", NULL, "f", &cl) == CLIENT_UNAVAILABLE);
	client_free(&cl);
}

static void test_static(void)
{
	char *uris[] = { "https://ops.example.com/cb", "http://127.0.0.1/callback" };
	struct cfg_client sc = { .client_id = "ops-cli",
				 .client_name = "Ops CLI",
				 .has_secret = 1,
				 .redirect_uris = uris,
				 .n_redirect_uris = 2 };
	memset(sc.secret_hash, 0x5a, sizeof(sc.secret_hash));
	struct client cl;

	/* Configuration is the truth; the row only says whether it is disabled. */
	PGresult *res = row(1, "static", "stale name", "[\"https://old.example/cb\"]", NULL, "t");
	memset(&cl, 0, sizeof(cl));
	CHECK(from_config(&sc, res, &cl) == CLIENT_FOUND);
	PQclear(res);
	CHECK_STR(cl.kind, "static");
	CHECK_STR(cl.name, "Ops CLI");
	CHECK(cl.n_redirect_uris == 2);
	CHECK_STR(cl.redirect_uris[0], "https://ops.example.com/cb");
	CHECK(cl.confidential == 1 && cl.disabled == 1 && cl.secret_hash[31] == 0x5a);
	client_free(&cl);

	/* No row yet (before clients_sync_static): enabled. */
	res = row(0, NULL, NULL, NULL, NULL, NULL);
	sc.client_name = NULL;
	sc.has_secret = 0;
	CHECK(from_config(&sc, res, &cl) == CLIENT_FOUND);
	PQclear(res);
	CHECK(cl.name == NULL && cl.disabled == 0 && cl.confidential == 0);
	client_free(&cl);
}

int main(void)
{
	test_dynamic();
	test_static();
	TEST_DONE();
}
