"""What the benchmark runs: the workloads, which servers run each, the plan of one run,
its time estimate and the interleaved order; and the settings they share.

Part of ``python -m bench.run`` (see :mod:`bench.run`). Imports :mod:`bench.servers`
(the server table) only from the benchmark; never the measuring or report modules.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import SERVERS, unavailable

__all__ = [
    "Plan",
    "Workload",
    "all_workloads",
    "echo_workload",
    "estimate_seconds",
    "interleaved",
    "log",
    "make_plan",
    "matches",
]

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HOST = "127.0.0.1"
KB = 1024
SIZE_NAMES = {64: "64B", 1024: "1KiB", 65536: "64KiB"}
BASELINE = "asyncio"  # ratios are against this server, except:
SERVICE_BASELINE = {"kv": "redis-server", "http": "http-stdlib"}
ECHO_CONNS = (1, 10, 100, 1000, 10000)
IDLE_CONNS = 10000
CHURN_CONCURRENCY = 50
KV_CLIENTS = 50
KV_KEYSPACE = 1000
HTTP_CONNECTIONS = 50
SAMPLE_INTERVAL = 0.25


def log(msg: str) -> None:
    """A message for the person running the benchmark (stderr, above any progress bar)."""
    tq = sys.modules.get("tqdm")
    if tq is not None and sys.stderr.isatty():
        tq.tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


# -- workloads and the plan --------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One kind of load at one setting.

    Attributes:
        name: e.g. ``echo-1KiB-c100``, ``idle-c10000``, ``churn-c50``, ``kv-get``,
            ``kv-set-P16``, ``http-get``.
        kind: ``echo``, ``idle``, ``churn``, ``kv`` or ``http``.
        connections: connections (churn: concurrent connect-request-close slots).
        size: message size in bytes.
        command: kv only: ``get`` or ``set``.
        pipeline: kv only: requests in flight per connection (redis-benchmark -P).
    """

    name: str
    kind: str
    connections: int = 0
    size: int = 0
    command: str = ""
    pipeline: int = 1

    @property
    def service(self) -> str:
        return {"kv": "kv", "http": "http"}.get(self.kind, "echo")


def echo_workload(size: int, conns: int) -> Workload:
    return Workload(f"echo-{SIZE_NAMES.get(size, f'{size}B')}-c{conns}", "echo", conns, size)


def all_workloads() -> list[Workload]:
    """Every workload the benchmark knows, in run order."""
    out = [echo_workload(size, n) for size in (1024, 64, 65536) for n in ECHO_CONNS]
    out.append(Workload(f"idle-c{IDLE_CONNS}", "idle", IDLE_CONNS, 64))
    out.append(Workload(f"churn-c{CHURN_CONCURRENCY}", "churn", CHURN_CONCURRENCY, 64))
    for pipeline in (1, 16):
        for command in ("set", "get"):
            suffix = f"-P{pipeline}" if pipeline > 1 else ""
            out.append(Workload(f"kv-{command}{suffix}", "kv", KV_CLIENTS, 64, command,
                                pipeline))
    out.append(Workload("http-get", "http", HTTP_CONNECTIONS, 0))
    return out


# the full run: 1 KiB echo at every connection count for every echo server; 64 B and
# 64 KiB for the reactor and its baseline (that keeps `make bench` under 20 minutes)
FULL_MATRIX_SERVERS = ("reactor-protocol", "asyncio")
QUICK_WORKLOADS = ("echo-1KiB-c100", "echo-1KiB-c1000", "idle-c10000", "churn-c50",
                   "kv-set", "kv-get", "http-get")
QUICK_SERVERS = ("reactor-protocol", "reactor-handler", "asyncio", "uvloop", "c-epoll",
                 "stdlib-threading", "facade-threading", "kv", "redis-server",
                 "http-stdlib", "http-facade")
# idle and churn in the quick set: the reactor, the old mark, the mark to pass, the floor
QUICK_IDLE_CHURN_SERVERS = ("reactor-protocol", "asyncio", "uvloop", "c-epoll")


