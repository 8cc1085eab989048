"""python -m bench.rpc: Sun RPC calls per server-CPU-second, our server against the C
server rpcgen makes from the same .x file.

Short runs of the harness check that it builds the C peers, measures both servers over
TCP and UDP, counts only successful replies, and writes its section (kept, with its
target lines, when bench.run rewrites the report); the figures are the benchmark's
business. Needs a C compiler, rpcgen (rpcsvc-proto) and libtirpc-dev (installed as
root, else a skip).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis_tools import install_package
from rpckit import DEADLINE, read_replies, serving

from bench import rpc
from bench.apart import CBENCH_H, build
from bench.kept import RPC_SECTION, kept_section, kept_verdicts
from handlers.rpc import Program, RPCServer, load_xdr
from handlers.rpc.message import AcceptStat, decode_reply, encode_call
from handlers.rpc.xdr import decode


def _needs_tools() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the RPC client and server")
    for present, package in ((lambda: shutil.which("rpcgen") is not None, "rpcsvc-proto"),
                             (rpc.TIRPC_HEADER.exists, "libtirpc-dev")):
        if not present():
            reason = install_package(package)
            if not present():
                pytest.skip(reason or f"{package} is missing after installing it")


def _rpcload(port: int, mode: str, call: bytes) -> dict[str, Any]:
    reason = build(rpc.RPCLOAD, [rpc.RPCLOAD_BUILD], [rpc.RPCLOAD_SRC, CBENCH_H])
    assert reason is None, reason
    done = subprocess.run(
        [str(rpc.RPCLOAD), "-m", mode, "-p", str(port), "-c", "3", "-D", "2", "-w", "0.1",
         "-d", "0.3", "--call", call.hex()],
        capture_output=True, text=True, timeout=DEADLINE * 3, check=False)
    assert done.returncode == 0, done.stderr
    assert "@measure" in done.stderr and "@done" in done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode", ["tcp", "udp"])
def test_the_client_counts_successful_replies_only(mode: str) -> None:
    _needs_tools()
    spec = load_xdr(str(rpc.SPEC))
    server = RPCServer([Program.from_spec(spec, rpc.Procedures())])
    prog = spec.constants["RPCBENCH_PROG"]
    with serving(server) as endpoints:
        good = _rpcload(endpoints.port, mode, rpc.calls()["bump"])
        unavailable = _rpcload(endpoints.port, mode, encode_call(0, prog, 1, 9))
    assert good["requests"] > 0 and good["errors"] == 0 and good["established"] == 3
    # PROC_UNAVAIL replies come back, and are errors, not requests
    assert unavailable["requests"] == 0 and unavailable["errors"] > 0
    # every call had its own xid: the duplicate-request cache answered none
    assert server.cache.hits == 0


@pytest.mark.timeout(300)
def test_the_rpcgen_server_answers_the_small_struct_call() -> None:
    _needs_tools()
    assert rpc.build_c_server() is None
    spec = load_xdr(str(rpc.SPEC))
    proc = subprocess.Popen([str(rpc.RPC_SERVER), "127.0.0.1"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        call = bytearray(rpc.calls()["bump"])
        call[:4] = (5).to_bytes(4, "big")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as tcp:
            tcp.sendall((0x80000000 | len(call)).to_bytes(4, "big") + call)
            (reply,) = read_replies(tcp, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(DEADLINE)
            udp.sendto(bytes(call), ("127.0.0.1", port))
            udp_reply = decode_reply(udp.recv(9000))
    finally:
        proc.terminate()
        assert proc.wait(DEADLINE) == 0
    for answer in (reply, udp_reply):
        assert answer.xid == 5 and answer.accept_stat == AcceptStat.SUCCESS
        sample = decode(spec.types["sample"], answer.results)
        assert (sample.id, sample.count, sample.stamp) == (7, 42, 1_700_000_000_123)


@pytest.mark.timeout(300)
def test_a_short_run_measures_both_servers_and_writes_its_section(tmp_path: Path) -> None:
    _needs_tools()
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\n## Targets\n\n```\nPASS kept\n```\n\n## Servers\n")
    argv = ["--reps", "1", "--duration", "0.3", "--warmup", "0.1", "--connections", "4",
            "--depth", "2", "--results", str(results), "--out", str(tmp_path / "out")]
    assert rpc.main(argv) == 0

    records = [json.loads(ln) for ln in (tmp_path / "out" / "rpc.jsonl").read_text()
               .splitlines()]
    assert {(r["workload"], r["server"]) for r in records} == {
        (f"rpc-{proc}-{proto}-c4", server) for proc in ("null", "bump")
        for proto in ("tcp", "udp") for server in ("reactor", "rpcgen")}
    for r in records:
        assert "failed" not in r and r["requests"] > 0 and r["errors"] == 0, r
        assert r["req_per_cpu_s"] > 0
    text = results.read_text()
    section = kept_section(text, RPC_SECTION)
    assert section is not None and text.index(RPC_SECTION[0]) < text.index("## Servers")
    verdicts = kept_verdicts(section)
    assert len(verdicts) == 4 and all(status == "INFO" for status, _ in verdicts)
    targets = text[text.index("## Targets"):text.index(RPC_SECTION[0])]
    assert "PASS kept" in targets and all(line in targets for _, line in verdicts)


def test_a_benchmark_report_keeps_the_section_and_its_target_lines(tmp_path: Path) -> None:
    from bench.plan import Plan
    from bench.report import Results, Verdict, write_report

    results = tmp_path / "RESULTS.md"
    line = "INFO Sun RPC NULL over TCP, reactor calls per server-CPU-second: 0.5x"
    section = "\n".join([RPC_SECTION[0], "## Sun RPC", "```", line, "```", RPC_SECTION[1]])
    results.write_text(f"# old\n\n{section}\n\n## Servers\n")
    env = {"command": "python -m bench.run", "date": "today", "git": "abc", "repeat": 1,
           "warmup_s": 0.5, "duration_s": 1.5, "allocator_primed": True,
           "pinning": {"server_cpu": 0, "client_cpu": 1}}
    write_report(results, Results([]), env, [Verdict("PASS", "a target")], [], Plan(), 60.0)
    text = results.read_text()
    assert "# old" not in text and section in text
    targets = text[text.index("## Targets"):text.index(RPC_SECTION[0])]
    assert "PASS a target" in targets and line in targets
