"""The benchmark's own parts: output parsers, the plan, statistics and targets, and the
C load generator against a real (loopback) echo server when a C compiler is present."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from bench import run, syscalls
from bench.clients import LOADGEN_BUILD, LOADGEN_SRC, parse_redis_csv, parse_wrk
from bench.measure import _finish_record
from bench.plan import Plan, Workload, echo_workload, interleaved, make_plan, matches
from bench.procs import free_port
from bench.protocols import EchoProtocol
from bench.report import Results, Stat, summary, targets

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:40000/small.html
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.62ms    1.10ms  21.43ms   89.10%
    Req/Sec    10.87k   412.00    11.30k    85.00%
  Latency Distribution
     50%    4.40ms
     75%    4.80ms
     90%    5.60ms
     99%    9.00ms
  21640 requests in 2.00s, 25.21MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 4
Requests per second:  10816.29
Requests/sec:  10816.29
Transfer/sec:     12.60MB
"""


def test_parse_wrk() -> None:
    out = parse_wrk(WRK_OUTPUT)
    assert out["rps"] == pytest.approx(10816.29)
    assert out["requests"] == 21640
    assert out["latency_us"]["p50"] == pytest.approx(4400.0)
    assert out["latency_us"]["p99"] == pytest.approx(9000.0)
    assert out["latency_us"]["max"] == pytest.approx(21430.0)
    assert out["errors"] == 2 + 1 + 4
    assert out["timeouts"] == 3
    assert out["mib_s"] == pytest.approx(12.60)


def test_parse_wrk_without_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_parse_redis_csv_with_header() -> None:
    text = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",'
            '"p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
            '"SET","94339.62","0.287","0.072","0.263","0.439","0.727","3.711"\n')
    values = parse_redis_csv(text)
    assert values["rps"] == pytest.approx(94339.62)
    assert values["p99_latency_ms"] == pytest.approx(0.727)


def test_parse_redis_csv_old_format_and_garbage() -> None:
    assert parse_redis_csv('"GET","12345.67"\n')["rps"] == pytest.approx(12345.67)
    with pytest.raises(ValueError):
        parse_redis_csv("Could not connect to Redis\n")


@pytest.mark.parametrize(("name", "patterns", "expected"), [
    ("echo-1KiB-c100", ["echo"], True),
    ("echo-1KiB-c100", ["echo-1KiB"], True),
    ("echo-1KiB-c1000", ["echo-1KiB-c100"], False),
    ("echo-1KiB-c100", ["echo-1KiB-c100"], True),
    ("echo-64B-c100", ["echo-*-c100"], True),
    ("idle-c10000", ["idle"], True),
    ("kv-get-P16", ["kv-get"], True),
    ("kv-get", ["kv-set"], False),
])
def test_workload_patterns(name: str, patterns: list[str], expected: bool) -> None:
    assert matches(name, patterns) is expected


def test_interleaving_rotates_the_server_order() -> None:
    w = echo_workload(1024, 100)
    plan = Plan([(w, ["a", "b", "c"])])
    order = [(rep, server) for rep, _w, server in interleaved(plan, 3)]
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                     (2, "c"), (2, "a"), (2, "b")]


def _args(**kw: Any) -> argparse.Namespace:
    return run.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_plan_caps_thread_per_connection_servers() -> None:
    plan = make_plan(_args(servers="stdlib-threading,asyncio",
                               workloads="echo-1KiB-c10000,echo-1KiB-c1000"), 20000)
    steps = {w.name: servers for w, servers in plan.steps}
    assert steps["echo-1KiB-c1000"] == ["stdlib-threading", "asyncio"]
    assert steps["echo-1KiB-c10000"] == ["asyncio"]
    assert any("stdlib-threading" in what for what in plan.skipped)


def test_plan_rejects_unknown_servers() -> None:
    with pytest.raises(SystemExit, match="unknown server"):
        make_plan(_args(servers="nginx"), 20000)


