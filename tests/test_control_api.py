"""The control socket as an API: ``reactor.serve_control`` on an embedded reactor and
``reactor.socketserver.serve_control`` on a facade server, over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servekit import WAIT, read_until_closed
from sskit import serving, wait_for
from test_control_serve import Control

from reactor import Reactor, serve_control, socketserver
from reactor.sansio.request_buffer import LineRequestBuffer

pytestmark = pytest.mark.timeout(60)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
def running() -> Iterator[Reactor]:
    """A reactor with an echo listener; the test starts it with :func:`run`."""
    reactor = Reactor()
    reactor.listen_tcp("127.0.0.1", 0, Echo)
    try:
        yield reactor
    finally:
        if reactor.is_running():
            reactor.stop()  # may be called from any thread
            wait_for(lambda: not reactor.is_running(), what="the reactor stopped")
        reactor.close()


def run(reactor: Reactor) -> threading.Thread:
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    wait_for(reactor.is_running)
    return thread


def test_embedded_reactor_control_and_close(running: Reactor, tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    control = serve_control(running, str(path), describe=lambda: {"app": "test"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    run(running)
    client = Control(path)
    info = client.json("info")
    assert info["server"] == {"app": "test"} and info["control_clients"] == 1
    assert client.ask("drain") == "error: drain is not available here: no stop hook was given"
    running.call_soon_threadsafe(control.close)
    assert read_until_closed(client.sock) == b""  # the client is closed with the server
    wait_for(lambda: not path.exists(), what="the path removed")
    client.close()


def test_a_failing_describe_hook_costs_only_its_part(running: Reactor, tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    serve_control(running, str(path), describe=lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    run(running)
    info = Control(path).json("info")
    assert info["server"] == {"error": "ZeroDivisionError('division by zero')"}


def test_paths_that_are_refused(running: Reactor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="abstract socket has no permissions"):
        serve_control(running, "\0ctl")
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(FileExistsError, match="not a socket"):
        serve_control(running, str(plain))


def test_a_control_client_that_never_reads_is_aborted(running: Reactor,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    serve_control(running, str(path), write_timeout=0.3, high_water=4096)
    run(running)
    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.connect(str(path))
    greedy.setblocking(False)
    request = b"help\n" * 200_000
    sent = 0
    while sent < len(request):
        try:
            sent += greedy.send(request[sent:])
        except BlockingIOError:
            break
    watcher = Control(path)

    def control_rows() -> int:
        return len(watcher.json("conns --all")["connections"])

    wait_for(lambda: control_rows() == 1, what="the never-reading client aborted")
    received = read_until_closed(greedy)  # what the kernel held, then EOF
    assert len(received) < 2 * 2**20 and received.startswith(b"info ")
    greedy.close()
    watcher.close()


class Waiting(socketserver.StreamRequestHandler):
    release = threading.Event()

    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())
        Waiting.release.wait(WAIT)


def test_a_facade_server_through_its_control_socket(tmp_path: Path) -> None:
    class Server(socketserver.ThreadingTCPServer):
        request_buffer = LineRequestBuffer()

    server = Server(("127.0.0.1", 0), Waiting)
    path = tmp_path / "ctl"
    socketserver.serve_control(server, str(path))
    Waiting.release.clear()
    with serving(server, close=True):
        control = Control(path)
        partial = socket.create_connection(server.server_address, timeout=WAIT)
        partial.sendall(b"no newline yet")
        wait_for(lambda: control.json("conns buffering")["total"] == 1)
        busy = socket.create_connection(server.server_address, timeout=WAIT)
        busy.sendall(b"hi\n")
        assert busy.recv(10) == b"hi\n"
        wait_for(lambda: control.json("conns dispatched-thread")["total"] == 1)
        info = control.json("info")
        assert info["server"]["server"] == "Server" and info["server"]["in_flight"] == 2
        assert info["server"]["threads"] == 1
        worker, = control.json("conns dispatched-thread")["connections"]
        assert control.ask(f"close {worker['id']}") == (
            f"error: connection {worker['id']} is dispatched-thread: a worker owns its "
            "socket, the reactor cannot close it")
        buffering, = control.json("conns buffering")["connections"]
        assert control.ask(f"abort {buffering['id']}").startswith("ok: aborted")
        assert read_until_closed(partial) == b""
        Waiting.release.set()
        assert json.loads(control.ask("drain --json"))["ok"].startswith("draining")
        wait_for(lambda: not server.statistics().serving, what="serve_forever returned")
        for sock in (partial, busy, control):
            sock.close()
