#include "client.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "uri.h"

static void uris_free(struct client *cl)
{
	for (size_t i = 0; i < cl->n_redirect_uris; i++)
		free(cl->redirect_uris[i]);
	free(cl->redirect_uris);
	cl->redirect_uris = NULL;
	cl->n_redirect_uris = 0;
}

void client_free(struct client *cl)
{
	uris_free(cl);
	free(cl->name);
	free(cl->jwks);
	free(cl->jwks_uri);
	crypto_wipe(cl->secret_hash, sizeof(cl->secret_hash));
	memset(cl, 0, sizeof(*cl));
}

int client_set_keys(struct client *cl, const char *jwks, const char *jwks_uri)
{
	free(cl->jwks);
	free(cl->jwks_uri);
	cl->jwks = jwks ? strdup(jwks) : NULL;
	cl->jwks_uri = jwks_uri ? strdup(jwks_uri) : NULL;
	cl->private_key_jwt = cl->jwks || cl->jwks_uri;
	return (jwks && !cl->jwks) || (jwks_uri && !cl->jwks_uri) ? -1 : 0;
}

int client_copy(struct client *dst, const struct client *src)
{
	*dst = *src;
	dst->name = NULL;
	dst->redirect_uris = NULL;
	dst->n_redirect_uris = 0;
	dst->jwks = NULL;
	dst->jwks_uri = NULL;
	int rc = (src->name && !(dst->name = strdup(src->name))) ||
				 client_set_uris(dst, (const char *const *)src->redirect_uris, src->n_redirect_uris) <
					 0 ||
				 ((src->jwks || src->jwks_uri) && client_set_keys(dst, src->jwks, src->jwks_uri) < 0)
			 ? -1
			 : 0;
	if (rc < 0)
		client_free(dst);
	return rc;
}

int client_id_ok(const char *id)
{
	if (!id || !*id || strlen(id) > LIM_CLIENT_ID)
		return 0;
	for (const unsigned char *ch = (const unsigned char *)id; *ch; ch++)
		if (*ch < 0x20 || *ch > 0x7e)
			return 0;
	return 1;
}

int client_set_uris(struct client *cl, const char *const *uris, size_t n)
{
	uris_free(cl);
	cl->redirect_uris = calloc(n ? n : 1, sizeof(char *));
	if (!cl->redirect_uris)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!(cl->redirect_uris[i] = strdup(uris[i]))) {
			uris_free(cl);
			return -1;
		}
		cl->n_redirect_uris++;
	}
	return 0;
}

int client_set_uris_json(struct client *cl, const json_t *uris)
{
	const char *list[LIM_REDIRECT_URIS];
	size_t n = json_array_size(uris);
	if (!json_is_array(uris) || n == 0 || n > LIM_REDIRECT_URIS)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!(list[i] = json_string_value(json_array_get(uris, i))))
			return -1;
	return client_set_uris(cl, list, n);
}

int client_redirect_ok(const struct client *cl, const char *uri)
{
	for (size_t i = 0; i < cl->n_redirect_uris; i++)
		if (uri_redirect_matches(cl->redirect_uris[i], uri))
			return 1;
	return 0;
}

int client_redirect_policy_ok(const struct config *cfg, const char *uri)
{
	if (strncasecmp(uri, "https://", 8) == 0)
		return 1;
	if (strncasecmp(uri, "http://", 7) == 0)
		return cfg->registration.allow_loopback_redirects;
	return cfg->registration.allow_private_schemes;
}

unsigned client_grant_type_bit(const char *name)
{
	if (strcmp(name, "authorization_code") == 0)
		return CLIENT_GT_CODE;
	if (strcmp(name, "refresh_token") == 0)
		return CLIENT_GT_REFRESH;
	if (strcmp(name, "client_credentials") == 0)
		return CLIENT_GT_CLIENT_CREDENTIALS;
	if (strcmp(name, "urn:ietf:params:oauth:grant-type:jwt-bearer") == 0)
		return CLIENT_GT_JWT_BEARER;
	return 0;
}
