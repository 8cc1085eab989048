"""The benchmark's own precision (issue 12): how far apart the repetitions of the rows
behind the CPU-second targets came out, as a PASS/FAIL line beside the targets.

A target's verdict is a ratio of two medians; when one repetition of a server comes out
20-40 % off the others (this shared machine's noise: a neighbour's burst, a frequency
change), the ratio can swing across its goal from one run to the next. The issue asks
for spreads under 10 %. This line says, for every run, whether that held, and names the
row that spread most, so a PASS or FAIL above it can be read for what it is worth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.report import Results, Verdict

PRECISION_GOAL = 0.10  # (max - min) / median of a row's repetitions
# the rows behind the per-CPU-second targets against uvloop
SERVERS = ("reactor-protocol", "uvloop")
ECHO_WORKLOADS = ("echo-1KiB-c100", "echo-1KiB-c1000")


def spreads(res: Results) -> list[tuple[float, str, str]]:
    """(spread, workload, server) of each target row repeated at least twice."""
    churn = next(iter(res.workloads("churn")), None)
    workloads = [*ECHO_WORKLOADS, *([churn] if churn else [])]
    out = []
    for workload in workloads:
        for server in SERVERS:
            s = res.stat(workload, server, "req_per_cpu_s")
            if s is not None and s.n >= 2 and s.median > 0:
                out.append(((s.high - s.low) / s.median, workload, server))
    return out


def precision_verdict(res: Results) -> Verdict:
    """PASS when every target row's repetitions spread by less than the goal."""
    from bench.report import Verdict  # the report imports this module

    found = spreads(res)
    label = "precision of the CPU-second targets' rows against uvloop"
    if not found:
        return Verdict("SKIP", f"{label}: fewer than 2 repetitions")
    worst, workload, server = max(found)
    text = (f"{label}: largest spread {worst:.0%} ({server} on {workload}; (max-min)/median "
            f"of its repetitions), {len(found)} rows; target < {PRECISION_GOAL:.0%}")
    return Verdict("PASS" if worst < PRECISION_GOAL else "FAIL", text)
