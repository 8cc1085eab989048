"""The benchmark's targets (issue 12) as PASS/FAIL lines, from literal records (the
way tests/test_bench.py tests the report)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.report import Results, Verdict, targets


def _rec(workload: str, server: str, per_cpu: float, rps: float | None = None,
         **extra: Any) -> dict[str, Any]:
    kind = workload.split("-", maxsplit=1)[0]
    return {"workload": workload, "kind": kind, "server": server,
            "rps": per_cpu if rps is None else rps, "req_per_cpu_s": per_cpu,
            "requests": 1000, "latency_us": {"p99": 1000.0}, **extra}


def _idle(server: str, rss_per_conn: float) -> dict[str, Any]:
    return {"workload": "idle-c10000", "kind": "idle", "server": server,
            "established": 10000, "rss_per_conn": rss_per_conn,
            "pss_per_conn": rss_per_conn - 10}


def _verdict(records: list[dict[str, Any]], label: str) -> Verdict:
    found = [v for v in targets(Results(records)) if v.text.split(":")[0] == label]
    assert len(found) == 1, [v.line() for v in targets(Results(records))]
    return found[0]


# (label, workload, ours, base, goal, figure): a ratio line with a target
RATIO_TARGETS = [
    ("echo 1 KiB x100 conns, reactor requests per CPU-second vs uvloop", "echo-1KiB-c100",
     "reactor-protocol", "uvloop", 1.05, "req_per_cpu_s"),
    ("echo 1 KiB x1000 conns, reactor requests per CPU-second vs uvloop", "echo-1KiB-c1000",
     "reactor-protocol", "uvloop", 1.05, "req_per_cpu_s"),
    ("churn (connect, request, close) x50, reactor connections per CPU-second vs uvloop",
     "churn-c50", "reactor-protocol", "uvloop", 1.0, "req_per_cpu_s"),
    ("threading facade vs the standard library's ThreadingTCPServer, echo 1 KiB x100, "
     "requests per CPU-second", "echo-1KiB-c100", "facade-threading", "stdlib-threading",
     1.0, "req_per_cpu_s"),
    ("kv GET vs redis-server without pipelining, requests per second (redis-benchmark)",
     "kv-get", "kv", "redis-server", 0.8, "rps"),
    ("kv SET vs redis-server without pipelining, requests per second (redis-benchmark)",
     "kv-set", "kv", "redis-server", 0.8, "rps"),
    ("kv GET -P 16 vs redis-server, requests per server-CPU-second", "kv-get-P16", "kv",
     "redis-server", 0.3, "req_per_cpu_s"),
    ("kv SET -P 16 vs redis-server, requests per server-CPU-second", "kv-set-P16", "kv",
     "redis-server", 0.3, "req_per_cpu_s"),
]


def _pair(workload: str, ours: str, base: str, ratio: float, figure: str,
          other: float = 1.0) -> list[dict[str, Any]]:
    """Records where ``ours`` is ``ratio`` times ``base`` in ``figure`` and ``other``
    times it in the other figure (so that a line reads the figure it says)."""
    if figure == "rps":
        return [_rec(workload, ours, 1000.0 * other, rps=1000.0 * ratio),
                _rec(workload, base, 1000.0, rps=1000.0)]
    return [_rec(workload, ours, 1000.0 * ratio, rps=1000.0 * other),
            _rec(workload, base, 1000.0, rps=1000.0)]


@pytest.mark.parametrize(("label", "workload", "ours", "base", "goal", "figure"),
                         RATIO_TARGETS)
@pytest.mark.parametrize(("factor", "status"), [(0.9, "FAIL"), (1.0, "PASS"), (1.1, "PASS")])
def test_a_ratio_below_its_goal_fails_and_at_or_above_passes(
        label: str, workload: str, ours: str, base: str, goal: float, figure: str,
        factor: float, status: str) -> None:
    # the other figure is on the other side of the goal: the line must not read it
    other = 2.0 if status == "FAIL" else 0.1
    v = _verdict(_pair(workload, ours, base, goal * factor, figure, other), label)
    assert v.status == status
    assert f"target >= {goal}x" in v.text
    assert f"{goal * factor:.2f}x" in v.text


@pytest.mark.parametrize(("label", "workload", "ours", "base", "goal", "figure"),
                         RATIO_TARGETS)
def test_a_target_without_both_servers_is_skipped_with_the_reason(
        label: str, workload: str, ours: str, base: str, goal: float, figure: str) -> None:
    v = _verdict([_rec(workload, ours, 1000.0)], label)
    assert v.status == "SKIP"
    assert f"{ours} and {base} on {workload} needed" in v.text


def test_the_goals_are_issue_12s_table() -> None:
    assert report.ECHO_GOAL_VS_UVLOOP == 1.05
    assert report.CHURN_GOAL_VS_UVLOOP == 1.0
    assert report.IDLE_GOAL_BYTES == 300
    assert report.KV_GOAL_VS_REDIS == 0.8
    assert report.KV_PIPELINED_GOAL_VS_REDIS == 0.3
    assert report.FACADE_GOAL_VS_STDLIB == 1.0


@pytest.mark.parametrize(("rss", "status"), [(301.0, "FAIL"), (300.0, "PASS"),
                                             (256.0, "PASS")])
def test_idle_memory_is_checked_against_300_bytes(rss: float, status: str) -> None:
    records = [_idle("reactor-protocol", rss), _idle("asyncio", 1876.0),
               _idle("uvloop", 1266.0), _idle("c-epoll", 40.0)]
    v = _verdict(records, "idle memory per connection at 10000 connections")
    assert v.status == status
    assert "target <= 300 B" in v.text
    assert "asyncio 1876 B, uvloop 1266 B, c-epoll 40 B" in v.text


def test_asyncio_and_the_c_floor_are_info_lines() -> None:
    records = [
        _rec("echo-1KiB-c100", "reactor-protocol", 120.0),
        _rec("echo-1KiB-c100", "asyncio", 100.0),
        _rec("echo-1KiB-c100", "uvloop", 125.0),
        _rec("echo-1KiB-c100", "c-epoll", 150.0),
        _rec("churn-c50", "reactor-protocol", 50.0),
        _rec("churn-c50", "asyncio", 25.0),
        _rec("churn-c50", "c-epoll", 100.0),
    ]
    by_label = {v.text.split(":")[0]: v for v in targets(Results(records))}
    vs_asyncio = by_label["echo 1 KiB x100 conns, reactor requests per CPU-second vs asyncio"]
    assert (vs_asyncio.status, "1.20x" in vs_asyncio.text) == ("INFO", True)
    floor = by_label["echo 1 KiB x100 conns, reactor vs c-epoll (the floor)"]
    assert (floor.status, "0.80x" in floor.text) == ("INFO", True)
    uv_floor = by_label["echo 1 KiB x100 conns, uvloop vs c-epoll"]
    assert (uv_floor.status, "0.83x" in uv_floor.text) == ("INFO", True)
    churn_asyncio = by_label["churn x50, reactor connections per CPU-second vs asyncio"]
    assert (churn_asyncio.status, "2.00x" in churn_asyncio.text) == ("INFO", True)
    churn_floor = by_label["churn x50, reactor connections per CPU-second vs c-epoll "
                           "(the floor)"]
    assert (churn_floor.status, "0.50x" in churn_floor.text) == ("INFO", True)
    # uvloop was not measured on churn: the target cannot be computed
    churn = by_label["churn (connect, request, close) x50, reactor connections per "
                     "CPU-second vs uvloop"]
    assert churn.status == "SKIP" and "uvloop on churn-c50 needed" in churn.text
    # no PASS/FAIL line compares with asyncio or the floor any more
    assert all(v.status in ("INFO", "SKIP") for v in by_label.values()
               if "asyncio" in v.text.split(":")[0] or "c-epoll" in v.text.split(":")[0])


PRECISION = "precision of the CPU-second targets' rows against uvloop"


def _repeated(spread: dict[tuple[str, str], tuple[float, float, float]]) -> list[dict[str, Any]]:
    """Three repetitions of each target row, 100k per CPU-second unless ``spread`` says."""
    records = []
    for workload in ("echo-1KiB-c100", "echo-1KiB-c1000", "churn-c50"):
        for server in ("reactor-protocol", "uvloop"):
            for value in spread.get((workload, server), (99e3, 100e3, 101e3)):
                records.append(_rec(workload, server, value))
    return records


def test_precision_passes_when_every_target_row_spreads_under_10_percent() -> None:
    verdict = _verdict(_repeated({}), PRECISION)
    assert verdict.status == "PASS"
    assert "largest spread 2%" in verdict.text and "6 rows" in verdict.text


def test_precision_fails_and_names_the_row_that_spread_most() -> None:
    verdict = _verdict(_repeated({
        ("echo-1KiB-c1000", "uvloop"): (80e3, 100e3, 116e3),  # 36 %
        ("churn-c50", "reactor-protocol"): (95e3, 100e3, 108e3),  # 13 %
    }), PRECISION)
    assert verdict.status == "FAIL"
    assert "largest spread 36% (uvloop on echo-1KiB-c1000" in verdict.text


def test_precision_is_skipped_without_repetitions() -> None:
    records = [_rec("echo-1KiB-c100", server, 100e3) for server in ("reactor-protocol",
                                                                    "uvloop")]
    assert _verdict(records, PRECISION).status == "SKIP"
