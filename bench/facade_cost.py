"""What the socketserver facades cost, next to the standard library, in one run.

Each round starts a server process -- the standard library's ``socketserver`` or
``reactor.socketserver``, the same raw echo handler -- pinned to CPU 0, and drives it
with the C load generator (``bench/bin/loadgen``) pinned to CPU 1. The two
implementations alternate round by round, so load on the machine hits both alike.

Workloads:

* ``threading-echo``: ThreadingTCPServer, 100 connections, 1 KiB ping-pong;
* ``forking-echo``: ForkingTCPServer (max_children 128), 100 connections, 1 KiB;
* ``threading-churn``: ThreadingTCPServer, 16 slots each connect, 1 request, close;
* ``sync-churn``: TCPServer (one request at a time), 1 slot, connect/request/close.

Run::

    .venv/bin/python -m bench.facade_cost              # about 3 minutes
    .venv/bin/python -m bench.facade_cost --slow-clients 500
    .venv/bin/python -m bench.facade_cost --rounds 1 --duration 2 --json out.json

Prints one line per run and a summary: requests per second (median over the rounds),
p50 and p99 latency, and server CPU time per request, with ours / stdlib ratios.

Wall-clock figures move with whatever else the machine runs. ``--instructions`` adds a
measure that does not: the server runs under ``valgrind --tool=callgrind`` and serves
N1, then N2 connect-request-close cycles from a sequential client; the instructions it
executed per request are (I(N2) - I(N1)) / (N2 - N1), start-up cancelled out::

    .venv/bin/python -m bench.facade_cost --instructions-only
    .venv/bin/python -m bench.facade_cost --instructions-only --instruction-repeat 3 \
        --instruction-requests 2000 --only sync-churn      # steadier: a median of 3
    .venv/bin/python -m bench.facade_cost --instructions-only --seeds 5 --reactor-only

A run inherits ``PYTHONHASHSEED`` (random unless set). One hash seed is one layout of the
interpreter's dicts and sets, and a change elsewhere in the code can move a figure by a
few per cent through the layout alone: ``--seeds N`` counts under ``PYTHONHASHSEED`` 0
to N-1 and prints each seed's figure, the median over the seeds and the range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "bin" / "loadgen"

SERVER = r"""
import os, sys
impl, kind, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
if impl == "stdlib":
    import socketserver
else:
    from reactor import socketserver

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)
        except ConnectionError:  # the load generator closes with RST (no TIME_WAIT)
            return

base = {"threading": socketserver.ThreadingTCPServer,
        "forking": socketserver.ForkingTCPServer,
        "sync": socketserver.TCPServer}[kind]

class Server(base):
    request_queue_size = 1024
    allow_reuse_address = True
    daemon_threads = True
    max_children = 128

