"""The PROXY protocol, versions 1 and 2: a strict, incremental, socket-free parser.

A load balancer in front of a server (HAProxy ``send-proxy``/``send-proxy-v2``, nginx's
``proxy_protocol on``, Envoy) opens each connection with one header that names the
client it accepted; everything after the header is the client's own stream.

Theory of operation
-------------------
:class:`ProxyHeaderParser` is fed the first bytes of a connection, in chunks of any
size (:meth:`~ProxyHeaderParser.feed`), and answers ``None`` (more bytes needed) until
the header is complete; then it returns the parsed :class:`ProxyHeader` and the bytes
that followed it in the last chunk. Anything that is not a valid header raises
:class:`ProxyHeaderError` as soon as the bytes prove it (a wrong first byte is enough),
naming what was wrong; :meth:`~ProxyHeaderParser.feed_eof` raises it for a header cut
short. The parser never guesses: the caller says which versions it accepts
(``"v1"``, ``"v2"`` or ``"any"``), and a connection that starts with anything else is
an error.

*Version 1* is one text line, ``PROXY TCP4|TCP6|UNKNOWN src dst sport dport\\r\\n``, at
most :data:`V1_MAX` (107) bytes with its CRLF. Fields are separated by single spaces;
ports are decimal 0-65535 without leading zeros; the addresses must be valid for the
family (a dotted quad for TCP4, an IPv6 address for TCP6). ``UNKNOWN`` may carry
anything up to the CRLF, which is ignored: the connection's real endpoints are used.

*Version 2* is binary: the 12-byte :data:`V2_SIGNATURE`, the version (2) and command
(LOCAL 0, PROXY 1) in one byte, the family and transport in the next, a big-endian
length, then the addresses and type-length-value records (TLVs). The length must hold
the family's addresses (12 bytes for IPv4, 36 for IPv6, 216 for Unix paths); the
whole header may not exceed ``max_size`` (checked as soon as the length is known, before
its bytes are read); the TLVs must tile the rest exactly, and a CRC32C TLV must match
the header's checksum. They are kept, read-only, in
:attr:`ProxyHeader.tlvs`. A LOCAL header (a health check from the proxy itself) carries
no client: :attr:`ProxyHeader.source` is None and the real peer stands.

Scanning is linear: a v1 line is searched for its CRLF only in the bytes not yet
searched, and a v2 header is measured once its first 16 bytes are in.

Socket-free: no socket, select, selectors, threading or os.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from .errors import RemoteProtocolError

__all__ = [
    "TLV_ALPN",
    "TLV_AUTHORITY",
    "TLV_CRC32C",
    "TLV_NETNS",
    "TLV_NOOP",
    "TLV_SSL",
    "TLV_UNIQUE_ID",
    "V1_MAX",
    "V2_SIGNATURE",
    "VERSIONS",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderParser",
    "ProxyTransport",
    "crc32c",
    "parse_proxy_header",
]

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # bytes, CRLF included (the specification's 108-byte buffer with NUL)
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED: Final = 16  # signature, version/command, family/transport, length
DEFAULT_MAX_SIZE: Final = 4096  # bytes of a whole v2 header (nginx's cap)
#: the smallest ``max_size`` a parser accepts: a v2 header with Unix addresses
MIN_MAX_SIZE: Final = V2_FIXED + 216
VERSIONS: Final = ("v1", "v2", "any")

# the TLV types of the specification (section 2.2)
TLV_ALPN: Final = 0x01
TLV_AUTHORITY: Final = 0x02
TLV_CRC32C: Final = 0x03
TLV_NOOP: Final = 0x04
TLV_UNIQUE_ID: Final = 0x05
TLV_SSL: Final = 0x20
TLV_NETNS: Final = 0x30


class ProxyHeaderError(RemoteProtocolError):
    """The bytes are not a valid PROXY header (the peer misbehaved); :attr:`reason`
    says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProxyCommand(Enum):
    """What the header announces."""

    LOCAL = 0  # the proxy's own connection (a health check): use the real endpoints
    PROXY = 1  # relayed for the client named in the header


class ProxyFamily(Enum):
    """The address family of the relayed connection."""

    UNSPEC = 0  # unknown or unsupported (v1 UNKNOWN): use the real endpoints
    INET = 1
    INET6 = 2
    UNIX = 3


class ProxyTransport(Enum):
    """The transport of the relayed connection."""

    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


# v2 family nibble -> (family, bytes of its address block)
_V2_FAMILIES: Final = {
    0: (ProxyFamily.UNSPEC, 0),
    1: (ProxyFamily.INET, 12),
    2: (ProxyFamily.INET6, 36),
    3: (ProxyFamily.UNIX, 216),
}
_V2_TRANSPORTS: Final = {0: ProxyTransport.UNSPEC, 1: ProxyTransport.STREAM,
                         2: ProxyTransport.DGRAM}
