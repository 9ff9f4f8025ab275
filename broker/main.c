/* mcp-broker: the command line. */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "migrate.h"
#include "audit.h"
#include "cache.h"
#include "clients.h"
#include "housekeeping.h"
#include "engine.h"
#include "notify.h"
#include "revoker.h"
#include "rotate.h"
#include "routes.h"

/* serve: how long to keep retrying the first database connection. */
#define STARTUP_DB_WAIT_S 30

static void usage(FILE *f)
{
	fprintf(f, "usage: mcp-broker <command> [options]\n"
		   "\n"
		   "commands:\n"
		   "  serve --config FILE [--no-migrate]  run a node (migrates first)\n"
		   "  migrate --config FILE               apply schema migrations and exit\n"
		   "  check-config --config FILE          validate a configuration, print every problem\n"
		   "  keygen                              print a fresh base64 256-bit key\n"
		   "  rotate-keys --config FILE           re-encrypt stored upstream tokens under the first key\n"
		   "  --help, --version\n"
		   "\n"
		   "Every command accepts --help. Configuration keys (check-config --help):\n");
}

static int has_flag(int argc, char **argv, const char *flag)
{
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], flag) == 0)
			return 1;
	return 0;
}

/* Parses "--config FILE" (or --config=FILE); rejects unknown options. */
static int parse_opts(int argc, char **argv, const char *const *allowed, const char **config)
{
	*config = NULL;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "mcp-broker: --config needs a file\n");
				return -1;
			}
			*config = argv[++i];
			continue;
		}
		if (strncmp(argv[i], "--config=", 9) == 0) {
			*config = argv[i] + 9;
			continue;
		}
		int ok = 0;
		for (const char *const *a = allowed; a && *a; a++)
			ok |= strcmp(argv[i], *a) == 0;
		if (!ok) {
			fprintf(stderr, "mcp-broker: unknown option %s (see --help)\n", argv[i]);
			return -1;
		}
	}
	if (!*config) {
		fprintf(stderr, "mcp-broker %s: --config FILE is required\n", argv[1]);
		return -1;
	}
	return 0;
}

static struct config *load_or_report(const char *path)
{
	struct cfg_errors errs;
	struct config *cfg = config_load(path, &errs);
	if (!cfg) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s: %s\n", path, errs.msg[i]);
		if (errs.lost)
			fprintf(stderr, "%s: out of memory: %zu more problem%s not reported\n", path, errs.lost,
				errs.lost == 1 ? "" : "s");
		fprintf(stderr, "%s: %zu problem%s\n", path, errs.n + errs.lost, errs.n + errs.lost == 1 ? "" : "s");
	}
	config_errors_free(&errs);
	return cfg;
}

static void setup_logging(const struct config *cfg)
{
	enum log_level lvl = LOG_INFO;
	if (cfg && cfg->log.level)
		(void)log_level_parse(cfg->log.level, &lvl);
	log_init(lvl, stderr);
}

static int cmd_keygen(void)
{
	unsigned char key[CRYPTO_KEY_LEN];
	char out[64];
	if (crypto_random(key, sizeof(key)) < 0 || crypto_b64_encode(key, sizeof(key), out, sizeof(out)) < 0) {
		fprintf(stderr, "mcp-broker keygen: no randomness\n");
		return 1;
	}
	crypto_wipe(key, sizeof(key));
	printf("%s\n", out);
	crypto_wipe(out, sizeof(out));
	return 0;
}

static int cmd_check_config(int argc, char **argv)
{
	const char *path;
	if (has_flag(argc, argv, "--help")) {
		printf("usage: mcp-broker check-config --config FILE\n\nConfiguration keys:\n");
		config_describe(stdout);
		return 0;
	}
	if (parse_opts(argc, argv, NULL, &path) < 0)
		return 2;
	struct config *cfg = load_or_report(path);
	if (!cfg)
		return 1;
	printf("%s: ok (%zu clients, %zu upstreams, %zu resources)\n", path, cfg->n_clients, cfg->n_upstreams,
	       cfg->n_resources);
	config_free(&cfg);
	return 0;
}

static int run_migrations(const struct config *cfg, int wait_s, int *applied)
{
	PGconn *pg = NULL;
	for (int waited = 0;; waited++) {
		pg = db_connect_one(cfg, "mcp-broker-migrate");
		if (pg || waited >= wait_s)
			break;
		sleep(1);
	}
	if (!pg) {
		log_msg(LOG_ERROR, "migrate.no_database", NULL, "database unreachable");
		return -1;
	}
	int rc = migrate_run(pg, applied);
	PQfinish(pg);
	return rc;
}

