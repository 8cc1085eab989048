"""asyncio.BufferedProtocol on the reactor: each read goes into the protocol's own
buffer (``get_buffer(-1)``, ``recv_into``, ``buffer_updated(n)``), with the same
callbacks and results as on asyncio's loop, over real loopback sockets.

The protocols below import nothing from this project: only :mod:`asyncio`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import pytest
from handlerkit import DEADLINE, HOST, LOOPS, serve_tcp

from reactor import Reactor
from reactor.io.stream import StreamTransport


def compress(trace: list[str]) -> list[str]:
    """The trace with runs of one event folded (how reads are chunked may vary)."""
    out: list[str] = []
    for event in trace:
        if not out or out[-1] != event:
            out.append(event)
    return out


class BufferedEcho(asyncio.BufferedProtocol):
    """Echoes what arrives in its own ``size``-byte buffer; at EOF it writes
    ``total N`` and closes."""

    traces: list[list[str]] = []

    def __init__(self, size: int = 65536) -> None:
        self.buffer = bytearray(size)
        self.trace: list[str] = []
        self.total = 0
        self.transport: Any = None
        self.hints: set[int] = set()
        BufferedEcho.traces.append(self.trace)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.trace.append("made")

    def get_buffer(self, sizehint: int) -> bytearray:
        self.hints.add(sizehint)
        self.trace.append("get_buffer")
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.trace.append("updated")
        self.total += nbytes
        self.transport.write(bytes(self.buffer[:nbytes]))

    def eof_received(self) -> bool:
        self.trace.append("eof")
        self.transport.write(b"total %d\n" % self.total)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.trace.append("lost" if exc is None else f"lost {type(exc).__name__}")


def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read everything back until the server closes."""
    with socket.create_connection((HOST, port), timeout=DEADLINE) as sock:
        received = bytearray()
        sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                  sock.shutdown(socket.SHUT_WR)))
        sender.start()
        while chunk := sock.recv(65536):
            received += chunk
        sender.join(DEADLINE)
    return bytes(received)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [16, 65536])
@pytest.mark.parametrize("kind", LOOPS)
def test_a_buffered_echo_gets_its_bytes_as_on_asyncio(kind: str, size: int) -> None:
    BufferedEcho.traces = []
    payload = os.urandom(300_000)
    with serve_tcp(kind, lambda: BufferedEcho(size)) as server:
        received = exchange(server.port, payload)
    assert received == payload + b"total %d\n" % len(payload)
    [trace] = BufferedEcho.traces
    assert compress([e for e in trace if e != "get_buffer"]) == \
        ["made", "updated", "eof", "lost"]
    # one buffer asked for before every read, the last read finding the EOF
    assert trace.count("get_buffer") == trace.count("updated") + 1


class Switcher(asyncio.Protocol):
    """A plain protocol until the line ``buffered``, then hands the connection to a
    BufferedEcho with ``set_protocol``; that one hands it back to a plain echo at
    ``plain`` (asyncio allows switching either way)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"plain:" + data)
        if data.endswith(b"buffered\n"):
            self.transport.set_protocol(BackAgain(self.transport))


class BackAgain(BufferedEcho):
    def __init__(self, transport: Any) -> None:
        super().__init__(4096)
        self.transport = transport

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.buffer[:nbytes])
        self.transport.write(b"buffered:" + data)
        if data.endswith(b"plain\n"):
            plain = Switcher()
            plain.transport = self.transport
            self.transport.set_protocol(plain)


def ask(sock: socket.socket, line: bytes, answer_prefix: bytes) -> bytes:
    sock.sendall(line)
    want = answer_prefix + line
    got = b""
    while len(got) < len(want):
        chunk = sock.recv(4096)
        assert chunk, "EOF"
        got += chunk
    return got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", LOOPS)
def test_set_protocol_switches_between_plain_and_buffered_reads(kind: str) -> None:
    with serve_tcp(kind, Switcher) as server, \
            socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        assert ask(sock, b"one\n", b"plain:") == b"plain:one\n"
        assert ask(sock, b"buffered\n", b"plain:") == b"plain:buffered\n"
        assert ask(sock, b"two\n", b"buffered:") == b"buffered:two\n"
        assert ask(sock, b"plain\n", b"buffered:") == b"buffered:plain\n"
        assert ask(sock, b"three\n", b"plain:") == b"plain:three\n"


class BadBuffer(BufferedEcho):
    def __init__(self, fault: str) -> None:
        super().__init__(16)
        self.fault = fault

    def get_buffer(self, sizehint: int) -> bytearray:
        if self.fault == "raises":
            raise ValueError("no buffer today")
        return bytearray()  # empty


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["raises", "empty"])
@pytest.mark.parametrize("kind", LOOPS)
def test_a_failing_get_buffer_closes_the_connection_with_the_error(
    kind: str, fault: str, caplog: pytest.LogCaptureFixture,
) -> None:
    BufferedEcho.traces = []
    with serve_tcp(kind, lambda: BadBuffer(fault)) as server, \
            socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        sock.sendall(b"hello")
        try:
            assert sock.recv(100) == b""  # closed, nothing echoed
        except ConnectionResetError:
            pass  # closed with the input unread: a reset, on both loops
    expected = "lost ValueError" if fault == "raises" else "lost RuntimeError"
    [trace] = BufferedEcho.traces
    assert trace == ["made", expected]


def test_the_buffered_variant_keeps_debug_modes_thread_checks() -> None:
    """Debug mode switches every transport to a checking subclass; a BufferedProtocol
    then switches it to that subclass's buffered variant, which still checks."""
    reactor = Reactor(debug=True)
    try:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        transport = StreamTransport(reactor, ours, "socketpair")
        checked = type(transport)
        assert checked is not StreamTransport  # debug mode's subclass
        proto = BufferedEcho(64)
        transport.attach(proto)
        assert type(transport).__bases__ == (checked,)
        theirs.sendall(b"ping")
        reactor.run_until(lambda: proto.total == 4, DEADLINE)
        assert theirs.recv(10) == b"ping"
        # the checked methods are inherited, not StreamTransport's own
        assert type(transport).write is checked.write is not StreamTransport.write
        transport.set_protocol(asyncio.Protocol())
        assert type(transport) is checked  # back to the plain (checked) class
        transport.abort()
        theirs.close()
        reactor.run_once(0)
    finally:
        reactor.close()



class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


def test_attach_after_set_protocol_reads_the_way_the_attached_protocol_takes_it() -> None:
    """A transport switched to its buffered variant by ``set_protocol`` goes back to
    plain reads when a plain protocol is attached, and the other way round."""
    reactor = Reactor()
    try:
        for first, second in ((BufferedEcho(64), Collect()), (Collect(), BufferedEcho(64))):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            transport = StreamTransport(reactor, ours, "socketpair")
            transport.set_protocol(first)
            transport.attach(second)
            theirs.sendall(b"data")
            if isinstance(second, Collect):
                reactor.run_until(lambda p=second: p.data == b"data", DEADLINE)
                assert type(transport) is StreamTransport
            else:
                reactor.run_until(lambda p=second: p.total == 4, DEADLINE)
                assert type(transport).__bases__ == (StreamTransport,)
            transport.abort()
            theirs.close()
        reactor.run_once(0)
    finally:
        reactor.close()
