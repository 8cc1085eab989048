"""The results of a run: statistics, tables, the project's targets (PASS/FAIL), the
environment, ``RESULTS.md`` and the summary printed at the end.

Part of ``python -m bench.run``; works on the records alone (so ``--report`` can
rebuild everything from a results.jsonl): must not import the measuring modules,
:mod:`bench.procs` or :mod:`bench.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import selectors
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.kept import (
    APART_SECTIONS,
    COMPILED_SECTION,
    EMBEDDING_SECTION,
    KV_PIPELINE_SECTION,
    MEMORY_SECTION,
    RPC_SECTION,
    SYSCALLS_SECTION,
    TLS_SECTION,
    kept_section,
    kept_verdicts,
)
from bench.plan import (
    BASELINE,
    IDLE_CONNS,
    KB,
    ROOT,
    SAMPLE_INTERVAL,
    SERVICE_BASELINE,
    Plan,
    all_workloads,
)
from bench.precision import precision_verdict
from bench.servers import BACKLOG, READ_SIZE, SERVERS

__all__ = [
    "APART_SECTIONS",
    "COMPILED_SECTION",
    "EMBEDDING_SECTION",
    "KV_PIPELINE_SECTION",
    "MEMORY_SECTION",
    "RPC_SECTION",
    "SYSCALLS_SECTION",
    "TLS_SECTION",
    "Results",
    "Stat",
    "Verdict",
    "environment",
    "kept_section",
    "kept_verdicts",
    "md_table",
    "metric",
    "summary",
    "targets",
    "write_report",
]


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int


def metric(rec: dict[str, Any], name: str) -> float | None:
    """A named figure of one record (latency percentiles as ``p99`` etc.)."""
    if name in ("p50", "p90", "p99", "p999", "max", "mean"):
        value = (rec.get("latency_us") or {}).get(name)
    elif name == "mem_per_conn":
        if rec.get("kind") == "idle":
            value = rec.get("rss_per_conn")
        elif rec.get("rss_peak") and rec.get("rss_base") and rec.get("established"):
            value = (rec["rss_peak"] - rec["rss_base"]) / rec["established"]
        else:
            value = None
    else:
        value = rec.get(name)
        if name in ("req_per_cpu_s", "cpu_s", "cpu_pct") and isinstance(value, (int, float)) \
                and value <= 0:
            value = None  # see cpu_note in measure()
    return float(value) if isinstance(value, (int, float)) else None


class Results:
    """The records of one run, grouped by (workload, server)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in records:
            self.groups.setdefault((r["workload"], r["server"]), []).append(r)

    def ok(self, workload: str, server: str) -> list[dict[str, Any]]:
        return [r for r in self.groups.get((workload, server), []) if "failed" not in r]

    def stat(self, workload: str, server: str, name: str) -> Stat | None:
        values = [v for r in self.ok(workload, server) if (v := metric(r, name)) is not None]
        if not values:
            return None
        return Stat(statistics.median(values), min(values), max(values), len(values))

    def total(self, workload: str, server: str, name: str) -> int:
        return sum(int(r.get(name) or 0) for r in self.groups.get((workload, server), []))

    def ratio(self, workload: str, server: str, base: str, name: str) -> float | None:
        a, b = self.stat(workload, server, name), self.stat(workload, base, name)
        if a is None or b is None or not b.median:
            return None
        return a.median / b.median

    def servers_for(self, workload: str) -> list[str]:
        seen = [s for (w, s) in self.groups if w == workload]
        return sorted(set(seen), key=lambda s: list(SERVERS).index(s))

    def workloads(self, kind: str | None = None) -> list[str]:
        order = [w.name for w in all_workloads()]
        names = {r["workload"] for r in self.records if kind is None or r["kind"] == kind}
        return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.{digits}f}"


