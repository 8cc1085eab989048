"""A stream transport's compact row: the peer address packed in one int when it is an
IPv4 one (``reactor.io.peers``), ``meta`` in asyncio's ``_extra`` slot.

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
from reactor.io import peers
from reactor.io.peers import pack_peer, unpack_peer

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
    assert type(tr._peer) is int
    assert sys.getsizeof(tr._peer) <= 32
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
        assert tr.peername == ("198.51.100.1", 443) and type(tr._peer) is int
        tr.peername = ("2001:db8::1", 443, 0, 0)
        assert tr.peername == ("2001:db8::1", 443, 0, 0)
        tr.abort()
        reactor.run_until(lambda: tr not in reactor.connections, timeout=5)
    finally:
        left.close()
        right.close()


def test_meta_is_held_in_asyncio_s_own_slot(reactor: Reactor) -> None:
    left, right = socket.socketpair()
    try:
        tr = StreamTransport(reactor, left, "a peer")
        assert "meta" not in StreamTransport.__slots__
        assert "peername" not in StreamTransport.__slots__
        assert tr.meta is None and tr._extra is None
        tr.set_meta("client", "behind-a-proxy")
        assert tr._extra == {"client": "behind-a-proxy"}
        assert tr.get_extra_info("client") == "behind-a-proxy"
        assert isinstance(tr, asyncio.Transport)
        tr.abort()
        reactor.run_until(lambda: tr not in reactor.connections, timeout=5)
    finally:
        left.close()
        right.close()
