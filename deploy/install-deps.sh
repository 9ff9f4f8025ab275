#!/usr/bin/env bash
# Installs the Debian 12 packages mcp-broker needs, only those missing.
#   install-deps.sh          build and run (compiler, libraries, PostgreSQL)
#   install-deps.sh --demo   also node and npm (the demo upstream and MCP server)
#   install-deps.sh --test   also what the tests use (node, npm, nginx, wrk, Chromium for
#                            the browser tests, and clang
#                            with libclang-rt-14-dev, whose libclang_rt.fuzzer the
#                            fuzz targets link) and what tools/check uses
#                            (clang-format-14, clang-tidy-14, nm from binutils, python3)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libpq-dev libssl-dev libjansson-dev
	libcurl4-openssl-dev postgresql postgresql-client curl ca-certificates openssl)
if [ "${1:-}" = --test ] || [ "${1:-}" = --demo ]; then
	command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
	command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi
if [ "${1:-}" = --test ]; then
	pkgs+=(nginx-light wrk clang libclang-rt-14-dev clang-format-14 clang-tidy-14 binutils python3 chromium fonts-dejavu-core)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system cluster and nginx on install; the broker and the tests
# use their own throwaway ones.