def fmt_stat(s: Stat | None, scale: float = 1.0, digits: int = 0, spread: bool = True) -> str:
    if s is None:
        return "-"
    text = fmt_num(s.median * scale, digits)
    if spread and s.n > 1:
        text += f" ({fmt_num(s.low * scale, digits)}-{fmt_num(s.high * scale, digits)})"
    return text


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(x) >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def baseline_of(kind: str) -> str:
    return SERVICE_BASELINE.get({"kv": "kv", "http": "http"}.get(kind, "echo"), BASELINE)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def throughput_table(res: Results, kind: str) -> list[str]:
    header = ["workload", "server", "req/s", "req/server-CPU-s", "x base (CPU-s)",
              "x base (req/s)", "server CPU %", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
              "MiB/s", "peak RSS", "fds", "threads", "err/timeout"]
    rows = []
    for wname in res.workloads(kind):
        base = baseline_of(kind)
        for server in res.servers_for(wname):
            runs = res.groups[(wname, server)]
            failed = [r for r in runs if "failed" in r]
            if len(failed) == len(runs):
                rows.append([wname, server, "failed: " + failed[0]["failed"][:80]]
                            + ["-"] * (len(header) - 3))
                continue
            rows.append([
                wname, server,
                fmt_stat(res.stat(wname, server, "rps")),
                fmt_stat(res.stat(wname, server, "req_per_cpu_s")),
                fmt_ratio(res.ratio(wname, server, base, "req_per_cpu_s")),
                fmt_ratio(res.ratio(wname, server, base, "rps")),
                fmt_stat(res.stat(wname, server, "cpu_pct"), spread=False),
                fmt_stat(res.stat(wname, server, "p50"), 1e-3, 2, spread=False),
                fmt_stat(res.stat(wname, server, "p99"), 1e-3, 2),
                fmt_stat(res.stat(wname, server, "p999"), 1e-3, 2, spread=False),
                fmt_stat(res.stat(wname, server, "max"), 1e-3, 1, spread=False),
                fmt_stat(res.stat(wname, server, "mib_s"), digits=1, spread=False),
                fmt_bytes(s.median if (s := res.stat(wname, server, "rss_peak")) else None),
                fmt_stat(res.stat(wname, server, "fds_peak"), spread=False),
                fmt_stat(res.stat(wname, server, "threads_peak"), spread=False),
                f"{res.total(wname, server, 'errors') + res.total(wname, server, 'connect_errors')}"
                f"/{res.total(wname, server, 'timeouts')}"
                + (f" ({len(failed)} failed)" if failed else ""),
            ])
    return md_table(header, rows)


def idle_table(res: Results) -> list[str]:
    header = ["workload", "server", "connections", "RSS/conn", "PSS/conn",
              "x asyncio (PSS)", "RSS before", "RSS held", "fds", "threads", "dropped"]
    rows = []
    for wname in res.workloads("idle"):
        for server in res.servers_for(wname):
            ok = res.ok(wname, server)
            if not ok:
                rows.append([wname, server, "failed: "
                             + res.groups[(wname, server)][0].get("failed", "?")[:80]]
                            + ["-"] * (len(header) - 3))
                continue
            rows.append([
                wname, server, str(ok[0].get("established", ok[0]["connections"])),
                fmt_stat(res.stat(wname, server, "rss_per_conn")) + " B",
                fmt_stat(res.stat(wname, server, "pss_per_conn")) + " B",
                fmt_ratio(res.ratio(wname, server, BASELINE, "pss_per_conn")),
                fmt_bytes(s.median if (s := res.stat(wname, server, "rss_base")) else None),
                fmt_bytes(s.median if (s := res.stat(wname, server, "rss_held")) else None),
                fmt_stat(res.stat(wname, server, "fds_held"), spread=False),
                fmt_stat(res.stat(wname, server, "threads_held"), spread=False),
                str(res.total(wname, server, "closed_by_peer")),
            ])
    return md_table(header, rows)


# -- targets -----------------------------------------------------------------------------


@dataclass
class Verdict:
    status: str  # PASS, FAIL, SKIP, INFO
    text: str

    def line(self) -> str:
        return f"{self.status:<4} {self.text}"


