"""The connection-scaling benchmark: ``python -m bench.run`` (``make bench``).

For every workload, every server runs in its own process pinned to one CPU while the
load generator (``bench/bin/loadgen``, C and epoll; ``redis-benchmark`` for kv; ``wrk``
for HTTP) runs pinned to the other. The server is measured from outside with psutil:
CPU (user+sys of the whole process tree, reaped children included) over the measured
window only, requests per server-CPU-second, peak RSS, PSS, descriptors and threads.

Each measurement has a warm-up; the plan runs ``--repeat`` times with the servers
interleaved (the order rotates each repetition); medians are reported with min-max.

Output: JSON Lines (one record per measurement) in ``--out``, a Markdown report with
tables and ratios against asyncio (``bench/RESULTS.md`` for a full run), PNG plots,
a summary table and the PASS/FAIL lines of the project's targets on stdout. A progress
bar is shown on a terminal only.

Examples::

    python -m bench.run                     # the full run (under 20 minutes)
    python -m bench.run --quick             # under 3 minutes
    python -m bench.run --servers reactor-protocol,asyncio,uvloop \\
        --workloads echo-1KiB-c100,echo-1KiB-c1000,idle --repeat 3
    python -m bench.run --list              # servers and workloads
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import fnmatch
import io
import json
import os
import platform
import queue
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.servers import BACKLOG, HTTP_FILE, READ_SIZE, SERVERS, ServerSpec, unavailable

__all__ = ["Workload", "all_workloads", "main", "parse_redis_csv", "parse_wrk"]

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "bin" / "loadgen"
LOADGEN_BUILD = ["cc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(LOADGEN),
                 str(LOADGEN_SRC)]
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
QUICK_SERVERS = ("reactor-protocol", "reactor-handler", "asyncio", "uvloop",
                 "stdlib-threading", "facade-threading", "kv", "redis-server",
                 "http-stdlib", "http-facade")


def default_servers_for(w: Workload, quick: bool) -> list[str]:
    """Which servers run workload ``w`` when ``--servers`` is not given."""
    names = [n for n, s in SERVERS.items() if s.service == w.service]
    if quick:
        names = [n for n in names if n in QUICK_SERVERS]
        if w.kind == "echo" and w.connections > 100:
            names = [n for n in names if SERVERS[n].max_connections is None]
        if w.kind in ("idle", "churn"):
            names = [n for n in names if n in ("reactor-protocol", "asyncio")]
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


# -- the process tree, measured from outside ---------------------------------------------


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3 onwards).

    Raises:
        OSError: no such process, or no /proc.
    """
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rfind(")") + 2:].split()