static int cmd_migrate(int argc, char **argv)
{
	const char *path;
	if (has_flag(argc, argv, "--help")) {
		printf("usage: mcp-broker migrate --config FILE\n"
		       "Applies the embedded schema migrations (this binary knows up to version %d).\n",
		       migrate_latest());
		return 0;
	}
	if (parse_opts(argc, argv, NULL, &path) < 0)
		return 2;
	struct config *cfg = load_or_report(path);
	if (!cfg)
		return 1;
	setup_logging(cfg);
	int applied = 0;
	int rc = run_migrations(cfg, 0, &applied);
	config_free(&cfg);
	if (rc < 0)
		return 1;
	printf("applied %d migration%s; schema version %d\n", applied, applied == 1 ? "" : "s", migrate_latest());
	return 0;
}

static int cmd_rotate_keys(int argc, char **argv)
{
	const char *path;
	if (has_flag(argc, argv, "--help")) {
		printf("usage: mcp-broker rotate-keys --config FILE\n"
		       "Re-encrypts every stored upstream token under encryption_keys[0]. Safe while nodes\n"
		       "serve; every configured key must still be listed until it reports 0 unreadable.\n");
		return 0;
	}
	if (parse_opts(argc, argv, NULL, &path) < 0)
		return 2;
	struct config *cfg = load_or_report(path);
	if (!cfg)
		return 1;
	setup_logging(cfg);
	PGconn *pg = db_connect_one(cfg, "mcp-broker-rotate");
	int v = 0, rc = 1;
	if (!pg || migrate_current(pg, &v) < 0 || v != migrate_latest()) {
		fprintf(stderr, "mcp-broker rotate-keys: database unreachable or schema not current\n");
		goto out;
	}
	long n = 0, unreadable = 0, nc = 0, unreadable_c = 0;
	if (rotate_keys(cfg, pg, &n, &unreadable) == 0 && rotate_connections(cfg, pg, &nc, &unreadable_c) == 0) {
		printf("re-encrypted %ld grant%s under key \"%s\"; %ld unreadable\n", n, n == 1 ? "" : "s",
		       cfg->encryption_keys[0].id, unreadable);
		printf("re-encrypted %ld connected account%s under key \"%s\"; %ld unreadable\n", nc,
		       nc == 1 ? "" : "s", cfg->encryption_keys[0].id, unreadable_c);
		rc = unreadable || unreadable_c ? 1 : 0;
	}
out:
	if (pg)
		PQfinish(pg);
	config_free(&cfg);
	return rc;
}

static int check_schema(const struct config *cfg)
{
	PGconn *pg = NULL;
	for (int waited = 0; !pg && waited <= STARTUP_DB_WAIT_S; waited++) {
		pg = db_connect_one(cfg, "mcp-broker");
		if (!pg)
			sleep(1);
	}
	if (!pg)
		return -1;
	int v = 0, rc = migrate_current(pg, &v);
	PQfinish(pg);
	if (rc < 0)
		return -1;
	if (v > migrate_latest()) {
		log_msg(LOG_ERROR, "serve.newer_schema", NULL,
			"database schema %d is newer than this binary knows (%d): refusing to serve", v,
			migrate_latest());
		return -1;
	}
	if (v < migrate_latest())
		log_msg(LOG_WARN, "serve.old_schema", NULL,
			"database schema %d is older than %d: not ready until migrated", v, migrate_latest());
	return 0;
}

/* The revocation announcements (store side) and the proxy (engine) know
 * nothing of each other: these adapters are the wiring. */
static void end_transfers(const struct revocation *rv, void *arg)
{
	(void)arg;
	struct engine_match m = { rv->grant_id, rv->token_hash, rv->client_id, rv->subject, rv->upstream };
	engine_end_matching(&m);
}

/* A completed URL elicitation (SEP-1036): notifications/elicitation/complete
 * on the grant's standalone streams this node serves. */
static void elicitation_complete(const char *grant_id, const char *elicitation_id, void *arg)
{
	(void)arg;
	char event[256];
	int n = snprintf(event, sizeof(event),
			 "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/"
			 "complete\",\"params\":{\"elicitationId\":\"%s\"}}\n\n",
			 elicitation_id);
	if (n > 0 && (size_t)n < sizeof(event))
		engine_inject(grant_id, event, (size_t)n);
}

static void list_transfers(notify_emit_fn emit, void *ctx, void *arg)
{
	(void)arg;
	engine_each_live(emit, ctx);
}