# issue 12's targets: requests per server-CPU-second unless the line says otherwise
ECHO_GOAL_VS_UVLOOP = 1.05  # echo 1 KiB at 100 and 1 000 connections
CHURN_GOAL_VS_UVLOOP = 1.0  # connect, one request, close, 50 concurrent
IDLE_GOAL_BYTES = 300  # RSS per idle connection at 10 000 connections
KV_GOAL_VS_REDIS = 0.8  # GET and SET without pipelining, requests per second
KV_PIPELINED_GOAL_VS_REDIS = 0.3  # GET and SET with redis-benchmark -P 16
FACADE_GOAL_VS_STDLIB = 1.0  # the threading facade, echo 1 KiB x100
FLOOR = "c-epoll"  # bench/epoll_echo.c: INFO lines only


def targets(res: Results) -> list[Verdict]:
    """The PASS/FAIL lines of the project's targets (issue 12), with INFO lines for the
    ratios that are not targets (against asyncio, the old targets; against the C floor)
    and SKIP, with the reason, for a verdict that cannot be computed."""
    out: list[Verdict] = []

    def ratio_line(label: str, workload: str, server: str, base: str, name: str,
                   goal: float | None, unit: str) -> None:
        r = res.ratio(workload, server, base, name)
        a, b = res.stat(workload, server, name), res.stat(workload, base, name)
        if r is None or a is None or b is None:
            out.append(Verdict("SKIP", f"{label}: not measured ({server} and {base} on "
                                       f"{workload} needed)"))
            return
        detail = (f"{label}: {r:.2f}x ({server} {fmt_num(a.median)} vs {base} "
                  f"{fmt_num(b.median)} {unit}, median of {min(a.n, b.n)}")
        if goal is None:
            out.append(Verdict("INFO", detail + ")"))
        else:
            out.append(Verdict("PASS" if r >= goal else "FAIL",
                               detail + f"; target >= {goal}x)"))

    for n in (100, 1000):
        w = f"echo-1KiB-c{n}"
        ratio_line(f"echo 1 KiB x{n} conns, reactor requests per CPU-second vs uvloop", w,
                   "reactor-protocol", "uvloop", "req_per_cpu_s", ECHO_GOAL_VS_UVLOOP,
                   "req/CPU-s")
        if res.ok(w, "reactor-handler"):
            ratio_line(f"echo 1 KiB x{n} conns, reactor EchoHandler per CPU-second vs uvloop",
                       w, "reactor-handler", "uvloop", "req_per_cpu_s", None, "req/CPU-s")
        ratio_line(f"echo 1 KiB x{n} conns, reactor requests per CPU-second vs asyncio", w,
                   "reactor-protocol", "asyncio", "req_per_cpu_s", None, "req/CPU-s")
        ratio_line(f"echo 1 KiB x{n} conns, reactor vs {FLOOR} (the floor)", w,
                   "reactor-protocol", FLOOR, "req_per_cpu_s", None, "req/CPU-s")
        if res.ok(w, "uvloop") and res.ok(w, FLOOR):
            ratio_line(f"echo 1 KiB x{n} conns, uvloop vs {FLOOR}", w, "uvloop", FLOOR,
                       "req_per_cpu_s", None, "req/CPU-s")
        kernel = res.stat(w, "reactor-protocol", "kernel_share")
        if kernel is not None:
            # the kernel's socket calls are the same for both servers: where they are
            # most of the CPU, the ratio above is squeezed towards 1 whatever the loop does
            ratio_line(f"echo 1 KiB x{n} conns, reactor requests per user-space CPU-second "
                       f"vs asyncio (the kernel took {kernel.median:.0%} of the reactor's "
                       "CPU)", w, "reactor-protocol", "asyncio", "req_per_user_cpu_s", None,
                       "req/user-CPU-s")
    out.append(_idle_verdict(res))
    churn = next(iter(res.workloads("churn")), None)
    if churn is None:
        out.append(Verdict("SKIP", "churn: not measured"))
    else:
        ratio_line("churn (connect, request, close) x50, reactor connections per CPU-second "
                   "vs uvloop", churn, "reactor-protocol", "uvloop", "req_per_cpu_s",
                   CHURN_GOAL_VS_UVLOOP, "conn/CPU-s")
        ratio_line("churn x50, reactor connections per CPU-second vs asyncio", churn,
                   "reactor-protocol", "asyncio", "req_per_cpu_s", None, "conn/CPU-s")
        ratio_line(f"churn x50, reactor connections per CPU-second vs {FLOOR} (the floor)",
                   churn, "reactor-protocol", FLOOR, "req_per_cpu_s", None, "conn/CPU-s")
        ratio_line("churn x50, reactor connections per second vs asyncio", churn,
                   "reactor-protocol", "asyncio", "rps", None, "conn/s")
        kernel = res.stat(churn, "reactor-protocol", "kernel_share")
        if kernel is not None:
            ratio_line("churn x50, reactor connections per user-space CPU-second vs asyncio "
                       f"(the kernel took {kernel.median:.0%} of the reactor's CPU)", churn,
                       "reactor-protocol", "asyncio", "req_per_user_cpu_s", None,
                       "conn/user-CPU-s")
    ratio_line("threading facade vs the standard library's ThreadingTCPServer, echo 1 KiB "
               "x100, requests per CPU-second", "echo-1KiB-c100", "facade-threading",
               "stdlib-threading", "req_per_cpu_s", FACADE_GOAL_VS_STDLIB, "req/CPU-s")
    for command in ("get", "set"):
        ratio_line(f"kv {command.upper()} vs redis-server without pipelining, requests per "
                   "second (redis-benchmark)", f"kv-{command}", "kv", "redis-server", "rps",
                   KV_GOAL_VS_REDIS, "req/s")
        ratio_line(f"kv {command.upper()} vs redis-server, requests per server-CPU-second",
                   f"kv-{command}", "kv", "redis-server", "req_per_cpu_s", None, "req/CPU-s")
    for command in ("get", "set"):
        # one redis-benchmark process drives both servers: with 16 commands in flight
        # it, not redis-server, sets the pace, so the target is per server-CPU-second
        ratio_line(f"kv {command.upper()} -P 16 vs redis-server, requests per "
                   "server-CPU-second", f"kv-{command}-P16", "kv", "redis-server",
                   "req_per_cpu_s", KV_PIPELINED_GOAL_VS_REDIS, "req/CPU-s")
        ratio_line(f"kv {command.upper()} -P 16 vs redis-server, requests per second "
                   "(redis-benchmark)", f"kv-{command}-P16", "kv", "redis-server", "rps",
                   None, "req/s")
    ratio_line("HTTP GET, http.server on the threading facade vs on the standard library",
               "http-get", "http-facade", "http-stdlib", "req_per_cpu_s", None, "req/CPU-s")
    out.append(precision_verdict(res))
    return out


