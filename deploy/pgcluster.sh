#!/usr/bin/env bash
# A throwaway PostgreSQL cluster: pgcluster.sh start DIR  |  pgcluster.sh stop DIR
#                                 pgcluster.sh restart DIR | pgcluster.sh url DIR
# start: initdb into DIR (as the postgres user when run as root), listen on a
# free loopback port, trust auth on loopback only; prints the DATABASE_URL.
set -euo pipefail

cmd=${1:?usage: pgcluster.sh start|stop|restart|url DIR}
dir=${2:?usage: pgcluster.sh start|stop|restart|url DIR}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "pgcluster: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
	python3 - <<'PY' 2>/dev/null || node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

case $cmd in
start)
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" && chmod 700 "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$pgbin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; exit 1; }
	fi
	port=$(cat "$dir/port" 2>/dev/null || free_port)
	as_pg sh -c "echo $port > '$dir/port'"
	as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
		start >/dev/null
	echo "postgresql://postgres@127.0.0.1:$port/postgres"
	;;
stop)
	[ -f "$dir/data/PG_VERSION" ] && as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	;;
restart)
	port=$(cat "$dir/port")
	as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
		start >/dev/null
	;;
url)
	echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
	;;
*)
	echo "usage: pgcluster.sh start|stop|restart|url DIR" >&2
	exit 2
	;;
esac
