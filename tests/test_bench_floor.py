"""The benchmark's floor: bench/epoll_echo.c, a minimal C epoll echo server (``c-epoll``),
in the plan beside the Python servers, and over loopback when a C compiler is present."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench.plan import QUICK_SERVERS, all_workloads, default_servers_for
from bench.servers import C_ECHO_BUILD, C_ECHO_SRC, SERVERS


def test_the_floor_runs_in_the_echo_idle_and_churn_workloads_quick_and_full() -> None:
    assert SERVERS["c-epoll"].service == "echo" and not SERVERS["c-epoll"].ours
    assert "c-epoll" in QUICK_SERVERS
    for w in all_workloads():
        if w.kind in ("idle", "churn") or (w.kind == "echo" and w.size == 1024):
            assert "c-epoll" in default_servers_for(w, quick=False), w.name
    quick = [w for w in all_workloads()
             if w.name in ("echo-1KiB-c100", "echo-1KiB-c1000", "idle-c10000", "churn-c50")]
    for w in quick:
        assert "c-epoll" in default_servers_for(w, quick=True), w.name
        if w.kind == "churn":  # the churn target is against uvloop
            assert "uvloop" in default_servers_for(w, quick=True)


def _build(tmp_path: Path) -> Path:
    binary = tmp_path / "epoll_echo"
    build = [*C_ECHO_BUILD[:-3], "-o", str(binary), str(C_ECHO_SRC)]
    subprocess.run(build, check=True, capture_output=True, timeout=60)
    return binary


def _start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("PORT "), (line, proc.stderr.read() if proc.stderr else b"")
    return proc, int(line.split()[1])


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(min(1 << 20, n - len(chunks)))
        if not data:
            break
        chunks += data
    return bytes(chunks)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_c_floor_echoes_finishes_short_writes_and_exits_0_on_sigterm(
        tmp_path: Path) -> None:
    proc, port = _start([str(_build(tmp_path)), "0"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as a, \
                socket.create_connection(("127.0.0.1", port), timeout=30) as b:
            a.sendall(b"ping")
            assert _recv_exactly(a, 4) == b"ping"
            # 16 MiB sent before reading a byte back: the server's sends come up short
            # once our receive buffer is full, and it must keep and finish the rest
            payload = bytes(range(256)) * (16 * 4096)
            sender = threading.Thread(target=b.sendall, args=(payload,), daemon=True)
            sender.start()
            time.sleep(0.3)  # lets the buffers fill; the result does not depend on it
            echoed = _recv_exactly(b, len(payload))
            sender.join(30)
            assert echoed == payload
            # the first connection was served all along, and an EOF closes it
            a.sendall(b"again")
            assert _recv_exactly(a, 5) == b"again"
            a.shutdown(socket.SHUT_WR)
            assert a.recv(1) == b""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_benchmark_starts_and_stops_c_epoll_like_its_python_servers(
        tmp_path: Path) -> None:
    from bench.clients import ensure_c_echo
    from bench.measure import make_server, start_server, stop_server
    from bench.servers import unavailable

    ensure_c_echo()
    assert unavailable("c-epoll") is None
    srv = make_server("c-epoll", None, tmp_path / "servers.log", prime=True)
    start_server(srv)
    try:
        assert srv.port > 0
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(b"x" * 1024)
            assert _recv_exactly(s, 1024) == b"x" * 1024
        assert "epoll_echo" in " ".join(srv.sampler.proc.cmdline())  # exec'd in place
    finally:
        end = stop_server(srv)
    assert end["exit"] == 0 and not end["died_early"] and not end["traceback"]
