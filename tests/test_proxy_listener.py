"""The PROXY protocol on reactor listeners, over real sockets: the header is read before
the protocol sees the connection, from allowed peers only, within its deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from reactor import Reactor
from reactor.sansio.proxy import ProxyCommand, ProxyHeader
from reactor.sansio.proxy_policy import ProxyPolicy
from tests import proxykit as pk
from tests.netkit import Net, Peer, Recorder, requires_ipv6

pytestmark = pytest.mark.timeout(30)


def proxied(net: Net, version: str = "any", **kwargs: Any) -> Any:
    return net.listen_tcp(proxy_protocol=version, **kwargs)


def connect(net: Net, listener: Any, data: bytes = b"") -> Peer:
    peer = net.connect(listener.address)
    if data:
        peer.write(data)
    return peer


def made(net: Net, n: int = 1) -> Recorder:
    net.wait(lambda: len(net.protocols) >= n)
    return net.protocols[n - 1]


def closed(net: Net, peer: Peer) -> None:
    net.wait(lambda: peer.eof or peer.error is not None)


@pytest.mark.parametrize("header", [pk.v1(), pk.v2_inet()], ids=["v1", "v2"])
def test_the_protocol_sees_the_client_and_the_bytes_after_the_header(
    net: Net, header: bytes,
) -> None:
    listener = proxied(net)
    peer = connect(net, listener, header + b"hello")
    proto = made(net)
    net.wait(lambda: proto.data == b"hello")
    transport = proto.transport
    assert proto.events[0] == "connection_made"
    assert transport.get_extra_info("peername") == ("192.0.2.7", 40000)
    assert transport.peername == ("192.0.2.7", 40000)  # the row
    assert transport.get_extra_info("proxy") == peer.sock.getsockname()
    found = transport.get_extra_info("proxy_header")
    assert isinstance(found, ProxyHeader) and found.destination == ("198.51.100.1", 443)
    assert transport.state.name == "OPEN"
    peer.write(b" world")
    net.wait(lambda: proto.data == b"hello world")


def test_connection_made_waits_for_the_whole_header(net: Net) -> None:
    listener = proxied(net, "v2")
    header = pk.v2_inet6(extra=pk.tlvs((0x02, b"example.org")))
    peer = connect(net, listener, header[:20])
    conn = None
    net.wait(lambda: any(row.state.name == "PROXY_HEADER" for row in net.reactor.connections))
    conn = next(iter(net.reactor.connections))
    assert not net.protocols  # no protocol yet: the header is incomplete
    assert conn.peername == peer.sock.getsockname()
    for at in range(20, len(header)):
        peer.write(header[at:at + 1])
        net.reactor.run_once(0)
    proto = made(net)
    assert proto.data == b""
    assert proto.transport.get_extra_info("peername") == ("2001:db8::7", 40000, 0, 0)
    assert proto.transport.get_extra_info("proxy_header").tlv(0x02) == b"example.org"


@pytest.mark.parametrize("header", [pk.v2_local(), pk.v1("UNKNOWN")], ids=["local", "unknown"])
def test_local_and_unknown_keep_the_real_peer(net: Net, header: bytes) -> None:
    listener = proxied(net)
    peer = connect(net, listener, header + b"x")
    proto = made(net)
    net.wait(lambda: proto.data == b"x")
    real = peer.sock.getsockname()
    assert proto.transport.get_extra_info("peername") == real
    assert proto.transport.get_extra_info("proxy") == real
    kind = proto.transport.get_extra_info("proxy_header")
    assert kind.source is None
    assert (kind.command is ProxyCommand.LOCAL) == (header == pk.v2_local())


@pytest.mark.parametrize(("data", "words"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "expected a PROXY v1 or v2 header"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 443\r\n", "source port"),
    (b"PROXY UNKNOWN " + b"a" * 200, "no CRLF within 107 bytes"),
    (pk.SIGNATURE + b"\x21\x11\xff\xff", "too large"),
    (pk.v2(1, 0x11, b"\x00" * 4), "shorter than the 12 address bytes"),
])
def test_bad_headers_close_with_one_logged_reason(
    net: Net, caplog: pytest.LogCaptureFixture, data: bytes, words: str,
) -> None:
    caplog.set_level(logging.INFO, "reactor.proxy")
    listener = proxied(net)
    peer = connect(net, listener, data)
    closed(net, peer)
    assert not net.protocols  # never made
    lines = [r.getMessage() for r in caplog.records if r.name == "reactor.proxy"]
    assert len(lines) == 1 and words in lines[0] and "closing" in lines[0], lines
    net.wait(lambda: len(net.reactor.connections) == 0)
    assert listener.active == 0


def test_the_version_is_never_guessed(net: Net) -> None:
    only_v2 = proxied(net, "v2")
    peer = connect(net, only_v2, pk.v1() + b"hi")
    closed(net, peer)
    assert not net.protocols


def test_truncated_header_then_eof(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.proxy")
    listener = proxied(net)
    peer = connect(net, listener, pk.v2_inet()[:21])
    net.wait(lambda: any(row.state.name == "PROXY_HEADER" and row.bytes_in == 21
                         for row in net.reactor.connections))
    peer.shutdown_write()
    closed(net, peer)
    assert not net.protocols
    assert "truncated PROXY header" in caplog.text


def test_a_header_that_never_completes_times_out(
    net: Net, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "reactor.proxy")
    listener = proxied(net, proxy_timeout=0.2)
    silent = connect(net, listener)
    slow = connect(net, listener, b"PROXY TCP4 ")
    closed(net, silent)
    closed(net, slow)
    assert not net.protocols
    assert "no complete PROXY header within 0.2 s" in caplog.text
    net.wait(lambda: len(net.reactor.connections) == 0)


def test_an_untrusted_peer_is_refused_unread(
    net: Net, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "reactor.proxy")
    listener = proxied(net, proxy_allow_from=["10.0.0.0/8"])
    peer = connect(net, listener, pk.v1() + b"spoofed")
    closed(net, peer)
    assert not net.protocols
    assert "not in proxy_allow_from (10.0.0.0/8)" in caplog.text
    assert net.reactor.connections.statistics().bytes_in == 0  # closed before any read
    # a trusted one on another listener of the same reactor still gets through
    trusted = proxied(net, proxy_allow_from="127.0.0.1/32, 10.0.0.0/8")
    connect(net, trusted, pk.v1())
    assert made(net).transport.get_extra_info("peername") == ("192.0.2.7", 40000)


def test_a_flood_of_bad_headers_is_logged_once(
    net: Net, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "reactor.proxy")
    listener = proxied(net)
    peers = [connect(net, listener, b"garbage") for _ in range(20)]
    for peer in peers:
        closed(net, peer)
    infos = [r for r in caplog.records if r.name == "reactor.proxy"
             and r.levelno >= logging.INFO]
    assert len(infos) == 1, [r.getMessage() for r in infos]


@requires_ipv6
def test_dual_stack_listener_matches_mapped_ipv4_peers(net: Net) -> None:
    listener = net.listen_tcp("::", dual_stack=True, proxy_protocol="v1",
                              proxy_allow_from=["127.0.0.1"])
    peer = net.connect(("127.0.0.1", listener.port))
    peer.write(pk.v1())
    assert made(net).transport.get_extra_info("peername") == ("192.0.2.7", 40000)


def test_unix_listener_requires_the_header_from_every_peer(net: Net, sockdir: str) -> None:
    listener = net.listen_unix(f"{sockdir}/p.sock", proxy_protocol="v2")
    peer = net.connect(listener.address)
    peer.write(pk.v2_inet() + b"ok")
    proto = made(net)
    net.wait(lambda: proto.data == b"ok")
    assert proto.transport.get_extra_info("peername") == ("192.0.2.7", 40000)
    bad = net.connect(listener.address)
    bad.write(b"ok")
    closed(net, bad)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = bytearray(4)
        self.data = bytearray()
        self.made = False

    def connection_made(self, transport: Any) -> None:
        self.made = True

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]


def test_a_buffered_protocol_gets_the_bytes_after_the_header(net: Net) -> None:
    protocols: list[Buffered] = []

    def factory() -> Buffered:
        protocols.append(Buffered())
        return protocols[-1]

    listener = net.reactor.listen_tcp("127.0.0.1", 0, factory, proxy_protocol="v1")
    net.listeners.append(listener)
    peer = connect(net, listener, pk.v1() + b"0123456789")
    net.wait(lambda: protocols and protocols[0].data == b"0123456789")
    peer.write(b"ab")
    net.wait(lambda: protocols[0].data == b"0123456789ab")


def test_options_are_checked(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="proxy_protocol must be one of"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, proxy_protocol="v3")
    with pytest.raises(ValueError, match="not an IP address or network"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, proxy_protocol="v1",
                           proxy_allow_from=["localhost"])
    with pytest.raises(ValueError, match="proxy_timeout"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, proxy_protocol="v1", proxy_timeout=0)
    with pytest.raises(TypeError, match="not on_accept"):
        reactor.listen_tcp("127.0.0.1", 0, on_accept=lambda *a: None, proxy_protocol="v1")
    assert not reactor.listeners  # nothing leaked


def test_policy_matching() -> None:
    policy = ProxyPolicy.of("any")  # loopback only by default
    assert policy.trusts(("127.0.0.5", 1)) and policy.trusts(("::1", 1, 0, 0))
    assert policy.trusts(("::ffff:127.0.0.1", 1, 0, 0))
    assert not policy.trusts(("192.0.2.1", 1)) and not policy.trusts(("nonsense", 1))
    assert policy.trusts("") and policy.trusts("/run/x.sock")  # Unix peers
    assert ProxyPolicy.of("v1", "*").trusts(("203.0.113.9", 1))
    link = ProxyPolicy.of("v1", ["fe80::/10"])
    assert link.trusts(("fe80::1%lo", 1, 0, 1))
    with pytest.raises(ValueError, match="empty"):
        ProxyPolicy.of("v1", [])


def test_the_first_byte_deadline_waits_for_the_clients_first_byte(net: Net) -> None:
    """The proxy sends its header at once; a silent client behind it must still meet
    first_byte_timeout."""
    listener = proxied(net, first_byte_timeout=0.3)
    silent = connect(net, listener, pk.v1())
    proto = made(net)
    assert proto.transport.bytes_in == 0
    closed(net, silent)
    assert proto.closed
    connect(net, listener, pk.v1() + b"x")
    proto = made(net, 2)
    net.wait(lambda: proto.data == b"x")
    assert proto.transport.bytes_in == 1
