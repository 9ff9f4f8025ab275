#include "resources.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uri.h"

int resources_url(const struct config *cfg, const struct cfg_resource *res, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%s", cfg->public_url, res->path);
	return n >= 0 && (size_t)n < cap ? 0 : -1;
}

const struct cfg_resource *resources_find(const struct config *cfg, const char *resource)
{
	char *want = uri_canonical_resource(resource);
	const struct cfg_resource *found = NULL;
	if (!want)
		return NULL;
	for (size_t i = 0; i < cfg->n_resources && !found; i++) {
		const struct cfg_resource *res = &cfg->resources[i];
		char url[2048], *mine = NULL;
		/* The canonical form config_parse keeps; computed here for a
		 * configuration built otherwise. */
		const char *have = res->canonical;
		if (!have && resources_url(cfg, res, url, sizeof(url)) == 0)
			have = mine = uri_canonical_resource(url);
		if (have && strcmp(have, want) == 0)
			found = res;
		free(mine);
	}
	free(want);
	return found;
}