def _own_and_reaped_cpu(proc: psutil.Process) -> float:
    """user+sys of ``proc`` and of its reaped children, zombies included.

    A worker that just exited is a zombie until its parent reaps it: psutil's
    ``cpu_times`` may refuse it, and its time is not yet in the parent's reaped-children
    counters, so it would vanish from the tree for a moment. /proc/PID/stat still has it.
    """
    try:
        fields = _stat_fields(proc.pid)
        return sum(int(x) for x in fields[11:15]) / _CLK_TCK  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        pass
    try:
        t = proc.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user+sys) of ``proc``, its reaped children and its live descendants.

    The parent is read before its children: a child reaped in between is missed (for
    microseconds of its life) rather than counted twice."""
    total = _own_and_reaped_cpu(proc)
    try:
        children = proc.children()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return total
    for child in children:
        total += tree_cpu(child)
    return total


def core_busy(cpu: int) -> float | None:
    """Busy CPU seconds of core ``cpu`` so far (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    # user nice system idle iowait irq softirq steal ...
                    ticks = [int(x) for x in line.split()[1:9]]
                    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK
    except (OSError, ValueError):
        pass
    return None


def server_cpu(srv: ServerProcess) -> float:
    """CPU seconds used by server ``srv`` so far.

    Usually the sum over its process tree. A forking server's tree holds a process per
    connection (a thousand at 1 000 connections), whose short CPU slices the per-process
    counters under-report; as every server process is pinned to one core and the load
    generator to another, the busy time of that core is the faithful figure there.
    """
    assert srv.proc is not None
    if "forking" in srv.name and srv.cpu is not None:
        busy = core_busy(srv.cpu)
        if busy is not None:
            return busy
    return tree_cpu(srv.proc)


def server_user_cpu(srv: ServerProcess) -> float | None:
    """User-space CPU seconds of server ``srv`` so far: its own process only (None for a
    server with worker processes). The part of its CPU spent in its own code and the
    interpreter rather than in the kernel's socket calls, which are the same for every
    server doing the same work."""
    assert srv.proc is not None
    try:
        if srv.proc.children():
            return None
        return int(_stat_fields(srv.proc.pid)[11]) / _CLK_TCK  # utime
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def tree_procs(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return [proc]


@dataclass
class TreeSample:
    rss: int = 0
    pss: int = 0
    fds: int = 0
    threads: int = 0
    procs: int = 0


def sample_tree(proc: psutil.Process, pss: bool = False) -> TreeSample:
    s = TreeSample()
    for p in tree_procs(proc):
        try:
            with p.oneshot():
                if pss:
                    full = p.memory_full_info()
                    s.rss += full.rss
                    s.pss += getattr(full, "pss", full.rss)
                else:
                    s.rss += p.memory_info().rss
                s.fds += p.num_fds()
                s.threads += p.num_threads()
                s.procs += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return s


class Sampler(threading.Thread):
    """Samples a server's process tree every SAMPLE_INTERVAL; keeps the peaks."""

    def __init__(self, proc: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.peak = TreeSample()
        self.pss_sample: TreeSample | None = None
        self.pss_due: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_INTERVAL):
            due = self.pss_due
            take_pss = due is not None and time.monotonic() >= due
            s = sample_tree(self.proc, pss=take_pss)
            if take_pss:
                self.pss_sample = s
                self.pss_due = None
            p = self.peak
            p.rss, p.fds = max(p.rss, s.rss), max(p.fds, s.fds)
            p.threads, p.procs = max(p.threads, s.threads), max(p.procs, s.procs)
            p.pss = max(p.pss, s.pss)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# -- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class ServerProcess:
    """One server under test, in its own process (and session, for clean-up)."""

    def __init__(self, name: str, cpu: int | None, log_path: Path, prime: bool) -> None:
        self.name = name
        self.cpu = cpu
        self.log_path = log_path
        self.prime = prime
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None
        self._log: io.BufferedWriter | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"--- {self.name} {_dt.datetime.now().isoformat()}\n".encode())
        self._log.flush()
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None and shutil.which(
            "taskset") else []
        deadline = time.monotonic() + timeout
        if self.name == "redis-server":
            self.port = free_port()
            cmd = [*pin, "redis-server", "--port", str(self.port), "--bind", HOST,
                   "--save", "", "--appendonly", "no", "--tcp-backlog", str(BACKLOG),
                   "--protected-mode", "no", "--maxclients", str(IDLE_CONNS + 1000),
                   "--loglevel", "warning", "--daemonize", "no"]
            self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=self._log,
                                          start_new_session=True)
            if not wait_for_port(self.port, deadline):
                self.stop()
                raise RuntimeError(f"{self.name} did not listen within {timeout} s")
        else:
            cmd = [sys.executable, "-m", "bench.servers", self.name, "--host", HOST,
                   "--port", "0"]
            if self.cpu is not None:
                cmd += ["--cpu", str(self.cpu)]
            if not self.prime:
                cmd.append("--no-prime")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                              env.get("PYTHONPATH")]))
            self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=self._log, start_new_session=True)
            line = _read_line(self.popen, deadline)
            if not line.startswith("PORT "):
                self.stop()
                raise RuntimeError(f"{self.name} did not start (see {self.log_path}): "
                                   f"{line!r}")
            self.port = int(line.split()[1])
        self.proc = psutil.Process(self.popen.pid)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL the whole session after 5 s; report how it ended."""
        popen = self.popen
        info: dict[str, Any] = {"exit": None, "traceback": False}
        if popen is None:
            return info
        alive_before = popen.poll() is None
        if alive_before:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=5)
        # forked children still alive (a forking server's workers)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        info["exit"] = popen.returncode
        info["died_early"] = not alive_before
        if popen.stdout is not None:
            popen.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(OSError):
            tail = self.log_path.read_bytes()[-20000:]
            marker = tail.rfind(f"--- {self.name} ".encode())
            info["traceback"] = b"Traceback" in tail[max(marker, 0):]
        return info


def _read_line(popen: subprocess.Popen[bytes], deadline: float) -> str:
    """The first line a child prints on stdout, or "" at the deadline or EOF."""
    assert popen.stdout is not None
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(popen.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return ""
            chunk = os.read(popen.stdout.fileno(), 4096)
            if not chunk:
                return buf.decode(errors="replace")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


# -- clients -----------------------------------------------------------------------------


class LoadgenRun:
    """bench/bin/loadgen as a child: events from stderr, the JSON result from stdout."""

    def __init__(self, args: list[str], cpu: int | None) -> None:
        cmd = [str(LOADGEN), *args]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.cmd = cmd
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self.messages: list[str] = []
        self.handlers: dict[str, Callable[[str], None]] = {}
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.rstrip("\n")
            if line.startswith("@"):
                word = line[1:].split()[0]
                handler = self.handlers.get(word)
                if handler is not None:
                    handler(line)
                self.events.put((line, time.monotonic()))
            elif line:
                self.messages.append(line)

    def wait_event(self, word: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line, _ = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None:
                    return None
                continue
            if line[1:].split()[0] == word:
                return line

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the exit; the JSON result (stderr stays with the reader thread)."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise RuntimeError(f"loadgen did not finish within {timeout:.0f} s") from None
        assert self.popen.stdout is not None
        out = self.popen.stdout.read()
        self.popen.stdout.close()
        self._reader.join(timeout=5)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.popen.returncode != 0 or not lines:
            raise RuntimeError(f"loadgen failed ({self.popen.returncode}): "
                               + "; ".join(self.messages[-3:]))
        data: dict[str, Any] = json.loads(lines[-1])
        data["loadgen_messages"] = self.messages[-5:]
        return data


def run_command(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def parse_redis_csv(text: str) -> dict[str, float]:
    """redis-benchmark --csv: the header row (Redis 6.2+) names the columns."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header: list[str] | None = None
    for row in rows:
        if row[0] == "test":
            header = row
            continue
        values: dict[str, float] = {}
        try:
            values["rps"] = float(row[1])
        except (IndexError, ValueError):
            continue
        if header is not None:
            for key, value in zip(header[2:], row[2:], strict=False):
                with contextlib.suppress(ValueError):
                    values[key] = float(value)
        return values
    raise ValueError(f"no result in redis-benchmark output: {text[:200]!r}")


