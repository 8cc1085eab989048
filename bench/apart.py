"""What :mod:`bench.tls` and :mod:`bench.rpc` share: benchmarks run apart from
``bench.run``, each writing its own kept section of ``bench/RESULTS.md``.

The method is the benchmark's (see :mod:`bench.run`): every server runs in its own
process pinned to one CPU, a C client pinned to the other drives it and prints
``@measure``/``@done`` around the measured window, the server's CPU (user+sys of its
process tree) is read at those two moments, and the figure to compare is requests per
server-CPU-second. Repetitions are interleaved (the server order rotates), figures are
medians with min-max. Here: building a C client or server on the spot
(:func:`build`), one measurement (:func:`measure_window`), the order
(:func:`rotations`), and the section's table and target lines.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.clients import LoadgenRun
from bench.measure import server_cpu, start_server, stop_server
from bench.plan import BENCH, HOST, ROOT
from bench.procs import ServerProcess
from bench.report import Results, fmt_num, fmt_ratio, fmt_stat, md_table
from bench.run import choose_cpus

__all__ = ["CBENCH_H", "Harness", "build", "compose", "entry", "git_head", "options", "parse",
           "preamble", "progress", "ratio_line", "rotations", "server_options", "server_setup",
           "table"]


# the header the C clients share (a source of each)
CBENCH_H = BENCH / "cbench.h"


def build(binary: Path, commands: Sequence[Sequence[str]], sources: Sequence[Path],
          cwd: Path | None = None) -> str | None:
    """Run ``commands`` in turn (the last writes ``binary``) unless ``binary`` is newer
    than every source; None when it is there, else why it cannot be built."""
    if binary.exists() and all(binary.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    for command in commands:
        if shutil.which(command[0]) is None:
            return f"{command[0]} is not installed (bench/setup.sh installs it as root)"
        done = subprocess.run(list(command), capture_output=True, text=True, check=False,
                              timeout=300, cwd=cwd)
        if done.returncode != 0:
            return (f"cannot build {binary.name}: {command[0]}: "
                    f"{(done.stderr or done.stdout).strip()[-400:]}")
    return None if binary.exists() else f"cannot build {binary.name}"


def rotations(names: Sequence[str], reps: int) -> Iterator[tuple[int, str]]:
    """(repetition, name) in the benchmark's interleaved order: the order rotates by one
    each repetition."""
    for rep in range(reps):
        shift = rep % len(names)
        for name in [*names[shift:], *names[:shift]]:
            yield rep, name


def entry(argv: list[str] | None, markers: tuple[str, str], *,
          serve: Callable[[list[str]], int],
          parse: Callable[[list[str]], argparse.Namespace],
          run: Callable[[argparse.Namespace], list[dict[str, Any]]],
          section: Callable[[list[dict[str, Any]], argparse.Namespace], str]) -> int:
    """A benchmark's ``main``: ``serve ...`` runs one server; otherwise parse the options,
    run, and write the section (between ``markers``) into the report, and show it."""
    from bench.kept import write_section

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    args = parse(argv)
    text = section(run(args), args)
    write_section(args.results, markers, text)
    print(text)
    return 0


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class Harness:
    """Servers started pinned to one CPU, C clients run on the other; a context
    manager, during which this process, the driver, stays off the server's CPU too.

    Args:
        out: the directory of the servers' log (``servers.log``) and the raw records.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.server_cpu, self.client_cpu = choose_cpus()
        self.started = _dt.datetime.now().isoformat(timespec="seconds")
        self.load = os.getloadavg()
        self._affinity: set[int] | None = None

    def __enter__(self) -> Harness:
        if self.client_cpu is not None:
            self._affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.client_cpu})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._affinity is not None:
            os.sched_setaffinity(0, self._affinity)
            self._affinity = None

    def server(self, module: str, name: str, *extra: str) -> ServerProcess:
        """``python -m MODULE serve NAME EXTRA... --cpu N``, started; its ``PORT n``
        line read (``srv.port``).

        Raises:
            RuntimeError: it did not start.
        """
        cmd = [sys.executable, "-m", module, "serve", name, *extra]
        if self.server_cpu is not None:
            cmd += ["--cpu", str(self.server_cpu)]
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        srv = ServerProcess(cmd, cwd=ROOT, env={"PYTHONPATH": pythonpath},
                            log_path=self.out / "servers.log", stdout="pipe",
                            new_session=True, name=name)
        start_server(srv)
        return srv

    def measure_window(self, srv: ServerProcess, program: Path, args: list[str],
                       timeout: float) -> dict[str, Any]:
        """Run client ``program`` with ``args`` against ``srv``; its JSON result with
        the server's CPU over the measured window (``cpu_s``), requests per
        server-CPU-second and the server's share of its core."""
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[f"cpu_{name}"] = server_cpu(srv, self.server_cpu)
            marks[f"t_{name}"] = time.monotonic()

        run = LoadgenRun(args, self.client_cpu, program=program,
                         handlers={"measure": lambda _l: mark("0"),
                                   "done": lambda _l: mark("1")})
        rec = run.result(timeout=timeout)
        if "cpu_0" not in marks or "cpu_1" not in marks:
            raise RuntimeError(f"{program.name} did not report its measured window")
        cpu = marks["cpu_1"] - marks["cpu_0"]
        rec["cpu_s"] = cpu
        rec["wall_s"] = marks["t_1"] - marks["t_0"]
        if cpu > 0 and rec.get("requests"):
            rec["req_per_cpu_s"] = rec["requests"] / cpu
        if rec["wall_s"] > 0:
            rec["cpu_pct"] = 100.0 * cpu / rec["wall_s"]
        return rec

    def measure_all(self, module: str, servers: Sequence[str],
                    workloads: Sequence[tuple[str, list[str]]], program: Path, *, reps: int,
                    jsonl: Path, timeout: float, server_args: Sequence[str] = (),
                    extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every workload (name, the client's arguments but the address) against every
        server (``python -m MODULE serve SERVER SERVER_ARGS...``, a fresh one for each
        measurement), repetitions interleaved; the records, also appended to ``jsonl``
        and shown on stderr as they come. A measurement that fails is a record with
        ``failed``; so is one whose server logged a traceback."""
        records: list[dict[str, Any]] = []
        with self, open(jsonl, "a") as sink:
            for rep, server in rotations(servers, reps):
                for workload, client_args in workloads:
                    rec: dict[str, Any] = {"rep": rep, "workload": workload,
                                           "server": server, **(extra or {})}
                    srv = None
                    try:
                        srv = self.server(module, server, *server_args)
                        rec.update(self.measure_window(
                            srv, program, ["-H", HOST, "-p", str(srv.port), *client_args],
                            timeout))
                    except (RuntimeError, OSError, ValueError) as exc:
                        rec["failed"] = str(exc)
                    finally:
                        if srv is not None and stop_server(srv).get("traceback"):
                            rec.setdefault("failed", "the server logged a traceback")
                    records.append(rec)
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
                    print(progress(rec), file=sys.stderr, flush=True)
        return records

    def conditions(self) -> str:
        """The sentence on where and when it ran, for the section."""
        pins = (f"servers pinned to CPU {self.server_cpu}, the client to CPU "
                f"{self.client_cpu}" if self.client_cpu is not None
                else "server and client sharing one CPU")
        return (f"{self.started}, git {git_head()}, {pins}, load average at the start "
                f"{self.load[0]:.2f}")


def progress(rec: dict[str, Any]) -> str:
    """One measurement, in a line."""
    head = f"rep {rec['rep']} {rec['workload']:<20} {rec['server']:<8}"
    if "failed" in rec:
        return f"{head} failed: {rec['failed']}"
    return (f"{head} {rec.get('req_per_cpu_s', 0) / 1e3:7.1f}k per server-CPU-s, "
            f"{rec.get('rps', 0) / 1e3:7.1f}k per s, server CPU {rec.get('cpu_pct', 0):.0f} %, "
            f"errors {rec.get('errors', 0)}, timeouts {rec.get('timeouts', 0)}")


def options(name: str, doc: str | None) -> argparse.ArgumentParser:
    """``python -m bench.NAME``'s parser with the options every such benchmark takes
    (repetitions, timing, where it writes); see :func:`parse`."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}",
                                     description=(doc or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="measured seconds per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="warm-up seconds per run (default 0.5)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md",
                        help=f"the report whose bench.{name} section is written "
                             "(default bench/RESULTS.md)")
    parser.add_argument("--out", type=Path, default=BENCH / "out",
                        help=f"directory for {name}.jsonl and servers.log (default bench/out)")
    parser.add_argument("--note", default="",
                        help="a sentence put beside the figures (e.g. how busy the machine "
                             "was)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str], *positive: str
          ) -> argparse.Namespace:
    """The options (``argv`` kept for the report), checked: the common ones and the
    integers named in ``positive`` (attribute names) at least 1."""
    args = parser.parse_args(argv)
    args.argv = argv
    if args.reps < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--reps must be >= 1, --duration > 0, --warmup >= 0")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def server_options(name: str, servers: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``python -m bench.NAME serve SERVER [--host H] [--cpu N]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name} serve")
    parser.add_argument("name", choices=servers)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--cpu", type=int)
    return parser


def server_setup(args: argparse.Namespace) -> None:
    """What every benchmark server does before it binds (as :mod:`bench.servers`):
    prime the allocator, pin itself to ``--cpu``, raise its descriptor limit."""
    from bench.servers import prime_allocator, raise_fd_limit

    prime_allocator()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_fd_limit()


def preamble(module: str, args: argparse.Namespace, conditions: str) -> str:
    """The section's first paragraph: the command, where and when, the repetitions."""
    note = f" {args.note.strip()}" if args.note.strip() else ""
    shown = [a for i, a in enumerate(args.argv)  # the note is shown as a sentence
             if not a.startswith("--note") and args.argv[i - 1:i] != ["--note"]]
    command = " ".join(["python -m", module, *shown])
    return (f"Measured apart from `bench/run.py`, which keeps this section: `{command}` "
            f"({conditions}).{note} Medians (min-max) of {args.reps} interleaved "
            f"repetition(s), {args.warmup} s warm-up + {args.duration} s measured each; "
            "the figure to compare is per server-CPU-second (requests / user+sys CPU of "
            "the server's process during the measured window).")


def compose(markers: tuple[str, str], title: str, paragraphs: Sequence[str],
            targets: Sequence[str], rows: Sequence[str]) -> str:
    """A section: its markers around the title, the paragraphs, the target lines (in a
    code block, as in the Targets section) and the table."""
    body = [f"## {title}", ""]
    for paragraph in paragraphs:
        body += [paragraph, ""]
    return "\n".join([markers[0], *body, "```", *targets, "```", "", *rows, markers[1]])


def table(res: Results, workloads: Sequence[tuple[str, str]], base: str,
          latency: bool = True) -> list[str]:
    """The section's Markdown table: per workload (name, unit) and server, requests (or
    connections) per server-CPU-second with min-max, the ratio to ``base``, per second,
    the server's CPU share, the mean latency (if the client measures it) and the
    client's errors."""
    header = ["workload", "server", "per server-CPU-s", f"x {base}", "per s", "server CPU %",
              "mean ms", "errors/timeouts"]
    if not latency:
        header.remove("mean ms")
    rows = []
    for wname, unit in workloads:
        for server in sorted({s for (w, s) in res.groups if w == wname},
                             key=lambda s: (s != base, s)):
            runs = res.groups[(wname, server)]
            if not res.ok(wname, server):
                rows.append([wname, server, "failed: " + str(runs[0].get("failed"))[:80]]
                            + ["-"] * (len(header) - 3))
                continue
            errors = res.total(wname, server, "errors") + res.total(
                wname, server, "connect_errors")
            row = [
                wname, server,
                fmt_stat(res.stat(wname, server, "req_per_cpu_s")) + f" {unit}",
                fmt_ratio(res.ratio(wname, server, base, "req_per_cpu_s")),
                fmt_stat(res.stat(wname, server, "rps")),
                fmt_stat(res.stat(wname, server, "cpu_pct"), spread=False),
                fmt_stat(res.stat(wname, server, "mean"), 1e-3, 2, spread=False),
                f"{errors}/{res.total(wname, server, 'timeouts')}",
            ]
            if not latency:
                del row[6]
            rows.append(row)
    return md_table(header, rows)


def ratio_line(res: Results, label: str, workload: str, ours: str, base: str,
               goal: float | None, unit: str) -> str:
    """A target line: PASS/FAIL against ``goal`` (INFO without one; SKIP when a side
    has no figure), requests per server-CPU-second of ``ours`` over ``base``."""
    a = res.stat(workload, ours, "req_per_cpu_s")
    b = res.stat(workload, base, "req_per_cpu_s")
    if a is None or b is None or not b.median:
        return f"SKIP {label}: not measured ({ours} and {base} on {workload} needed)"
    r = a.median / b.median
    text = (f"{label}: {r:.2f}x ({ours} {fmt_num(a.median)} vs {base} {fmt_num(b.median)} "
            f"{unit}, median of {min(a.n, b.n)}")
    if goal is None:
        return f"INFO {text})"
    return f"{'PASS' if r >= goal else 'FAIL'} {text}; target >= {goal}x)"
