"""Scenario 17: bind failures -- an address in use, an overlong Unix path, a stale path
that is not a socket.

``reactor serve`` reports each clearly and exits with status 1; in process, the
listening functions, :class:`reactor.cli.graceful.Server` and the socketserver facades
(CPython's #22435 leaked the socket of a TCPServer whose bind failed) raise a clear
exception and leak no descriptor (counted with psutil), even after a hundred attempts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from faultlib import WAIT, figure
from servekit import ROOT

from reactor import Reactor
from reactor.cli.graceful import Server
from reactor.io.listeners import UNIX_PATH_MAX

ATTEMPTS = 100


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", "serve", "echo", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def long_path(tmp_path: Path) -> str:
    name = "x" * (UNIX_PATH_MAX + 10 - len(str(tmp_path)))
    return str(tmp_path / name)


def not_a_socket(tmp_path: Path) -> str:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    return str(path)


@pytest.mark.timeout(60)
def test_the_command_reports_each_bind_failure_with_status_1(tmp_path: Path,
                                                            taken_port: int) -> None:
    cases = [
        (f"127.0.0.1:{taken_port}", "address already in use"),
        (f"unix:{long_path(tmp_path)}", f"the limit is {UNIX_PATH_MAX}"),
        (f"unix:{not_a_socket(tmp_path)}", "is not a socket; refusing to remove it"),
    ]
    for bind, message in cases:
        result = run_serve("--bind", "127.0.0.1:0", "--bind", bind)
        assert result.returncode == 1, result.stderr
        assert f"cannot listen on {bind} (--bind): " in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "listening on" not in result.stderr  # the first address was let go too
    assert Path(tmp_path / "precious.txt").read_text() == "keep me"


def attempts_leak_nothing(attempt: Callable[[], object], error: type[BaseException],
                          message: str) -> None:
    """``attempt()`` raises every time, and leaves no descriptor open -- neither held
    (counted with psutil) nor dropped unclosed for the garbage collector to close (a
    ResourceWarning, which is how CPython's #22435 showed)."""
    proc = psutil.Process()
    before = proc.num_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(ATTEMPTS):
            with pytest.raises(error, match=message):
                attempt()
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    figure(f"bind failures ({message}): descriptors leaked or left to the collector after "
           f"{ATTEMPTS} attempts", proc.num_fds() - before + len(unclosed), "")
    assert proc.num_fds() == before, f"{proc.num_fds() - before} descriptors leaked"
    assert not unclosed, f"{len(unclosed)} sockets left to the garbage collector: {unclosed[0]}"


@pytest.mark.timeout(60)
def test_in_process_bind_failures_leak_no_descriptor(tmp_path: Path, taken_port: int) -> None:
    with Reactor() as reactor:
        before = psutil.Process().num_fds()
        attempts_leak_nothing(lambda: reactor.listen_tcp("127.0.0.1", taken_port, asyncio.Protocol),
                              OSError, "in use")
        attempts_leak_nothing(lambda: reactor.listen_tcp("127.0.0.1", taken_port, asyncio.Protocol,
                                                         reuse_port=True), OSError, "in use")
        attempts_leak_nothing(lambda: reactor.listen_unix(long_path(tmp_path), asyncio.Protocol),
                              ValueError, "the limit is")
        attempts_leak_nothing(lambda: reactor.listen_unix(not_a_socket(tmp_path), asyncio.Protocol),
                              FileExistsError, "not a socket")
        attempts_leak_nothing(lambda: reactor.listen_unix_datagram(not_a_socket(tmp_path),
                                                                   asyncio.Protocol),
                              FileExistsError, "not a socket")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp_port = udp.getsockname()[1]
            attempts_leak_nothing(
                lambda: reactor.listen_udp("127.0.0.1", udp_port, asyncio.DatagramProtocol),
                OSError, "in use")

        def server_start() -> None:
            Server(asyncio.Protocol, ["127.0.0.1:0", f"127.0.0.1:{taken_port}"], reactor=reactor,
                   handle_signals=False).start()

        attempts_leak_nothing(server_start, OSError, "in use")
        assert not reactor.listeners
        assert psutil.Process().num_fds() == before
    assert Path(tmp_path / "precious.txt").read_text() == "keep me"
    assert not [p for p in os.listdir(tmp_path) if p.startswith("x")]


@pytest.mark.timeout(60)
def test_facade_bind_failures_leak_no_descriptor(tmp_path: Path, taken_port: int) -> None:
    from reactor import socketserver

    handler = socketserver.BaseRequestHandler
    proc = psutil.Process()
    before = proc.num_fds()
    servers: list[Callable[[], object]] = [
        lambda: socketserver.TCPServer(("127.0.0.1", taken_port), handler),
        lambda: socketserver.ThreadingTCPServer(("127.0.0.1", taken_port), handler),
        lambda: socketserver.ForkingTCPServer(("127.0.0.1", taken_port), handler),
    ]
    for make in servers:
        attempts_leak_nothing(make, OSError, "in use")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        attempts_leak_nothing(lambda: socketserver.UDPServer(("127.0.0.1", port), handler),
                              OSError, "in use")
    # the standard library's messages: the facades keep its behaviour for Unix paths
    attempts_leak_nothing(
        lambda: socketserver.UnixStreamServer(long_path(tmp_path), handler), OSError,
        "path too long")
    attempts_leak_nothing(
        lambda: socketserver.UnixStreamServer(not_a_socket(tmp_path), handler), OSError,
        "in use")
    assert proc.num_fds() == before
    assert Path(tmp_path / "precious.txt").read_text() == "keep me"
