#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts a local
# PostgreSQL under .local/ when DATABASE_URL is unset, generates missing
# secrets into .local/env, and runs a broker node with config/local.json.
#   BROKER_PORT (default 8080)   where the node listens
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
"$root/deploy/install-deps.sh"

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin="$root/build/mcp-broker"

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
export BROKER_PORT=${BROKER_PORT:-8080}

if [ -z "${DATABASE_URL:-}" ]; then
	DATABASE_URL=$("$root/deploy/pgcluster.sh" start "$state/pg")
	export DATABASE_URL
	echo "local PostgreSQL: $DATABASE_URL (stop it with: deploy/pgcluster.sh stop .local/pg)" >&2
fi

echo "mcp-broker on http://127.0.0.1:$BROKER_PORT  (readyz: curl http://127.0.0.1:$BROKER_PORT/readyz)" >&2
exec "$bin" serve --config "$root/config/local.json"
