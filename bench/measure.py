"""One measurement: start a server, drive it with a client, sample it from outside.

:func:`start_server` runs a server of :mod:`bench.servers` (or ``redis-server``) as a
:class:`bench.procs.ServerProcess` pinned to the server's CPU, its log appended to
``OUT/servers.log``; :func:`measure` runs one workload against it and returns the
record (requests, latency, the server's CPU over the measured window, peak RSS, PSS,
descriptors, threads). Part of ``python -m bench.run``; must not import the report,
plots or :mod:`bench.run`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.clients import LoadgenRun, parse_redis_csv, parse_wrk, pinned, run_command
from bench.plan import HOST, IDLE_CONNS, KV_KEYSPACE, ROOT, SAMPLE_INTERVAL, Workload
from bench.procs import ServerProcess, Usage, core_busy, free_port, wait_for_port
from bench.servers import BACKLOG, HTTP_FILE, SERVERS, ServerSpec

__all__ = ["Context", "loadgen_args", "make_server", "measure", "server_cpu", "start_server",
           "stop_server"]


# -- the server under test ---------------------------------------------------------------


def make_server(name: str, cpu: int | None, log_path: Path, prime: bool) -> ServerProcess:
    """Server ``name`` as a process to start (its own session, for clean-up), pinned to
    ``cpu``, its log appended to ``log_path``; ``--no-prime`` unless ``prime``."""
    if name == "redis-server":
        port = free_port(HOST)
        pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which(
            "taskset") else []
        cmd = [*pin, "redis-server", "--port", str(port), "--bind", HOST,
               "--save", "", "--appendonly", "no", "--tcp-backlog", str(BACKLOG),
               "--protected-mode", "no", "--maxclients", str(IDLE_CONNS + 1000),
               "--loglevel", "warning", "--daemonize", "no"]
        srv = ServerProcess(cmd, log_path=log_path, stdout="log", new_session=True,
                            name=name)
        srv.port = port  # known in advance: start_server waits until it accepts
        return srv
    cmd = [sys.executable, "-m", "bench.servers", name, "--host", HOST, "--port", "0"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if not prime:
        cmd.append("--no-prime")
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return ServerProcess(cmd, cwd=ROOT, env={"PYTHONPATH": pythonpath}, log_path=log_path,
                         stdout="pipe", new_session=True, name=name)


def start_server(srv: ServerProcess, timeout: float = 30.0) -> None:
    """Start ``srv`` (from :func:`make_server`) and wait until it listens: its ``PORT N``
    line (then ``srv.port``), or for redis-server its port accepting.

    Raises:
        RuntimeError: it did not start or listen within ``timeout`` (it is stopped).
    """
    deadline = time.monotonic() + timeout
    srv.start()
    if srv.port:
        if not wait_for_port(HOST, srv.port, deadline):
            stop_server(srv)
            raise RuntimeError(f"{srv.name} did not listen within {timeout} s")
        return
    line = srv.read_line(deadline)
    if not line.startswith("PORT "):
        stop_server(srv)
        raise RuntimeError(f"{srv.name} did not start (see {srv.log_path}): {line!r}")
    srv.port = int(line.split()[1])


def stop_server(srv: ServerProcess) -> dict[str, Any]:
    """SIGTERM, then SIGKILL the whole session after 5 s; report how it ended."""
    if not srv.started:
        return {"exit": None, "traceback": False}
    alive_before = srv.running()
    code = srv.stop(signal.SIGTERM, 5, kill_after=True)
    return {"exit": code, "died_early": not alive_before, "traceback": "Traceback" in srv.log}


def server_cpu(srv: ServerProcess, cpu: int | None) -> float:
    """CPU seconds used by server ``srv`` (pinned to ``cpu``) so far.

    Usually the sum over its process tree, reaped children included. A forking server's
    tree holds a process per connection (a thousand at 1 000 connections), whose short
    CPU slices the per-process counters under-report; as every server process is pinned
    to one core and the load generator to another, the busy time of that core is the
    faithful figure there.
    """
    if "forking" in srv.name and cpu is not None:
        busy = core_busy(cpu)
        if busy is not None:
            return busy
    return srv.sampler.cpu_seconds(reaped=True)


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
    srv = make_server(server, ctx.server_cpu, ctx.out / "servers.log", not ctx.args.no_prime)
    try:
        start_server(srv)
        time.sleep(0.2)
        base = srv.sampler.usage(pss=True)
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
        end = stop_server(srv)
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


def loadgen_args(w: Workload, port: int, conns: int, warmup: float, duration: float,
                 threads: int = 1) -> list[str]:
    """bench/bin/loadgen's arguments for an echo or churn workload ``w`` against
    ``port``: ``conns`` connections (churn: concurrent slots), ``warmup`` seconds, then
    ``duration`` measured seconds between its ``@measure`` and ``@done`` events."""
    mode = "echo" if w.kind == "echo" else "churn"
    args = ["-m", mode, "-H", HOST, "-p", str(port), "-c", str(conns), "-s", str(w.size),
            "-w", str(warmup), "-d", str(duration), "-t", str(threads),
            "--connect-timeout", "60"]
    if mode == "churn":
        # close with RST: otherwise tens of thousands of client-side TIME_WAIT sockets
        # make the load generator's ephemeral-port search the bottleneck (and add
        # ~100 ms tails), whatever the server does
        args.append("--linger0")
    return args


def _measure_echo(ctx: Context, w: Workload, srv: ServerProcess,
                  spec: ServerSpec) -> dict[str, Any]:
    conns, limited = _conn_limit(ctx, w.connections)
    args = loadgen_args(w, srv.port, conns, ctx.args.warmup, ctx.args.duration,
                        ctx.args.loadgen_threads)
    watch = srv.sampler.watch(SAMPLE_INTERVAL)
    marks: dict[str, float] = {}

    def at_measure(_line: str) -> None:
        marks["cpu0"] = server_cpu(srv, ctx.server_cpu)
        user = srv.sampler.user_cpu()
        if user is not None:
            marks["user0"] = user
        marks["t0"] = time.monotonic()
        watch.pss_due = time.monotonic() + ctx.args.duration / 2

    def at_done(_line: str) -> None:
        marks["cpu1"] = server_cpu(srv, ctx.server_cpu)
        user = srv.sampler.user_cpu()
        if user is not None:
            marks["user1"] = user
        marks["t1"] = time.monotonic()

    watch.start()
    try:
        run = LoadgenRun(args, ctx.client_cpu)
        run.handlers = {"measure": at_measure, "done": at_done}
        result = run.result(timeout=90 + ctx.args.warmup + ctx.args.duration)
    finally:
        watch.stop()
    rec = _from_loadgen(result)
    rec["limited_by_ulimit"] = limited or bool(result.get("limited_by_ulimit"))
    if "cpu0" in marks and "cpu1" in marks:
        rec["cpu_s"] = marks["cpu1"] - marks["cpu0"]
        rec["wall_s"] = marks["t1"] - marks["t0"]
    if "user0" in marks and "user1" in marks:
        rec["user_cpu_s"] = marks["user1"] - marks["user0"]
    peak = watch.highest
    rec.update(rss_peak=peak.rss, fds_peak=peak.fds, threads_peak=peak.threads,
               procs_peak=peak.procs)
    if watch.pss_sample is not None:
        rec["pss_mid"] = watch.pss_sample.pss
        rec["rss_mid"] = watch.pss_sample.rss
    return rec


def _from_loadgen(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("established", "requests", "bytes", "rps", "mib_s", "errors", "timeouts",
            "connect_errors", "closed_by_peer", "duration_s", "connect_s", "latency_us",
            "loadgen_messages", "threads")
    rec = {k: result[k] for k in keys if k in result}
    rec["loadgen_threads"] = rec.pop("threads", 1)
    return rec


def _measure_idle(ctx: Context, w: Workload, srv: ServerProcess, spec: ServerSpec,
                  base: Usage) -> dict[str, Any]:
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
        held = srv.sampler.usage(pss=True)
        time.sleep(0.3)
        held2 = srv.sampler.usage(pss=True)
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
    common = ["redis-benchmark", "-h", HOST, "-p", str(srv.port), "-c", str(w.connections),
              "-d", str(w.size), "-r", str(KV_KEYSPACE), "-P", str(w.pipeline), "--csv"]
    # warm-up, key population and a rate estimate in one short run
    warm = run_command(pinned([*common, "-t", "set", "-n", "5000"], ctx.client_cpu),
                       timeout=60)
    if warm.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {(warm.stderr or warm.stdout)[-300:]}")
    estimate = parse_redis_csv(warm.stdout)["rps"]
    requests = max(5000, int(estimate * ctx.args.duration))
    watch = srv.sampler.watch(SAMPLE_INTERVAL)
    watch.pss_due = time.monotonic() + ctx.args.duration / 2
    watch.start()
    cpu0, t0 = server_cpu(srv, ctx.server_cpu), time.monotonic()
    try:
        proc = run_command(pinned([*common, "-t", w.command, "-n", str(requests)],
                                  ctx.client_cpu), timeout=120 + 4 * ctx.args.duration)
    finally:
        cpu1, t1 = server_cpu(srv, ctx.server_cpu), time.monotonic()
        watch.stop()
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
        "rss_peak": watch.highest.rss, "fds_peak": watch.highest.fds,
        "threads_peak": watch.highest.threads,
    }
    if "ERR" in proc.stdout or "rror" in proc.stderr:
        rec["errors"] = 1
        rec["client_messages"] = proc.stderr[-300:]
    if watch.pss_sample is not None:
        rec["pss_mid"] = watch.pss_sample.pss
    return rec


def _measure_http(ctx: Context, w: Workload, srv: ServerProcess) -> dict[str, Any]:
    url = f"http://{HOST}:{srv.port}/{HTTP_FILE}"
    base = ["wrk", "-t1", "-c", str(w.connections), "--latency", "--timeout", "5s"]
    warm = run_command(pinned([*base, "-d", f"{max(1, round(ctx.args.warmup))}s", url],
                              ctx.client_cpu), timeout=60)
    if warm.returncode != 0:
        raise RuntimeError(f"wrk failed: {(warm.stderr or warm.stdout)[-300:]}")
    seconds = max(1, round(ctx.args.duration))
    watch = srv.sampler.watch(SAMPLE_INTERVAL)
    watch.pss_due = time.monotonic() + seconds / 2
    watch.start()
    cpu0, t0 = server_cpu(srv, ctx.server_cpu), time.monotonic()
    try:
        proc = run_command(pinned([*base, "-d", f"{seconds}s", url], ctx.client_cpu),
                           timeout=60 + 2 * seconds)
    finally:
        cpu1, t1 = server_cpu(srv, ctx.server_cpu), time.monotonic()
        watch.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {(proc.stderr or proc.stdout)[-300:]}")
    rec = parse_wrk(proc.stdout)
    rec.update(duration_s=t1 - t0, cpu_s=cpu1 - cpu0, rss_peak=watch.highest.rss,
               fds_peak=watch.highest.fds, threads_peak=watch.highest.threads)
    if "requests" not in rec:
        rec["requests"] = int(rec["rps"] * seconds)
    if watch.pss_sample is not None:
        rec["pss_mid"] = watch.pss_sample.pss
    return rec
