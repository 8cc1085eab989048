"""Scenario 18: IPv6 and dual-stack listeners; UDP datagrams over the size limit.

``reactor serve --bind [::]:0`` serves IPv4 clients (seen as IPv4-mapped addresses)
and IPv6 clients on one socket; ``[::1]`` is IPv6 only. A datagram larger than the
endpoint's ``max_datagram_size`` is reported (``error_received`` with EMSGSIZE and a
log line), never delivered cut short, and the endpoint goes on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from faultlib import WAIT, FaultServer, figure
from netkit import requires_ipv6
from servekit import read_until_closed

from reactor import Reactor

requires_dual_stack = pytest.mark.skipif(
    not socket.has_dualstack_ipv6(), reason="IPv6 dual stack unavailable")


def whoami(family: int, address: tuple[str, int]) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(address)
        sock.sendall(b"?")
        return read_until_closed(sock).decode().strip()


@requires_ipv6
@requires_dual_stack
@pytest.mark.timeout(60)
def test_a_dual_stack_listener_serves_ipv4_and_ipv6_clients(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Whoami", "--bind", "[::]:0", "--bind", "[::1]:0", wait=2)
    any_address, loopback6 = srv.addresses(2)
    assert any_address.startswith("[::]:") and loopback6.startswith("[::1]:")
    port = int(any_address.rsplit(":", 1)[1])
    port6 = int(loopback6.rsplit(":", 1)[1])
    seen4 = whoami(socket.AF_INET, ("127.0.0.1", port))
    seen6 = whoami(socket.AF_INET6, ("::1", port))
    served = seen4.startswith("('::ffff:127.0.0.1', ") + seen6.startswith("('::1', ")
    figure("dual stack ([::]): IPv4 (mapped) and IPv6 clients served", served, "of 2")
    assert seen4.startswith("('::ffff:127.0.0.1', "), seen4  # IPv4-mapped
    assert seen6.startswith("('::1', "), seen6
    assert whoami(socket.AF_INET6, ("::1", port6)).startswith("('::1', ")
    with pytest.raises(OSError):  # [::1] is not dual-stack
        whoami(socket.AF_INET, ("127.0.0.1", port6))
    assert srv.stop() == 0
    srv.assert_clean_log()


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.errors: list[OSError] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.transport.sendto(b"got %d" % len(data), addr)

    def error_received(self, exc: Exception) -> None:
        assert isinstance(exc, OSError)
        self.errors.append(exc)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=requires_ipv6)])
def test_an_oversized_datagram_is_reported_not_cut(host: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    limit = 1024
    with Reactor() as reactor:
        proto = Datagrams()
        endpoint = reactor.listen_udp(host, 0, lambda: proto, max_datagram_size=limit)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.settimeout(WAIT)
            client.connect(endpoint.sockname[:2])
            for size in (limit, limit + 1, 60_000, 10):
                client.send(b"d" * size)
            reactor.run_until(lambda: len(proto.received) + len(proto.errors) == 4, WAIT)
            replies = [client.recv(100) for _ in range(2)]
    figure(f"UDP ({host}): datagrams over max_datagram_size reported to error_received",
           len(proto.errors), "of 2")
    assert [len(d) for d in proto.received] == [limit, 10]  # whole, or not at all
    assert replies == [b"got %d" % limit, b"got 10"]
    assert [e.errno for e in proto.errors] == [errno.EMSGSIZE, errno.EMSGSIZE]
    assert all(f"max_datagram_size={limit}" in str(e) for e in proto.errors)
    warnings = [r.getMessage() for r in caplog.records if "larger than" in r.getMessage()]
    assert len(warnings) == 2


# -- the socketserver facades -------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["udp", "threading-udp"])
def test_facade_udp_reports_a_datagram_over_max_packet_size(
    start_server: Callable[..., FaultServer], kind: str,
) -> None:
    """The facades keep the standard library's contract -- the handler gets the first
    ``max_packet_size`` bytes -- but the cut is reported (a warning naming the client
    and the limit), where the standard library truncates silently."""
    srv = start_server("--max-packet-size", "1024", facade=kind)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.connect(srv.tcp_address())
        for size in (1024, 4000, 10):
            client.send(b"u" * size)
            assert client.recv(100) == b"len %d" % min(size, 1024)
        port = client.getsockname()[1]
    line = srv.wait_for(rf".*datagram from 127\.0\.0\.1:{port} cut to "
                        r"max_packet_size=1024 bytes").group(0)
    assert "WARNING" in line
    assert srv.stop() == 0
    assert srv.log.count("max_packet_size=1024") == 1  # only the oversized one
    srv.assert_clean_log()


@requires_ipv6
@requires_dual_stack
@pytest.mark.timeout(60)
def test_a_dual_stack_facade_serves_ipv4_clients(
    start_server: Callable[..., FaultServer],
) -> None:
    """A TCPServer with ``address_family = AF_INET6`` that clears IPV6_V6ONLY in
    ``server_bind`` (as http.server's DualStackServer does) serves both families."""
    srv = start_server("--dual-stack", facade="threading")
    (address,) = srv.addresses()
    assert address.startswith("[::]:")
    port = int(address.rsplit(":", 1)[1])
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(WAIT)
            client.connect((host, port))
            client.sendall(b"both")
            assert client.recv(16) == b"both"
    assert srv.stop() == 0
    srv.assert_clean_log()