def _rec(workload: str, server: str, rps: float, cpu: float, **extra: Any) -> dict[str, Any]:
    kind = workload.split("-", maxsplit=1)[0]
    return {"workload": workload, "kind": kind, "server": server, "rps": rps,
            "requests": rps * 2, "req_per_cpu_s": rps / cpu, "latency_us": {"p99": 1000.0},
            **extra}


def test_statistics_ratios_and_targets() -> None:
    records = [
        _rec("echo-1KiB-c100", "reactor-protocol", 120.0, 0.5),
        _rec("echo-1KiB-c100", "reactor-protocol", 100.0, 0.5),
        _rec("echo-1KiB-c100", "reactor-protocol", 110.0, 0.5),
        _rec("echo-1KiB-c100", "asyncio", 100.0, 0.5),
        _rec("echo-1KiB-c1000", "reactor-protocol", 100.0, 0.5),
        _rec("echo-1KiB-c1000", "asyncio", 100.0, 0.5),
        {"workload": "idle-c10000", "kind": "idle", "server": "reactor-protocol",
         "established": 10000, "rss_per_conn": 500.0, "pss_per_conn": 480.0},
        {"workload": "echo-1KiB-c100", "kind": "echo", "server": "uvloop",
         "failed": "did not start"},
    ]
    res = Results(records)
    stat = res.stat("echo-1KiB-c100", "reactor-protocol", "rps")
    assert stat == Stat(110.0, 100.0, 120.0, 3)
    assert res.ratio("echo-1KiB-c100", "reactor-protocol", "asyncio", "req_per_cpu_s") == (
        pytest.approx(1.1))
    assert res.stat("echo-1KiB-c100", "uvloop", "rps") is None
    verdicts = {v.text.split(":")[0]: v.status for v in targets(res)}
    # issue 12: asyncio is no longer the mark (INFO), uvloop is (its runs failed: SKIP)
    assert verdicts["echo 1 KiB x100 conns, reactor requests per CPU-second vs asyncio"] == (
        "INFO")
    assert verdicts["echo 1 KiB x100 conns, reactor requests per CPU-second vs uvloop"] == (
        "SKIP")
    # 500 B passed the old 600 B target; the target is now 300 B
    assert verdicts["idle memory per connection at 10000 connections"] == "FAIL"
    assert verdicts["churn"] == "SKIP"
    text = summary(res, targets(res))
    assert "reactor-protocol" in text and "FAIL" in text


def test_user_space_ratio_and_kernel_share() -> None:
    # the kernel took 80 % of the reactor's CPU: 1.1x per CPU-second, 1.5x in user space
    records = [
        _rec("echo-1KiB-c100", "reactor-protocol", 110.0, 1.0, req_per_user_cpu_s=1100.0,
             kernel_share=0.8),
        _rec("echo-1KiB-c100", "asyncio", 100.0, 1.0, req_per_user_cpu_s=733.3,
             kernel_share=0.7),
    ]
    lines = [v.text for v in targets(Results(records)) if "user-space" in v.text]
    assert len(lines) == 1
    assert "(the kernel took 80% of the reactor's CPU): 1.50x" in lines[0]
    assert targets(Results(records[:1]))  # no asyncio figure: no crash


