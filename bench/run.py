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

This module parses the options and runs the plan; the parts are :mod:`bench.plan` (the
workloads and what runs them), :mod:`bench.procs` (a server process, sampled from
outside; shared with the tests), :mod:`bench.clients` (the load generators and their
output), :mod:`bench.measure` (one measurement), :mod:`bench.report` (statistics,
targets, RESULTS.md) and :mod:`bench.plots`.

Examples::

    python -m bench.run                     # the full run (under 20 minutes)
    python -m bench.run --quick             # under 3 minutes
    python -m bench.run --servers reactor-protocol,asyncio,uvloop \\
        --workloads echo-1KiB-c100,echo-1KiB-c1000,idle --repeat 3
    python -m bench.run --list              # servers and workloads
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.clients import ensure_c_echo, ensure_loadgen, parse_redis_csv, parse_wrk
from bench.measure import Context, measure
from bench.plan import (
    BENCH,
    Plan,
    Workload,
    all_workloads,
    estimate_seconds,
    interleaved,
    log,
    make_plan,
)
from bench.plots import plot
from bench.report import Results, environment, summary, targets, write_report
from bench.servers import SERVERS, unavailable

__all__ = ["Workload", "all_workloads", "main", "parse_redis_csv", "parse_wrk"]


# -- main --------------------------------------------------------------------------------


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
    ensure_c_echo()
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

