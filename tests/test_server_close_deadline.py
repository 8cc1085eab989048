"""Scenario 25: ``server_close()`` while handlers run.

``block_on_close_timeout`` bounds how long ``server_close`` waits for request threads
and child processes (None, the default, waits for ever as the standard library does);
when it passes, ``server_close`` returns and logs what it left. The threads and children
left then end on their own: each test releases its handler and checks that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import time
from typing import Any

import pytest
from sskit import wait_for

from reactor import socketserver

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0
DEADLINE = 0.2
MARGIN = 1.5  # what a loaded 2-core machine may add to the deadline


def in_thread(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def closing(server: Any) -> tuple[threading.Thread, list[float]]:
    """Call server_close in a thread (so that a server_close that never returns fails
    the test instead of hanging it); the list gets how long it took."""
    took: list[float] = []

    def close() -> None:
        start = time.monotonic()
        server.server_close()
        took.append(time.monotonic() - start)

    return in_thread(close), took


class Blocked:
    """A thread handler that says it is in, then blocks on an Event until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.threads.append(threading.current_thread())
                outer.entered.set()
                outer.release.wait(IO_TIMEOUT * 3)
                self.request.sendall(b"done")

        self.handler = Handler


def left_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "block_on_close_timeout" in r.getMessage()]


@pytest.mark.parametrize("max_threads", [None, 2], ids=["per-request", "pool"])
def test_threading_server_close_returns_at_its_deadline_and_says_what_it_left(
    caplog: pytest.LogCaptureFixture, max_threads: int | None
) -> None:
    blocked = Blocked()

    class Server(socketserver.ThreadingTCPServer):
        block_on_close_timeout = DEADLINE

    Server.max_threads = max_threads
    server = Server((HOST, 0), blocked.handler)
    serving = in_thread(server.serve_forever)
    client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        client.sendall(b"x")
        assert blocked.entered.wait(IO_TIMEOUT)
        server.shutdown()
        serving.join(IO_TIMEOUT)
        with caplog.at_level(logging.WARNING):
            closer, took = closing(server)
            closer.join(DEADLINE + MARGIN + 5)
            returned = not closer.is_alive()
        blocked.release.set()  # in every case: a failing test leaves no thread behind
        assert returned, "server_close did not return at its deadline"
        assert DEADLINE <= took[0] < DEADLINE + MARGIN, took
        assert left_warnings(caplog) == [
            f"Server: server_close() stopped waiting after block_on_close_timeout={DEADLINE}"
            " s: 1 request thread(s) still running; they run on to their end"]
        # the handler finishes its request once released, and its thread ends
        assert client.recv(10) == b"done"
        blocked.threads[0].join(IO_TIMEOUT)
        assert not blocked.threads[0].is_alive()
    finally:
        blocked.release.set()
        client.close()


@pytest.mark.parametrize("timeout", [None, math.inf], ids=["None", "inf"])
def test_threading_server_close_waits_for_ever_by_default(timeout: float | None) -> None:
    blocked = Blocked()

    class Server(socketserver.ThreadingTCPServer):
        block_on_close_timeout = timeout

    assert socketserver.ThreadingTCPServer.block_on_close_timeout is None
    server = Server((HOST, 0), blocked.handler)
    serving = in_thread(server.serve_forever)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        client.sendall(b"x")
        assert blocked.entered.wait(IO_TIMEOUT)
        server.shutdown()
        serving.join(IO_TIMEOUT)
        closer, _took = closing(server)
        closer.join(DEADLINE + 0.5)
        still_waiting = closer.is_alive()
        blocked.release.set()
        closer.join(IO_TIMEOUT)
        assert still_waiting, "server_close returned with a handler still running"
        assert not closer.is_alive()
        assert not blocked.threads[0].is_alive()  # joined by server_close
        assert client.recv(10) == b"done"


