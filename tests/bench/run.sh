#!/usr/bin/env bash
# Benchmarks (not part of the test suite): builds, starts a throwaway
# PostgreSQL and runs tests/bench/bench.mjs, which prints figures and ratios
# measured side by side in one run. BENCH_SECONDS sets each wrk run (10);
# BENCH_ONLY=token-modes runs only the token modes section (BENCH_TOKEN_N
# requests per mode, 1000); BENCH_ONLY=dpop only the DPoP section
# (BENCH_DPOP_ROUNDS Bearer/DPoP wrk pairs, 2; BENCH_DPOP_TOKEN_N token
# requests per mode, 1000); BENCH_ONLY=streams only the idle-streams section
# (BENCH_STREAMS idle SSE streams, 9000; BENCH_STREAM_ROUNDS rounds, 1,
# the binaries taking turns, medians reported; BENCH_PERF=1: a perf profile
# of the run with streams open; BENCH_BASELINE_BINARY: an older mcp-broker
# binary measured side by side in the same run); BENCH_ONLY=proxy only the
# hot path (tools/call direct, through nginx and through the broker, CPU,
# syscalls and context switches per request; BENCH_BASELINE_BINARY too);
# BENCH_ONLY=refresh only refresh grants/s vs pgbench -N (BENCH_REFRESH_ROUNDS
# interleaved rounds, 3; BENCH_PERF=1, BENCH_BASELINE_BINARY too).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
"$root/deploy/install-deps.sh" --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
[ -d tests/node_modules ] || (cd tests && npm ci --no-audit --no-fund --loglevel=error)
pgdir=$(mktemp -d /tmp/mcpb-bench-pg.XXXXXX)
chmod 755 "$pgdir"
trap '"$root/deploy/pgcluster.sh" stop "$pgdir/pg"; rm -rf "$pgdir"' EXIT
export MCPB_TEST_DATABASE_URL=$("$root/deploy/pgcluster.sh" start "$pgdir/pg")
export MCPB_BINARY="$root/build/mcp-broker"
# 9,000 idle streams hold about 18,000 sockets in this process and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
node tests/bench/bench.mjs
