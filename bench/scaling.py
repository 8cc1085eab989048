"""The scaling figures: ``reactor serve`` with 1 and 2 workers, a shared listener
against ``--reuse-port``, and HAProxy in front (issue 17, section 4).

Usage::

    python -m bench.scaling                 # writes its section of bench/RESULTS.md
    python -m bench.scaling --duration 2 --results bench/out/RESULTS-quick.md

For echo (``bench/bin/loadgen``, 50 connections, one 64 B message in flight each) and
kv (``redis-benchmark``, 50 clients, SET then GET), each server configuration is
started fresh: one process; ``--workers 2`` on the supervisor's shared socket;
``--workers 2 --reuse-port``; and the shared-socket pair behind HAProxy (mode tcp,
``send-proxy-v2``, the server trusting 127.0.0.1 for the PROXY header). Requests per
second are the load generator's; requests per server-CPU-second divide the requests by
the CPU the server's process tree used in the same window (psutil, user+system); the
HAProxy row adds HAProxy's own CPU per request. Everything, load generator included,
shares the machine's cores: with 2 cores, 2 workers compete with the load generator
(and HAProxy), so requests per second understate what 2 free cores would do, and the
per-CPU-second figure is the one that carries to other machines.

Needs ``bench/bin/loadgen`` (``make bench`` builds it), ``redis-benchmark`` and
``haproxy``; a missing one skips its rows with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.kept import SCALING_SECTION, write_section
from bench.procs import Sampler, ServerProcess, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
LOADGEN = ROOT / "bench" / "bin" / "loadgen"
CLIENTS = 50
SETUPS = {  # name -> reactor serve options
    "1 process": [],
    "2 workers, shared socket": ["--workers", "2"],
    "2 workers, --reuse-port": ["--workers", "2", "--reuse-port"],
    "2 workers behind HAProxy": ["--workers", "2", "--proxy-protocol", "v2",
                                 "--proxy-allow-from", "127.0.0.1"],
}
HAPROXY_CFG = """global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{front}
    default_backend b
backend b
    server s 127.0.0.1:{port} send-proxy-v2
"""


@dataclass
class Row:
    service: str
    setup: str
    requests: int
    seconds: float
    server_cpu: float
    haproxy_cpu: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.requests / self.server_cpu if self.server_cpu else 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system) of a process and its descendants alive now."""
    return Sampler(pid).cpu_seconds()


def start_server(service: str, options: list[str], workers: int) -> tuple[ServerProcess, int]:
    port = free_port()
    srv = ServerProcess([sys.executable, "-m", "reactor", "serve", service, "--bind",
                         f"127.0.0.1:{port}", "--log-level", "info", *options], cwd=ROOT,
                        env={"PYTHONUNBUFFERED": "1"}, name=f"reactor-{service}")
    srv.start()
    if workers > 1:
        srv.wait_for(r"worker \d+ \(pid \d+\) is ready", count=workers)
    else:
        srv.wait_for(r"listening on")
    return srv, port


def echo_load(port: int, duration: float, cpu: list[int]) -> tuple[int, float, list[float]]:
    """loadgen's requests and measured seconds, and the CPU of ``cpu`` pids over the
    window it measured (from its @measure event to its @done)."""
    proc = subprocess.Popen(
        [str(LOADGEN), "-m", "echo", "-p", str(port), "-c", str(CLIENTS), "-s", "64",
         "-w", "1", "-d", str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    before: list[float] = []
    after: list[float] = []
    for line in proc.stderr:
        if line.startswith("@measure"):
            before = [tree_cpu(pid) for pid in cpu]
        elif line.startswith("@done"):
            after = [tree_cpu(pid) for pid in cpu]
    result = json.loads(proc.stdout.read())
    proc.wait()
    assert before and after, "loadgen never measured"
    return (int(result["requests"]), int(result["requests"]) / float(result["rps"]),
            [b - a for a, b in zip(before, after, strict=True)])


def kv_load(port: int, duration: float, cpu: list[int]) -> tuple[int, float, list[float]]:
    """redis-benchmark SET then GET, about ``duration`` seconds each (sized from a
    short first run), and the CPU of ``cpu`` pids meanwhile."""
    def run(n: int) -> float:
        started = time.monotonic()
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c",
                        str(CLIENTS), "-n", str(n), "-t", "set,get", "-d", "64", "-q"],
                       check=True, capture_output=True, timeout=600)
        return time.monotonic() - started

    rate = 2 * 20000 / run(20000)  # warm-up and sizing
    n = max(20000, int(rate * duration / 2))
    before = [tree_cpu(pid) for pid in cpu]
    seconds = run(n)
    return 2 * n, seconds, [tree_cpu(pid) - b for pid, b in zip(cpu, before, strict=True)]


