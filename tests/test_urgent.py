"""TCP urgent data on reactor transports (reactor.io.urgent), over real sockets.

A client sends ``MSG_OOB`` in the middle of a stream, byte by byte and in bursts; a
protocol with ``urgent_data_received`` gets each urgent byte in its place in the
stream, one without it gets the stream as the kernel gives it, and an urgent byte the
transport cannot read never makes the loop spin. Every test runs on each selector the
platform offers (the ``reactor`` fixture), the epoll fast path included.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import select
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reactor import Reactor, StreamTransport
from reactor.io.urgent import at_mark

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


class Urgent(asyncio.Protocol):
    """Records data and urgent bytes in the order they arrive."""

    def __init__(self, pause_at_start: bool = False, inline: bool = False) -> None:
        self.pause_at_start = pause_at_start
        self.inline = inline
        self.transport: Any = None
        self.events: list[tuple[str, bytes]] = []
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.inline:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        if self.pause_at_start:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def urgent_data_received(self, byte: bytes) -> None:
        self.events.append(("urgent", byte))

    def eof_received(self) -> None:
        self.eof = True

    # -- reading the record -------------------------------------------------------

    def urgent(self) -> bytes:
        return b"".join(b for kind, b in self.events if kind == "urgent")

    def data(self) -> bytes:
        return b"".join(b for kind, b in self.events if kind == "data")

    def flat(self) -> list[tuple[str, bytes]]:
        """The events with runs of data joined (how reads split them is the kernel's)."""
        out: list[tuple[str, bytes]] = []
        for kind, b in self.events:
            if out and kind == "data" and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + b)
            else:
                out.append((kind, b))
        return out


