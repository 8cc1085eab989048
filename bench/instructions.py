"""User-space instructions per echo request (or per churned connection) under
callgrind: the figure that does not move with the machine's load.

Usage::

    python -m bench.instructions [SERVER] [--connections 100] [--size 1024] [--seeds N]
    python -m bench.instructions [SERVER] --mode churn [--connections 50]

In churn mode each of the load's slots connects, makes one request and closes, again
and again: the figure is the instructions per connection, accept to close.

The server (a name from :mod:`bench.servers`, ``reactor-protocol`` by default) runs under
``valgrind --tool=callgrind`` on CPU 0 while ``bench/bin/loadgen`` drives it from CPU 1,
once for a short load and once for a long one; the difference of the two instruction
totals over the difference of the two request counts is the marginal cost of one
request, without start-up and shutdown. ``PYTHONHASHSEED`` is fixed so two runs of the
same code execute the same instructions. Needs valgrind and the load generator
(``make bench/bin/loadgen``).

One hash seed is one memory layout of the interpreter's dicts and sets, and a change
elsewhere in the code can move a figure by a few per cent through the layout alone.
``--seeds N`` measures under ``PYTHONHASHSEED`` 0 to N-1 and prints each figure, their
median and their range: compare medians, and read a difference smaller than the range
as no difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "bin" / "loadgen"


def one_load(server: str, seconds: float, connections: int, size: int,
             seed: int = 0, mode: str = "echo", *, module: str = "bench.servers",
             during: Callable[[dict[str, str]], AbstractContextManager[object]] | None = None,
             ) -> tuple[int, int]:
    """Run ``server`` under callgrind for one load with ``PYTHONHASHSEED=seed``;
    return (instructions, requests).

    ``module`` runs the server (``python -m MODULE SERVER --cpu 0``); it prints
    ``KEY VALUE`` lines, ``PORT N`` last. ``during``, given those lines as a dict, is a
    context manager held while the load runs (``bench.observe``'s scraper)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        srv = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", module, server, "--cpu", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert srv.stdout is not None
        port = None
        announced: dict[str, str] = {}
        while port is None:
            line = srv.stdout.readline()
            if not line:
                raise SystemExit(f"{server} exited before it printed its port")
            key, _, value = line.strip().partition(" ")
            announced[key] = value
            match = re.match(r"PORT (\d+)", line)
            if match:
                port = match.group(1)
        with during(announced) if during is not None else contextlib.nullcontext():
            load = subprocess.run(
                [str(LOADGEN), "-m", mode, "-p", port, "-c", str(connections), "-s",
                 str(size), "-w", "0",
                 "-d", str(seconds), "--cpu", "1", "-T", "30"],
                capture_output=True, text=True, timeout=seconds + 120, check=True)
        srv.send_signal(signal.SIGINT)
        srv.wait(120)
        total = None
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if total is None:
            raise SystemExit("callgrind wrote no total")
    return total, int(json.loads(load.stdout)["requests"])


def per_request(server: str, args: argparse.Namespace, seed: int,
                **load: Any) -> dict[str, Any]:
    """The marginal instructions per request under one hash seed (two loads;
    ``load``: :func:`one_load`'s ``module`` and ``during``)."""
    short = one_load(server, args.short, args.connections, args.size, seed, args.mode, **load)
    long = one_load(server, args.long, args.connections, args.size, seed, args.mode, **load)
    return {"seed": seed, "instructions": [short[0], long[0]],
            "requests": [short[1], long[1]],
            "instructions_per_request": round((long[0] - short[0]) / (long[1] - short[1]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("server", nargs="?", default="reactor-protocol")
    parser.add_argument("--mode", choices=("echo", "churn"), default="echo",
                        help="echo: per request (default); churn: per connection")
    parser.add_argument("--connections", type=int, default=None,
                        help="connections (churn: concurrent slots); default 100 (churn 50)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--short", type=float, default=3.0, help="seconds of the short load")
    parser.add_argument("--long", type=float, default=9.0, help="seconds of the long load")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="measure under PYTHONHASHSEED 0..N-1; print each figure, the "
                             "median and the range (default 1: seed 0 only)")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = 50 if args.mode == "churn" else 100
    result: dict[str, Any] = {"server": args.server, "mode": args.mode,
                              "connections": args.connections, "size": args.size}
    if args.seeds <= 1:  # the one-line output of before, seed 0
        run = per_request(args.server, args, 0)
        del run["seed"]
        print(json.dumps({**result, **run}))
        return 0
    runs = []
    for seed in range(args.seeds):
        runs.append(per_request(args.server, args, seed))
        print(f"seed {seed}: {runs[-1]['instructions_per_request']} instructions per request",
              flush=True)
    figures = [run["instructions_per_request"] for run in runs]
    low, high, median = min(figures), max(figures), statistics.median(figures)
    print(f"median {median:.0f}, range {low}-{high} ({(high - low) / median:.1%} of the "
          f"median) over {len(figures)} seeds", flush=True)
    print(json.dumps({**result, "seeds": len(runs), "per_seed": figures,
                      "instructions_per_request": round(median), "range": [low, high],
                      "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