_INET: Final = struct.Struct("!4s4sHH")
_INET6: Final = struct.Struct("!16s16sHH")
_V2_LENGTH: Final = struct.Struct("!H")
_TLV_HEAD: Final = struct.Struct("!BH")


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header (immutable).

    Attributes:
        version: 1 or 2.
        command: LOCAL (no client named: keep the real peer) or PROXY.
        family: the relayed connection's family; UNSPEC keeps the real peer.
        transport: STREAM, DGRAM or UNSPEC (v1 is always STREAM, or UNSPEC for UNKNOWN).
        source: the client's address, as a socket would report it -- ``(host, port)``
            for IPv4, ``(host, port, 0, 0)`` for IPv6, a path for Unix -- or None
            (LOCAL, UNSPEC).
        destination: the address the client connected to, in the same form, or None.
        tlvs: v2's type-length-value records in their order, as ``(type, value)``
            pairs (empty for v1).
        size: the header's length in bytes.
    """

    version: int
    command: ProxyCommand
    family: ProxyFamily
    transport: ProxyTransport
    source: Any
    destination: Any
    tlvs: tuple[tuple[int, bytes], ...] = ()
    size: int = 0

    @property
    def relayed(self) -> bool:
        """Whether the header names a client (PROXY with a known family)."""
        return self.source is not None

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or None."""
        for found, value in self.tlvs:
            if found == kind:
                return value
        return None


