#include "client_resolve.h"

#include <string.h>

#include "cimd.h"
#include "clients.h"

enum client_find client_resolve(struct app *app, struct db_conn *c, const char *client_id, struct client *out,
				const char **why)
{
	*why = NULL;
	memset(out, 0, sizeof(*out));
	if (!client_id_ok(client_id))
		return CLIENT_UNKNOWN;
	if (cimd_is_url(client_id) && !config_client(app->cfg, client_id))
		return cimd_lookup(app, c, client_id, out, why);
	return clients_lookup(app, c, client_id, out);
}
