#include "notify.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "jparse.h"
#include "lim.h"
#include "log.h"
#include "num.h"

/* ---- subscribers ----------------------------------------------------------- */

static struct {
	notify_revoke_fn fn;
	void *arg;
} revoke_subs[NOTIFY_SUBSCRIBERS];
static size_t n_revoke_subs;
static struct {
	notify_refresh_fn fn;
	void *arg;
} refresh_subs[NOTIFY_SUBSCRIBERS];
static size_t n_refresh_subs;
static struct {
	notify_bound_fn fn;
	void *arg;
} bound_subs[NOTIFY_SUBSCRIBERS];
static size_t n_bound_subs;
static struct {
	notify_state_fn fn;
	void *arg;
} state_subs[NOTIFY_SUBSCRIBERS];
static size_t n_state_subs;
static struct {
	notify_elicited_fn fn;
	void *arg;
} elicited_subs[NOTIFY_SUBSCRIBERS];
static size_t n_elicited_subs;
static struct {
	notify_live_fn fn;
	void *arg;
} live_subs[NOTIFY_SUBSCRIBERS];
static size_t n_live_subs;

#define SUBSCRIBE(list, n, f, a)               \
	do {                                   \
		if ((n) == NOTIFY_SUBSCRIBERS) \
			return -1;             \
		(list)[n].fn = (f);            \
		(list)[(n)++].arg = (a);       \
		return 0;                      \
	} while (0)

int notify_on_revoke(notify_revoke_fn fn, void *arg)
{
	SUBSCRIBE(revoke_subs, n_revoke_subs, fn, arg);
}

int notify_on_refresh(notify_refresh_fn fn, void *arg)
{
	SUBSCRIBE(refresh_subs, n_refresh_subs, fn, arg);
}

int notify_on_bound(notify_bound_fn fn, void *arg)
{
	SUBSCRIBE(bound_subs, n_bound_subs, fn, arg);
}

int notify_on_elicited(notify_elicited_fn fn, void *arg)
{
	SUBSCRIBE(elicited_subs, n_elicited_subs, fn, arg);
}

int notify_on_state(notify_state_fn fn, void *arg)
{
	SUBSCRIBE(state_subs, n_state_subs, fn, arg);
}

int notify_on_resync(notify_live_fn fn, void *arg)
{
	SUBSCRIBE(live_subs, n_live_subs, fn, arg);
}

static void tell_revoked(const struct revocation *rv)
{
	for (size_t i = 0; i < n_revoke_subs; i++)
		revoke_subs[i].fn(rv, revoke_subs[i].arg);
}

static void tell_bound(const char *key)
{
	for (size_t i = 0; i < n_bound_subs; i++)
		bound_subs[i].fn(key, bound_subs[i].arg);
}

static void tell_everything(void)
{
	struct revocation all;
	memset(&all, 0, sizeof(all));
	tell_revoked(&all);
}

static void tell_state(enum notify_state st)
{
	for (size_t i = 0; i < n_state_subs; i++)
		state_subs[i].fn(st, state_subs[i].arg);
}

/* ---- the payload grammar -------------------------------------------------- */

static int is_uuid(const char *s)
{
	return num_uuid_ok(s);
}