class Plain(asyncio.Protocol):
    """A protocol that does not opt in."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


class Setup:
    def __init__(self, reactor: Reactor, protocol: asyncio.Protocol) -> None:
        self.reactor = reactor
        self.protocol = protocol
        made: list[asyncio.Protocol] = []

        def factory() -> asyncio.Protocol:
            made.append(protocol)
            return protocol

        self.listener = reactor.listen_tcp("127.0.0.1", 0, factory)
        self.client = socket.create_connection(("127.0.0.1", self.listener.port), timeout=WAIT)
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reactor.run_until(lambda: bool(made), WAIT)

    def send(self, data: bytes, urgent: bool = False) -> None:
        self.client.send(data, socket.MSG_OOB if urgent else 0)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def setups(reactor: Reactor) -> Iterator[list[Setup]]:
    made: list[Setup] = []
    yield made
    for setup in made:
        setup.close()


def connect(reactor: Reactor, setups: list[Setup], protocol: asyncio.Protocol) -> Setup:
    setup = Setup(reactor, protocol)
    setups.append(setup)
    return setup


def iterations_while_idle(reactor: Reactor, seconds: float = 0.3) -> tuple[int, float]:
    """Iterations and CPU seconds the reactor spends in ``seconds`` of wall time with a
    poll timeout of 0.1 s: a handful when idle, thousands when it spins."""
    before = reactor.statistics().iterations
    cpu = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reactor.run_once(0.1)
    return reactor.statistics().iterations - before, time.process_time() - cpu


# -- delivery in order ----------------------------------------------------------------


def test_an_urgent_byte_arrives_between_the_bytes_around_it(
    reactor: Reactor, setups: list[Setup]
) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    assert isinstance(proto.transport, StreamTransport)
    assert type(proto.transport).__name__ == "StreamTransport[urgent]"
    s.send(b"abc")
    s.send(b"!", urgent=True)
    # the urgent byte alone makes nothing readable: only the priority event wakes us
    reactor.run_until(lambda: proto.urgent() == b"!", WAIT)
    s.send(b"def")
    reactor.run_until(lambda: proto.data() == b"abcdef", WAIT)
    assert proto.flat() == [("data", b"abc"), ("urgent", b"!"), ("data", b"def")]
    assert proto.transport.bytes_in == 7


def test_urgent_bytes_byte_by_byte(reactor: Reactor, setups: list[Setup]) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    expected: list[tuple[str, bytes]] = []
    for i in range(6):
        normal = b"n%d" % i
        mark = bytes([ord("A") + i])
        s.send(normal)
        s.send(mark, urgent=True)
        expected += [("data", normal), ("urgent", mark)]
        reactor.run_until(lambda n=i + 1: len(proto.urgent()) == n, WAIT)  # type: ignore[misc]
    s.send(b"end")
    reactor.run_until(lambda: proto.data().endswith(b"end"), WAIT)
    assert proto.flat() == [*expected, ("data", b"end")]


def test_a_send_of_several_bytes_makes_only_its_last_urgent(
    reactor: Reactor, setups: list[Setup]
) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    s.send(b"xyz", urgent=True)
    s.send(b"tail")
    reactor.run_until(lambda: proto.data().endswith(b"tail"), WAIT)
    assert proto.flat() == [("data", b"xy"), ("urgent", b"z"), ("data", b"tail")]


def test_a_burst_of_urgent_bytes_keeps_the_last_one_urgent(
    reactor: Reactor, setups: list[Setup]
) -> None:
    # The reactor does not run while the client sends: the kernel has one urgent byte
    # at a time, and an earlier one is left in the stream (or dropped when it was next
    # to read). Whatever the timing, the last is urgent, nothing comes twice, and the
    # order is the order sent.
    proto = Urgent()
    s = connect(reactor, setups, proto)
    s.send(b"ab")
    for byte in b"123":
        s.send(bytes([byte]), urgent=True)
    s.send(b"cd")
    reactor.run_until(lambda: proto.data().endswith(b"cd") and b"3" in proto.urgent(), WAIT)
    assert proto.urgent().endswith(b"3")
    seen = b"".join(b for _, b in proto.events)
    assert re.fullmatch(b"ab1?2?3cd", seen), seen
    assert proto.flat()[0] == ("data", seen[:seen.index(proto.urgent()[0])])


def test_many_urgent_bytes_each_acknowledged(reactor: Reactor, setups: list[Setup]) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    for i in range(50):
        s.send(b"." * (i % 7))
        s.send(bytes([i]), urgent=True)
        reactor.run_until(lambda n=i + 1: len(proto.urgent()) == n, WAIT)  # type: ignore[misc]
    assert proto.urgent() == bytes(range(50))
    assert proto.data() == b"".join(b"." * (i % 7) for i in range(50))


def test_an_outgoing_connection_takes_urgent_bytes(reactor: Reactor) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        future = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], Urgent)
        peer, _ = server.accept()
        with peer:
            _, proto = reactor.run_until_complete(future, WAIT)
            assert type(proto.transport).__name__ == "StreamTransport[urgent]"
            peer.send(b"ab")
            peer.send(b"!", socket.MSG_OOB)
            reactor.run_until(lambda: proto.urgent() == b"!", WAIT)
            peer.send(b"cd")
            reactor.run_until(lambda: proto.data() == b"abcd", WAIT)
            assert proto.flat() == [("data", b"ab"), ("urgent", b"!"), ("data", b"cd")]
            proto.transport.close()


# -- a protocol that does not opt in ----------------------------------------------------


def test_a_plain_protocol_gets_the_stream_as_the_kernel_gives_it(
    reactor: Reactor, setups: list[Setup]
) -> None:
    proto = Plain()
    s = connect(reactor, setups, proto)
    assert type(proto.transport) is StreamTransport  # no variant, no registration change
    s.send(b"abc")
    s.send(b"!", urgent=True)
    s.send(b"def")
    reactor.run_until(lambda: proto.data.endswith(b"def"), WAIT)
    assert proto.data == b"abcdef"  # the urgent byte is out of the stream


def _epoll_events(epoll_fd: int, fd: int) -> int:
    """The events ``fd`` is registered for on an epoll descriptor (from /proc); 0 when
    it is not registered."""
    with open(f"/proc/self/fdinfo/{epoll_fd}") as info:
        for line in info:
            match = re.match(r"tfd:\s+(\d+)\s+events:\s+([0-9a-f]+)", line)
            if match and int(match[1]) == fd:
                return int(match[2], 16)
    return 0


@pytest.mark.skipif(not hasattr(selectors, "EpollSelector"), reason="epoll only")
@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="needs /proc")
def test_epoll_watches_the_priority_event_only_for_urgent_transports() -> None:
    with Reactor(selector=selectors.EpollSelector()) as reactor:
        assert reactor.epoll_path is not None  # the fast path
        plain, urgent = Plain(), Urgent()
        made = [Setup(reactor, plain), Setup(reactor, urgent)]
        try:
            epfd = reactor.epoll_path.epoll.fileno()
            plain_fd = plain.transport.get_extra_info("socket").fileno()
            urgent_fd = urgent.transport.get_extra_info("socket").fileno()
            assert not _epoll_events(epfd, plain_fd) & select.EPOLLPRI
            assert _epoll_events(epfd, urgent_fd) & select.EPOLLPRI
            urgent.transport.pause_reading()  # a paused transport is not woken for it
            assert not _epoll_events(epfd, urgent_fd) & 3
            urgent.transport.resume_reading()
            assert _epoll_events(epfd, urgent_fd) & 3 == 3
            urgent.transport.set_protocol(Plain())  # back to the plain class
            assert type(urgent.transport) is StreamTransport
            assert _epoll_events(epfd, urgent_fd) & 3 == 1
        finally:
            for setup in made:
                setup.close()


# -- no busy loop ---------------------------------------------------------------------


def test_an_urgent_byte_while_paused_does_not_spin(reactor: Reactor, setups: list[Setup]) -> None:
    proto = Urgent(pause_at_start=True)
    s = connect(reactor, setups, proto)
    s.send(b"abc")
    s.send(b"!", urgent=True)
    sock = proto.transport.get_extra_info("socket")
    # wait until the kernel has the urgent byte (select's exceptional set says so)
    assert select.select([], [], [sock], WAIT)[2]
    iterations, cpu = iterations_while_idle(reactor)
    assert iterations <= 10, iterations
    assert cpu < 0.2
    assert proto.events == []
    proto.transport.resume_reading()
    reactor.run_until(lambda: proto.urgent() == b"!", WAIT)
    assert proto.flat() == [("data", b"abc"), ("urgent", b"!")]


def test_inline_urgent_bytes_stay_in_the_stream_and_do_not_spin(
    reactor: Reactor, setups: list[Setup]
) -> None:
    proto = Urgent(inline=True)  # SO_OOBINLINE: recv(MSG_OOB) fails with EINVAL
    s = connect(reactor, setups, proto)
    s.send(b"abc")
    s.send(b"!", urgent=True)
    reactor.run_until(lambda: proto.data() == b"abc!", WAIT)
    iterations, cpu = iterations_while_idle(reactor)
    assert iterations <= 10, iterations
    assert cpu < 0.2
    s.send(b"def")
    reactor.run_until(lambda: proto.data() == b"abc!def", WAIT)
    assert proto.urgent() == b""


class _RefusingOOB:
    """A socket whose ``recv(MSG_OOB)`` fails as told; everything else is the real one."""

    def __init__(self, real: socket.socket, exc: OSError) -> None:
        self.real = real
        self.exc = exc
        self.refused = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_OOB:
            self.refused += 1
            raise self.exc
        return self.real.recv(size, flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("exc", [BlockingIOError(errno.EAGAIN, "not yet"),
                                 OSError(errno.EINVAL, "invalid")], ids=["EAGAIN", "EINVAL"])
def test_a_refused_urgent_read_goes_on_with_the_stream_without_spinning(
    reactor: Reactor, setups: list[Setup], exc: OSError
) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    transport = proto.transport
    fake = _RefusingOOB(transport._sock, exc)
    transport._sock = fake
    try:
        s.send(b"abc")
        s.send(b"!", urgent=True)
        s.send(b"def")
        # at the mark the urgent read fails; the ordinary read steps over the byte
        # (the kernel forgets it), and the priority event ends with it
        reactor.run_until(lambda: proto.data() == b"abcdef", WAIT)
        assert fake.refused >= 1
        iterations, cpu = iterations_while_idle(reactor)
        assert iterations <= 10, iterations
        assert cpu < 0.2
        assert proto.urgent() == b""
        assert not transport.is_closing()
    finally:
        transport._sock = fake.real


# -- the callback's side of things ----------------------------------------------------


def test_pausing_in_urgent_data_received_holds_the_rest(
    reactor: Reactor, setups: list[Setup]
) -> None:
    class PauseOnUrgent(Urgent):
        def urgent_data_received(self, byte: bytes) -> None:
            super().urgent_data_received(byte)
            self.transport.pause_reading()

    proto = PauseOnUrgent()
    s = connect(reactor, setups, proto)
    s.send(b"abc")
    s.send(b"!", urgent=True)
    reactor.run_until(lambda: proto.urgent() == b"!", WAIT)
    s.send(b"def")
    iterations, _ = iterations_while_idle(reactor)
    assert iterations <= 10
    assert proto.data() == b"abc"
    proto.transport.resume_reading()
    reactor.run_until(lambda: proto.data() == b"abcdef", WAIT)


def test_an_urgent_callback_that_raises_closes_the_connection(
    reactor: Reactor, setups: list[Setup], caplog: pytest.LogCaptureFixture
) -> None:
    class Raises(Urgent):
        lost: list[BaseException | None]

        def urgent_data_received(self, byte: bytes) -> None:
            raise RuntimeError("boom")

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost = [exc]

    proto = Raises()
    s = connect(reactor, setups, proto)
    s.send(b"!", urgent=True)
    reactor.run_until(lambda: hasattr(proto, "lost"), WAIT)
    assert isinstance(proto.lost[0], RuntimeError)
    assert "urgent_data_received raised" in caplog.text


def test_the_peer_closing_after_an_urgent_byte(reactor: Reactor, setups: list[Setup]) -> None:
    proto = Urgent()
    s = connect(reactor, setups, proto)
    s.send(b"ab")
    s.send(b"!", urgent=True)
    s.client.shutdown(socket.SHUT_WR)
    reactor.run_until(lambda: proto.eof, WAIT)
    assert proto.flat() == [("data", b"ab"), ("urgent", b"!")]


def test_a_buffered_protocol_can_take_urgent_bytes(reactor: Reactor, setups: list[Setup]) -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(64)
            self.events: list[tuple[str, bytes]] = []

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.events.append(("data", bytes(self.buf[:nbytes])))

        def urgent_data_received(self, byte: bytes) -> None:
            self.events.append(("urgent", byte))

    proto = Buffered()
    s = connect(reactor, setups, proto)  # type: ignore[arg-type]
    assert type(proto.transport).__name__ == "StreamTransport[buffered][urgent]"
    s.send(b"abc")
    s.send(b"!", urgent=True)
    reactor.run_until(lambda: ("urgent", b"!") in proto.events, WAIT)
    s.send(b"def")
    reactor.run_until(lambda: proto.events[-1] == ("data", b"def"), WAIT)
    assert proto.events == [("data", b"abc"), ("urgent", b"!"), ("data", b"def")]


def test_at_mark_is_sockatmark() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=WAIT)
        conn, _ = server.accept()
        with client, conn:
            # blocking, not a timeout: with a timeout Python waits to be readable
            # before any recv, and an urgent byte alone makes nothing readable
            conn.settimeout(None)
            assert not at_mark(conn)
            client.send(b"ab")
            client.send(b"!", socket.MSG_OOB)
            assert select.select([], [], [conn], WAIT)[2]
            assert not at_mark(conn)
            assert conn.recv(10) == b"ab"  # stops at the mark
            assert at_mark(conn)
            assert conn.recv(1, socket.MSG_OOB) == b"!"