server = Server(("127.0.0.1", 0), Echo)
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
"""


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # threading, forking, sync
    mode: str  # echo, churn
    connections: int


WORKLOADS = [
    Workload("threading-echo", "threading", "echo", 100),
    Workload("forking-echo", "forking", "echo", 100),
    Workload("threading-churn", "threading", "churn", 16),
    Workload("sync-churn", "sync", "churn", 1),
]


def build_loadgen() -> Path:
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < LOADGEN_SRC.stat().st_mtime:
        LOADGEN.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(LOADGEN),
                        str(LOADGEN_SRC)], check=True)
    return LOADGEN


def tree_cpu(proc: psutil.Process) -> float:
    """User+system CPU seconds of a process and its children (forked ones included)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def run_once(w: Workload, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, impl, w.kind, str(args.server_cpu)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        proc = psutil.Process(server.pid)
        cmd = [str(LOADGEN), "--mode", w.mode, "--port", port, "--connections",
               str(w.connections), "--size", str(args.size), "--warmup", str(args.warmup),
               "--duration", str(args.duration), "--linger0"]
        if args.client_cpu >= 0:
            cmd += ["--cpu", str(args.client_cpu)]
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gen.stderr is not None
        cpu_before = cpu_after = None
        begin = time.monotonic()
        for line in gen.stderr:  # "@measure" starts the measured window, "@done" ends it
            if line.startswith("@measure"):
                cpu_before, begin = tree_cpu(proc), time.monotonic()
            elif line.startswith("@done"):
                cpu_after = tree_cpu(proc)
                break
        out, err = gen.communicate(timeout=args.warmup + args.duration + 120)
        wall = time.monotonic() - begin
        if gen.returncode != 0 or cpu_before is None or cpu_after is None:
            raise RuntimeError(f"loadgen failed ({gen.returncode}): {err[-2000:]}")
        cpu = cpu_after - cpu_before
        result: dict[str, Any] = json.loads(out)
    finally:
        server.send_signal(2)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    requests = _requests(result)
    rps = _rps(result, args.duration)
    lat = result.get("latency_us", {})
    return {
        "workload": w.name, "impl": impl, "rps": rps,
        "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
        "errors": result.get("errors", 0) + result.get("timeouts", 0),
        "cpu_s": cpu, "wall_s": wall,
        "cpu_us_per_request": (cpu / max(requests, 1)) * 1e6 if requests else None,
    }


def _requests(result: dict[str, Any]) -> int:
    for key in ("requests", "completed", "messages"):
        if key in result:
            return int(result[key])
    return 0


def _rps(result: dict[str, Any], duration: float) -> float:
    for key in ("rps", "requests_per_sec", "throughput_rps"):
        if key in result:
            return float(result[key])
    return _requests(result) / duration


INSTRUCTION_SERVER = r"""
import sys, threading
impl, kind, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
if impl == "stdlib":
    import socketserver
else:
    from reactor import socketserver

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(65536)
            if not data:
                return
            if data == b"quit":
                threading.Thread(target=self.server.shutdown).start()
                return
            sock.sendall(data)

base = {"threading": socketserver.ThreadingTCPServer, "sync": socketserver.TCPServer}[kind]

class Server(base):
    request_queue_size = 1024

server = Server(("127.0.0.1", 0), Echo)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
server.server_close()
"""


def _count_instructions(impl: str, kind: str, requests: int, workdir: Path,
                        seed: int | None = None) -> int:
    """Instructions a server executed (its whole life) serving ``requests`` cycles, under
    ``PYTHONHASHSEED=seed`` (``None``: the inherited environment's)."""
    import socket

    port_file = workdir / f"port-{impl}-{kind}-{requests}"
    out = workdir / f"cg-{impl}-{kind}-{requests}"
    port_file.unlink(missing_ok=True)  # a repeated measurement must not read the last port
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if seed is not None:
        env["PYTHONHASHSEED"] = str(seed)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, "-c", INSTRUCTION_SERVER, impl, kind, str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("the server under valgrind did not start")
        time.sleep(0.1)
    port = int(port_file.read_text())
    for _ in range(requests):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            c.sendall(b"x" * 1024)
            got = 0
            while got < 1024:
                got += len(c.recv(4096))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        c.sendall(b"quit")
    server.wait(300)
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def instructions(args: argparse.Namespace) -> list[dict[str, Any]]:
    import tempfile

    small, large = 200, 200 + args.instruction_requests
    seeds: list[int | None] = list(range(args.seeds)) if args.seeds else [None]
    impls = ("reactor",) if args.reactor_only else ("stdlib", "reactor")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sync", "threading"):
            line: dict[str, Any] = {"workload": f"{kind}-churn"}
            if args.only and line["workload"] not in args.only:
                continue
            for impl in impls:
                per_seed, found = [], []
                for seed in seeds:
                    # the median of --instruction-repeat measurements: a run's figure
                    # moves by a few hundred instructions (scheduling, when the GC runs)
                    mine = []
                    for _ in range(max(1, args.instruction_repeat)):
                        a = _count_instructions(impl, kind, small, Path(tmp), seed)
                        b = _count_instructions(impl, kind, large, Path(tmp), seed)
                        mine.append((b - a) / (large - small))
                    found += mine
                    per_seed.append(statistics.median(mine))
                    if len(seeds) > 1:
                        print(f"{line['workload']:<16} {impl:<8} PYTHONHASHSEED={seed}: "
                              f"{per_seed[-1]:>9.0f} instructions per request", flush=True)
                line[impl] = statistics.median(per_seed)
                line[f"{impl}_runs"] = found
                if len(seeds) > 1:
                    line[f"{impl}_seeds"] = per_seed
                    line[f"{impl}_range"] = [min(per_seed), max(per_seed)]
            text = " ".join(_figure(line, impl) for impl in impls)
            if "stdlib" in line and "reactor" in line:
                line["ratio"] = line["reactor"] / line["stdlib"]
                text += f"  ratio {line['ratio']:.2f}"
            print(f"{line['workload']:<16} instructions per request: {text}", flush=True)
            rows.append(line)
    return rows


def _figure(line: dict[str, Any], impl: str) -> str:
    """``impl``'s figure for the summary line: the median, with the range over seeds."""
    text = f"{impl} {line[impl]:>9.0f}"
    if f"{impl}_range" in line:
        low, high = line[f"{impl}_range"]
        text += f" (range {low:.0f}-{high:.0f}, {(high - low) / line[impl]:.1%})"
    return text


SLOW_SERVER = r"""
import sys
if sys.argv[1] == "reactor":
    import reactor.socketserver as ours
    ours.install()
import http.server

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"fast\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024

if sys.argv[1] == "reactor":
    Server.request_buffer = ours.HTTPRequestBuffer(timeout=float(sys.argv[2]))
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
"""

SLOW_REQUEST = b"GET /slow HTTP/1.1\r\nHost: localhost\r\nUser-Agent: one-byte-a-second\r\n\r\n"


def slow_clients(impl: str, count: int, hold: float, deadline: float) -> dict[str, Any]:
    """``count`` clients send a request one byte a second; measure the server after
    ``hold`` seconds, and how fast a complete request from another client is served."""
    import selectors
    import socket

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    server = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, impl, str(deadline)],
                              stdout=subprocess.PIPE, text=True, env=env)
    socks: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        proc = psutil.Process(server.pid)
        base_threads, base_rss = proc.num_threads(), proc.memory_info().rss
        sel = selectors.DefaultSelector()
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
        start, sent, closed = time.monotonic(), 0, 0
        while time.monotonic() - start < hold:
            if sent < len(SLOW_REQUEST) and time.monotonic() - start >= sent:
                for s in socks:
                    try:
                        s.send(SLOW_REQUEST[sent:sent + 1])
                    except OSError:
                        pass
                sent += 1
            for key, _ in sel.select(0.05):
                try:
                    data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    closed += 1
        threads, rss = proc.num_threads(), proc.memory_info().rss
        begin = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as fast:
            fast.sendall(b"GET /fast HTTP/1.0\r\nHost: localhost\r\n\r\n")
            reply = fast.makefile("rb").read()
        latency = time.monotonic() - begin
        sel.close()
        return {"impl": impl, "slow_clients": count, "held_seconds": hold,
                "threads_idle": base_threads, "threads_under_load": threads,
                "rss_mib_idle": base_rss / 2**20, "rss_mib_under_load": rss / 2**20,
                "fast_request_ms": latency * 1000, "fast_ok": reply.startswith(b"HTTP/1.0 200"),
                "slow_clients_closed_by_server": closed}
    finally:
        for s in socks:
            s.close()
        server.send_signal(2)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for w in WORKLOADS:
        line: dict[str, Any] = {"workload": w.name}
        for impl in ("stdlib", "reactor"):
            mine = [r for r in rows if r["workload"] == w.name and r["impl"] == impl]
            if not mine:
                continue
            line[impl] = {
                "rps": statistics.median(r["rps"] for r in mine),
                "p50_us": statistics.median(r["p50_us"] or 0 for r in mine),
                "p99_us": statistics.median(r["p99_us"] or 0 for r in mine),
                "cpu_us_per_request": statistics.median(
                    r["cpu_us_per_request"] or 0 for r in mine),
                "errors": sum(r["errors"] for r in mine),
            }
        if "stdlib" in line and "reactor" in line:
            line["rps_ratio"] = line["reactor"]["rps"] / line["stdlib"]["rps"]
            std_cpu = line["stdlib"]["cpu_us_per_request"]
            line["cpu_ratio"] = (line["reactor"]["cpu_us_per_request"] / std_cpu
                                 if std_cpu else None)
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per implementation")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds")
    parser.add_argument("--size", type=int, default=1024, help="message bytes")
    parser.add_argument("--server-cpu", type=int, default=0, help="-1: do not pin")
    parser.add_argument("--client-cpu", type=int, default=1, help="-1: do not pin")
    parser.add_argument("--only", action="append",
                        help="workload names to run (also limits the callgrind counts to "
                             "sync-churn / threading-churn)")
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per request under callgrind")
    parser.add_argument("--instructions-only", action="store_true",
                        help="only count instructions per request under callgrind")
    parser.add_argument("--instruction-requests", type=int, default=1000,
                        help="extra requests of the second callgrind run (default 1000)")
    parser.add_argument("--instruction-repeat", type=int, default=1, metavar="N",
                        help="measure instructions per request N times per server and "
                             "report the median (default 1)")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="count instructions under PYTHONHASHSEED 0..N-1 and report "
                             "each seed's figure, the median and the range (default: the "
                             "inherited PYTHONHASHSEED, one run)")
    parser.add_argument("--reactor-only", action="store_true",
                        help="count instructions for the reactor's facades only (no "
                             "stdlib runs, no ratio): half the time, for before/after")
    parser.add_argument("--slow-clients", type=int, default=0, metavar="N",
                        help="only measure N one-byte-a-second HTTP clients against the "
                             "stdlib ThreadingHTTPServer and the facade's (with "
                             "HTTPRequestBuffer)")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.client_cpu = -1
    if args.slow_clients:
        found = [slow_clients(impl, args.slow_clients, hold=4.0, deadline=10.0)
                 for impl in ("stdlib", "reactor")]
        for r in found:
            print(f"{r['impl']:<8} {r['slow_clients']} slow clients for {r['held_seconds']:.0f} s:"
                  f" threads {r['threads_idle']} idle -> {r['threads_under_load']}, "
                  f"RSS {r['rss_mib_idle']:.1f} -> {r['rss_mib_under_load']:.1f} MiB, "
                  f"a complete request served in {r['fast_request_ms']:.1f} ms", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"slow_clients": found}, indent=2))
        return 0
    counted: list[dict[str, Any]] = []
    if args.instructions or args.instructions_only:
        counted = instructions(args)
        if args.instructions_only:
            if args.json:
                args.json.write_text(json.dumps({"instructions": counted}, indent=2))
            return 0
    build_loadgen()
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only]
    rows = []
    for w in workloads:
        for n in range(args.rounds):
            order = ("stdlib", "reactor") if n % 2 == 0 else ("reactor", "stdlib")
            for impl in order:
                row = run_once(w, impl, args)
                rows.append(row)
                print(f"{w.name:<16} {impl:<8} {row['rps']:>10.0f} req/s  "
                      f"p50 {row['p50_us'] or 0:>8.0f} us  p99 {row['p99_us'] or 0:>8.0f} us  "
                      f"cpu/req {row['cpu_us_per_request'] or 0:>7.1f} us  "
                      f"errors {row['errors']}", flush=True)
    summary = summarize(rows)
    print("\nworkload          stdlib req/s  reactor req/s  ratio   stdlib cpu/req  "
          "reactor cpu/req")
    for line in summary:
        if "rps_ratio" not in line:
            continue
        s, r = line["stdlib"], line["reactor"]
        print(f"{line['workload']:<16} {s['rps']:>13.0f} {r['rps']:>14.0f} "
              f"{line['rps_ratio']:>6.2f} {s['cpu_us_per_request']:>13.1f} us "
              f"{r['cpu_us_per_request']:>13.1f} us")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": summary,
                                         "instructions": counted, "argv": sys.argv[1:]},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
