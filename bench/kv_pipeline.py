"""Pipelined kv against redis-server: requests per server-CPU-second with
``redis-benchmark -P 16``, and the kv service's instructions per pipelined command.

Usage::

    python -m bench.kv_pipeline                      # 3 interleaved repetitions
    python -m bench.kv_pipeline --reps 1 --requests 20000
    python -m bench.kv_pipeline --instructions       # callgrind, in-process
    python -m bench.kv_pipeline --instructions --replicated   # the same, replicating

Each repetition starts a fresh ``reactor serve kv`` (this tree) and a fresh
``redis-server`` (no persistence), each pinned to CPU 0 while ``redis-benchmark`` runs
on CPU 1, warms it with one ``-t set`` run, then measures ``-t set`` and ``-t get``;
server CPU is utime+stime from ``/proc/PID/stat`` around each run (10 ms ticks). The
figures are medians with min-max. ``--instructions`` feeds batches of 16 RESP commands
to a kv connection over a fake transport under ``valgrind --tool=callgrind`` and
prints the instructions per command (600 minus 100 batches, so start-up cancels);
``--replicated`` does so on a server replicating to one peer, whose link (a fake
transport) acknowledges each batch's writes before the next batch.

Needs ``redis-server``, ``redis-benchmark`` (``redis-tools``), ``taskset``; valgrind for
``--instructions``. Must not import :mod:`bench.run`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
TESTS = ("set", "get")

# the in-process workload of --instructions: N batches of 16 commands each
ICOUNT = r"""
import sys
from handlers.framers.resp import encode_command
from handlers.services.kv import KVServer
from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector, FakeTransport
clock = FakeClock()
reactor = Reactor(selector=FakeSelector(clock), clock=clock)
protocol = KVServer(reactor)()
transport = FakeTransport(protocol, peername=("192.0.2.1", 1))
kind, n = sys.argv[1], int(sys.argv[2])
set_ = encode_command([b"SET", b"key:000000012345", b"xxx"])
get = encode_command([b"GET", b"key:000000012345"])
batch = {"set": set_ * 16, "get": get * 16, "mix": (set_ + get) * 8}[kind]
for _ in range(n):
    protocol.data_received(batch)
    transport.take()
"""

# --replicated: the same batches on a server replicating to one peer, whose link (on a
# fake transport, made UP by hand) acknowledges each batch's writes before the next
ICOUNT_REPLICATED = r"""
import sys
from handlers.framers.resp import encode_command
from handlers.services.kv import KVServer
from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector, FakeTransport
clock = FakeClock()
reactor = Reactor(selector=FakeSelector(clock), clock=clock)
server = KVServer(reactor, replicate_to=["192.0.2.9:6379"], replication_secret="s")
link = server.replication.links[0]
link_transport = FakeTransport(link, peername=("192.0.2.9", 6379))
link.data_received(b"+OK\r\n")
assert server.replication.live == 1
protocol = server()
transport = FakeTransport(protocol, peername=("192.0.2.1", 1))
kind, n = sys.argv[1], int(sys.argv[2])
set_ = encode_command([b"SET", b"key:000000012345", b"xxx"])
get = encode_command([b"GET", b"key:000000012345"])
batch = {"set": set_ * 16, "get": get * 16, "mix": (set_ + get) * 8}[kind]
acks = b"+OK\r\n" * {"set": 16, "get": 0, "mix": 8}[kind]
for _ in range(n):
    protocol.data_received(batch)
    if acks:  # GET alone: the same loop as without replication
        reactor.run_once(0)  # the link's write of the batch
        link_transport.take()
        link.data_received(acks)
        reactor.run_once(0)  # the held replies' write
    transport.take()
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_kv() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "reactor", "serve", "kv",
         "-b", "127.0.0.1:0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match.group(1))
        if not line:
            raise SystemExit("reactor serve kv did not start")


def start_redis() -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as probe:  # an ephemeral port for redis-server to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def run_benchmark(port: int, test: str, requests: int) -> float:
    """One ``redis-benchmark -P 16`` run; its requests per second."""
    out = subprocess.run(
        ["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
         "-P", "16", "-t", test, "-n", str(requests), "-q"],
        capture_output=True, text=True, timeout=600, check=True).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    return float(found[-1]) if found else float("nan")


def measure(reps: int, requests: int) -> dict[str, dict[str, list[float]]]:
    """Requests per server-CPU-second, by server and test, interleaved repetitions."""
    figures: dict[str, dict[str, list[float]]] = {"reactor-kv": {}, "redis-server": {}}
    for rep in range(reps):
        for name, start in (("reactor-kv", start_kv), ("redis-server", start_redis)):
            proc, port = start()
            try:
                run_benchmark(port, "set", requests)  # warm-up; fills the keys GET reads
                for test in TESTS:
                    before = cpu_seconds(proc.pid)
                    rps = run_benchmark(port, test, requests)
                    spent = cpu_seconds(proc.pid) - before
                    per_cpu = requests / spent if spent > 0 else float("nan")
                    figures[name].setdefault(test, []).append(per_cpu)
                    print(f"rep {rep} {name:12} {test}: {per_cpu / 1e3:7.1f}k per CPU-s, "
                          f"{rps / 1e3:7.1f}k per s", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    return figures


def instructions(kind: str, replicated: bool = False) -> int:
    """The kv service's instructions per pipelined command under callgrind (with
    ``replicated``, on a server replicating to one peer that acknowledges at once)."""
    script = ICOUNT_REPLICATED if replicated else ICOUNT

    def total(batches: int) -> int:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, "-c", script, kind, str(batches)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
            env=dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT)))
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise SystemExit(f"no callgrind total: {done.stderr[-300:]}")
        return int(match.group(1))

    return (total(600) - total(100)) // (500 * 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kv_pipeline",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per command under callgrind instead")
    parser.add_argument("--replicated", action="store_true",
                        help="with --instructions: on a server replicating to one peer "
                             "(its link on a fake transport, acknowledging every write)")
    args = parser.parse_args(argv)
    if args.instructions:
        for kind in ("set", "get", "mix"):
            figure = instructions(kind, args.replicated)
            print(f"{kind}: {figure} instructions per command", flush=True)
        return 0
    for tool in ("redis-server", "redis-benchmark", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (bench/setup.sh installs it)")
    figures = measure(args.reps, args.requests)
    print(f"medians (min-max) of {args.reps}, redis-benchmark -P 16 -n {args.requests}")
    for test in TESTS:
        ours = figures["reactor-kv"][test]
        theirs = figures["redis-server"][test]
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"{test.upper()}: reactor-kv {statistics.median(ours) / 1e3:.1f}k "
              f"({min(ours) / 1e3:.1f}k-{max(ours) / 1e3:.1f}k), redis-server "
              f"{statistics.median(theirs) / 1e3:.1f}k ({min(theirs) / 1e3:.1f}k-"
              f"{max(theirs) / 1e3:.1f}k) per server-CPU-second: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