static int is_hex64(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

char *notify_payload(const struct revocation *rv)
{
	char *out = NULL;
	json_t *sel = NULL;
	int selector = rv->client_id || rv->subject || rv->upstream;
	if (!selector && !rv->token_hash && rv->grant_id) {
		size_t n = strlen(rv->grant_id) + 3;
		if ((out = malloc(n)))
			snprintf(out, n, "g:%s", rv->grant_id);
		goto out;
	}
	if (!selector && !rv->grant_id && rv->token_hash) {
		size_t n = strlen(rv->token_hash) + 5;
		if ((out = malloc(n)))
			snprintf(out, n, "t:\\x%s", rv->token_hash);
		goto out;
	}
	if (selector && !rv->token_hash) {
		const char *k[] = { "grant_id", "client_id", "subject", "upstream" };
		const char *v[] = { rv->grant_id, rv->client_id, rv->subject, rv->upstream };
		int bad = !(sel = json_object());
		for (int i = 0; i < 4 && !bad; i++)
			bad = v[i] && json_object_set_new(sel, k[i], json_string(v[i])) < 0;
		char *j = !bad ? json_dumps(sel, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		size_t n = j ? strlen(j) + 3 : 0;
		if (j && n <= NOTIFY_PAYLOAD_MAX + 1 && (out = malloc(n)))
			snprintf(out, n, "r:%s", j);
		bad |= !j || (n <= NOTIFY_PAYLOAD_MAX + 1 && !out);
		free(j);
		if (out || bad)
			goto out; /* out of memory: NULL */
	}
	/* Everything, or a selector too long to say: every node ends everything. */
	out = strdup("*");
out:
	json_decref(sel);
	return out;
}

/* "r:" payloads: {"grant_id"?, "client_id"?, "subject"?, "upstream"?}, all
 * strings; rv points into sel. */
static int selector_parse(json_t *sel, struct revocation *rv)
{
	const char *k;
	json_t *v;
	if (!json_is_object(sel))
		return -1;
	json_object_foreach(sel, k, v)
	{
		const char *s = json_string_value(v);
		if (!s)
			return -1;
		if (strcmp(k, "grant_id") == 0)
			rv->grant_id = s;
		else if (strcmp(k, "client_id") == 0)
			rv->client_id = s;
		else if (strcmp(k, "subject") == 0)
			rv->subject = s;
		else if (strcmp(k, "upstream") == 0)
			rv->upstream = s;
		else
			return -1;
	}
	return 0;
}

int notify_parse(const char *payload, struct notify_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->kind = NOTIFY_REVOKED;
	if (strcmp(payload, "*") == 0)
		return 0;
	if (strncmp(payload, "u:", 2) == 0 && is_uuid(payload + 2)) {
		m->kind = NOTIFY_REFRESHED;
		m->grant_id = payload + 2;
		return 0;
	}
	if (strncmp(payload, "s:", 2) == 0 && is_hex64(payload + 2)) {
		m->kind = NOTIFY_BOUND;
		m->key = payload + 2;
		return 0;
	}
	if (strncmp(payload, "g:", 2) == 0 && is_uuid(payload + 2)) {
		m->rv.grant_id = payload + 2;
		return 0;
	}
	if (strncmp(payload, "t:\\x", 4) == 0 && is_hex64(payload + 4)) {
		m->rv.token_hash = payload + 4;
		return 0;
	}
	if (strncmp(payload, "r:", 2) == 0 && strlen(payload) <= NOTIFY_PAYLOAD_MAX &&
	    (m->sel = jparse_str(payload + 2, 0, LIM_JSON_DEPTH)) != NULL && selector_parse(m->sel, &m->rv) == 0)
		return 0;
	/* What this node cannot read: everything (fail closed). */
	notify_msg_free(m);
	return -1;
}

void notify_msg_free(struct notify_msg *m)
{
	json_decref(m->sel);
	memset(m, 0, sizeof(*m));
	m->kind = NOTIFY_REVOKED;
}

int notify_parse_event(const char *payload, char grant_id[37], char elicitation_id[37])
{
	if (strlen(payload) != 2 + 36 + 1 + 36 || strncmp(payload, "e:", 2) != 0 || payload[38] != ':')
		return -1;
	memcpy(grant_id, payload + 2, 36);
	grant_id[36] = '\0';
	memcpy(elicitation_id, payload + 39, 36);
	elicitation_id[36] = '\0';
	return is_uuid(grant_id) && is_uuid(elicitation_id) ? 0 : -1;
}

void notify_deliver_event(const char *payload)
{
	char gid[37], eid[37];
	if (notify_parse_event(payload, gid, eid) < 0)
		return; /* not a revocation: nothing to fail closed for */
	for (size_t i = 0; i < n_elicited_subs; i++)
		elicited_subs[i].fn(gid, eid, elicited_subs[i].arg);
}

int notify_publish_elicited(struct db_conn *c, const char *grant_id, const char *elicitation_id)
{
	static struct db_stmt q = DB_STMT("SELECT pg_notify('" NOTIFY_EVENTS_CHANNEL "', 'e:' || $1 || ':' || $2)");
	if (!is_uuid(grant_id) || !is_uuid(elicitation_id))
		return -1;
	const char *p[] = { grant_id, elicitation_id };
	PGresult *r = db_exec_ok(c, &q, 2, p);
	PQclear(r);
	return r ? 0 : -1;
}

void notify_deliver(const char *payload)
{
	struct notify_msg m;
	/* An unreadable payload leaves m saying "everything". */
	int readable = notify_parse(payload, &m) == 0;
	if (readable && m.kind == NOTIFY_REFRESHED) {
		for (size_t i = 0; i < n_refresh_subs; i++)
			refresh_subs[i].fn(m.grant_id, refresh_subs[i].arg);
	} else if (readable && m.kind == NOTIFY_BOUND) {
		tell_bound(m.key);
	} else {
		tell_revoked(&m.rv);
	}
	notify_msg_free(&m);
}

int notify_publish(struct db_conn *c, const struct revocation *rv)
{
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" NOTIFY_CHANNEL "', $1)");
	int rc = -1;
	char *payload = notify_payload(rv);
	if (!payload)
		goto out;
	const char *p[] = { payload };
	PGresult *r = db_exec_ok(c, &q_notify, 1, p);
	if (!r)
		goto out;
	PQclear(r);
	/* This node forgets and ends it now; the others on the NOTIFY. */
	tell_revoked(rv);
	rc = 0;
out:
	free(payload);
	return rc;
}

int notify_publish_bound(struct db_conn *c, const char *key)
{
	static struct db_stmt q_notify = DB_STMT("SELECT pg_notify('" NOTIFY_CHANNEL "', $1)");
	char payload[2 + 64 + 1];
	if (!is_hex64(key))
		return -1;
	snprintf(payload, sizeof(payload), "s:%s", key);
	const char *p[] = { payload };
	PGresult *r = db_exec_ok(c, &q_notify, 1, p);
	if (!r)
		return -1;
	PQclear(r);
	tell_bound(key);
	return 0;
}

/* ---- resync after deafness -------------------------------------------------- */

/* Revocations made while the listener was deaf were never announced to this
 * node: ask the database about every grant and token it is serving. */
struct live_list {
	struct buf grants, tokens;
	int failed;
};

static void live_emit(const char *grant_id, const char *token_hash, void *ctx)
{
	struct live_list *l = ctx;
	if (!l->failed && grant_id && is_uuid(grant_id) &&
	    buf_printf(&l->grants, "%s%s", l->grants.len ? "," : "{", grant_id) < 0)
		l->failed = 1;
	if (!l->failed && token_hash && is_hex64(token_hash) &&
	    buf_printf(&l->tokens, "%s%s", l->tokens.len ? "," : "{", token_hash) < 0)
		l->failed = 1;
}

/* 0 done; -1 the database failed (the caller reconnects and tries again). */
static int resync(PGconn *pg)
{
	static const char *q = "SELECT 'g', id::text FROM grants WHERE id = ANY($1::uuid[]) AND status = 'revoked' "
			       "UNION ALL SELECT 't', encode(token_hash, 'hex') FROM tokens "
			       "WHERE token_hash = ANY(ARRAY(SELECT decode(h, 'hex') FROM unnest($2::text[]) h)) "
			       "AND revoked_at IS NOT NULL";
	struct live_list l;
	PGresult *res = NULL;
	int rc = -1;
	memset(&l, 0, sizeof(l));
	buf_init(&l.grants, NOTIFY_RESYNC_BYTES);
	buf_init(&l.tokens, NOTIFY_RESYNC_BYTES);
	for (size_t i = 0; i < n_live_subs; i++)
		live_subs[i].fn(live_emit, &l, live_subs[i].arg);
	if (l.failed || buf_adds(&l.grants, l.grants.len ? "}" : "{}") < 0 ||
	    buf_adds(&l.tokens, l.tokens.len ? "}" : "{}") < 0) {
		/* Too much to ask about: everything it serves may be revoked. */
		log_msg(LOG_WARN, "cache.resync_overflow", NULL, "too many live transfers to check: ending them all");
		tell_everything();
		rc = 0;
		goto out;
	}
	if (strcmp(l.grants.ptr, "{}") == 0 && strcmp(l.tokens.ptr, "{}") == 0) {
		rc = 0;
		goto out;
	}
	const char *p[] = { l.grants.ptr, l.tokens.ptr };
	res = PQexecParams(pg, q, 2, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_msg(LOG_WARN, "cache.resync_failed", NULL, "could not check live transfers for revocations");
		goto out;
	}
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		struct revocation rv;
		memset(&rv, 0, sizeof(rv));
		if (PQgetvalue(res, i, 0)[0] == 'g')
			rv.grant_id = PQgetvalue(res, i, 1);
		else
			rv.token_hash = PQgetvalue(res, i, 1);
		tell_revoked(&rv);
	}
	if (n)
		log_msg(LOG_INFO, "cache.resync", NULL, "%d revocations made while deaf ended live transfers", n);
	rc = 0;
out:
	PQclear(res);
	buf_free(&l.grants);
	buf_free(&l.tokens);
	return rc;
}

/* ---- the listener ------------------------------------------------------------ */

static pthread_t listener;
static int running, stopping;
static struct app *the_app;

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until the next thing the listener must do: send the heartbeat, or
 * declare the node deaf; at most 250 ms, so a stop is noticed. */
static int listen_wait_ms(long long heard, long long sent)
{
	long long due = sent ? sent + NOTIFY_SILENCE_MS + 1 : heard + NOTIFY_HEARTBEAT_MS + 1;
	long long wait = due - mono_ms();
	return wait < 0 ? 0 : wait > 250 ? 250 : (int)wait;
}

/* A LISTENing connection, or NULL (logged by db_connect_one). */
static PGconn *listen_connect(void)
{
	PGconn *pg = db_connect_one(the_app->cfg, "mcp-broker-listen");
	PGresult *r = pg ? PQexec(pg, "LISTEN " NOTIFY_CHANNEL "; LISTEN " NOTIFY_EVENTS_CHANNEL) : NULL;
	int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok && pg) {
		PQfinish(pg);
		pg = NULL;
	}
	return pg;
}