def _idle_verdict(res: Results) -> Verdict:
    """Idle memory per connection: the reactor's RSS against the fixed target, with the
    peers' figures beside it."""
    idle = next(iter(res.workloads("idle")), None)
    s = res.stat(idle, "reactor-protocol", "rss_per_conn") if idle else None
    if s is None or idle is None:
        return Verdict("SKIP", "idle memory per connection: not measured")
    n = res.ok(idle, "reactor-protocol")[0].get("established", 0)
    p = res.stat(idle, "reactor-protocol", "pss_per_conn")
    peers = [f"{peer} {a.median:.0f} B" for peer in ("asyncio", "uvloop", FLOOR)
             if (a := res.stat(idle, peer, "rss_per_conn")) is not None]
    extra = f"; {', '.join(peers)}" if peers else ""
    text = (f"idle memory per connection at {n} connections: {s.median:.0f} B RSS "
            f"({p.median if p else 0:.0f} B PSS){extra}; target <= {IDLE_GOAL_BYTES} B")
    if n < IDLE_CONNS:
        text += f" (fewer than {IDLE_CONNS} connections: ulimit -n)"
    return Verdict("PASS" if s.median <= IDLE_GOAL_BYTES else "FAIL", text)


# -- environment -------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _version(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else None


def environment(args: argparse.Namespace, server_cpu: int | None,
                client_cpu: int | None) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cpu_model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    try:
        import uvloop

        uv_version: str | None = getattr(uvloop, "__version__", None)
    except ImportError:
        uv_version = None
    git = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10,
                             check=False).stdout.strip() or None
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(args.argv),
        "git": git,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "selector": selectors.DefaultSelector.__name__,
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "pinning": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "ulimit_n": {"soft": soft, "hard": hard},
        "somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "tcp_tw_reuse": _read("/proc/sys/net/ipv4/tcp_tw_reuse"),
        "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "uvloop": uv_version,
        "psutil": psutil.__version__,
        "redis-server": _version(["redis-server", "--version"]),
        "redis-benchmark": shutil.which("redis-benchmark") is not None,
        "wrk": _version(["wrk", "--version"]),
        "loadgen_threads": args.loadgen_threads,
        "backlog": BACKLOG,
        "read_size": READ_SIZE,
        "allocator_primed": not args.no_prime,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "repeat": args.repeat,
    }


