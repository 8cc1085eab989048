"""Scenario 31: a UDP send the kernel refuses as too large (EMSGSIZE) is reported, not fatal.

A UDP datagram carries at most 65 507 bytes of payload over IPv4 (65 535 less the IP
and UDP headers) and 65 527 over IPv6; ``sendto`` of more fails with EMSGSIZE. The
transport hands the error to the protocol's ``error_received`` (as asyncio does); the
endpoint stays open, later sends go through, and the reactor keeps serving -- also when
the oversized reply is sent from inside ``datagram_received``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from reactor import Reactor

TIMEOUT = 10.0
IPV4_MAX = 65_507
IPV6_MAX = 65_527


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.errors: list[Exception] = []
        self.received: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        if data == b"big please":  # answer with a datagram no UDP can carry
            self.transport.sendto(b"x" * 70_000, addr)
        self.transport.sendto(b"answer to " + data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r


def peer_socket(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((host, 0))
    return sock


@pytest.mark.parametrize("family, host, limit", [
    (socket.AF_INET, "127.0.0.1", IPV4_MAX),
    (socket.AF_INET6, "::1", IPV6_MAX),
], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connected"])
def test_an_oversized_send_goes_to_error_received_and_the_endpoint_stays_open(
    reactor: Reactor, family: int, host: str, limit: int, connected: bool,
) -> None:
    protocol = Recorder()
    with peer_socket(family, host) as peer:
        address = peer.getsockname()
        endpoint = reactor.listen_udp(host, 0, lambda: protocol,
                                      remote=address[:2] if connected else None)
        target = None if connected else address
        for size in (70_000, limit + 1, 1 << 20):
            endpoint.sendto(b"x" * size, target)  # must not raise
        assert [getattr(e, "errno", None) for e in protocol.errors] == [errno.EMSGSIZE] * 3
        assert not endpoint.is_closing()
        endpoint.sendto(b"y" * limit, target)  # the largest that fits
        endpoint.sendto(b"small", target)
        assert len(protocol.errors) == 3
        assert len(peer.recv(limit + 10)) == limit
        assert peer.recv(100) == b"small"
        assert endpoint.bytes_out == limit + 5
        for _ in range(3):
            reactor.run_once(0)
        assert not protocol.lost and len(reactor.connections) == 1


def test_the_reactor_keeps_serving_after_an_oversized_reply(reactor: Reactor) -> None:
    protocol = Recorder()
    endpoint = reactor.listen_udp("127.0.0.1", 0, lambda: protocol)
    ticks: list[int] = []
    reactor.call_later(0.01, ticks.append, 1)
    with peer_socket(socket.AF_INET, "127.0.0.1") as client:
        for request in (b"big please", b"after"):
            client.sendto(request, endpoint.sockname)
        reactor.run_until(lambda: len(protocol.received) == 2 and bool(ticks),
                          timeout=TIMEOUT)
        assert client.recv(100) == b"answer to big please"
        assert client.recv(100) == b"answer to after"
    assert [getattr(e, "errno", None) for e in protocol.errors] == [errno.EMSGSIZE]
    assert not endpoint.is_closing() and not protocol.lost