def test_threading_deadline_zero_does_not_wait(caplog: pytest.LogCaptureFixture) -> None:
    blocked = Blocked()

    class Server(socketserver.ThreadingTCPServer):
        block_on_close_timeout = 0

    server = Server((HOST, 0), blocked.handler)
    serving = in_thread(server.serve_forever)
    try:
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            client.sendall(b"x")
            assert blocked.entered.wait(IO_TIMEOUT)
            server.shutdown()
            serving.join(IO_TIMEOUT)
            with caplog.at_level(logging.WARNING):
                closer, took = closing(server)
                closer.join(MARGIN + 5)
            blocked.release.set()
            assert took and took[0] < MARGIN, took
            assert len(left_warnings(caplog)) == 1
            assert client.recv(10) == b"done"
    finally:
        blocked.release.set()
    blocked.threads[0].join(IO_TIMEOUT)
    assert not blocked.threads[0].is_alive()


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan])
def test_a_negative_or_nan_deadline_is_refused(bad: float) -> None:
    class Server(socketserver.ThreadingTCPServer):
        block_on_close_timeout = bad

    server = Server((HOST, 0), socketserver.BaseRequestHandler)
    with pytest.raises(ValueError, match="block_on_close_timeout"):
        server.server_close()
    Server.block_on_close_timeout = None
    server.server_close()
    assert server.socket.fileno() == -1


# -- children -----------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """The process has exited and been reaped (no /proc entry, not even a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "X"
    except FileNotFoundError:
        return True


class GoHandler(socketserver.BaseRequestHandler):
    """In the child: say "in", then block until the client sends "go" (an Event would
    not cross the fork: the client's socket is the child's release)."""

    def handle(self) -> None:
        self.request.sendall(b"in")
        self.request.settimeout(IO_TIMEOUT * 3)
        self.request.recv(10)
        self.request.sendall(b"done")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forking_server_close_returns_at_its_deadline_and_names_the_children(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Server(socketserver.ForkingTCPServer):
        block_on_close_timeout = DEADLINE

    server = Server((HOST, 0), GoHandler)
    serving = in_thread(server.serve_forever)
    client = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        assert client.recv(10) == b"in"
        (pid,) = server.active_children
        server.shutdown()
        serving.join(IO_TIMEOUT)
        with caplog.at_level(logging.WARNING):
            closer, took = closing(server)
            closer.join(DEADLINE + MARGIN + 5)
            returned = not closer.is_alive()
        client.sendall(b"go")  # release the child in every case
        assert returned, "server_close did not return at its deadline"
        assert DEADLINE <= took[0] < DEADLINE + MARGIN, took
        assert left_warnings(caplog) == [
            f"Server: server_close() stopped waiting after block_on_close_timeout={DEADLINE}"
            f" s: 1 child process(es) still running (pids {pid}), not killed, reaped when "
            "they exit; 0 request(s) waiting for a child slot closed"]
        assert client.recv(10) == b"done"  # the child was not killed: it answered
        wait_for(lambda: _gone(pid), what=f"child {pid} reaped")
        wait_for(lambda: not server.active_children, what="active_children emptied")
    finally:
        client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forking_deadline_also_bounds_requests_waiting_for_a_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Server(socketserver.ForkingTCPServer):
        block_on_close_timeout = DEADLINE
        max_children = 1

    server = Server((HOST, 0), GoHandler)
    serving = in_thread(server.serve_forever)
    first = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    second = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        assert first.recv(10) == b"in"
        (pid,) = server.active_children
        wait_for(lambda: server.statistics().waiting == 1, what="the second request waits")
        server.shutdown()
        serving.join(IO_TIMEOUT)
        with caplog.at_level(logging.WARNING):
            closer, took = closing(server)
            closer.join(DEADLINE + MARGIN + 5)
            returned = not closer.is_alive()
        first.sendall(b"go")
        assert returned, "server_close did not return at its deadline"
        assert DEADLINE <= took[0] < DEADLINE + MARGIN, took
        (message,) = left_warnings(caplog)
        assert f"(pids {pid})" in message
        assert message.endswith("1 request(s) waiting for a child slot closed")
        assert second.recv(10) == b""  # closed, never handled
        assert first.recv(10) == b"done"
        wait_for(lambda: _gone(pid), what=f"child {pid} reaped")
    finally:
        first.close()
        second.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forking_server_close_without_deadline_waits_for_the_child() -> None:
    server = socketserver.ForkingTCPServer((HOST, 0), GoHandler)
    assert server.block_on_close_timeout is None
    serving = in_thread(server.serve_forever)
    with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
        assert client.recv(10) == b"in"
        (pid,) = server.active_children
        server.shutdown()
        serving.join(IO_TIMEOUT)
        closer, _took = closing(server)
        closer.join(DEADLINE + 0.5)
        still_waiting = closer.is_alive()
        client.sendall(b"go")
        closer.join(IO_TIMEOUT)
        assert still_waiting, "server_close returned with a child still running"
        assert not closer.is_alive()
        assert not server.active_children
        assert _gone(pid)  # reaped by server_close itself
        assert client.recv(10) == b"done"


# -- the multiplexing server's connections ------------------------------------------------

BIG = 32 * 1024 * 1024  # more than loopback's socket buffers hold: the reply stays queued


class Replies(asyncio.Protocol):
    """``hi`` gets ``hi``, ``big`` gets BIG bytes; connection_lost calls are counted."""

    lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"big"):
            self.transport.write(b"b" * BIG)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        Replies.lost.append(exc)


