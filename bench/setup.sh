#!/bin/sh
# Install the benchmark's external peers and tools when they are missing:
#   redis-server and redis-benchmark (Debian: redis-server, redis-tools), wrk, a C compiler,
#   strace (python -m bench.syscalls counts system calls with it), and for python -m bench.tls
#   and python -m bench.rpc: openssl, libssl-dev (the TLS load generator), rpcgen
#   (rpcsvc-proto) and libtirpc-dev (the C RPC server).
# As root with apt-get this installs them; otherwise it says which peers the benchmark
# will skip, and exits 0 (the benchmark runs without them).
#
# Usage: sh bench/setup.sh        (make bench runs it)
set -u

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-benchmark >/dev/null 2>&1 || missing="$missing redis-tools"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v cc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v taskset >/dev/null 2>&1 || missing="$missing util-linux"
command -v strace >/dev/null 2>&1 || missing="$missing strace"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -f /usr/include/openssl/ssl.h ] || missing="$missing libssl-dev"
command -v rpcgen >/dev/null 2>&1 || missing="$missing rpcsvc-proto"
[ -f /usr/include/tirpc/rpc/rpc.h ] || missing="$missing libtirpc-dev"

if [ -z "$missing" ]; then
    echo "bench/setup.sh: redis-server, redis-benchmark, wrk, cc, taskset, strace, openssl," \
        "libssl-dev, rpcgen and libtirpc-dev are installed"
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench/setup.sh: installing:$missing"
    if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    fi
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
            || echo "bench/setup.sh: apt-get install failed; the benchmark skips what is missing"
    fi
    # the Debian package starts a redis-server service on port 6379; the benchmark starts
    # its own on a free port, so stop the packaged one if it started
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop redis-server >/dev/null 2>&1 || true
    fi
else
    echo "bench/setup.sh: not root (or no apt-get): not installing:$missing"
fi

command -v redis-server >/dev/null 2>&1 || echo "bench/setup.sh: no redis-server: the kv workloads run without the redis-server peer"
command -v redis-benchmark >/dev/null 2>&1 || echo "bench/setup.sh: no redis-benchmark: the kv workloads are skipped"
command -v wrk >/dev/null 2>&1 || echo "bench/setup.sh: no wrk: the HTTP workload is skipped"
command -v cc >/dev/null 2>&1 || echo "bench/setup.sh: no C compiler: the load generator cannot be built"
command -v strace >/dev/null 2>&1 || echo "bench/setup.sh: no strace: python -m bench.syscalls cannot count system calls"
{ command -v openssl >/dev/null 2>&1 && [ -f /usr/include/openssl/ssl.h ]; } \
    || echo "bench/setup.sh: no openssl or libssl-dev: python -m bench.tls cannot run"
{ command -v rpcgen >/dev/null 2>&1 && [ -f /usr/include/tirpc/rpc/rpc.h ]; } \
    || echo "bench/setup.sh: no rpcgen or libtirpc-dev: python -m bench.rpc cannot run"
exit 0
