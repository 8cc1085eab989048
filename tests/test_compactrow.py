"""A stream transport's compact row (``reactor.io.compactrow``): the peer address
packed in one int when it is an IPv4 one, it and ``meta`` in asyncio's ``_extra`` slot,
the listener in the shared options.

What users read must not change: ``peername``, ``get_extra_info("peername")``, the
log line's ``describe()`` and the table give the tuple ``accept`` returned.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
from netkit import Net

from reactor import Reactor, StreamTransport
from reactor.io import compactrow as peers
from reactor.io.compactrow import bound_options, listener_of, pack_peer, unpack_peer
from reactor.io.transports import TransportOptions

ROUND_TRIPS = [
    ("127.0.0.1", 54321),
    ("0.0.0.0", 0),
    ("255.255.255.255", 65535),
    ("192.0.2.7", 40000),
    ("10.1.2.3", 1),
]
KEPT_AS_GIVEN: list[Any] = [
    None,
    "/tmp/some.sock",
    b"\0abstract",
    "",
    "supervisor",
    ("::1", 8080, 0, 0),
    ("127.1", 80),  # inet_aton reads it, but it does not read back the same
    ("localhost", 80),
    ("127.0.0.1", 65536),  # not a port
    ("127.0.0.1", -1),
    ("127.0.0.1", "80"),
    ("127.0.0.1", True),  # a bool is not an int here
    (3, 1234),  # an AF_VSOCK pair (cid, port)
    ("127.0.0.1",),
    ("127.0.0.1", 80, 0),
]


@pytest.mark.parametrize("peer", ROUND_TRIPS)
def test_an_ipv4_pair_is_one_int_and_reads_back_equal(peer: tuple[str, int]) -> None:
    stored = pack_peer(peer)
    assert type(stored) is int
    assert unpack_peer(stored) == peer
    assert type(unpack_peer(stored)) is tuple


@pytest.mark.parametrize("peer", KEPT_AS_GIVEN)
def test_what_is_not_an_ipv4_pair_is_kept_as_given(peer: Any) -> None:
    stored = pack_peer(peer)
    assert stored is peer
    assert unpack_peer(stored) is peer


@pytest.mark.parametrize("value", [0, 5, 1 << 40, -3])
def test_an_int_given_as_the_peer_reads_back_as_itself(value: int) -> None:
    assert unpack_peer(pack_peer(value)) == value


def test_an_unhashable_host_is_kept_as_given() -> None:
    peer = (["127.0.0.1"], 80)
    assert pack_peer(peer) is peer


def test_the_known_hosts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "_known", {})
    for n in range(peers.KNOWN_HOSTS_MAX + 10):
        host = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert unpack_peer(pack_peer((host, 7))) == (host, 7)
        assert len(peers._known) <= peers.KNOWN_HOSTS_MAX


def test_an_accepted_ipv4_connection_keeps_its_peer_in_one_int(
    reactor: Reactor, net: Net
) -> None:
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)
    tr = proto.transport
    address = peer.sock.getsockname()
    assert type(tr._extra) is int
    assert sys.getsizeof(tr._extra) <= 32
    assert tr.peername == address
    assert tr.get_extra_info("peername") == address
    assert repr(address) in tr.describe()
    assert str(address) in reactor.connections.format()
    tr.abort()
    net.wait(lambda: proto.closed)
    assert tr.get_extra_info("peername") == address  # kept for the logs


def test_peername_can_be_set_and_read_back(reactor: Reactor) -> None:
    left, right = socket.socketpair()
    try:
        tr = StreamTransport(reactor, left, None)
        assert tr.peername is None and tr.get_extra_info("peername", "none") == "none"
        tr.peername = ("198.51.100.1", 443)  # as a PROXY header sets it
        assert tr.peername == ("198.51.100.1", 443) and type(tr._extra) is int
        tr.peername = ("2001:db8::1", 443, 0, 0)
        assert tr.peername == ("2001:db8::1", 443, 0, 0)
        tr.abort()
        reactor.run_until(lambda: tr not in reactor.connections, timeout=5)
    finally:
        left.close()
        right.close()


def test_meta_and_the_peer_share_asyncio_s_own_slot(reactor: Reactor) -> None:
    left, right = socket.socketpair()
    try:
        tr = StreamTransport(reactor, left, ("192.0.2.9", 5000))
        for name in ("meta", "peername", "_peer", "_listener"):
            assert name not in StreamTransport.__slots__
        assert tr.meta is None and type(tr._extra) is int
        tr.set_meta("client", "behind-a-proxy")
        assert tr.meta == {"client": "behind-a-proxy"}
        assert tr.get_extra_info("client") == "behind-a-proxy"
        assert tr.peername == ("192.0.2.9", 5000)
        assert tr.get_extra_info("peername") == ("192.0.2.9", 5000)
        tr.peername = ("198.51.100.2", 6000)  # a PROXY header read after the meta
        assert tr.peername == ("198.51.100.2", 6000) and tr.meta == {"client": "behind-a-proxy"}
        meta = tr.meta
        tr.meta = meta  # the same dict object, kept
        assert tr.meta is meta
        tr.meta = None
        assert tr.meta is None and tr.peername == ("198.51.100.2", 6000)
        assert "behind-a-proxy" not in repr(tr) and "198.51.100.2" in repr(tr)
        assert isinstance(tr, asyncio.Transport)
        assert sys.getsizeof(tr) <= 144  # 14 slots; 17 before
        tr.abort()
        reactor.run_until(lambda: tr not in reactor.connections, timeout=5)
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("peer", [*ROUND_TRIPS, *KEPT_AS_GIVEN, 7])
def test_a_transport_reads_back_what_it_was_made_with(reactor: Reactor, peer: Any) -> None:
    left, right = socket.socketpair()
    try:
        # packed just before: the next row takes the same-host path where it can
        first = StreamTransport(reactor, left, ("127.0.0.1", 1))
        assert first.peername == ("127.0.0.1", 1)
        tr = StreamTransport(reactor, right, peer)
        assert tr.peername == peer and type(tr.peername) is type(peer)
        assert tr.get_extra_info("peername", "none") == (peer if peer is not None else "none")
        for row in (first, tr):
            reactor.connections.remove(row)
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("port", [65536, -1, True, "80", 2**70])
def test_the_same_host_path_checks_the_port(reactor: Reactor, port: Any) -> None:
    left, right = socket.socketpair()
    try:
        StreamTransport(reactor, left, ("192.0.2.1", 80))
        tr = StreamTransport(reactor, right, ("192.0.2.1", port))
        assert tr.peername == ("192.0.2.1", port) and type(tr.peername[1]) is type(port)
        for row in list(reactor.connections):
            reactor.connections.remove(row)
    finally:
        left.close()
        right.close()


def test_the_listener_is_found_in_the_shared_options(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(read_size=4096)
    (_, first), (_, second) = net.accept(listener), net.accept(listener)
    one, two = first.transport, second.transport
    assert "_listener" not in StreamTransport.__slots__
    assert one.listener is listener and two.listener is listener
    assert one._opts is two._opts  # one copy per listener, not per connection
    assert one._opts.listener is listener and one._opts.read_size == 4096
    assert one._opts == one._opts.unbound and listener_of(one._opts.unbound) is None
    assert listener.active == 2
    one.abort()
    net.wait(lambda: first.closed)
    assert listener.active == 1  # the slot released through the options' listener


def test_bound_options_for_a_stand_in_listener() -> None:
    class StandIn:
        __slots__ = ()

    stand_in = StandIn()
    options = TransportOptions(read_size=100)
    bound = bound_options(stand_in, options)
    assert bound.listener is stand_in and bound == options and bound is not options
    assert bound_options(stand_in, bound) == bound  # made again: a stand-in keeps none
    assert listener_of(bound) is stand_in and listener_of(options) is None
    assert bound_options(None, bound) is options  # no listener: the options copied
    assert bound_options(None, options) is options
    assert hash(bound) == hash(options) and {bound: 1}[options] == 1


def test_no_host_packed_yet_matches_no_peer(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "_last_host", object())  # as in a fresh process
    left, right = socket.socketpair()
    try:
        tr = StreamTransport(reactor, left, (None, 5))
        assert tr.peername == (None, 5)
        reactor.connections.remove(tr)
    finally:
        left.close()
        right.close()
