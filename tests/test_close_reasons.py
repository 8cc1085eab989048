"""Closes by reason, counted by the transports themselves: a plain reactor (TCP and Unix,
no access-log wrapper) and a facade server, each connection closed one way (the
client's EOF, the server's close, a reset by the client, a deadline, the server's
shutdown), read through :mod:`reactor.io.metrics` (parsed by ``prometheus_client``) and
through the control socket's ``info``; TLS connections, counted by their raw rows."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servekit import WAIT, read_until_closed
from sskit import wait_for
from test_control_serve import Control
from test_observe_api import echo, on_loop
from tlskit import Certs

from reactor import Reactor, serve_control, socketserver
from reactor.io.metrics import reactor_families
from reactor.io.transports import TransportOptions
from reactor.sansio.closes import close_reason
from reactor.sansio.connection import ConnState
from reactor.sansio.errors import DeadlineExceeded
from reactor.sansio.promtext import render
from reactor.sansio.request_buffer import LineRequestBuffer
from reactor.sansio.table import ConnectionTable

pytestmark = pytest.mark.timeout(60)

DEADLINE = 0.3  # the idle and request deadlines of the tests (seconds)


class Echo(asyncio.Protocol):
    """Echoes; ``bye`` makes it close (the server's close); an EOF closes it too."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data == b"bye":
            self.transport.close()
        else:
            self.transport.write(data)


def closes_metric(reactor: Reactor) -> dict[str, float]:
    """``reactor_connection_closes_total`` by reason, from the exposition parsed."""
    text = render(list(reactor_families(reactor))).decode()
    return {sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "reactor_connection_closes_total"}


def counted(reactor: Reactor) -> int:
    return sum(on_loop(reactor, lambda: reactor.statistics().closes).values())


def reset(sock: socket.socket) -> None:
    """Close ``sock`` so that the server sees a reset: unread input left in it (a Unix
    socket's peer then reads ECONNRESET) and, for TCP, SO_LINGER 0 (an RST)."""
    sock.sendall(b"unread")
    sock.recv(1, socket.MSG_PEEK)  # the echo is in our queue, unread
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def loop(reactor: Reactor) -> Iterator[Reactor]:
    """The conftest's reactor (on each backend), which the test runs in a thread:
    stopped here, before the conftest closes it."""
    yield reactor
    if reactor.is_running():
        reactor.stop()
        wait_for(lambda: not reactor.is_running(), what="the reactor stopped")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_plain_reactor_counts_each_way_a_connection_closes(
    loop: Reactor, tmp_path: Path, kind: str
) -> None:
    reactor = loop
    idle = TransportOptions(idle_timeout=DEADLINE)
    if kind == "tcp":
        served = reactor.listen_tcp("127.0.0.1", 0, Echo)
        slow = reactor.listen_tcp("127.0.0.1", 0, Echo, options=idle)
        family = socket.AF_INET
    else:
        served = reactor.listen_unix(str(tmp_path / "served"), Echo)
        slow = reactor.listen_unix(str(tmp_path / "slow"), Echo, options=idle)
        family = socket.AF_UNIX
    path = tmp_path / "ctl"
    control = serve_control(reactor, str(path))
    threading.Thread(target=reactor.run, daemon=True).start()
    wait_for(reactor.is_running)

    def connect(address: Any) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        sock.connect(address)
        return sock

    client = connect(served.address)  # the client's EOF
    echo(client, b"hello")
    client.shutdown(socket.SHUT_WR)
    assert read_until_closed(client) == b""
    client.close()
    client = connect(served.address)  # the server's close
    client.sendall(b"bye")
    assert read_until_closed(client) == b""
    client.close()
    reset(connect(served.address))  # a reset by the client
    client = connect(slow.address)  # a deadline
    assert read_until_closed(client) == b""
    client.close()
    wait_for(lambda: counted(reactor) == 4, what="four closes counted")

    expected = {"client-eof": 1, "server-close": 1, "reset": 1, "idle-timeout": 1}
    ctl = Control(path)  # open while the counts are read: not counted yet
    assert ctl.json("info")["closes"] == expected
    assert "closes: client-eof=1" in ctl.ask("info")
    assert on_loop(reactor, lambda: closes_metric(reactor)) == expected

    client = connect(served.address)  # open when the reactor closes: a shutdown
    echo(client, b"still here")
    reactor.stop()
    wait_for(lambda: not reactor.is_running(), what="the reactor stopped")
    reactor.close()
    # aborted at the close: that client, and the control client
    assert closes_metric(reactor) == {**expected, "shutdown": 2}
    assert control.info()["closes"] == {**expected, "shutdown": 2}
    assert read_until_closed(client) == b""
    client.close()
    ctl.close()


def buffering(reactor: Reactor) -> bool:
    """Whether a row is buffering a request and read its first bytes."""
    return bool(on_loop(reactor, lambda: [
        row for row in reactor.connections
        if row.state is ConnState.BUFFERING and row.bytes_in]))


class LineEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class BufferingServer(socketserver.TCPServer):
    """Reads each request in the reactor first: resets, EOFs and deadlines happen there."""

    request_buffer = LineRequestBuffer(timeout=DEADLINE)


def test_a_facade_server_counts_each_way_a_connection_closes(tmp_path: Path) -> None:
    server = BufferingServer(("127.0.0.1", 0), LineEcho)
    path = tmp_path / "ctl"
    socketserver.serve_control(server, str(path))
    thread = threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True)
    thread.start()
    wait_for(lambda: server.statistics().serving, what="serve_forever started")
    reactor = server.reactor
    try:
        client = socket.create_connection(server.server_address, timeout=WAIT)
        client.sendall(b"no newline")  # the client's EOF, the request not complete
        client.shutdown(socket.SHUT_WR)
        read_until_closed(client)
        client.close()
        client = socket.create_connection(server.server_address, timeout=WAIT)
        client.sendall(b"hello\n")  # served; the server closes the request
        assert read_until_closed(client) == b"hello\n"
        client.close()
        client = socket.create_connection(server.server_address, timeout=WAIT)
        client.sendall(b"partial")  # being buffered when the client resets
        wait_for(lambda: buffering(reactor), what="the partial request read")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        client = socket.create_connection(server.server_address, timeout=WAIT)
        read_until_closed(client)  # closed at the request deadline
        client.close()
        wait_for(lambda: counted(reactor) == 4, what="four closes counted")

        expected = {"client-eof": 1, "server-close": 1, "reset": 1, "request-timeout": 1}
        ctl = Control(path)
        assert ctl.json("info")["closes"] == expected
        ctl.close()
        wait_for(lambda: counted(reactor) == 5, what="the control client's close")
        expected["client-eof"] += 1  # the control client closed first
        assert on_loop(reactor, lambda: closes_metric(reactor)) == expected

        client = socket.create_connection(server.server_address, timeout=WAIT)
        client.sendall(b"partial")  # still being buffered at the shutdown
        wait_for(lambda: buffering(reactor), what="the partial request read")
    finally:
        server.shutdown()
        thread.join(WAIT)
        server.server_close()
    assert read_until_closed(client) == b""
    client.close()
    assert closes_metric(reactor) == {**expected, "shutdown": 1}