_WRK_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def _wrk_us(value: str, unit: str) -> float:
    return float(value) * _WRK_UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": 0, "timeouts": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise ValueError(f"no Requests/sec in wrk output: {text[:300]!r}")
    out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        out["requests"] = int(m.group(1))
    lat: dict[str, float] = {}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            lat[key] = _wrk_us(m.group(1), m.group(2))
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)", text)
    if m:
        lat["mean"] = _wrk_us(m.group(1), m.group(2))
        lat["max"] = _wrk_us(m.group(3), m.group(4))
    out["latency_us"] = lat
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["connect_errors"] = int(m.group(1))
        out["errors"] = int(m.group(2)) + int(m.group(3))
        out["timeouts"] = int(m.group(4))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["errors"] += int(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    if m:
        scale = {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}.get(m.group(2), 0)
        out["mib_s"] = float(m.group(1)) * scale
    return out


# -- one measurement ---------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    server_cpu: int | None
    client_cpu: int | None
    fd_limit: int
    out: Path


def measure(ctx: Context, w: Workload, server: str, rep: int) -> dict[str, Any]:
    """Run workload ``w`` against ``server`` once; return the record."""
    spec = SERVERS[server]
    record: dict[str, Any] = {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "rep": rep, "workload": w.name, "kind": w.kind, "server": server, "ours": spec.ours,
        "connections": w.connections, "size": w.size,
    }
    srv = ServerProcess(server, ctx.server_cpu, ctx.out / "servers.log", not ctx.args.no_prime)
    try:
        srv.start()
        assert srv.proc is not None
        time.sleep(0.2)
        base = sample_tree(srv.proc, pss=True)
        record.update(rss_base=base.rss, pss_base=base.pss, fds_base=base.fds)
        if w.kind == "echo":
            record.update(_measure_echo(ctx, w, srv, spec))
        elif w.kind == "idle":
            record.update(_measure_idle(ctx, w, srv, spec, base))
        elif w.kind == "churn":
            record.update(_measure_echo(ctx, w, srv, spec))
        elif w.kind == "kv":
            record.update(_measure_kv(ctx, w, srv))
        else:
            record.update(_measure_http(ctx, w, srv))
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        record["failed"] = str(exc)
    finally:
        end = srv.stop()
        record["server_exit"] = end.get("exit")
        record["server_traceback"] = end.get("traceback", False)
        if end.get("died_early"):
            record.setdefault("failed", "the server exited during the run")
    _finish_record(record)
    return record


def _finish_record(record: dict[str, Any]) -> None:
    """Add the per-CPU figures to a measurement's record."""
    cpu = record.get("cpu_s")
    if cpu is not None and cpu <= 0:
        # the tree lost CPU time between the samples (a worker process that left the
        # tree unaccounted, e.g. re-parented): no per-CPU figure for this run
        record["cpu_note"] = f"process-tree CPU went down by {-cpu:.2f} s; not used"
        cpu = record["cpu_s"] = None
    if cpu and record.get("requests"):
        record["req_per_cpu_s"] = record["requests"] / cpu
        user = record.get("user_cpu_s")
        if user is not None and 0 < user <= cpu:
            record["req_per_user_cpu_s"] = record["requests"] / user
            record["kernel_share"] = 1.0 - user / cpu
    if cpu is not None and record.get("duration_s"):
        record["cpu_pct"] = 100.0 * cpu / record["duration_s"]


def _conn_limit(ctx: Context, n: int) -> tuple[int, bool]:
    limit = max(1, ctx.fd_limit - 100)
    return (n, False) if n <= limit else (limit, True)


def _measure_echo(ctx: Context, w: Workload, srv: ServerProcess,
                  spec: ServerSpec) -> dict[str, Any]:
    assert srv.proc is not None
    conns, limited = _conn_limit(ctx, w.connections)
    mode = "echo" if w.kind == "echo" else "churn"
    args = ["-m", mode, "-H", HOST, "-p", str(srv.port), "-c", str(conns),
            "-s", str(w.size), "-w", str(ctx.args.warmup), "-d", str(ctx.args.duration),
            "-t", str(ctx.args.loadgen_threads), "--connect-timeout", "60"]
    if mode == "churn":
        # close with RST: otherwise tens of thousands of client-side TIME_WAIT sockets
        # make the load generator's ephemeral-port search the bottleneck (and add
        # ~100 ms tails), whatever the server does
        args.append("--linger0")
    sampler = Sampler(srv.proc)
    marks: dict[str, float] = {}

    def at_measure(_line: str) -> None:
        marks["cpu0"] = server_cpu(srv)
        user = server_user_cpu(srv)
        if user is not None:
            marks["user0"] = user
        marks["t0"] = time.monotonic()
        sampler.pss_due = time.monotonic() + ctx.args.duration / 2

    def at_done(_line: str) -> None:
        marks["cpu1"] = server_cpu(srv)
        user = server_user_cpu(srv)
        if user is not None:
            marks["user1"] = user
        marks["t1"] = time.monotonic()

    sampler.start()
    try:
        run = LoadgenRun(args, ctx.client_cpu)
        run.handlers = {"measure": at_measure, "done": at_done}
        result = run.result(timeout=90 + ctx.args.warmup + ctx.args.duration)
    finally:
        sampler.stop()
    rec = _from_loadgen(result)
    rec["limited_by_ulimit"] = limited or bool(result.get("limited_by_ulimit"))
    if "cpu0" in marks and "cpu1" in marks:
        rec["cpu_s"] = marks["cpu1"] - marks["cpu0"]
        rec["wall_s"] = marks["t1"] - marks["t0"]
    if "user0" in marks and "user1" in marks:
        rec["user_cpu_s"] = marks["user1"] - marks["user0"]
    peak = sampler.peak
    rec.update(rss_peak=peak.rss, fds_peak=peak.fds, threads_peak=peak.threads,
               procs_peak=peak.procs)
    if sampler.pss_sample is not None:
        rec["pss_mid"] = sampler.pss_sample.pss
        rec["rss_mid"] = sampler.pss_sample.rss
    return rec


def _from_loadgen(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("established", "requests", "bytes", "rps", "mib_s", "errors", "timeouts",
            "connect_errors", "closed_by_peer", "duration_s", "connect_s", "latency_us",
            "loadgen_messages", "threads")
    rec = {k: result[k] for k in keys if k in result}
    rec["loadgen_threads"] = rec.pop("threads", 1)
    return rec


def _measure_idle(ctx: Context, w: Workload, srv: ServerProcess, spec: ServerSpec,
                  base: TreeSample) -> dict[str, Any]:
    assert srv.proc is not None
    conns = min(w.connections, spec.max_connections or w.connections)
    conns, limited = _conn_limit(ctx, conns)
    args = ["-m", "idle", "-H", HOST, "-p", str(srv.port), "-c", str(conns),
            "-s", str(w.size), "--ping", "-t", str(ctx.args.loadgen_threads),
            "--connect-timeout", "60", "-T", "30"]
    run = LoadgenRun(args, ctx.client_cpu)
    rec: dict[str, Any] = {"connections": conns, "limited_by_ulimit": limited}
    try:
        ready = run.wait_event("ready", timeout=120)
        if ready is None:
            raise RuntimeError("the idle connections were not established within 120 s")
        time.sleep(0.3)  # let the server finish the last accepts and echoes
        held = sample_tree(srv.proc, pss=True)
        time.sleep(0.3)
        held2 = sample_tree(srv.proc, pss=True)
    finally:
        if run.popen.poll() is None:
            run.popen.send_signal(signal.SIGTERM)
    result = run.result(timeout=60)
    rec.update(_from_loadgen(result))
    rec["limited_by_ulimit"] = limited or bool(result.get("limited_by_ulimit"))
    established = max(1, int(result.get("established", 0)))
    rec.update(rss_held=max(held.rss, held2.rss), pss_held=max(held.pss, held2.pss),
               fds_held=held2.fds, threads_held=held2.threads, procs_held=held2.procs,
               rss_peak=max(held.rss, held2.rss), fds_peak=held2.fds,
               threads_peak=held2.threads)
    rec["rss_per_conn"] = (rec["rss_held"] - base.rss) / established
    rec["pss_per_conn"] = (rec["pss_held"] - base.pss) / established
    rec.pop("requests", None)  # the pings are set-up, not load
    return rec


def _measure_kv(ctx: Context, w: Workload, srv: ServerProcess) -> dict[str, Any]:
    assert srv.proc is not None
    common = ["redis-benchmark", "-h", HOST, "-p", str(srv.port), "-c", str(w.connections),
              "-d", str(w.size), "-r", str(KV_KEYSPACE), "-P", str(w.pipeline), "--csv"]
    # warm-up, key population and a rate estimate in one short run
    warm = run_command(pinned([*common, "-t", "set", "-n", "5000"], ctx.client_cpu),
                       timeout=60)
    if warm.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {(warm.stderr or warm.stdout)[-300:]}")
    estimate = parse_redis_csv(warm.stdout)["rps"]
    requests = max(5000, int(estimate * ctx.args.duration))
    sampler = Sampler(srv.proc)
    sampler.pss_due = time.monotonic() + ctx.args.duration / 2
    sampler.start()
    cpu0, t0 = server_cpu(srv), time.monotonic()
    try:
        proc = run_command(pinned([*common, "-t", w.command, "-n", str(requests)],
                                  ctx.client_cpu), timeout=120 + 4 * ctx.args.duration)
    finally:
        cpu1, t1 = server_cpu(srv), time.monotonic()
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {(proc.stderr or proc.stdout)[-300:]}")
    values = parse_redis_csv(proc.stdout)
    lat = {k: values[f"{k}_latency_ms"] * 1000.0 for k in ("p50", "p99", "max", "avg")
           if f"{k}_latency_ms" in values}
    if "avg" in lat:
        lat["mean"] = lat.pop("avg")
    rec: dict[str, Any] = {
        "requests": requests, "rps": values["rps"], "duration_s": t1 - t0,
        "cpu_s": cpu1 - cpu0, "latency_us": lat, "errors": 0, "timeouts": 0,
        "rss_peak": sampler.peak.rss, "fds_peak": sampler.peak.fds,
        "threads_peak": sampler.peak.threads,
    }
    if "ERR" in proc.stdout or "rror" in proc.stderr:
        rec["errors"] = 1
        rec["client_messages"] = proc.stderr[-300:]
    if sampler.pss_sample is not None:
        rec["pss_mid"] = sampler.pss_sample.pss
    return rec


def _measure_http(ctx: Context, w: Workload, srv: ServerProcess) -> dict[str, Any]:
    assert srv.proc is not None
    url = f"http://{HOST}:{srv.port}/{HTTP_FILE}"
    base = ["wrk", "-t1", "-c", str(w.connections), "--latency", "--timeout", "5s"]
    warm = run_command(pinned([*base, "-d", f"{max(1, round(ctx.args.warmup))}s", url],
                              ctx.client_cpu), timeout=60)
    if warm.returncode != 0:
        raise RuntimeError(f"wrk failed: {(warm.stderr or warm.stdout)[-300:]}")
    seconds = max(1, round(ctx.args.duration))
    sampler = Sampler(srv.proc)
    sampler.pss_due = time.monotonic() + seconds / 2
    sampler.start()
    cpu0, t0 = server_cpu(srv), time.monotonic()
    try:
        proc = run_command(pinned([*base, "-d", f"{seconds}s", url], ctx.client_cpu),
                           timeout=60 + 2 * seconds)
    finally:
        cpu1, t1 = server_cpu(srv), time.monotonic()
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {(proc.stderr or proc.stdout)[-300:]}")
    rec = parse_wrk(proc.stdout)
    rec.update(duration_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_peak=sampler.peak.rss,
               fds_peak=sampler.peak.fds, threads_peak=sampler.peak.threads)
    if "requests" not in rec:
        rec["requests"] = int(rec["rps"] * seconds)
    if sampler.pss_sample is not None:
        rec["pss_mid"] = sampler.pss_sample.pss
    return rec


# -- statistics and the report -----------------------------------------------------------


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


def targets(res: Results) -> list[Verdict]:
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
        ratio_line(f"echo 1 KiB x{n} conns, reactor requests per CPU-second vs asyncio", w,
                   "reactor-protocol", "asyncio", "req_per_cpu_s", 1.15, "req/CPU-s")
        if res.ok(w, "reactor-handler"):
            ratio_line(f"echo 1 KiB x{n} conns, reactor EchoHandler per CPU-second vs asyncio",
                       w, "reactor-handler", "asyncio", "req_per_cpu_s", 1.15, "req/CPU-s")
        ratio_line(f"echo 1 KiB x{n} conns, reactor vs uvloop (the next mark)", w,
                   "reactor-protocol", "uvloop", "req_per_cpu_s", None, "req/CPU-s")
        kernel = res.stat(w, "reactor-protocol", "kernel_share")
        if kernel is not None:
            # the kernel's socket calls are the same for both servers: where they are
            # most of the CPU, the ratio above is squeezed towards 1 whatever the loop does
            ratio_line(f"echo 1 KiB x{n} conns, reactor requests per user-space CPU-second "
                       f"vs asyncio (the kernel took {kernel.median:.0%} of the reactor's "
                       "CPU)", w, "reactor-protocol", "asyncio", "req_per_user_cpu_s", None,
                       "req/user-CPU-s")
    idle = next(iter(res.workloads("idle")), None)
    s = res.stat(idle, "reactor-protocol", "rss_per_conn") if idle else None
    if s is None or idle is None:
        out.append(Verdict("SKIP", "idle memory per connection: not measured"))
    else:
        n = res.ok(idle, "reactor-protocol")[0].get("established", 0)
        p = res.stat(idle, "reactor-protocol", "pss_per_conn")
        a = res.stat(idle, "asyncio", "rss_per_conn")
        extra = f"; asyncio {a.median:.0f} B" if a else ""
        text = (f"idle memory per connection at {n} connections: {s.median:.0f} B RSS "
                f"({p.median if p else 0:.0f} B PSS){extra}; target <= 600 B")
        if n < IDLE_CONNS:
            text += f" (fewer than {IDLE_CONNS} connections: ulimit -n)"
        out.append(Verdict("PASS" if s.median <= 600 else "FAIL", text))
    churn = next(iter(res.workloads("churn")), None)
    if churn is None:
        out.append(Verdict("SKIP", "churn: not measured"))
    else:
        ratio_line("churn (connect, request, close) x50, reactor connections per CPU-second "
                   "vs asyncio", churn, "reactor-protocol", "asyncio", "req_per_cpu_s", 1.5,
                   "conn/CPU-s")
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
               "stdlib-threading", "req_per_cpu_s", 0.95, "req/CPU-s")
    for command in ("get", "set"):
        ratio_line(f"kv {command.upper()} vs redis-server without pipelining, requests per "
                   "second (redis-benchmark)", f"kv-{command}", "kv", "redis-server", "rps",
                   0.5, "req/s")
        ratio_line(f"kv {command.upper()} vs redis-server, requests per server-CPU-second",
                   f"kv-{command}", "kv", "redis-server", "req_per_cpu_s", None, "req/CPU-s")
    ratio_line("HTTP GET, http.server on the threading facade vs on the standard library",
               "http-get", "http-facade", "http-stdlib", "req_per_cpu_s", None, "req/CPU-s")
    return out


# -- plots -------------------------------------------------------------------------------


def plot(res: Results, plot_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots")
        return []
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    palette = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
    color = {name: palette[i % len(palette)] for i, name in enumerate(SERVERS)}
    sizes = [s for s in (64, 1024, 65536)
             if any(w.startswith(f"echo-{SIZE_NAMES[s]}-") for w in res.workloads("echo"))]

    def curve(server: str, size: int, name: str) -> tuple[list[int], list[float],
                                                          list[float], list[float]]:
        xs, ys, lo, hi = [], [], [], []
        for n in ECHO_CONNS:
            s = res.stat(f"echo-{SIZE_NAMES[size]}-c{n}", server, name)
            if s is not None:
                xs.append(n)
                ys.append(s.median)
                lo.append(s.median - s.low)
                hi.append(s.high - s.median)
        return xs, ys, lo, hi

    def echo_figure(filename: str, rows: list[tuple[str, str, float]]) -> None:
        if not sizes:
            return
        fig, axes = plt.subplots(len(rows), len(sizes), figsize=(5 * len(sizes),
                                                                 3.6 * len(rows)),
                                 squeeze=False)
        for ri, (name, label, scale) in enumerate(rows):
            for ci, size in enumerate(sizes):
                ax = axes[ri][ci]
                for server in SERVERS:
                    xs, ys, lo, hi = curve(server, size, name)
                    if len(xs) < 1:
                        continue
                    ax.errorbar(xs, [y * scale for y in ys],
                                yerr=[[v * scale for v in lo], [v * scale for v in hi]],
                                marker="o", capsize=3, label=server, color=color[server],
                                linestyle="-" if SERVERS[server].ours else "--")
                ax.set_xscale("log")
                ax.set_xlabel("connections")
                ax.set_ylabel(label)
                ax.set_title(f"echo {SIZE_NAMES[size]}")
                ax.grid(True, alpha=0.3)
        seen: dict[str, Any] = {}
        for row in axes:
            for ax in row:
                for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                    seen.setdefault(name, handle)
        handles, labels = list(seen.values()), list(seen)
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        path = plot_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    echo_figure("throughput.png", [("rps", "requests/s", 1.0),
                                   ("req_per_cpu_s", "requests per server-CPU-second", 1.0)])
    echo_figure("latency_p99.png", [("p99", "p99 latency (ms)", 1e-3)])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for server in SERVERS:
        xs, ys, _lo, _hi = curve(server, 1024, "mem_per_conn")
        if xs:
            ax.plot(xs, ys, marker="o", label=f"{server} (echo 1 KiB, peak)", color=color[server],
                    linestyle="-" if SERVERS[server].ours else "--")
            drawn = True
    for wname in res.workloads("idle"):
        for server in res.servers_for(wname):
            s = res.stat(wname, server, "rss_per_conn")
            ok = res.ok(wname, server)
            if s is not None and ok:
                ax.scatter([ok[0].get("established", 1)], [s.median], marker="*", s=120,
                           label=f"{server} (idle)", zorder=3, color=color[server])
                drawn = True
    if drawn:
        ax.axhline(600, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel("server RSS per connection (bytes)")
        ax.set_title("memory per connection (RSS growth / connections)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = plot_dir / "memory_per_conn.png"
        fig.savefig(path, dpi=110)
        made.append(path)
    plt.close(fig)
    return made


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
        if res.workloads(kind):
            lines += [f"## {title}", "", *throughput_table(res, kind), ""]
    if res.workloads("idle"):
        lines += ["## Idle connections: memory per connection", "",
                  "RSS/conn = (server RSS with the connections held - RSS before) / "
                  "connections, each connection having made one 64 B request; PSS alike "
                  "(RSS sums the pages a forking server's children share, PSS divides them, "
                  "so compare forking servers by PSS; the ratio column uses PSS). "
                  "Kernel socket buffers are not in either.", "", *idle_table(res), ""]
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


# -- main --------------------------------------------------------------------------------


def ensure_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    log("building the load generator: " + " ".join(LOADGEN_BUILD))
    proc = subprocess.run(LOADGEN_BUILD, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cannot build {LOADGEN}: {proc.stderr}")


def choose_cpus() -> tuple[int | None, int | None]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        log(f"only CPU {cpus[0]} is available: server and load generator share it")
        return None, None
    return cpus[0], cpus[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="the short run (under 3 minutes): the targets' workloads once")
    parser.add_argument("--servers", help="comma-separated server names (default: all)")
    parser.add_argument("--workloads",
                        help="comma-separated workload names, prefixes or globs "
                             "(e.g. echo-1KiB, idle, 'echo-*-c100')")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3; --quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per run "
                                                       "(default 1.5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run "
                                                     "(default 0.5)")
    parser.add_argument("--out", type=Path, default=BENCH / "out",
                        help="directory for results.jsonl and logs (default bench/out)")
    parser.add_argument("--results", type=Path,
                        help="the Markdown report (default bench/RESULTS.md; with --quick, "
                             "OUT/RESULTS-quick.md)")
    parser.add_argument("--plots", type=Path,
                        help="directory for the PNG plots (default bench/plots; with "
                             "--quick, OUT/plots)")
    parser.add_argument("--loadgen-threads", type=int, default=1,
                        help="load generator threads (default 1)")
    parser.add_argument("--no-prime", action="store_true",
                        help="do not prime glibc's mmap threshold in the servers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list servers and workloads")
    parser.add_argument("--report", type=Path, metavar="JSONL",
                        help="measure nothing: rebuild the report, plots and PASS/FAIL lines "
                             "from the last run recorded in this results.jsonl")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the time estimate, run nothing")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 1.5
    if args.warmup is None:
        args.warmup = 0.5
    if args.results is None:
        args.results = args.out / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md"
    if args.plots is None:
        args.plots = args.out / "plots" if args.quick else BENCH / "plots"
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--repeat must be >= 1, --duration > 0, --warmup >= 0")
    return args


def list_all() -> None:
    print("servers:")
    for spec in SERVERS.values():
        why = unavailable(spec.name)
        state = "ok" if why is None else f"unavailable: {why}"
        print(f"  {spec.name:<20} {spec.service:<5} {spec.description} [{state}]")
    print("workloads:")
    for w in all_workloads():
        print(f"  {w.name}")


def progress(total: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)


def interleaved(plan: Plan, repeat: int) -> Iterator[tuple[int, Workload, str]]:
    """Every (repetition, workload, server); the server order rotates each repetition."""
    for rep in range(repeat):
        for w, servers in plan.steps:
            k = rep % len(servers)
            for server in servers[k:] + servers[:k]:
                yield rep, w, server


def rebuild_report(args: argparse.Namespace) -> int:
    """Write the report from the last run in a results.jsonl (``--report``)."""
    env: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with open(args.report) as f:
        for line in f:
            rec = json.loads(line)
            if "environment" in rec:
                env, run_id, records = rec["environment"], rec["run_id"], []
                skipped = rec.get("skipped") or {}
            elif env is not None and rec.get("run_id") == run_id:
                records.append(rec)
    if env is None or not records:
        log(f"{args.report}: no run recorded")
        return 2
    res = Results(records)
    verdicts = targets(res)
    plots = plot(res, args.plots)
    elapsed = sum(float(r.get("elapsed_s", 0)) for r in records)
    write_report(args.results, res, env, verdicts, plots, Plan(skipped=skipped), elapsed)
    print(summary(res, verdicts))
    print(f"\nreport rebuilt from {len(records)} measurements: {args.results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_all()
        return 0
    if args.report is not None:
        return rebuild_report(args)
    ensure_loadgen()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    server_cpu, client_cpu = choose_cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # this driver stays off the server's CPU
    plan = make_plan(args, fd_limit)
    for what, why in sorted(plan.skipped.items()):
        log(f"skipped: {what}: {why}")
    if not plan.steps:
        log("nothing to run")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "results.jsonl"
    env = environment(args, server_cpu, client_cpu)
    estimate = estimate_seconds(plan, args)
    if args.dry_run:
        for w, servers in plan.steps:
            print(f"{w.name:<18} {', '.join(servers)}")
        print(f"{plan.runs * args.repeat} measurements, about {estimate / 60:.1f} minutes")
        return 0
    log(f"{plan.runs * args.repeat} measurements, about {estimate / 60:.1f} minutes; "
        f"server on CPU {server_cpu}, load generator on CPU {client_cpu}; "
        f"raw results: {jsonl}")
    ctx = Context(args, server_cpu, client_cpu, fd_limit, args.out)
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    bar = progress(plan.runs * args.repeat, not args.no_progress)
    run_id = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    try:
        with open(jsonl, "a") as sink:
            sink.write(json.dumps({"run_id": run_id, "environment": env,
                                   "skipped": plan.skipped}) + "\n")
            for rep, w, server in interleaved(plan, args.repeat):
                if bar is not None:
                    bar.set_postfix_str(f"{w.name} {server}")
                t_start = time.monotonic()
                rec = measure(ctx, w, server, rep)
                rec["run_id"] = run_id
                rec["elapsed_s"] = round(time.monotonic() - t_start, 2)
                records.append(rec)
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                if "failed" in rec:
                    log(f"{w.name} {server}: failed: {rec['failed']}")
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.monotonic() - started
    res = Results(records)
    verdicts = targets(res)
    plots = plot(res, args.plots)
    write_report(args.results, res, env, verdicts, plots, plan, elapsed)
    print(summary(res, verdicts))
    print(f"\n{len(records)} measurements in {elapsed / 60:.1f} minutes; report: "
          f"{args.results}; raw: {jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

