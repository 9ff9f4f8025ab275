#include "session.h"

#include <string.h>

#include "cache.h"
#include "crypto.h"
#include "forward.h"
#include "hdr.h"
#include "log.h"
#include "notify.h"
#include "vault.h"

/* The cache key of a binding: SHA-256 hex of "<id>|<downstream>" (an id is
 * the downstream's: the same id elsewhere is another session). */
static int binding_key(const struct str *sid, const char *downstream, char key[65])
{
	struct buf kb;
	buf_init(&kb, 4096);
	if (buf_printf(&kb, "%.*s|%s", (int)sid->len, sid->p, downstream) < 0)
		return -1;
	crypto_sha256_hex(kb.ptr, kb.len, key);
	buf_free(&kb);
	return 0;
}

/* Who opened the session: 1 and bound filled, 0 nobody, -1 no answer. */
static int bound_user(struct app *app, struct db_conn **c, const char *downstream, const char *sid, const char *key,
		      char bound[37])
{
	static struct db_stmt q = DB_STMT(
		"SELECT user_id::text FROM mcp_session_bindings WHERE downstream = $1 AND session_hash = $2::bytea");
	char hash[67];
	int rc = -1;
	if (cache_session_get(key, bound))
		return 1;
	if (cache_session_unbound(key))
		return 0;
	if (!*c && db_acquire(app->db, c, DB_WAIT_MS) < 0)
		return -1;
	/* Read before asking: a binding heard meanwhile voids the answer "nobody". */
	unsigned long gen = cache_neg_generation();
	vault_hash_hex(sid, hash);
	const char *p[] = { downstream, hash };
	PGresult *res = db_exec_ok(*c, &q, 2, p);
	if (!res)
		goto out;
	rc = PQntuples(res) == 1;
	if (rc) {
		snprintf(bound, 37, "%s", PQgetvalue(res, 0, 0));
		cache_session_put(key, bound);
	} else {
		cache_session_put_unbound(key, gen);
	}
out:
	PQclear(res);
	return rc;
}

/* A session id no grant of this user opened there, bound to another user
 * or to nobody, is unknown to this user and never reaches the downstream.
 * The one exception is an initialize, which opens a new session (a client
 * re-initialising may still send its expired id): the id nobody opened is
 * then not passed on, so that no downstream reads it as someone's live
 * session, and the answer's new id is bound. */
static enum session_rc judge(int known, int mine, int initialize)
{
	if (mine)
		return SESSION_PASS;
	if (!known)
		return initialize ? SESSION_DROP : SESSION_UNKNOWN;
	return SESSION_FOREIGN;
}

enum session_rc session_check(struct app *app, struct db_conn **c, const char *downstream, const char *user_id,
			      const char *raw, int initialize)
{
	char sid[SESSION_ID_MAX + 1], key[65], bound[37];
	if (!raw)
		return SESSION_PASS;
	struct str t = forward_ows_trim(raw);
	if (t.len > SESSION_ID_MAX || t.len == 0)
		return SESSION_BAD_ID;
	memcpy(sid, t.p, t.len);
	sid[t.len] = '\0';
	if (binding_key(&t, downstream, key) < 0)
		return SESSION_ERROR;
	int known = bound_user(app, c, downstream, sid, key, bound);
	if (known < 0)
		return SESSION_UNAVAILABLE;
	return judge(known, known && strcmp(bound, user_id) == 0, initialize);
}

int session_record(struct app *app, const char *downstream, const char *user_id, const char *asked,
		   const char *answered, const char *request_id)
{
	static struct db_stmt q = DB_STMT(
		"INSERT INTO mcp_session_bindings(downstream, session_hash, user_id) VALUES ($1, $2::bytea, $3::uuid) "
		"ON CONFLICT (downstream, session_hash) DO NOTHING");
	struct str a = asked ? forward_ows_trim(asked) : (struct str){ NULL, 0 };
	if (!answered || (a.p && a.len == strlen(answered) && memcmp(a.p, answered, a.len) == 0))
		return 0; /* the session the request was checked against */
	if (strlen(answered) > SESSION_ID_MAX || !hdr_value_ok(answered, strlen(answered), 0))
		return -1;
	struct db_conn *c = NULL;
	char hash[67], key[65];
	struct str sid = { answered, strlen(answered) };
	if (binding_key(&sid, downstream, key) < 0)
		return -1;
	vault_hash_hex(answered, hash);
	if (db_acquire(app->db, &c, DB_WAIT_MS) < 0)
		return -1;
	const char *p[] = { downstream, hash, user_id };
	PGresult *res = db_exec_ok(c, &q, 3, p);
	if (!res) {
		db_release(app->db, &c);
		log_msg(LOG_ERROR, "proxy.session_unbound", request_id,
			"a new MCP session could not be bound: refused");
		return -1;
	}
	/* Nodes that found the id unbound forget it (this one at once). A row
	 * already there was announced by whoever bound it. */
	int inserted = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	if (inserted && notify_publish_bound(c, key) < 0) {
		/* Bound, but other nodes may refuse the id until their negative
		 * entry ages out (CACHE_NEG_TTL_S): a refusal, never a leak. */
		cache_session_bound(key);
		log_msg(LOG_WARN, "proxy.session_bind_unannounced", request_id,
			"a new MCP session was bound but could not be announced to other nodes");
	}
	db_release(app->db, &c);
	return 0;
}
