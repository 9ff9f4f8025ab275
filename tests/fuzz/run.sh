#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and
# runs them, FUZZ_JOBS at a time (default: the number of cores).
#
#   tests/fuzz/run.sh                 every target for FUZZ_SECONDS (default 20) s
#   tests/fuzz/run.sh 600             every target for 10 minutes
#   tests/fuzz/run.sh 3600 rpc hdr    only fuzz_rpc and fuzz_hdr, an hour each
#
# Seeds are read from tests/fuzz/corpus/<target>/ (never written); the inputs
# a run finds go to build-fuzz/corpus/<target>/ and are kept for the next
# run; a crash is saved as build-fuzz/artifacts/<target>/crash-* (see
# tests/fuzz/README.md to replay it and keep it as a regression seed).
# Exits non-zero when any target crashes, leaks, hangs or breaks an invariant.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-20}}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc)}

start=$(date +%s)
CC=${FUZZ_CC:-clang} cmake -S "$root" -B "$build" -DMCPB_FUZZ=ON -DMCPB_TESTS=OFF \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz >/dev/null
echo "fuzz build: $(($(date +%s) - start)) s"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$root"/tests/fuzz/fuzz_*.c; do
		t=$(basename "$f" .c)
		targets+=("${t#fuzz_}")
	done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
	local t=$1 exe="$build/tests/fuzz/fuzz_$1" seeds="$root/tests/fuzz/corpus/$1"
	local work="$build/corpus/$1" art="$build/artifacts/$1" log="$build/logs/$1.log"
	mkdir -p "$work" "$art" "$(dirname "$log")"
	local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
		-artifact_prefix="$art/")
	[ -f "$root/tests/fuzz/$t.dict" ] && args+=(-dict="$root/tests/fuzz/$t.dict")
	"$exe" "${args[@]}" "$work" "$seeds" >"$log" 2>&1
}

failed=0
pids=()
names=()
flush() {
	local i
	for i in "${!pids[@]}"; do
		local t=${names[$i]} log="$build/logs/${names[$i]}.log" rc=0
		wait "${pids[$i]}" || rc=$?
		local units rate
		units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
		units=${units:-0}
		rate=$((units / (seconds > 0 ? seconds : 1)))
		if [ $rc -eq 0 ]; then
			printf 'fuzz %-8s ok      %10s execs %8s exec/s\n' "$t" "$units" "$rate"
		else
			printf 'fuzz %-8s FAILED  %10s execs (exit %d), log %s\n' "$t" "$units" "$rc" "$log"
			grep -E 'ERROR:|runtime error|invariant failed|SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/    /'
			failed=$((failed + 1))
		fi
	done
	pids=()
	names=()
}
for t in "${targets[@]}"; do
	if [ ! -x "$build/tests/fuzz/fuzz_$t" ]; then
		echo "fuzz: no target fuzz_$t" >&2
		exit 2
	fi
	run_one "$t" &
	pids+=($!)
	names+=("$t")
	[ ${#pids[@]} -ge "$jobs" ] && flush
done
flush
[ $failed -eq 0 ] || echo "fuzz: crash inputs are under $build/artifacts/ (tests/fuzz/README.md)"
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $(($(date +%s) - start)) s in all"
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
[ $failed -eq 0 ]
