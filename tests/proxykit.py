"""Helpers for the PROXY protocol tests (not a test module): headers built by hand, the
way a load balancer writes them, so the parser is checked against an independent
encoder rather than against itself; and :class:`WhoAmI`, served as ``proxykit:WhoAmI``
(``reactor serve --app-dir tests``), which tells each client who it thinks it is."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from typing import Any

__all__ = ["SIGNATURE", "WhoAmI", "tlvs", "v1", "v2", "v2_inet", "v2_inet6", "v2_local", "v2_unix"]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(proto: str = "TCP4", src: str = "192.0.2.7", dst: str = "198.51.100.1",
       sport: int = 40000, dport: int = 443) -> bytes:
    """A v1 line; ``proto="UNKNOWN"`` gives ``PROXY UNKNOWN\\r\\n``."""
    if proto == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def v2(command: int, family_transport: int, body: bytes, version: int = 2) -> bytes:
    """A v2 header around ``body`` (addresses and TLVs)."""
    return SIGNATURE + bytes([(version << 4) | command, family_transport]) + \
        struct.pack("!H", len(body)) + body


def tlvs(*records: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in records)


def v2_inet(src: str = "192.0.2.7", dst: str = "198.51.100.1", sport: int = 40000,
            dport: int = 443, extra: bytes = b"", transport: int = 1) -> bytes:
    body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + \
        struct.pack("!HH", sport, dport)
    return v2(1, 0x10 | transport, body + extra)


def v2_inet6(src: str = "2001:db8::7", dst: str = "2001:db8::1", sport: int = 40000,
             dport: int = 443, extra: bytes = b"") -> bytes:
    body = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + \
        struct.pack("!HH", sport, dport)
    return v2(1, 0x21, body + extra)


def v2_unix(src: bytes = b"/run/client.sock", dst: bytes = b"/run/server.sock",
            extra: bytes = b"") -> bytes:
    return v2(1, 0x31, src.ljust(108, b"\x00") + dst.ljust(108, b"\x00") + extra)


def v2_local(body: bytes = b"") -> bytes:
    return v2(0, 0x00, body)


class WhoAmI(asyncio.Protocol):
    """Says ``peer HOST PORT via PROXY-HOST`` (the client as the service sees it, and the
    address the connection came from), then echoes what it receives."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        via = transport.get_extra_info("proxy")
        host, port = (peer[0], peer[1]) if isinstance(peer, tuple) else (peer or "-", 0)
        where = via[0] if isinstance(via, tuple) else "-"
        transport.write(f"peer {host} {port} via {where}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