def default_servers_for(w: Workload, quick: bool) -> list[str]:
    """Which servers run workload ``w`` when ``--servers`` is not given."""
    names = [n for n, s in SERVERS.items() if s.service == w.service and not s.named_only]
    if quick:
        names = [n for n in names if n in QUICK_SERVERS]
        if w.kind == "echo" and w.connections > 100:
            names = [n for n in names if SERVERS[n].max_connections is None]
        if w.kind in ("idle", "churn"):
            names = [n for n in names if n in QUICK_IDLE_CHURN_SERVERS]
        return names
    if w.kind == "echo" and w.size != 1024:
        names = [n for n in names if n in FULL_MATRIX_SERVERS]
    return names


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a workload name matches a pattern: exactly, as a glob, or as the leading
    dash-separated words (``echo`` and ``echo-1KiB`` match ``echo-1KiB-c100``)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + "-*")
               for p in patterns)


@dataclass
class Plan:
    steps: list[tuple[Workload, list[str]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # "what" -> why

    @property
    def runs(self) -> int:
        return sum(len(servers) for _, servers in self.steps)


def make_plan(args: argparse.Namespace, fd_limit: int) -> Plan:
    plan = Plan()
    wanted_servers = [s for s in args.servers.split(",") if s] if args.servers else None
    patterns = ([p for p in args.workloads.split(",") if p] if args.workloads
                else (QUICK_WORKLOADS if args.quick else None))
    reasons: dict[str, str | None] = {}
    if wanted_servers:
        for name in wanted_servers:
            if name not in SERVERS:
                raise SystemExit(f"unknown server {name!r}; --list shows them")
    for w in all_workloads():
        if patterns is not None and not matches(w.name, patterns):
            continue
        if wanted_servers:
            names = [n for n in wanted_servers if SERVERS[n].service == w.service]
        else:
            names = default_servers_for(w, args.quick)
        chosen = []
        for n in names:
            if n not in reasons:
                reasons[n] = unavailable(n)
            if reasons[n] is not None:
                plan.skipped[n] = str(reasons[n])
                continue
            if w.kind == "kv" and not shutil.which("redis-benchmark"):
                plan.skipped["kv workloads"] = ("redis-benchmark is not installed "
                                                "(bench/setup.sh installs redis-tools)")
                continue
            if w.kind == "http" and not shutil.which("wrk"):
                plan.skipped["http workloads"] = "wrk is not installed (bench/setup.sh)"
                continue
            cap = SERVERS[n].max_connections
            conns = w.connections
            if w.kind == "idle":
                conns = min(conns, cap or conns)
            if cap is not None and conns > cap:
                plan.skipped[f"{n} at {w.connections} connections"] = (
                    f"one thread or process per connection: measured up to {cap}")
                continue
            chosen.append(n)
        if chosen:
            plan.steps.append((w, chosen))
    if fd_limit < IDLE_CONNS + 100:
        plan.skipped["connection counts"] = (
            f"ulimit -n is {fd_limit}: connection counts above {fd_limit - 100} are cut "
            "to that")
    return plan


def estimate_seconds(plan: Plan, args: argparse.Namespace) -> float:
    total = 0.0
    for w, servers in plan.steps:
        for server in servers:
            # start-up and teardown, plus connection set-up (slower with a thread or a
            # process per connection), measured on the 2-core machine
            setup = w.connections / (500 if SERVERS[server].max_connections else 8000)
            total += {
                "echo": 0.8 + args.warmup + args.duration + setup,
                "idle": 1.8 + setup,
                "churn": 0.8 + args.warmup + args.duration,
                "kv": 1.5 + args.duration,
                "http": 1.0 + max(1, round(args.warmup)) + max(1, round(args.duration)),
            }[w.kind]
    return total * float(args.repeat)


def interleaved(plan: Plan, repeat: int) -> Iterator[tuple[int, Workload, str]]:
    """Every (repetition, workload, server); the server order rotates each repetition."""
    for rep in range(repeat):
        for w, servers in plan.steps:
            k = rep % len(servers)
            for server in servers[k:] + servers[:k]:
                yield rep, w, server