def measure(service: str, setup: str, duration: float) -> Row:
    options = SETUPS[setup]
    workers = 2 if "--workers" in options else 1
    srv, port = start_server(service, options, workers)
    haproxy = None
    workdir = tempfile.TemporaryDirectory(prefix="scaling-")
    try:
        target, pids = port, [srv.proc.pid]
        if "HAProxy" in setup:
            target = free_port()
            config = Path(workdir.name) / "haproxy.cfg"
            config.write_text(HAPROXY_CFG.format(front=target, port=port))
            haproxy = subprocess.Popen([haproxy_path(), "-db", "-f", str(config)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not wait_for_port("127.0.0.1", target, time.monotonic() + 30):
                raise RuntimeError(f"haproxy never listened on port {target}")
            pids.append(haproxy.pid)
        load = echo_load if service == "echo" else kv_load
        requests, seconds, cpu = load(target, duration, pids)
        return Row(service, setup, requests, seconds, cpu[0],
                   cpu[1] if haproxy is not None else None)
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        srv.stop(kill_after=True)
        workdir.cleanup()


def haproxy_path() -> str:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or ""


def missing(service: str, setup: str) -> str | None:
    if service == "echo" and not LOADGEN.exists():
        return f"{LOADGEN} is missing (make bench builds it)"
    if service == "kv" and shutil.which("redis-benchmark") is None:
        return "redis-benchmark is missing (Debian package redis-tools)"
    if "HAProxy" in setup and not haproxy_path():
        return "haproxy is missing (Debian package haproxy)"
    return None


def section(rows: list[Row], skipped: list[str], duration: float) -> str:
    cores = os.cpu_count() or 1
    lines = [SCALING_SECTION[0],
             "## Scaling: workers, --reuse-port, HAProxy in front (`python -m bench.scaling`)",
             "",
             f"{time.strftime('%Y-%m-%d')}, {cores} cores shared by the server, the load "
             f"generator and HAProxy; {CLIENTS} connections; about {duration:g} s per row. "
             "echo: loadgen, one 64 B message in flight per connection; kv: "
             "redis-benchmark SET and GET of 64 B values. Server CPU is the process "
             "tree's (supervisor and workers). Load average when it ended: "
             f"{os.getloadavg()[0]:.1f}. A server CPU-s per s well under its worker "
             "count means the server was not what limited the row: the load generator "
             "(one thread) and the other processes on the machine were; requests per "
             "server-CPU-second is the figure to scale by.",
             "",
             "| service | server | req/s | server CPU-s per s | req per server-CPU-s "
             "| HAProxy CPU per request |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        proxy = "" if r.haproxy_cpu is None else f"{r.haproxy_cpu / r.requests * 1e6:.1f} us"
        lines.append(f"| {r.service} | {r.setup} | {r.rps:,.0f} | "
                     f"{r.server_cpu / r.seconds:.2f} | {r.per_cpu:,.0f} | {proxy} |")
    lines += [f"SKIP scaling: {why}" for why in skipped]
    lines += ["", *prediction(rows), SCALING_SECTION[1]]
    return "\n".join(lines)


def prediction(rows: list[Row]) -> list[str]:
    """What the rows predict for N cores and M hosts, with the numbers filled in."""
    out = ["What these figures predict:", ""]
    for service in ("echo", "kv"):
        one = next((r for r in rows if r.service == service and r.setup == "1 process"),
                   None)
        proxied = next((r for r in rows if r.service == service and r.haproxy_cpu), None)
        if one is None:
            continue
        text = (f"- {service}: one core serves about {one.per_cpu:,.0f} requests per "
                f"CPU-second, so a host with N free cores and N workers about "
                f"N x {one.per_cpu:,.0f}/s")
        if proxied is not None and proxied.haproxy_cpu:
            cost = proxied.haproxy_cpu / proxied.requests
            text += (f"; behind HAProxy a worker serves {proxied.per_cpu:,.0f} per "
                     f"CPU-second (the row measured so), so M such hosts about "
                     f"M x N x {proxied.per_cpu:,.0f}/s, while HAProxy itself, at "
                     f"{cost * 1e6:.1f} us of CPU per request here, has "
                     f"{1 / cost:,.0f} requests per second per core of its own to give")
        out.append(text + ".")
    out += [
        "",
        "Where that stops holding: the workers' sum holds only while the load "
        "generator and the balancer have cores of their own (here they do not, which is "
        "why 2 workers fall short of twice one in requests per second); the balancer's "
        "cores bound the whole farm (one HAProxy process, its CPU per request above, "
        "whatever M is); each host holds at most its descriptor limit of connections "
        "(ulimit -n, and about 28 000 from one balancer address to one host port: the "
        "ephemeral port range, unless HAProxy is given more source addresses); and kv "
        "hosts are separate stores unless they replicate (--replicate-to), and a "
        "replicating host applies every other host's writes too: M replicating hosts "
        "multiply reads, not writes (one SET replicated to one peer: 53.5k instructions "
        "against 14.9k, python -m bench.kv_pipeline --instructions --replicated).",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--services", nargs="+", default=["echo", "kv"])
    args = parser.parse_args(argv)
    rows: list[Row] = []
    skipped: list[str] = []
    for service in args.services:
        for setup in SETUPS:
            why = missing(service, setup)
            if why is not None:
                skipped.append(f"{service}, {setup}: {why}")
                continue
            row = measure(service, setup, args.duration)
            print(f"{service:5} {setup:28} {row.rps:10,.0f} req/s "
                  f"{row.per_cpu:10,.0f} req per server-CPU-s", file=sys.stderr)
            rows.append(row)
    write_section(args.results, SCALING_SECTION, section(rows, skipped, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