# -- the report --------------------------------------------------------------------------


def write_report(path: Path, res: Results, env: dict[str, Any], verdicts: list[Verdict],
                 plots: list[Path], plan: Plan, elapsed: float) -> None:
    rel = [os.path.relpath(p, path.parent) for p in plots]
    try:
        old_text = path.read_text()
    except OSError:
        old_text = ""
    kept = kept_section(old_text)
    kept_kv = kept_section(old_text, KV_PIPELINE_SECTION)
    kept_memory = kept_section(old_text, MEMORY_SECTION)
    kept_apart = [text for markers in APART_SECTIONS
                  if (text := kept_section(old_text, markers)) is not None]
    verdicts = [*verdicts, *(Verdict(status, line) for text in kept_apart
                             for status, line in kept_verdicts(text))]
    lines = [
        "# socketreactor benchmark results",
        "",
        "Generated by `bench/run.py`; do not edit by hand. Command:",
        "",
        f"    {env['command']}",
        "",
        f"{env['date']}, git {env['git']}, {elapsed / 60:.1f} minutes, "
        f"{len(res.records)} measurements, {env['repeat']} repetition(s) interleaved "
        f"across servers, {env['warmup_s']} s warm-up + {env['duration_s']} s measured each. "
        "Figures are medians, with min-max in parentheses when repeated. Requests per "
        "server-CPU-second (requests / (user+sys CPU of the server's process tree during "
        "the measured window)) is the figure to compare on a busy machine; requests per "
        "second depends on what else runs.",
        "",
        "## Targets",
        "",
        "```",
        *[v.line() for v in verdicts],
        "```",
        "",
    ]
    if rel:
        lines += ["## Plots", ""] + [f"![{Path(r).stem}]({r})" for r in rel] + [""]
    sections = [("echo", "Echo ping-pong (bench/bin/loadgen, one message in flight per "
                         "connection)"),
                ("churn", "Churn: connect, one 64 B request, close (with RST, so that no "
                          "TIME_WAIT piles up in the client), at 50 concurrent "
                          "(requests = connections)"),
                ("kv", "Key-value (redis-benchmark, 50 clients, 64 B values; ratios "
                       "against redis-server)"),
                ("http", "HTTP GET of a 1 KiB file (wrk, 50 connections; ratios against "
                         "http-stdlib)")]
    for kind, title in sections:
        if kind == "kv" and kept is not None:
            lines += [kept, ""]
        if res.workloads(kind):
            lines += [f"## {title}", "", *throughput_table(res, kind), ""]
        if kind == "kv" and kept_kv is not None:
            lines += [kept_kv, ""]
    if res.workloads("idle"):
        lines += ["## Idle connections: memory per connection", "",
                  "RSS/conn = (server RSS with the connections held - RSS before) / "
                  "connections, each connection having made one 64 B request; PSS alike "
                  "(RSS sums the pages a forking server's children share, PSS divides them, "
                  "so compare forking servers by PSS; the ratio column uses PSS). "
                  "Kernel socket buffers are not in either.", "", *idle_table(res), ""]
    if kept_memory is not None:
        lines += [kept_memory, ""]
    for text in kept_apart:
        lines += [text, ""]
    if plan.skipped:
        lines += ["## Not measured", ""]
        lines += [f"- {what}: {why}" for what, why in sorted(plan.skipped.items())]
        lines.append("")
    lines += ["## Servers", ""]
    lines += [f"- `{s.name}`: {s.description}" for s in SERVERS.values()]
    lines += [
        "",
        "## Method",
        "",
        f"- Every server runs in its own process started by the benchmark, pinned to CPU "
        f"{env['pinning']['server_cpu']}; the load generator (and this driver) run on CPU "
        f"{env['pinning']['client_cpu']}. Traffic is loopback only.",
        f"- Configured alike: backlog {BACKLOG}, TCP_NODELAY, reads of at most "
        f"{READ_SIZE // KB} KiB (asyncio's default), the open-file soft limit raised to the "
        "hard limit, no cap on threads or child processes.",
        "- glibc allocator: "
        + ("every Python server frees one 1 MiB block at start so that glibc's dynamic "
           "mmap threshold is above the read size in all of them. Without that, whether a "
           "256 KiB `recv` costs an mmap/mremap/munmap depends on what the process "
           "happened to import, which moved asyncio's echo rate 3-5x on this machine."
           if env["allocator_primed"] else
           "not primed (--no-prime): results depend on glibc's dynamic mmap threshold."),
        "- CPU is user+sys of the server process, its live descendants and its reaped "
        "children (psutil), sampled when the load generator starts and ends the measured "
        "window; RSS, fds and threads are sampled every "
        f"{SAMPLE_INTERVAL} s (peaks reported), PSS once mid-run.",
        "- Memory per connection in the echo plot is (peak RSS - RSS before) / "
        "connections, so it includes the in-flight messages.",
        "",
        "## Environment",
        "",
        "```",
        json.dumps(env, indent=2),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def summary(res: Results, verdicts: list[Verdict]) -> str:
    rows = []
    for kind in ("echo", "churn", "kv", "http"):
        for wname in res.workloads(kind):
            base = baseline_of(kind)
            for server in res.servers_for(wname):
                rps = res.stat(wname, server, "rps")
                pc = res.stat(wname, server, "req_per_cpu_s")
                p99 = res.stat(wname, server, "p99")
                mem = res.stat(wname, server, "mem_per_conn")
                rows.append([wname, server, fmt_num(rps.median) if rps else "failed",
                             fmt_num(pc.median) if pc else "-",
                             fmt_ratio(res.ratio(wname, server, base, "req_per_cpu_s")),
                             f"{p99.median / 1000:.2f}" if p99 else "-",
                             fmt_num(mem.median) if mem else "-", "-"])
    for wname in res.workloads("idle"):
        for server in res.servers_for(wname):
            mem = res.stat(wname, server, "rss_per_conn")
            pss = res.stat(wname, server, "pss_per_conn")
            rows.append([wname, server, "-", "-",
                         fmt_ratio(res.ratio(wname, server, BASELINE, "pss_per_conn")), "-",
                         fmt_num(mem.median) if mem else "failed",
                         fmt_num(pss.median) if pss else "-"])
    header = ["workload", "server", "req/s", "req/CPU-s", "x base", "p99 ms", "RSS B/conn",
              "PSS B/conn"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i])
                      for i, c in enumerate(r)) for r in [header, *rows]]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*text, "", *[v.line() for v in verdicts]])