static int cmd_serve(int argc, char **argv)
{
	static const char *const allowed[] = { "--no-migrate", NULL };
	const char *path;
	if (has_flag(argc, argv, "--help")) {
		printf("usage: mcp-broker serve --config FILE [--no-migrate]\n"
		       "Runs a node. SIGTERM drains in-flight requests and exits 0.\n");
		return 0;
	}
	if (parse_opts(argc, argv, allowed, &path) < 0)
		return 2;

	/* Signals are taken synchronously by the main thread only. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct app app = { 0 };
	app.cfg = load_or_report(path);
	if (!app.cfg)
		return 1;
	setup_logging(app.cfg);
	int rc = 1, applied = 0;
	struct http_route *routes = NULL;
	size_t nroutes = 0;
	struct http_server *srv = NULL;

	if (!has_flag(argc, argv, "--no-migrate")) {
		if (run_migrations(app.cfg, STARTUP_DB_WAIT_S, &applied) < 0)
			goto out;
	} else if (check_schema(app.cfg) < 0) {
		goto out;
	}
	app.db = db_open(app.cfg);
	app.handler_thread_init = db_thread_yields;
	if (!app.db || routes_build(&app, &routes, &nroutes) < 0) {
		log_msg(LOG_ERROR, "serve.oom", NULL, "out of memory at start-up");
		goto out;
	}
	if (clients_sync_static(&app) < 0) {
		log_msg(LOG_ERROR, "serve.clients", NULL, "cannot record the configured clients");
		goto out;
	}
	/* Revocations (this node's and, by NOTIFY, every node's) evict from the
	 * cache first, then end live transfers and wake the revoker: notify
	 * tells its subscribers in the order they registered, all before the
	 * listener starts. */
	if (cache_start() < 0 || notify_on_revoke(end_transfers, NULL) < 0 ||
	    notify_on_resync(list_transfers, NULL) < 0 || notify_on_elicited(elicitation_complete, NULL) < 0 ||
	    engine_start(app.cfg->http.max_connections / (app.cfg->http.threads > 0 ? app.cfg->http.threads : 1)) < 0 ||
	    housekeeping_start(&app) < 0 || revoker_start(&app) < 0 || notify_start(&app) < 0 ||
	    audit_writer_start(&app) < 0) {
		log_msg(LOG_ERROR, "serve.threads", NULL, "cannot start background threads");
		goto out;
	}
	srv = http_start(&app, app.cfg->listen_host, app.cfg->listen_port, routes, nroutes);
	if (!srv)
		goto out;
	json_t *f = json_pack("{s:s, s:i, s:s, s:s, s:i, s:i}", "version", MCPB_VERSION, "port", http_port(srv), "host",
			      app.cfg->listen_host, "public_url", app.cfg->public_url, "schema", migrate_latest(),
			      "migrations_applied", applied);
	log_event(LOG_INFO, "node.started", NULL, f);

	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_msg(LOG_INFO, "node.sighup", NULL, "configuration reload needs a restart; ignored");
			continue;
		}
		log_msg(LOG_INFO, "node.draining", NULL, "signal %d: draining (at most %ld s)", sig,
			app.cfg->http.drain_timeout_s);
		break;
	}
	__atomic_store_n(&app.draining, 1, __ATOMIC_RELEASE);
	http_drain(srv, (int)app.cfg->http.drain_timeout_s);
	engine_stop(); /* fails what is still streaming, waking its connections */
	http_stop(&srv);
	log_msg(LOG_INFO, "node.stopped", NULL, "bye");
	rc = 0;
out:
	http_stop(&srv);
	engine_stop();
	engine_free();
	audit_writer_stop(); /* after the server: every request's records are queued */
	housekeeping_stop();
	revoker_stop();
	notify_stop();
	cache_stop();
	routes_free(&routes, nroutes);
	db_close(&app.db);
	config_free(&app.cfg);
	return rc;
}

int main(int argc, char **argv)
{
	log_init(LOG_INFO, stderr);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("mcp-broker %s (schema %d)\n", MCPB_VERSION, migrate_latest());
		return 0;
	}
	if (has_flag(argc, argv, "--version")) {
		printf("mcp-broker %s (schema %d)\n", MCPB_VERSION, migrate_latest());
		return 0;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "mcp-broker: curl initialisation failed\n");
		return 1;
	}
	int rc;
	if (strcmp(cmd, "serve") == 0)
		rc = cmd_serve(argc, argv);
	else if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate(argc, argv);
	else if (strcmp(cmd, "rotate-keys") == 0)
		rc = cmd_rotate_keys(argc, argv);
	else if (strcmp(cmd, "check-config") == 0)
		rc = cmd_check_config(argc, argv);
	else if (strcmp(cmd, "keygen") == 0)
		rc = has_flag(argc, argv, "--help") ? (printf("usage: mcp-broker keygen\n"), 0) : cmd_keygen();
	else {
		fprintf(stderr, "mcp-broker: unknown command %s\n", cmd);
		usage(stderr);
		rc = 2;
	}
	curl_global_cleanup();
	return rc;
}
