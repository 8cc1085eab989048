"""Stream transports over real sockets: socketpairs, TCP (IPv4, IPv6, dual-stack), Unix.

Every test drives the reactor with ``run_until``/``run_once`` and does the far end's
I/O with non-blocking sockets registered with the same reactor (``netkit.Peer``), so
nothing waits on a sleep. Most tests run on every selector backend.
"""

from __future__ import annotations

import array
import asyncio
import logging
import selectors
import socket
from pathlib import Path
from typing import Any

import pytest
from netkit import WAIT, Net, Recorder, events_of, requires_ipv6

from reactor import ConnState, Reactor, StreamTransport

R = selectors.EVENT_READ
W = selectors.EVENT_WRITE
BIG = 8 * 1024 * 1024  # more than any loopback or socketpair kernel buffer holds




def pattern(n: int) -> bytes:
    """``n`` bytes whose order is checkable."""
    block = bytes(range(251))
    return (block * (n // len(block) + 1))[:n]


def fill_transport(tr: Any, chunk: int = 65536) -> bytes:
    """Write until the kernel refuses and something is queued; what was written."""
    written = bytearray()
    n = 0
    while tr.get_write_buffer_size() == 0:
        block = bytes([n % 256]) * chunk
        tr.write(block)
        written += block
        n += 1
    return bytes(written)


# -- any asyncio.Protocol runs unchanged ---------------------------------------------------


class PlainEcho(asyncio.Protocol):
    """Written for asyncio, with nothing reactor-specific in it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        assert isinstance(transport.get_extra_info("peername"), (tuple, str))
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1


def serve_plain_echo(reactor: Reactor, kind: str, sockdir: str) -> tuple[Any, Any, int]:
    """Listen with PlainEcho; return (listener, connect address, family)."""
    if kind == "unix":
        path = str(Path(sockdir) / "echo.sock")
        return reactor.listen_unix(path, PlainEcho), path, socket.AF_UNIX
    if kind == "ipv4":
        lst = reactor.listen_tcp("127.0.0.1", 0, PlainEcho)
        return lst, ("127.0.0.1", lst.port), socket.AF_INET
    if kind == "ipv6":
        lst = reactor.listen_tcp("::1", 0, PlainEcho)
        return lst, ("::1", lst.port), socket.AF_INET6
    # dual stack: one IPv6 socket, an IPv4 client
    lst = reactor.listen_tcp("::", 0, PlainEcho, dual_stack=True)
    return lst, ("127.0.0.1", lst.port), socket.AF_INET


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kind",
    ["ipv4", "unix", pytest.param("ipv6", marks=requires_ipv6),
     pytest.param("dual", marks=requires_ipv6)],
)
def test_plain_asyncio_protocol_echoes(reactor: Reactor, net: Net, sockdir: str,
                                       kind: str) -> None:
    listener, address, family = serve_plain_echo(reactor, kind, sockdir)
    peers = [net.connect(address, family) for _ in range(5)]
    messages = [pattern(100_000 + i) for i in range(len(peers))]
    for peer, msg in zip(peers, messages, strict=False):
        peer.send_all(msg[:1000])
    net.wait(lambda: all(len(p.received) == 1000 for p in peers))
    for peer, msg in zip(peers, messages, strict=False):
        peer.write(msg[1000:])
    net.wait(lambda: all(len(p.received) == len(m) for p, m in zip(peers, messages, strict=False)))
    assert [bytes(p.received) for p in peers] == messages
    assert listener.active == len(peers)
    rows = list(reactor.connections)
    assert {row.state for row in rows} == {ConnState.OPEN}
    if kind == "dual":
        assert all(row.peername[0] == "::ffff:127.0.0.1" for row in rows)
        assert all(row.kind == "tcp" for row in rows)
        # the same socket serves IPv6 clients too
        six = net.connect(("::1", listener.port))
        six.send_all(b"six")
        net.wait(lambda: six.received == b"six")
    elif kind == "unix":
        assert all(row.kind == "unix" for row in rows)
    # the peers half-close: PlainEcho returns None from eof_received, so each closes
    protocols = [row.protocol for row in rows]
    for peer in peers:
        peer.shutdown_write()
    net.wait(lambda: all(p.eof for p in peers))
    net.wait(lambda: all(p.lost == 1 for p in protocols[: len(peers)]))


# -- writing ---------------------------------------------------------------------------------


def test_write_sends_at_once_without_write_interest(reactor: Reactor, net: Net) -> None:
    peer, tr, _proto = net.pair()
    sock = tr.get_extra_info("socket")
    assert events_of(reactor, sock) == R
    tr.write(b"hello")
    # no reactor iteration ran: the bytes went straight to the kernel
    assert peer.sock.recv(100) == b"hello"
    assert tr.get_write_buffer_size() == 0
    assert tr.bytes_out == 5
    assert events_of(reactor, sock) == R


def test_write_interest_only_while_the_kernel_buffer_is_full(reactor: Reactor,
                                                              net: Net) -> None:
    peer, tr, _ = net.pair()
    sock = tr.get_extra_info("socket")
    peer.stop_reading()
    data = pattern(BIG)
    tr.write(data)
    queued = tr.get_write_buffer_size()
    assert 0 < queued < BIG
    assert tr.bytes_out == BIG - queued
    assert events_of(reactor, sock) == R | W
    assert tr.write_buffer_size == queued
    assert reactor.statistics().write_buffered == queued
    # more writes while queued go behind the queue, in order
    tr.write(b"tail")
    assert tr.get_write_buffer_size() == queued + 4
    peer.start_reading()
    net.wait(lambda: len(peer.received) == BIG + 4)
    assert peer.received == data + b"tail"
    assert tr.get_write_buffer_size() == 0
    assert events_of(reactor, sock) == R  # dropped when the queue drained
    assert tr.bytes_out == BIG + 4


class CountingSelectorMixin:
    """Counts register/modify/unregister calls (mask changes) on a real selector."""

    changes = 0

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Any:
        type(self).changes += 1
        return super().modify(fileobj, events, data)  # type: ignore[misc]


def test_selector_registration_changes_only_when_the_mask_does() -> None:
    cls = type("CountingSelector", (CountingSelectorMixin, selectors.DefaultSelector), {})
    with Reactor(selector=cls()) as reactor:
        net = Net(reactor)
        try:
            peer, tr, _ = net.pair()
            peer.stop_reading()
            before = cls.changes
            for _ in range(50):  # a write that queues, then many behind it
                tr.write(b"x" * 200_000)
            assert cls.changes - before == 1  # READ -> READ|WRITE, once
            peer.start_reading()
            net.wait(lambda: len(peer.received) == 50 * 200_000)
            assert cls.changes - before == 2  # and back to READ, once
            for _ in range(100):  # writes the kernel takes at once touch nothing
                tr.write(b"y" * 100)
            assert cls.changes - before == 2
        finally:
            net.close()


def test_writelines(reactor: Reactor, net: Net) -> None:
    peer, tr, _ = net.pair()
    tr.writelines([b"one ", bytearray(b"two "), memoryview(b"three")])
    tr.writelines(iter([b"!", b"?"]))
    net.wait(lambda: peer.received == b"one two three!?")
    with pytest.raises(TypeError):
        tr.write("text")  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_write_refuses_non_bytes_also_while_queued_and_sizes_any_buffer_in_bytes(
        reactor: Reactor, net: Net) -> None:
    _peer, tr, _ = net.pair()
    tr.write(b"x" * 32_000_000)  # more than the kernel takes: the rest is queued
    queued = tr.get_write_buffer_size()
    assert queued > 0
    for bad in ("text", [1, 2, 3], 12):
        with pytest.raises(TypeError):
            tr.write(bad)  # type: ignore[arg-type]
    assert tr.get_write_buffer_size() == queued
    tr.write(array.array("i", [1, 2]))  # any bytes-like object, counted in bytes
    assert tr.get_write_buffer_size() == queued + 8
    tr.abort()


@pytest.mark.timeout(30)
def test_water_marks_pause_and_resume_writing_exactly_at_the_marks(reactor: Reactor,
                                                                    net: Net) -> None:
    high, low = 64 * 1024, 16 * 1024
    peer, tr, proto = net.pair()
    tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    peer.stop_reading()
    tr.set_write_buffer_limits(high=high, low=low)
    assert tr.get_write_buffer_limits() == (low, high)
    written = bytearray(fill_transport(tr, 1024))
    # the queue grows 1 KiB per write; pause_writing comes on the write that crosses high
    n = 0
    while not proto.pause_sizes:
        before = tr.get_write_buffer_size()
        assert before <= high
        block = bytes([n % 256]) * 1024
        tr.write(block)
        written += block
        n += 1
    assert before <= high < proto.pause_sizes[0] == tr.get_write_buffer_size()
    for _ in range(10):  # no second pause while paused
        tr.write(b"z" * 1024)
        written += b"z" * 1024
    assert len(proto.pause_sizes) == 1
    # the peer reads a little at a time; resume_writing only once the queue is <= low
    deadline = reactor.time() + WAIT
    while not proto.resume_sizes:
        assert reactor.time() < deadline, "resume_writing never came"
        peer.recv_some(2048)
        reactor.run_once(0)
        if not proto.resume_sizes:
            assert tr.get_write_buffer_size() > low
    assert proto.resume_sizes[0] <= low
    assert len(proto.pause_sizes) == 1 and len(proto.resume_sizes) == 1
    peer.start_reading()
    net.wait(lambda: len(peer.received) == len(written))
    assert peer.received == written


def test_set_write_buffer_limits(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # asyncio's defaults
    tr.set_write_buffer_limits(high=1000)
    assert tr.get_write_buffer_limits() == (250, 1000)
    tr.set_write_buffer_limits(low=100)
    assert tr.get_write_buffer_limits() == (100, 400)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=-1, low=-2)
    peer.stop_reading()
    tr.set_write_buffer_limits(high=1 << 30)
    fill_transport(tr)
    size = tr.get_write_buffer_size()
    assert proto.pause_sizes == []
    tr.set_write_buffer_limits(high=size - 1, low=0)  # lowering high below the queue
    assert proto.pause_sizes == [size]
    tr.set_write_buffer_limits(high=size + 10, low=size)  # raising low above it
    assert proto.resume_sizes == [size]


# -- reading ---------------------------------------------------------------------------------


def test_pause_reading_stops_recv_and_the_read_interest(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    sock = tr.get_extra_info("socket")
    tr.pause_reading()
    assert not tr.is_reading()
    assert not events_of(reactor, sock) & R
    sent = peer.fill()
    assert sent > 0
    for _ in range(20):
        reactor.run_once(0)
    assert proto.data == b"" and tr.bytes_in == 0
    # nothing is drained into user space: the kernel buffers are full, the peer blocks
    assert peer.send(b"more") == 0
    tr.pause_reading()  # twice is harmless
    tr.resume_reading()
    assert tr.is_reading()
    assert events_of(reactor, sock) & R
    net.wait(lambda: len(proto.data) == sent)
    assert tr.bytes_in == sent
    tr.resume_reading()  # twice is harmless


def test_pause_reading_inside_data_received(reactor: Reactor, net: Net) -> None:
    def on_data(p: Recorder, data: bytes) -> None:
        if len(p.data) >= 3:
            p.transport.pause_reading()

    peer, tr, proto = net.pair(on_data=on_data)
    peer.send_all(b"abc")
    net.wait(lambda: not tr.is_reading())
    peer.send_all(b"defgh")
    for _ in range(20):
        reactor.run_once(0)
    assert proto.data == b"abc"
    tr.resume_reading()
    net.wait(lambda: proto.data == b"abcdefgh")


# -- half-close ------------------------------------------------------------------------------


def test_write_eof_half_closes(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    assert tr.can_write_eof()
    tr.write(b"last words")
    tr.write_eof()
    assert tr.state is ConnState.WRITE_CLOSED
    net.wait(lambda: peer.eof)
    assert peer.received == b"last words"
    with pytest.raises(RuntimeError):
        tr.write(b"more")
    # the peer can still talk to us
    peer.sock.send(b"still here")
    net.wait(lambda: proto.data == b"still here")
    tr.write_eof()  # twice is harmless
    assert not proto.closed
    # the peer finishes too: both directions done, the transport closes
    peer.shutdown_write()
    net.wait(lambda: proto.closed)
    assert proto.events[-2:] == ["eof_received", "connection_lost"]
    assert proto.lost == [None]
    assert tr not in reactor.connections


def test_write_eof_after_queued_data_sends_everything_first(reactor: Reactor,
                                                           net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    data = pattern(BIG)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    tr.write_eof()
    assert not peer.eof
    peer.start_reading()
    net.wait(lambda: peer.eof)
    assert peer.received == data
    assert not proto.closed  # only our side is closed


@pytest.mark.parametrize("keep_open", [True, False, None])
def test_peer_half_close_calls_eof_received(reactor: Reactor, net: Net,
                                            keep_open: bool | None) -> None:
    peer, tr, proto = net.pair(on_eof=lambda p: keep_open)
    peer.send_all(b"request")
    peer.shutdown_write()
    net.wait(lambda: "eof_received" in proto.events)
    assert proto.data == b"request"
    if keep_open:
        assert tr.state is ConnState.READ_CLOSED
        assert not tr.is_closing()
        tr.write(b"response after EOF")
        net.wait(lambda: peer.received == b"response after EOF")
        assert not peer.eof and not proto.closed
        tr.close()
    net.wait(lambda: peer.eof and proto.closed)
    assert proto.lost == [None]
    assert proto.events.count("connection_lost") == 1
    assert proto.reentered == []


def test_write_eof_inside_eof_received_does_not_reenter(reactor: Reactor, net: Net) -> None:
    """The peer closed its side; the protocol answers and closes ours from inside
    eof_received. connection_lost must come once, later, not inside eof_received."""

    def on_eof(p: Recorder) -> bool:
        p.transport.write(b"bye")
        p.transport.write_eof()
        return True

    peer, tr, proto = net.pair(on_eof=on_eof)
    peer.shutdown_write()
    net.wait(lambda: peer.eof and proto.closed)
    assert peer.received == b"bye"
    assert proto.reentered == []
    assert proto.lost == [None]
    assert tr not in reactor.connections


# -- close and abort -------------------------------------------------------------------------


def test_close_flushes_everything_then_closes(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    data = pattern(BIG)
    tr.write(data)
    tr.close()
    assert tr.is_closing()
    assert tr.state is ConnState.CLOSING
    assert tr.get_write_buffer_size() > 0
    assert not events_of(reactor, tr.get_extra_info("socket")) & R  # no more reading
    tr.close()  # twice is harmless
    peer.start_reading()
    net.wait(lambda: peer.eof)
    assert peer.received == data
    net.wait(lambda: proto.closed)
    assert proto.lost == [None]
    assert tr not in reactor.connections


def test_abort_drops_queued_bytes(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    tr.write(pattern(BIG))
    queued = tr.get_write_buffer_size()
    assert queued > 0
    tr.abort()
    assert tr.is_closing()
    assert tr.get_write_buffer_size() == 0
    tr.abort()
    tr.close()  # after abort: harmless
    peer.start_reading()
    net.wait(lambda: peer.eof and proto.closed)
    assert len(peer.received) == BIG - queued
    assert proto.lost == [None]


def test_is_closing(reactor: Reactor, net: Net) -> None:
    _, tr, _ = net.pair()
    assert not tr.is_closing()
    tr.pause_reading()
    tr.write_eof()
    assert not tr.is_closing()
    tr.close()
    assert tr.is_closing()


def test_get_extra_info(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    assert tr.get_extra_info("peername") == peer.sock.getsockname()
    assert tr.get_extra_info("sockname") == peer.sock.getpeername() == listener.address
    sock = tr.get_extra_info("socket")
    assert sock.fileno() >= 0 and sock.getpeername() == peer.sock.getsockname()
    assert sock.gettimeout() == 0.0  # non-blocking
    assert tr.get_extra_info("connection") is tr
    assert tr in reactor.connections
    assert tr.get_extra_info("nonsense") is None
    assert tr.get_extra_info("nonsense", 42) == 42
    tr.set_meta("client", "behind-a-proxy")
    assert tr.get_extra_info("client") == "behind-a-proxy"
    assert tr.get_protocol() is proto
    tr.abort()
    net.wait(lambda: proto.closed)
    assert tr.get_extra_info("socket") is None
    assert tr.get_extra_info("peername") == peer.sock.getsockname()  # kept for logs


# -- connection_lost exactly once, in every path ----------------------------------------------


def test_data_received_raising_is_logged_and_closes_only_that_connection(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor")
    boom = ValueError("handler bug")

    def on_data(p: Recorder, data: bytes) -> None:
        if data == b"boom":
            raise boom
        p.transport.write(data)

    listener = net.listen_tcp(on_data=on_data)
    bad, bad_proto = net.accept(listener)
    good, good_proto = net.accept(listener)
    bad.send_all(b"boom")
    net.wait(lambda: bad.eof and bad_proto.closed)
    assert bad_proto.lost == [boom]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert str(bad.sock.getsockname()[1]) in message  # the peer's address
    assert "OPEN" in message and "data_received" in message
    assert errors[0].exc_info is not None and errors[0].exc_info[1] is boom
    # the reactor keeps serving the other connection, and new ones
    good.send_all(b"still fine")
    net.wait(lambda: good.received == b"still fine")
    third, _ = net.accept(listener)
    third.send_all(b"new")
    net.wait(lambda: third.received == b"new")
    assert not good_proto.closed
    assert listener.active == 2


def test_connection_lost_raising_still_closes_the_socket(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")

    def on_lost(p: Recorder, exc: BaseException | None) -> None:
        raise RuntimeError("cleanup bug")

    listener = net.listen_tcp(on_lost=on_lost)
    peer, proto = net.accept(listener)
    tr = proto.transport
    tr.close()
    net.wait(lambda: peer.eof)
    net.wait(lambda: proto.closed)
    assert proto.lost == [None]
    assert tr not in reactor.connections
    assert listener.active == 0
    assert tr.get_extra_info("socket") is None
    assert any("connection_lost raised" in r.getMessage() for r in caplog.records)
    # nothing more happens to it, and the reactor still serves
    tr.close()
    tr.abort()
    other, _ = net.accept(listener)
    other.send_all(b"x")
    net.wait(lambda: listener.active == 1 and len(net.protocols[1].data) == 1)
    assert proto.lost == [None]


def test_close_inside_data_received(reactor: Reactor, net: Net) -> None:
    def on_data(p: Recorder, data: bytes) -> None:
        p.transport.write(b"goodbye")
        p.transport.close()
        p.transport.close()

    peer, _tr, proto = net.pair(on_data=on_data)
    peer.send_all(b"hi")
    net.wait(lambda: peer.eof and proto.closed)
    assert peer.received == b"goodbye"
    assert proto.events == ["connection_made", "data_received", "connection_lost"]
    assert proto.reentered == []
    assert proto.lost == [None]


def test_abort_inside_connection_made(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(on_made=lambda p: p.transport.abort())
    peer = net.connect(listener.address)
    peer.send_all(b"ignored")
    net.wait(lambda: net.protocols and net.protocols[0].closed)
    net.wait(lambda: peer.eof or peer.error is not None)
    proto = net.protocols[0]
    assert proto.events == ["connection_made", "connection_lost"]
    assert proto.reentered == []
    assert len(reactor.connections) == 0 and listener.active == 0


@pytest.mark.parametrize("how", ["close", "abort"])
def test_writes_after_close_are_dropped_with_one_warning(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    peer, tr, proto = net.pair()
    getattr(tr, how)()
    for _ in range(12):
        tr.write(b"dropped")
    tr.writelines([b"dropped"])
    net.wait(lambda: peer.eof and proto.closed)
    for _ in range(12):
        tr.write(b"dropped")
    assert peer.received == b""
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert proto.lost == [None]


@pytest.mark.parametrize("where", ["connection_made", "data_received", "eof_received"])
def test_any_raising_callback_closes_that_connection_once(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")
    bug = KeyError(where)

    def fail(*_: object) -> None:
        raise bug

    hook = {"connection_made": "on_made", "data_received": "on_data",
            "eof_received": "on_eof"}[where]
    listener = net.listen_tcp(**{hook: fail})
    peer = net.connect(listener.address)
    peer.send_all(b"x")
    peer.shutdown_write()
    net.wait(lambda: net.protocols and net.protocols[0].closed)
    net.wait(lambda: peer.eof or peer.error is not None)
    proto = net.protocols[0]
    assert proto.lost == [bug]
    assert proto.events.count("connection_lost") == 1 and proto.reentered == []
    assert [r.getMessage().count(where) for r in caplog.records] == [1]
    assert len(reactor.connections) == 0 and listener.active == 0


def test_flow_control_callbacks_raising_are_logged_not_fatal(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")

    class Touchy(Recorder):
        def pause_writing(self) -> None:
            super().pause_writing()
            raise RuntimeError("pause bug")

        def resume_writing(self) -> None:
            super().resume_writing()
            raise RuntimeError("resume bug")

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    tr = StreamTransport(reactor, ours, "touchy")
    proto = Touchy()
    tr.attach(proto)
    peer = net.adopt(theirs)
    peer.stop_reading()
    tr.set_write_buffer_limits(high=1024)
    data = pattern(BIG)
    tr.write(data)
    assert proto.pause_sizes
    peer.start_reading()
    net.wait(lambda: len(peer.received) == BIG)
    assert proto.resume_sizes and not proto.closed
    messages = [r.getMessage() for r in caplog.records]
    assert any("pause_writing raised" in m for m in messages)
    assert any("resume_writing raised" in m for m in messages)
    assert peer.received == data


def test_write_after_write_eof_raises(reactor: Reactor, net: Net) -> None:
    _, tr, _ = net.pair()
    tr.write_eof()
    with pytest.raises(RuntimeError, match="write_eof"):
        tr.write(b"x")
    with pytest.raises(RuntimeError):
        tr.writelines([b"x"])


def test_peer_reset_calls_connection_lost_once(reactor: Reactor, net: Net,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor")
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    peer.stop_reading()
    tr.write(pattern(BIG))  # a response in flight
    peer.reset()
    net.wait(lambda: proto.closed)
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], (ConnectionResetError, BrokenPipeError))
    assert tr.get_write_buffer_size() == 0
    assert tr not in reactor.connections and listener.active == 0
    # a peer going away is not a bug: no error-level log
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_write_to_a_reset_peer_becomes_a_close(reactor: Reactor, net: Net,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    tr.pause_reading()  # we learn about the reset only when we write
    peer.reset()
    tr.write(b"anyone there?")
    assert tr.is_closing()
    for _ in range(10):
        tr.write(b"still writing")
    net.wait(lambda: proto.closed)
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], (ConnectionResetError, BrokenPipeError))
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1


# -- the connection table --------------------------------------------------------------------


def test_table_row_walks_the_lifecycle_we_close_last(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(on_eof=lambda p: True)
    peer, proto = net.accept(listener)
    tr: StreamTransport = proto.transport
    assert tr in reactor.connections
    assert tr.state is ConnState.OPEN and tr.kind == "tcp"
    assert tr.peername == peer.sock.getsockname()
    assert tr.sockname == listener.address
    assert tr.created <= tr.last_activity
    peer.send_all(b"12345")
    net.wait(lambda: tr.bytes_in == 5)
    tr.write(b"1234567")
    assert tr.bytes_out == 7
    assert dict(reactor.statistics().by_state) == {"OPEN": 1}
    peer.shutdown_write()
    net.wait(lambda: tr.state is ConnState.READ_CLOSED)
    assert dict(reactor.statistics().by_state) == {"READ_CLOSED": 1}
    assert "READ_CLOSED" in reactor.connections.format()
    peer.stop_reading()
    data = pattern(BIG)
    tr.write(data)
    tr.close()
    assert tr.state is ConnState.CLOSING
    assert tr.write_buffer_size == tr.get_write_buffer_size() > 0
    stats = reactor.statistics()
    assert dict(stats.by_state) == {"CLOSING": 1}
    assert stats.write_buffered == tr.write_buffer_size
    peer.start_reading()
    net.wait(lambda: peer.eof and proto.closed)
    assert tr.state is ConnState.CLOSED
    assert tr not in reactor.connections
    stats = reactor.statistics()
    assert stats.open == 0 and dict(stats.by_state) == {}
    assert stats.opened_total == 1 and stats.closed_total == 1
    assert stats.bytes_in == 5 and stats.bytes_out == 7 + BIG
    assert stats.write_buffered == 0


def test_table_row_walks_the_lifecycle_we_close_first(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    tr.write_eof()
    assert tr.state is ConnState.WRITE_CLOSED
    net.wait(lambda: peer.eof)
    peer.send_all(b"late")
    net.wait(lambda: proto.data == b"late")
    peer.shutdown_write()
    net.wait(lambda: proto.closed)
    assert proto.events == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
    assert tr.state is ConnState.CLOSED and len(reactor.connections) == 0
    assert reactor.statistics().bytes_in == 4


def test_statistics_totals_over_many_connections(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(on_data=lambda p, d: p.transport.write(d * 2))
    pairs = [net.accept(listener) for _ in range(6)]
    for i, (peer, _) in enumerate(pairs):
        peer.send_all(b"x" * (i + 1))
    net.wait(lambda: all(len(peer.received) == 2 * (i + 1)
                         for i, (peer, _) in enumerate(pairs)))
    stats = reactor.statistics()
    assert stats.open == 6 and dict(stats.by_kind) == {"tcp": 6}
    for peer, _ in pairs:
        peer.close()
    net.wait(lambda: all(proto.closed for _, proto in pairs))
    stats = reactor.statistics()
    assert stats.open == 0 and stats.opened_total == 6 and stats.closed_total == 6
    assert stats.bytes_in == 21 and stats.bytes_out == 42
    assert stats.listeners == 1
    assert all(proto.lost == [None] for _, proto in pairs)


def test_unix_stream_transport(reactor: Reactor, net: Net, sockdir: str) -> None:
    path = str(Path(sockdir) / "u.sock")
    listener = net.listen_unix(path, on_data=lambda p, d: p.transport.write(d.upper()))
    peer, proto = net.accept(listener)
    tr = proto.transport
    assert tr.kind == "unix"
    assert tr.get_extra_info("sockname") == path
    peer.send_all(b"shout")
    net.wait(lambda: peer.received == b"SHOUT")
    tr.write_eof()
    net.wait(lambda: peer.eof)
    peer.shutdown_write()
    net.wait(lambda: proto.closed)
    assert proto.lost == [None]


@requires_ipv6
def test_ipv6_transport(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp("::1")
    peer, proto = net.accept(listener)
    tr = proto.transport
    assert tr.peername[0] == "::1" and tr.peername[1] == peer.sock.getsockname()[1]
    assert tr.kind == "tcp"
    peer.send_all(b"v6")
    net.wait(lambda: proto.data == b"v6")
    tr.write(b"ok")
    net.wait(lambda: peer.received == b"ok")


def test_a_new_connection_reusing_a_closed_ones_descriptor(reactor: Reactor,
                                                          net: Net) -> None:
    """Closing in one iteration and accepting on the same fd number must not confuse
    the selector registration of either."""
    listener = net.listen_tcp(on_data=lambda p, d: p.transport.write(d))
    for i in range(20):
        peer, proto = net.accept(listener)
        msg = f"round {i}".encode()
        peer.send_all(msg)
        net.wait(lambda: peer.received == msg)  # noqa: B023
        peer.close()
        net.wait(lambda: proto.closed)  # noqa: B023
    assert len(reactor.connections) == 0
    assert reactor.statistics().closed_total == 20


def test_reactor_close_runs_each_connection_lost_once(reactor: Reactor) -> None:
    """A reactor closed with open connections runs each connection_lost once."""
    net = Net(reactor)
    listener = net.listen_tcp()
    pairs = [net.accept(listener) for _ in range(3)]
    reactor.close()
    assert all(proto.lost == [None] for _, proto in pairs)
    for peer, _ in pairs:
        peer.sock.settimeout(WAIT)
        peer.sock.setblocking(True)
        assert peer.sock.recv(10) == b""
        peer.closed = True
        peer.sock.close()

