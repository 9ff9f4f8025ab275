/* POST /register's pure step (register_parse) on an anonymous party's
 * registration document. The first input byte sets the registration policy
 * (bit 0: loopback http redirect URIs, bit 1: private-use schemes); the rest
 * is the application/json body.
 * - an accepted document has 1..LIM_REDIRECT_URIS redirect URIs that
 *   uri_redirect_allowed and the policy accept, an auth method of none,
 *   client_secret_basic or client_secret_post (confidential unless none),
 *   1..4 grant types among authorization_code and refresh_token, and
 *   metadata holding only the informational URIs and scope;
 * - a refused one names invalid_redirect_uri or invalid_client_metadata
 *   with a description, and leaves the request empty. */
#include <string.h>

#include "fuzz.h"
#include "client.h"
#include "register.h"
#include "uri.h"

static int metadata_key_ok(const char *k)
{
	static const char *const keys[] = { "client_uri", "logo_uri", "tos_uri",
					    "policy_uri", "scope",    "application_type" };
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(k, keys[i]) == 0)
			return 1;
	return 0;
}

static void check_accepted(const struct config *cfg, const struct register_request *rq)
{
	size_t n = json_array_size(rq->redirect_uris), i;
	json_t *v;
	const char *k;
	FUZZ_CHECK(n >= 1 && n <= LIM_REDIRECT_URIS);
	json_array_foreach(rq->redirect_uris, i, v)
	{
		const char *why = NULL;
		FUZZ_CHECK(json_is_string(v) && uri_redirect_allowed(json_string_value(v), &why) == 0);
		FUZZ_CHECK(client_redirect_policy_ok(cfg, json_string_value(v)));
	}
	FUZZ_CHECK(strcmp(rq->auth_method, "none") == 0 || strcmp(rq->auth_method, "client_secret_basic") == 0 ||
		   strcmp(rq->auth_method, "client_secret_post") == 0);
	FUZZ_CHECK(rq->confidential == (strcmp(rq->auth_method, "none") != 0));
	FUZZ_CHECK(!rq->name || strlen(rq->name) <= LIM_CLIENT_NAME);
	n = json_array_size(rq->grant_types);
	FUZZ_CHECK(n >= 1 && n <= 4);
	json_array_foreach(rq->grant_types, i, v)
	{
		const char *g = json_string_value(v);
		FUZZ_CHECK(g && (strcmp(g, "authorization_code") == 0 || strcmp(g, "refresh_token") == 0));
	}
	json_object_foreach(rq->metadata, k, v) FUZZ_CHECK(metadata_key_ok(k) && json_is_string(v));
	/* application_type (SEP-837) is recorded, and only as web or native. */
	FUZZ_CHECK(rq->application_type &&
		   (strcmp(rq->application_type, "web") == 0 || strcmp(rq->application_type, "native") == 0));
	const char *recorded = json_string_value(json_object_get(rq->metadata, "application_type"));
	FUZZ_CHECK(recorded && strcmp(recorded, rq->application_type) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	struct register_request rq;
	struct register_refusal why;
	if (size < 1)
		return 0;
	cfg.registration.allow_loopback_redirects = data[0] & 1;
	cfg.registration.allow_private_schemes = (data[0] >> 1) & 1;
	enum register_parse rc = register_parse(&cfg, "application/json", (const char *)data + 1, size - 1, &rq, &why);
	if (rc == REGISTER_OK) {
		check_accepted(&cfg, &rq);
	} else if (rc == REGISTER_INVALID) {
		FUZZ_CHECK(why.error && why.description);
		FUZZ_CHECK(strcmp(why.error, "invalid_redirect_uri") == 0 ||
			   strcmp(why.error, "invalid_client_metadata") == 0);
		FUZZ_CHECK(!rq.doc && !rq.grant_types && !rq.metadata);
	}
	register_request_free(&rq);
	return 0;
}
