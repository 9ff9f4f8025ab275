#!/usr/bin/env bash
# The test command: installs what is missing on a fresh Debian 12 machine,
# builds, starts a throwaway PostgreSQL cluster and runs every test with ctest.
#
#   tests/run.sh            build in build/ and run the whole suite
#   tests/run.sh --asan     the same with AddressSanitizer + UBSan (build-asan/)
#   tests/run.sh -R regex   only the ctest entries matching regex
#   tests/run.sh --lint     only the habit checks (tools/check: banned functions,
#                           layers and cycles, clang-tidy, clang-format)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=build
lint=0
cmake_args=()
ctest_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--asan) build=build-asan; cmake_args+=(-DMCPB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug) ;;
	--lint) lint=1 ;;
	-R | -L | -E) ctest_args+=("$1" "$2"); shift ;;
	*) echo "usage: tests/run.sh [--asan|--lint] [-R regex] [-L label] [-E regex]" >&2; exit 2 ;;
	esac
	shift
done

"$root/deploy/install-deps.sh" --test
if [ $lint = 1 ]; then
	exec "$root/tools/check"
fi

start=$(date +%s)
cmake -S . -B "$build" -DMCPB_TESTS=ON -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} "${cmake_args[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
echo "build: $(($(date +%s) - start)) s"

if [ -f tests/package-lock.json ]; then
	(cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi

pgdir=$(mktemp -d /tmp/mcpb-test-pg.XXXXXX)
chmod 755 "$pgdir"
cleanup() {
	"$root/deploy/pgcluster.sh" stop "$pgdir/pg" || true
	rm -rf "$pgdir"
}
trap cleanup EXIT INT TERM
export MCPB_TEST_DATABASE_URL=$("$root/deploy/pgcluster.sh" start "$pgdir/pg")
echo "throwaway PostgreSQL: $MCPB_TEST_DATABASE_URL"

if [ "$build" = build-asan ]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
start=$(date +%s)
(cd "$build" && ctest --output-on-failure "${ctest_args[@]}")
echo "tests: $(($(date +%s) - start)) s"

# Fuzz smoke: every libFuzzer target of tests/fuzz for FUZZ_SECONDS (default
# 20) s, as many at a time as there are cores, under ASan+UBSan, built with
# clang in build-fuzz/; any crash, leak, hang or broken invariant fails the
# run. Skipped when ctest is filtered (-R/-L/-E) or with FUZZ_SECONDS=0;
# tests/fuzz/run.sh SECONDS [TARGET...] runs them longer.
if [ ${#ctest_args[@]} -eq 0 ] && [ "${FUZZ_SECONDS:-20}" != 0 ]; then
	"$root/tests/fuzz/run.sh" "${FUZZ_SECONDS:-20}"
fi