def test_the_access_log_and_the_table_name_reasons_alike() -> None:
    assert close_reason(None, 1, False) == "client-eof"
    assert close_reason(None, 0, True) == "shutdown"
    assert close_reason(None, 0, False) == "server-close"
    assert close_reason(DeadlineExceeded("idle timeout"), 1, True) == "idle-timeout"
    assert close_reason(TimeoutError("TLS handshake timed out"), 0, False) == "timeout"
    assert close_reason(ConnectionResetError(), 1, False) == "reset"
    assert close_reason(ValueError("a bug"), 1, False) == "error"
    table = ConnectionTable()
    table.ends[0] += 1
    table.ends[1] += 2
    table.begin_stopping()
    assert table.stopping
    table.ends[0] += 3
    table.ends[1] += 4
    table.closes["reset"] += 1
    assert table.close_counts() == {"client-eof": 6, "reset": 1, "server-close": 1,
                                    "shutdown": 3}


def test_tls_connections_are_counted_by_the_raw_row(loop: Reactor, tmp_path: Path) -> None:
    reactor = loop
    certs = Certs(tmp_path / "certs")
    served = reactor.listen_tcp("127.0.0.1", 0, Echo, ssl=certs.server_context(),
                                ssl_handshake_timeout=DEADLINE)
    threading.Thread(target=reactor.run, daemon=True).start()
    wait_for(reactor.is_running)
    context = certs.client_context()

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(served.address, timeout=WAIT)
        return context.wrap_socket(raw, server_hostname="localhost")

    client = connect()  # close_notify from the client: its EOF
    echo(client, b"hello")
    client.unwrap().close()  # waits for the server's close_notify
    client = connect()  # the server's close
    client.sendall(b"bye")
    assert read_until_closed(client) == b""
    client.close()
    plain = socket.create_connection(served.address, timeout=WAIT)
    plain.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a ClientHello: the handshake fails
    read_until_closed(plain)
    plain.close()
    plain = socket.create_connection(served.address, timeout=WAIT)  # says nothing
    read_until_closed(plain)  # closed at the handshake's deadline
    plain.close()
    wait_for(lambda: counted(reactor) == 4, what="four closes counted")
    assert on_loop(reactor, lambda: closes_metric(reactor)) == {
        "client-eof": 1, "server-close": 1, "error": 1, "timeout": 1}
