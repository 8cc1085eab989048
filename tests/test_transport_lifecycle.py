"""How far a close got is the row's state, for both transports (issue 11, section 3).

``close()`` moves a connection to CLOSING while it flushes and to ENDING once flushed;
``abort()`` and every forced close move it to ENDING at once; the loop's teardown then
moves it to CLOSED. ``is_closing()``, refused writes and the end of reading follow the
state, with what protocols see unchanged (asyncio's rules).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from netkit import Net, Recorder

from reactor import ConnState, Reactor, StreamTransport

BIG = 8 * 1024 * 1024  # more than a socketpair's kernel buffers hold


def test_abort_moves_the_row_to_ending_then_closed(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    tr.write(b"x" * BIG)
    assert tr.get_write_buffer_size() > 0
    tr.abort()
    assert tr.state is ConnState.ENDING
    assert tr.is_closing() and not tr.is_reading()
    assert tr.get_write_buffer_size() == 0 and tr.discarded > 0
    assert proto.lost == []  # never from inside the caller
    tr.write(b"dropped")  # no error after the loss
    tr.abort()  # twice is harmless
    tr.close()
    net.wait(lambda: proto.closed)
    assert proto.lost == [None] and tr.state is ConnState.CLOSED
    assert tr not in reactor.connections


def test_close_with_nothing_queued_ends_at_once(reactor: Reactor, net: Net) -> None:
    _peer, tr, proto = net.pair()
    assert not tr.is_closing()
    tr.close()
    assert tr.state is ConnState.ENDING and tr.is_closing()
    net.wait(lambda: proto.closed)
    assert tr.state is ConnState.CLOSED and proto.lost == [None]


def test_close_flushes_in_closing_then_ends(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    tr.write(b"y" * BIG)
    tr.close()
    assert tr.state is ConnState.CLOSING and tr.is_closing()
    tr.write(b"z")  # still taken while the orderly close flushes (as asyncio does)
    peer.start_reading()
    net.wait(lambda: tr.state is not ConnState.CLOSING)
    assert tr.state in (ConnState.ENDING, ConnState.CLOSED)
    net.wait(lambda: proto.closed and peer.eof)
    assert peer.received == b"y" * BIG + b"z"


def test_abort_while_flushing_drops_the_rest(reactor: Reactor, net: Net) -> None:
    peer, tr, proto = net.pair()
    peer.stop_reading()
    tr.write(b"y" * BIG)
    tr.close()
    assert tr.state is ConnState.CLOSING
    tr.abort()
    assert tr.state is ConnState.ENDING and tr.discarded > 0
    net.wait(lambda: proto.closed)
    assert proto.lost == [None]


def test_a_socket_error_ends_the_row_before_connection_lost(
    reactor: Reactor, net: Net
) -> None:
    seen: list[tuple[ConnState, bool]] = []
    peer, tr, proto = net.pair(
        on_lost=lambda p, exc: seen.append((p.transport.state, p.transport.is_closing())))
    peer.reset()
    net.wait(lambda: tr.state is not ConnState.OPEN)
    if not proto.closed:
        assert tr.state is ConnState.ENDING
    net.wait(lambda: proto.closed)
    assert seen == [(ConnState.CLOSED, True)]


def test_write_after_write_eof_raises_until_the_loss(reactor: Reactor, net: Net) -> None:
    _peer, tr, proto = net.pair()
    tr.write_eof()
    assert tr.state is ConnState.WRITE_CLOSED and not tr.is_closing()
    with pytest.raises(RuntimeError, match="write_eof"):
        tr.write(b"late")
    tr.abort()
    tr.write(b"late")  # lost: dropped, not an error
    net.wait(lambda: proto.closed)


def test_the_eof_ending_a_half_closed_connection(reactor: Reactor, net: Net) -> None:
    """As in asyncio, eof_received after write_eof() sees a transport nobody closed."""
    seen: list[tuple[ConnState, bool]] = []

    def on_eof(p: Recorder) -> bool:
        seen.append((p.transport.state, p.transport.is_closing()))
        return True

    peer, tr, proto = net.pair(on_eof=on_eof)
    tr.write_eof()
    net.wait(lambda: peer.eof)
    peer.shutdown_write()
    net.wait(lambda: proto.closed)
    assert seen == [(ConnState.WRITE_CLOSED, False)]
    assert proto.events == ["connection_made", "eof_received", "connection_lost"]
    assert tr.state is ConnState.CLOSED


def test_closing_from_eof_received_of_a_half_closed_connection(
    reactor: Reactor, net: Net
) -> None:
    def on_eof(p: Recorder) -> None:
        p.transport.abort()

    peer, tr, proto = net.pair(on_eof=on_eof)
    tr.write_eof()
    net.wait(lambda: peer.eof)
    peer.shutdown_write()
    net.wait(lambda: proto.closed)
    assert proto.lost == [None] and proto.reentered == []


def test_the_peer_eof_then_write_eof_closes(reactor: Reactor, net: Net) -> None:
    seen: list[bool] = []
    peer, tr, proto = net.pair(on_eof=lambda p: True)
    peer.shutdown_write()
    net.wait(lambda: tr.state is ConnState.READ_CLOSED)
    assert not tr.is_closing()
    tr.write_eof()
    seen.append(tr.is_closing())
    assert tr.state is ConnState.ENDING  # nothing queued: both halves done at once
    net.wait(lambda: proto.closed)
    assert seen == [True]


def test_a_protocol_attached_to_an_aborted_row_is_made_then_lost(
    reactor: Reactor, net: Net
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    tr = StreamTransport(reactor, ours, "late", ConnState.CONNECTING)
    tr.abort()
    assert tr.state is ConnState.ENDING
    proto = Recorder()
    tr.attach(proto)  # a connect completing as its row is aborted
    assert tr.state is ConnState.ENDING and not tr.is_reading()
    net.wait(lambda: proto.closed)
    assert proto.events == ["connection_made", "connection_lost"]
    theirs.close()


def test_release_ends_a_row_through_the_table(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()
    before = listener.active
    _peer, proto = net.accept(listener)
    tr = proto.transport
    assert listener.active == before + 1
    tr.detach_socket().close()
    tr.release(False)
    assert tr.state is ConnState.CLOSED and tr not in reactor.connections
    assert listener.active == before
    tr.release()  # twice is harmless


# -- datagram endpoints --------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_datagram_abort_and_close_move_the_state(reactor: Reactor) -> None:
    protocols: list[Datagrams] = []

    def make() -> Datagrams:
        protocols.append(Datagrams())
        return protocols[-1]

    a = reactor.listen_udp("127.0.0.1", 0, make)
    b = reactor.listen_udp("127.0.0.1", 0, make)
    assert a.state is ConnState.OPEN and not a.is_closing()
    a.abort()
    assert a.state is ConnState.ENDING and a.is_closing()
    a.sendto(b"dropped", b.sockname)  # lost: silently dropped, as before
    b.close()
    assert b.state is ConnState.ENDING and b.is_closing()
    reactor.run_until(lambda: all(p.lost for p in protocols), 5)
    assert a.state is ConnState.CLOSED and b.state is ConnState.CLOSED
    assert [p.lost for p in protocols] == [[None], [None]]


def test_a_connected_datagram_endpoint_keeps_its_peer(reactor: Reactor) -> None:
    got: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append(data)

    sink = reactor.listen_udp("127.0.0.1", 0, Sink)
    sender = reactor.listen_udp("127.0.0.1", 0, Datagrams, remote=sink.sockname)
    sender.sendto(b"to the peer")
    reactor.run_until(lambda: bool(got), 5)
    assert got == [b"to the peer"] and sender.get_extra_info("peername") == sink.sockname
    sender.close()
    sink.close()