def multiplexing(timeout: float | None) -> tuple[Any, threading.Thread]:
    class Server(socketserver.MultiplexingTCPServer):
        block_on_close_timeout = timeout

    Replies.lost = []
    server = Server((HOST, 0), Replies)
    return server, in_thread(server.serve_forever)


def read_all(sock: socket.socket) -> int:
    total = 0
    while chunk := sock.recv(1 << 20):
        total += len(chunk)
    return total


def test_multiplexing_server_close_closes_idle_connections_and_lets_active_ones_finish(
) -> None:
    server, serving = multiplexing(30.0)
    idle = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    busy = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    late = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        idle.sendall(b"hi")
        assert idle.recv(10) == b"hi"
        late.sendall(b"hi")
        assert late.recv(10) == b"hi"
        busy.sendall(b"big")
        wait_for(lambda: any(row.write_buffer_size for row in server.connections),
                 what="the big reply queued")
        server.shutdown()
        serving.join(IO_TIMEOUT)
        late.sendall(b"received while the server was not serving")  # unread at close
        closer, _took = closing(server)
        assert idle.recv(10) == b""  # an idle connection closes at once...
        assert closer.is_alive()  # ...while server_close waits for the busy one
        assert late.recv(100) == b"received while the server was not serving"
        assert late.recv(10) == b""  # answered, then closed
        assert read_all(busy) == BIG  # the whole reply, then EOF
        closer.join(IO_TIMEOUT)
        assert not closer.is_alive()
        assert Replies.lost == [None, None, None]  # once each, all clean
    finally:
        for sock in (idle, busy, late):
            sock.close()


def test_multiplexing_server_close_aborts_what_is_left_at_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, serving = multiplexing(DEADLINE)
    assert socketserver.MultiplexingTCPServer.block_on_close_timeout == 5.0
    idle = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    stuck = socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
    try:
        stuck.sendall(b"big")  # and never reads
        wait_for(lambda: any(row.write_buffer_size for row in server.connections),
                 what="the big reply queued")
        server.shutdown()
        serving.join(IO_TIMEOUT)
        with caplog.at_level(logging.WARNING):
            closer, took = closing(server)
            assert idle.recv(10) == b""
            closer.join(DEADLINE + MARGIN + 5)
        assert not closer.is_alive()
        assert DEADLINE <= took[0] < DEADLINE + MARGIN, took
        assert left_warnings(caplog) == [
            f"Server: server_close() stopped waiting after block_on_close_timeout={DEADLINE}"
            " s: aborting 1 connection(s) still open"]
        assert len(Replies.lost) == 2
    finally:
        idle.close()
        stuck.close()