class ProxyHeaderParser:
    """Reads one PROXY header from a connection's first bytes, fed in any chunks.

    Args:
        accept: ``"v1"``, ``"v2"`` or ``"any"`` (either, told apart by the first byte).
        max_size: the largest whole v2 header accepted, in bytes (v1's limit is the
            specification's 107 bytes).

    Raises:
        ValueError: ``accept`` or ``max_size`` is not valid.
    """

    __slots__ = ("_buffer", "_needed", "_scanned", "_version", "accept", "done", "max_size")

    def __init__(self, accept: str = "any", max_size: int = DEFAULT_MAX_SIZE) -> None:
        if accept not in VERSIONS:
            raise ValueError(f"accept must be one of {', '.join(VERSIONS)}, not {accept!r}")
        if max_size < MIN_MAX_SIZE:
            raise ValueError(f"max_size must be at least {MIN_MAX_SIZE} (a v2 header with "
                             f"Unix addresses), not {max_size!r}")
        self.accept = accept
        self.max_size = max_size
        self.done = False
        self._buffer = bytearray()
        self._version = 0  # 0 until the first bytes decide it
        self._scanned = 0  # v1: bytes already searched for the CRLF
        self._needed = V2_FIXED  # v2: bytes the header needs, as far as known

    @property
    def buffered(self) -> int:
        """Bytes received and held so far."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, bytes] | None:
        """Take the next bytes of the connection.

        Returns:
            None while the header is incomplete; then ``(header, rest)``, ``rest``
            being the bytes after the header (the client's first bytes).

        Raises:
            ProxyHeaderError: the bytes cannot begin, or do not make, a valid header.
            RuntimeError: called again after the header was returned.
        """
        if self.done:
            raise RuntimeError("the PROXY header was already parsed")
        self._buffer += data
        if not self._version:
            self._version = self._decide()
            if not self._version:
                return None
        found = self._feed_v1() if self._version == 1 else self._feed_v2()
        if found is not None:
            self.done = True
            self._buffer = bytearray()
        return found

    def feed_eof(self) -> None:
        """The peer closed before the header was complete.

        Raises:
            ProxyHeaderError: always (unless the header was already parsed).
        """
        if self.done:
            return
        got = len(self._buffer)
        if not got:
            raise ProxyHeaderError("the connection closed before any PROXY header byte")
        raise ProxyHeaderError(f"truncated PROXY header: the connection closed after "
                               f"{got} bytes")

    # -- telling the versions apart -----------------------------------------------------

    def _decide(self) -> int:
        """1 or 2, told by the first byte (0 before it); raises when that byte can
        begin no accepted version."""
        buffer = self._buffer
        if not buffer:
            return 0
        first = buffer[0]
        if first == V1_PREFIX[0] and self.accept != "v2":
            return 1
        if first == V2_SIGNATURE[0] and self.accept != "v1":
            return 2
        wanted = {"v1": "a PROXY v1 header ('PROXY ...')",
                  "v2": "a PROXY v2 header (its 12-byte signature)",
                  "any": "a PROXY v1 or v2 header"}[self.accept]
        raise ProxyHeaderError(f"expected {wanted}, got {bytes(buffer[:16])!r}")

    # -- version 1 ----------------------------------------------------------------------

    def _feed_v1(self) -> tuple[ProxyHeader, bytes] | None:
        buffer = self._buffer
        seen = len(V1_PREFIX)
        if len(buffer) < seen:
            if buffer != V1_PREFIX[: len(buffer)]:
                raise ProxyHeaderError(f"expected 'PROXY ', got {bytes(buffer)!r}")
            return None
        if buffer[:seen] != V1_PREFIX:
            raise ProxyHeaderError(f"expected 'PROXY ', got {bytes(buffer[:seen])!r}")
        scan_from = max(self._scanned, seen)
        limit = min(len(buffer), V1_MAX)
        for at in range(scan_from, limit):
            byte = buffer[at]
            if byte == 0x0D:  # CR: the LF must follow at once, within the limit
                if at + 2 > V1_MAX:
                    break
                if at + 1 >= len(buffer):
                    self._scanned = at
                    return None
                if buffer[at + 1] != 0x0A:
                    raise ProxyHeaderError("PROXY v1 header: a CR not followed by LF")
                line = bytes(buffer[:at])
                rest = bytes(buffer[at + 2:])
                return _parse_v1(line, at + 2), rest
            if byte == 0x0A:
                raise ProxyHeaderError("PROXY v1 header: a LF without its CR")
            if not 0x20 <= byte < 0x7F:
                raise ProxyHeaderError(f"PROXY v1 header: a byte that is not printable "
                                       f"ASCII ({byte:#04x}) at {at}")
        self._scanned = limit
        if len(buffer) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 header: no CRLF within {V1_MAX} bytes")
        return None

    # -- version 2 ----------------------------------------------------------------------

    def _feed_v2(self) -> tuple[ProxyHeader, bytes] | None:
        buffer = self._buffer
        have = len(buffer)
        if have < V2_FIXED:
            if buffer[:12] != V2_SIGNATURE[: min(have, 12)]:
                raise ProxyHeaderError(
                    f"PROXY v2 header: bad signature {bytes(buffer[:12])!r}")
            return None
        if self._needed == V2_FIXED:
            if buffer[:12] != V2_SIGNATURE:
                raise ProxyHeaderError(
                    f"PROXY v2 header: bad signature {bytes(buffer[:12])!r}")
            (length,) = _V2_LENGTH.unpack_from(buffer, 14)
            total = V2_FIXED + length
            if total > self.max_size:
                raise ProxyHeaderError(f"PROXY v2 header too large: {total} bytes "
                                       f"(at most {self.max_size})")
            _check_v2_fixed(buffer[12], buffer[13], length)
            self._needed = total
        if have < self._needed:
            return None
        total = self._needed
        header = _parse_v2(bytes(buffer[:total]))
        return header, bytes(buffer[total:])


def _check_v2_fixed(version_command: int, family_transport: int, length: int) -> None:
    """The version, command, family, transport and length bytes of a v2 header."""
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 header: unsupported version {version} "
                               f"(byte {version_command:#04x})")
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 header: unknown command {command}")
    if command == 0:
        return  # LOCAL: the family and addresses are to be ignored
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family not in _V2_FAMILIES or transport not in _V2_TRANSPORTS or (
            (family == 0) != (transport == 0)):
        raise ProxyHeaderError(f"PROXY v2 header: unknown family and transport "
                               f"{family_transport:#04x}")
    need = _V2_FAMILIES[family][1]
    if length < need:
        raise ProxyHeaderError(f"PROXY v2 header: length {length} is shorter than the "
                               f"{need} address bytes of its family")


def _parse_v2(data: bytes) -> ProxyHeader:
    command = ProxyCommand(data[12] & 0x0F)
    size = len(data)
    if command is ProxyCommand.LOCAL:
        return ProxyHeader(2, command, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC, None,
                           None, (), size)
    family, need = _V2_FAMILIES[data[13] >> 4]
    transport = _V2_TRANSPORTS[data[13] & 0x0F]
    block = V2_FIXED
    source: Any = None
    destination: Any = None
    if family is ProxyFamily.INET:
        src, dst, sport, dport = _INET.unpack_from(data, block)
        source = (str(ipaddress.IPv4Address(src)), sport)
        destination = (str(ipaddress.IPv4Address(dst)), dport)
    elif family is ProxyFamily.INET6:
        src, dst, sport, dport = _INET6.unpack_from(data, block)
        source = (str(ipaddress.IPv6Address(src)), sport, 0, 0)
        destination = (str(ipaddress.IPv6Address(dst)), dport, 0, 0)
    elif family is ProxyFamily.UNIX:
        source = _unix_path(data[block:block + 108])
        destination = _unix_path(data[block + 108:block + 216])
    tlvs = _parse_tlvs(data, block + need) if family is not ProxyFamily.UNSPEC else ()
    return ProxyHeader(2, command, family, transport, source, destination, tlvs, size)


def _unix_path(raw: bytes) -> str:
    """A Unix socket path from its 108-byte, NUL-padded field (an abstract name keeps
    its leading NUL)."""
    abstract = raw[:1] == b"\x00"
    name = b"\x00" + raw[1:].rstrip(b"\x00") if abstract else raw.split(b"\x00", 1)[0]
    return name.decode("utf-8", "surrogateescape")


def _parse_tlvs(data: bytes, at: int) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    end = len(data)
    while at < end:
        if end - at < _TLV_HEAD.size:
            raise ProxyHeaderError(f"PROXY v2 header: {end - at} stray bytes where a TLV "
                                   f"should start (at {at})")
        kind, length = _TLV_HEAD.unpack_from(data, at)
        at += _TLV_HEAD.size
        if at + length > end:
            raise ProxyHeaderError(f"PROXY v2 header: TLV {kind:#04x} of {length} bytes "
                                   f"overruns the header by {at + length - end}")
        if kind == TLV_CRC32C:
            _check_crc32c(data, at, length)
        found.append((kind, data[at:at + length]))
        at += length
    return tuple(found)


def _crc32c_table() -> tuple[int, ...]:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one entry per byte."""
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` (the checksum of v2's ``TLV_CRC32C``)."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_crc32c(data: bytes, at: int, length: int) -> None:
    """A CRC32C TLV (value at ``at``) must hold the checksum of the whole header with
    its own four bytes zeroed."""
    if length != 4:
        raise ProxyHeaderError(f"PROXY v2 header: a CRC32C TLV of {length} bytes (4 expected)")
    (sent,) = struct.unpack_from("!I", data, at)
    wanted = crc32c(data[:at] + bytes(4) + data[at + 4:])
    if sent != wanted:
        raise ProxyHeaderError(f"PROXY v2 header: CRC32C mismatch (the header says "
                               f"{sent:#010x}, its bytes give {wanted:#010x})")


# -- version 1's line ---------------------------------------------------------------------

def _parse_v1(line: bytes, size: int) -> ProxyHeader:
    """``line``: the header without its CRLF (printable ASCII, checked)."""
    text = line.decode("ascii")
    parts = text.split(" ")
    if len(parts) < 2:
        raise ProxyHeaderError("PROXY v1 header: no protocol after 'PROXY'")
    proto = parts[1]
    if proto == "UNKNOWN":  # anything may follow; the real endpoints are used
        return ProxyHeader(1, ProxyCommand.PROXY, ProxyFamily.UNSPEC,
                           ProxyTransport.UNSPEC, None, None, (), size)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 header: unknown protocol {proto[:10]!r} "
                               f"(TCP4, TCP6 or UNKNOWN)")
    if len(parts) != 6:
        raise ProxyHeaderError(f"PROXY v1 header: {len(parts) - 2} fields after {proto} "
                               f"(4 single-space-separated fields expected)")
    family = ProxyFamily.INET if proto == "TCP4" else ProxyFamily.INET6
    src = _v1_address(parts[2], family, "source")
    dst = _v1_address(parts[3], family, "destination")
    sport = _v1_port(parts[4], "source")
    dport = _v1_port(parts[5], "destination")
    if family is ProxyFamily.INET:
        source: Any = (src, sport)
        destination: Any = (dst, dport)
    else:
        source, destination = (src, sport, 0, 0), (dst, dport, 0, 0)
    return ProxyHeader(1, ProxyCommand.PROXY, family, ProxyTransport.STREAM, source,
                       destination, (), size)


def _v1_address(field: str, family: ProxyFamily, which: str) -> str:
    try:
        if family is ProxyFamily.INET:
            return str(ipaddress.IPv4Address(field))
        if "%" in field:  # a zone index has no place in the header
            raise ValueError(field)
        return str(ipaddress.IPv6Address(field))
    except ValueError:
        kind = "IPv4" if family is ProxyFamily.INET else "IPv6"
        raise ProxyHeaderError(f"PROXY v1 header: the {which} address {field[:46]!r} is "
                               f"not a valid {kind} address") from None


def _v1_port(field: str, which: str) -> int:
    if not (field.isdigit() and field.isascii()) or (len(field) > 1 and field[0] == "0") \
            or len(field) > 5 or int(field) > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: the {which} port {field[:10]!r} is not "
                               f"a decimal number from 0 to 65535")
    return int(field)


def parse_proxy_header(data: bytes, accept: str = "any",
                       max_size: int = DEFAULT_MAX_SIZE) -> tuple[ProxyHeader, bytes]:
    """Parse a header from ``data`` at once: ``(header, rest)``.

    Raises:
        ProxyHeaderError: ``data`` does not begin with a whole, valid header.
    """
    parser = ProxyHeaderParser(accept, max_size)
    found = parser.feed(data)
    if found is None:
        parser.feed_eof()
        raise AssertionError("unreachable")  # pragma: no cover
    return found