def test_a_measurement_records_user_cpu_and_kernel_share() -> None:
    record: dict[str, Any] = {"requests": 1000, "cpu_s": 2.0, "user_cpu_s": 0.5,
                              "duration_s": 2.0}
    _finish_record(record)
    assert record["req_per_user_cpu_s"] == 2000.0
    assert record["kernel_share"] == pytest.approx(0.75)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_loadgen_against_a_reactor_echo_server(tmp_path: Path) -> None:
    binary = tmp_path / "loadgen"
    build = [*LOADGEN_BUILD[:-3], "-o", str(binary), str(LOADGEN_SRC)]
    subprocess.run(build, check=True, capture_output=True, timeout=60)
    from reactor import Reactor

    reactor = Reactor()
    listener = reactor.listen_tcp("127.0.0.1", 0, EchoProtocol)
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        results = {}
        for mode, extra in (("echo", ["-c", "20", "-s", "1500", "-D", "2"]),
                            ("churn", ["-c", "5", "-s", "64", "--linger0"]),
                            ("idle", ["-c", "30", "-s", "64", "--ping", "--hold", "0.2"])):
            proc = subprocess.run(
                [str(binary), "-m", mode, "-p", str(listener.port), "-w", "0.1", "-d", "0.5",
                 *extra], capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, proc.stderr
            assert "@ready" in proc.stderr
            results[mode] = json.loads(proc.stdout)
    finally:
        reactor.call_soon_threadsafe(reactor.stop)
        thread.join(timeout=10)
        reactor.close()
    echo = results["echo"]
    assert echo["established"] == 20 and echo["requests"] > 0
    assert echo["bytes"] == echo["requests"] * 1500
    assert echo["errors"] == echo["timeouts"] == echo["connect_errors"] == 0
    lat = echo["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert results["churn"]["requests"] > 0 and results["churn"]["connect_errors"] == 0
    idle = results["idle"]
    assert idle["established"] == 30 and idle["closed_by_peer"] == 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_loadgen_reports_refused_connections(tmp_path: Path) -> None:
    binary = tmp_path / "loadgen"
    build = [*LOADGEN_BUILD[:-3], "-o", str(binary), str(LOADGEN_SRC)]
    subprocess.run(build, check=True, capture_output=True, timeout=60)
    port = free_port()  # nobody listens there
    proc = subprocess.run([str(binary), "-p", str(port), "-c", "3", "-w", "0", "-d", "0.1"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["established"] == 0
    assert data["connect_errors"] == 3
    assert data["requests"] == 0


STRACE_LINES = """\
101 1000.000100 epoll_wait(3, [{events=EPOLLIN, data={u32=5, u64=5}}], 1024, -1) = 1
101 1000.500000 recvfrom(5, ""..., 262144, 0, NULL, NULL) = 1024
101 1000.500100 sendto(5, ""..., 1024, 0, NULL, 0) = 1024
102 1000.600000 recvfrom(6,  <unfinished ...>
101 1000.600100 epoll_ctl(3, EPOLL_CTL_DEL, 7, 0x7ffd) = 0
102 1000.600200 <... recvfrom resumed> ""..., 262144, 0, NULL, NULL) = -1 ECONNRESET (reset)
101 1000.700000 ioctl(8, FIONBIO, [1]) = 0
101 1000.700100 setsockopt(8, SOL_TCP, TCP_NODELAY, [1], 4) = 0
101 1000.800000 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---
103 1000.800100 +++ exited with 0 +++
101 1001.500000 recvfrom(5, ""..., 262144, 0, NULL, NULL) = 1024
"""


def test_trace_counts_the_calls_begun_in_the_window() -> None:
    counts = syscalls.count_trace(STRACE_LINES.splitlines(), 1000.4, 1001.0)
    assert set(counts) == {"recvfrom", "sendto", "epoll_ctl", "ioctl", "setsockopt"}
    assert counts["recvfrom"] == syscalls.Count(2, 1, (("ECONNRESET", 1),))
    assert counts["sendto"].calls == 1 and counts["sendto"].errors == 0
    assert counts["epoll_ctl"].details == (("EPOLL_CTL_DEL", 1),)
    assert counts["ioctl"].details == (("FIONBIO", 1),)
    assert counts["setsockopt"].details == (("TCP_NODELAY", 1),)


def test_syscall_tables_replace_their_own_block_only(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Churn\n\nrows\n\n## Key-value\n\nkv rows\n")
    t = syscalls.Traced("echo-1KiB-c100", "asyncio", "request", units=100, seconds=1.0,
                        counts={"recvfrom": syscalls.Count(100), "sendto": syscalls.Count(99)})
    syscalls.write_results(results, syscalls.render_tables([t], "python -m bench.syscalls"))
    first = results.read_text()
    assert first.index("## Churn") < first.index("| asyncio | 1.00 | 0.99 |") < first.index(
        "## Key-value")
    # a hand-written note after the tables survives a second run, which replaces them
    results.write_text(first.replace(syscalls.TABLES_END, syscalls.TABLES_END + "\nnote"))
    t.counts["sendto"] = syscalls.Count(100)
    syscalls.write_results(results, syscalls.render_tables([t], "python -m bench.syscalls"))
    second = results.read_text()
    assert "| asyncio | 1.00 | 1.00 |" in second and "0.99" not in second
    assert second.count(syscalls.TABLES_BEGIN) == 1 and "\nnote" in second
    assert "kv rows" in second


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_syscall_count_of_an_echo_server_is_one_recv_and_one_send_per_request(
        tmp_path: Path) -> None:
    if shutil.which("strace") is None:  # installed as any test's tool, where root allows
        from redis_tools import install_package

        missing = install_package("strace")
        if missing:
            pytest.skip(missing)
    reason = syscalls.why_not()
    if reason is not None:
        pytest.skip(reason)
    from bench.clients import ensure_loadgen

    ensure_loadgen()
    t = syscalls.count_one(Workload("echo-1KiB-c20", "echo", 20, 1024), "reactor-protocol",
                           warmup=1.0, duration=1.0, server_cpu=None, client_cpu=None,
                           log_path=tmp_path / "servers.log")
    assert t.failed is None, t.failed
    assert t.units >= 50
    recv = sum(t.per_unit(n) for n in ("recv", "recvfrom", "read", "recvmsg"))
    send = sum(t.per_unit(n) for n in ("send", "sendto", "write", "sendmsg"))
    assert recv == pytest.approx(1.0, abs=0.05)
    assert send == pytest.approx(1.0, abs=0.05)
    assert 0 < t.per_unit("epoll_wait") <= 1.0


def _rewrite_report(tmp_path: Path, markers: tuple[str, str], title: str,
                    layout: str) -> tuple[str, str]:
    """Write a report over an old one whose hand-kept section (between ``markers``)
    sits where ``layout`` puts it; return the new text and the section."""
    from bench.report import write_report

    results = tmp_path / "RESULTS.md"
    section = "\n".join([markers[0], title, "rows", markers[1]])
    results.write_text(layout.format(section=section))
    env = {"command": "python -m bench.run", "date": "today", "git": "abc", "repeat": 1,
           "warmup_s": 0.5, "duration_s": 1.5, "allocator_primed": True,
           "pinning": {"server_cpu": 0, "client_cpu": 1}}
    write_report(results, Results([]), env, [], [], Plan(), 60.0)
    return results.read_text(), section


def test_a_benchmark_report_keeps_the_syscall_section(tmp_path: Path) -> None:
    from bench.report import SYSCALLS_SECTION

    text, section = _rewrite_report(tmp_path, SYSCALLS_SECTION, "## System calls",
                                    "# old\n\n{section}\n\n## Servers\n")
    assert "# socketreactor benchmark results" in text and "# old" not in text
    assert section in text


def test_a_benchmark_report_keeps_the_kv_pipeline_section(tmp_path: Path) -> None:
    from bench.report import KV_PIPELINE_SECTION

    text, section = _rewrite_report(tmp_path, KV_PIPELINE_SECTION, "## kv pipelining",
                                    "# old\n\n## Servers\n\n{section}\n")
    assert "# old" not in text and section in text


def test_a_benchmark_report_keeps_the_memory_section(tmp_path: Path) -> None:
    from bench.report import MEMORY_SECTION

    text, section = _rewrite_report(tmp_path, MEMORY_SECTION, "### Where the bytes go",
                                    "# old\n\n{section}\n\n## Servers\n")
    assert "# old" not in text and section in text


def test_a_benchmark_report_keeps_the_embedding_section(tmp_path: Path) -> None:
    from bench.report import EMBEDDING_SECTION

    text, section = _rewrite_report(tmp_path, EMBEDDING_SECTION, "## Embedding",
                                    "# old\n\n{section}\n\n## Servers\n")
    assert "# old" not in text and section in text


def test_a_benchmark_report_keeps_the_precision_section(tmp_path: Path) -> None:
    from bench.kept import PRECISION_SECTION

    text, section = _rewrite_report(tmp_path, PRECISION_SECTION, "## The precision",
                                    "# old\n\n{section}\n\n## Servers\n")
    assert "# old" not in text and section in text
