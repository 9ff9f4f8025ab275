#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts a local
# PostgreSQL under .local/ when DATABASE_URL is unset, generates missing
# secrets into .local/env, starts the demo upstream IdP (a fake GitHub) and a
# demo MCP server, and runs a broker node with config/local.json in front of
# them. Ctrl-C stops everything it started (the PostgreSQL cluster stays up
# for the next run: deploy/pgcluster.sh stop .local/pg).
#   BROKER_PORT (8080)  DEMO_IDP_PORT (9100)  DEMO_MCP_PORT (9200)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
"$root/deploy/install-deps.sh" --demo

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin="$root/build/mcp-broker"
# The demo MCP server is built on the MCP TypeScript SDK (tests/package.json).
if [ ! -f tests/node_modules/.package-lock.json ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
	(cd tests && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

state="$root/.local"
mkdir -p "$state"
chmod 755 "$state"
envfile="$state/env"
if [ ! -f "$envfile" ]; then
	umask 077
	{
		echo "BROKER_KEY=$("$bin" keygen)"
		echo "BROKER_COOKIE_SECRET=$("$bin" keygen)"
		echo "BROKER_ADMIN_TOKEN=$(openssl rand -hex 24)"
	} >"$envfile"
	umask 022
	echo "generated secrets in $envfile" >&2
fi
set -a
. "$envfile"
set +a
export BROKER_PORT=${BROKER_PORT:-8080} DEMO_IDP_PORT=${DEMO_IDP_PORT:-9100} DEMO_MCP_PORT=${DEMO_MCP_PORT:-9200}

if [ -z "${DATABASE_URL:-}" ]; then
	DATABASE_URL=$("$root/deploy/pgcluster.sh" start "$state/pg")
	export DATABASE_URL
	echo "local PostgreSQL: $DATABASE_URL (stop it with: deploy/pgcluster.sh stop .local/pg)" >&2
fi

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
node tests/fakes/idp.mjs --port "$DEMO_IDP_PORT" >/dev/null 2>"$state/demo-idp.log" &
pids+=($!)
node tests/fakes/mcp-server.mjs --port "$DEMO_MCP_PORT" >/dev/null 2>"$state/demo-mcp.log" &
pids+=($!)

cat >&2 <<MSG
mcp-broker on http://127.0.0.1:$BROKER_PORT (readiness: curl http://127.0.0.1:$BROKER_PORT/readyz)
  MCP endpoint:   http://127.0.0.1:$BROKER_PORT/mcp   (point an MCP client at it)
  demo upstream:  http://127.0.0.1:$DEMO_IDP_PORT (a fake GitHub: log in as any name)
  demo MCP server http://127.0.0.1:$DEMO_MCP_PORT/mcp (tools: echo, whoami, list_issues, create_issue, slow_progress)
  admin token:    in $envfile (BROKER_ADMIN_TOKEN)
MSG
"$bin" serve --config "$root/config/local.json" &
pids+=($!)
wait "${pids[-1]}"