/* Reads what arrived: the heartbeat's answer (*sent cleared, *heard set)
 * and the notifications, each delivered. */
static void listen_read(PGconn *pg, long long *heard, long long *sent)
{
	while (*sent && !PQisBusy(pg)) {
		PGresult *hr = PQgetResult(pg);
		if (!hr) {
			*sent = 0;
			*heard = mono_ms();
			break;
		}
		PQclear(hr);
	}
	PGnotify *nt;
	while ((nt = PQnotifies(pg)) != NULL) {
		if (nt->relname && strcmp(nt->relname, NOTIFY_EVENTS_CHANNEL) == 0)
			notify_deliver_event(nt->extra ? nt->extra : "");
		else
			notify_deliver(nt->extra ? nt->extra : "*");
		PQfreemem(nt);
	}
}

static void *listen_loop(void *arg)
{
	(void)arg;
	PGconn *pg = NULL;
	int deaf = 1;                  /* no revocation from other nodes reached this one */
	long long heard = 0, sent = 0; /* last answer to a heartbeat; heartbeat in flight since */
	while (!__atomic_load_n(&stopping, __ATOMIC_ACQUIRE)) {
		if (!pg) {
			if (!(pg = listen_connect())) {
				tell_state(NOTIFY_DEAF);
				sleep(1);
				continue;
			}
			/* Anything revoked while we were deaf ends what it still serves. */
			if (deaf && resync(pg) < 0) {
				PQfinish(pg);
				pg = NULL;
				sleep(1);
				continue;
			}
			deaf = 0;
			heard = mono_ms();
			sent = 0;
			tell_state(NOTIFY_LISTENING);
			log_msg(LOG_INFO, "cache.listening", NULL, "token cache on: listening for revocations");
		}
		struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };
		int n = poll(&pfd, 1, listen_wait_ms(heard, sent));
		if (n < 0)
			continue;
		/* A partition leaves the connection open and silent: a node that
		 * cannot hear revocations must not serve from its cache nor keep
		 * streams of grants that may be dead. After NOTIFY_SILENCE_MS
		 * without an answer to the heartbeat it is deaf: cache off, live
		 * transfers ended (fail closed), reconnect. */
		if (sent && mono_ms() - sent > NOTIFY_SILENCE_MS) {
			log_msg(LOG_WARN, "cache.listen_silent", NULL,
				"revocation listener silent: token cache off, live transfers ended");
			tell_state(NOTIFY_DEAF);
			tell_everything();
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
			continue;
		}
		if (!sent && mono_ms() - heard > NOTIFY_HEARTBEAT_MS) {
			if (PQsendQuery(pg, "SELECT 1"))
				sent = mono_ms();
		}
		if (n > 0 && !PQconsumeInput(pg)) {
			log_msg(LOG_WARN, "cache.listen_lost", NULL, "revocation listener lost: token cache off");
			tell_state(NOTIFY_DEAF);
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
			continue;
		}
		listen_read(pg, &heard, &sent);
		if (PQstatus(pg) != CONNECTION_OK) {
			tell_state(NOTIFY_DEAF);
			deaf = 1;
			PQfinish(pg);
			pg = NULL;
		}
	}
	tell_state(NOTIFY_DEAF);
	if (pg)
		PQfinish(pg);
	return NULL;
}

int notify_start(struct app *app)
{
	the_app = app;
	__atomic_store_n(&stopping, 0, __ATOMIC_RELEASE);
	if (pthread_create(&listener, NULL, listen_loop, NULL) != 0)
		return -1;
	running = 1;
	return 0;
}

void notify_stop(void)
{
	if (!running)
		return;
	__atomic_store_n(&stopping, 1, __ATOMIC_RELEASE);
	pthread_join(listener, NULL);
	running = 0;
}
