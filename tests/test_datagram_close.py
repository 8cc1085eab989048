"""Nothing is delivered to a datagram protocol after it closed its transport.

The transport reads a batch of datagrams per wake-up. A protocol that closes it from
``error_received`` (here: for a datagram too large to receive whole, reported as
EMSGSIZE) or from ``datagram_received`` must get no further callback from that batch,
only ``connection_lost``. Real UDP sockets on loopback: the client sends the whole batch
before the reactor runs, so it waits in the server's receive queue.
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
BATCH = 10
LIMIT = 512


class CloseAtFirst(asyncio.DatagramProtocol):
    """Closes its transport in whichever callback comes first; records every callback."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.events: list[tuple[str, Any]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.events.append(("datagram", data))
        self.transport.close()

    def error_received(self, exc: Exception) -> None:
        self.events.append(("error", exc))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r


def serve(reactor: Reactor) -> tuple[CloseAtFirst, Any]:
    protocol = CloseAtFirst()
    endpoint = reactor.listen_udp("127.0.0.1", 0, lambda: protocol, max_datagram_size=LIMIT)
    return protocol, endpoint


def send_batch(address: Any, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        for data in datagrams:
            client.sendto(data, address)


def run_until_lost(reactor: Reactor, protocol: CloseAtFirst) -> None:
    reactor.run_until(lambda: any(e == "lost" for e, _ in protocol.events), timeout=TIMEOUT)


def test_closing_in_error_received_ends_the_batch(reactor: Reactor) -> None:
    protocol, endpoint = serve(reactor)
    too_big = b"x" * (LIMIT + 1)
    send_batch(endpoint.sockname, [too_big] + [b"d%d" % n for n in range(BATCH - 1)])
    run_until_lost(reactor, protocol)
    for _ in range(3):
        reactor.run_once(0)
    kinds = [kind for kind, _ in protocol.events]
    assert kinds == ["error", "lost"], protocol.events
    error = protocol.events[0][1]
    assert isinstance(error, OSError) and error.errno == errno.EMSGSIZE
    assert len(reactor.connections) == 0


def test_closing_in_datagram_received_ends_the_batch(reactor: Reactor) -> None:
    protocol, endpoint = serve(reactor)
    send_batch(endpoint.sockname, [b"d%d" % n for n in range(BATCH)])
    run_until_lost(reactor, protocol)
    for _ in range(3):
        reactor.run_once(0)
    assert protocol.events[0] == ("datagram", b"d0")
    assert [kind for kind, _ in protocol.events] == ["datagram", "lost"], protocol.events


def test_after_an_oversized_datagram_an_open_endpoint_keeps_receiving(reactor: Reactor) -> None:
    """The control case: a protocol that does not close gets the error and every other
    datagram of the batch, in order."""
    events: list[tuple[str, Any]] = []

    class Keep(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            events.append(("datagram", data))

        def error_received(self, exc: Exception) -> None:
            events.append(("error", getattr(exc, "errno", None)))

    endpoint = reactor.listen_udp("127.0.0.1", 0, Keep, max_datagram_size=LIMIT)
    small = [b"d%d" % n for n in range(BATCH - 1)]
    send_batch(endpoint.sockname, [b"x" * (LIMIT + 1), *small])
    reactor.run_until(lambda: len(events) == BATCH, timeout=TIMEOUT)
    assert events == [("error", errno.EMSGSIZE)] + [("datagram", d) for d in small]
    assert not endpoint.is_closing()
