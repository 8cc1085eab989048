"""Scenario 9: an aborted connection reports what it discarded.

Bytes dropped unsent from a write queue -- by ``abort()``, or by a close forced by a
reset with output pending -- are never dropped silently: the row keeps the count
(``transport.discarded``), the table and the reactor total it (``statistics()``),
and a debug line names the connection's address and the count.

The peer never reads and the server's send buffer is kept small, so the kernel takes
only what its buffers hold and the rest of 1 MiB stays queued; the count must be
exactly the queue's size just before the end.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from reactor import Reactor

TIMEOUT = 10.0
MIB = 1 << 20


class Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r


def connect(reactor: Reactor) -> tuple[socket.socket, Server]:
    """A client that never reads (small receive buffer) and the server's protocol."""
    protocols: list[Server] = []

    def factory() -> Server:
        protocols.append(Server())
        return protocols[-1]

    listener = reactor.listen_tcp("127.0.0.1", 0, factory)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(TIMEOUT)
    client.connect(("127.0.0.1", listener.port))
    reactor.run_until(lambda: bool(protocols), timeout=TIMEOUT)
    listener.close()
    return client, protocols[0]


def queue_a_mebibyte(reactor: Reactor, server: Server) -> int:
    """Write 1 MiB to a peer that does not read; return what stays queued."""
    transport = server.transport
    # loopback's send buffer grows to megabytes: keep it small so most of it stays queued
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    transport.write(b"x" * MIB)
    for _ in range(5):  # let write-readiness events move what the kernel will take
        reactor.run_once(0.01)
    queued: int = transport.get_write_buffer_size()
    assert queued + transport.bytes_out == MIB
    assert queued > 0, "the kernel took the whole mebibyte: the peer reads after all?"
    return queued


def test_abort_reports_the_bytes_it_dropped(reactor: Reactor,
                                            caplog: pytest.LogCaptureFixture) -> None:
    client, server = connect(reactor)
    transport = server.transport
    peer = transport.get_extra_info("peername")
    queued = queue_a_mebibyte(reactor, server)
    assert transport.discarded == 0
    with caplog.at_level(logging.DEBUG, logger="reactor.transports"):
        transport.abort()
    assert transport.discarded == queued
    assert transport.get_write_buffer_size() == 0
    assert reactor.connections.statistics().discarded == queued
    reactor.run_until(lambda: bool(server.lost), timeout=TIMEOUT)
    assert server.lost == [None]
    # the totals outlive the row
    assert len(reactor.connections) == 0
    assert reactor.statistics().discarded == queued
    assert reactor.connections.statistics().discarded == queued
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(str(peer) in line and f"{queued} queued bytes discarded" in line
               for line in lines), lines
    client.close()


def test_a_reset_with_output_pending_reports_the_dropped_bytes(reactor: Reactor) -> None:
    client, server = connect(reactor)
    transport = server.transport
    queued = queue_a_mebibyte(reactor, server)
    # the peer resets: SO_LINGER on, zero seconds, then close
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    reactor.run_until(lambda: bool(server.lost), timeout=TIMEOUT)
    assert isinstance(server.lost[0], ConnectionResetError), server.lost
    assert transport.discarded == queued
    assert reactor.statistics().discarded == queued


def test_totals_add_up_and_a_clean_close_discards_nothing(reactor: Reactor) -> None:
    total = 0
    for _ in range(3):
        client, server = connect(reactor)
        total += queue_a_mebibyte(reactor, server)
        server.transport.abort()
        reactor.run_until(lambda s=server: bool(s.lost), timeout=TIMEOUT)  # type: ignore[misc]
        client.close()
    assert reactor.statistics().discarded == total

    # a close whose queue drains (the peer reads) drops nothing
    client, server = connect(reactor)
    server.transport.write(b"y" * 100_000)
    server.transport.close()
    received = 0
    while received < 100_000:
        reactor.run_once(0.01)
        try:
            chunk = client.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        assert chunk, "EOF before every byte arrived"
        received += len(chunk)
    reactor.run_until(lambda: bool(server.lost), timeout=TIMEOUT)
    assert server.transport.discarded == 0
    assert reactor.statistics().discarded == total
    client.close()
