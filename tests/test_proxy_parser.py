"""The PROXY protocol parser (reactor.sansio.proxy): v1 and v2, strict, fed in chunks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.sansio.proxy import (
    TLV_AUTHORITY,
    TLV_CRC32C,
    TLV_NOOP,
    V1_MAX,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
    ProxyTransport,
    crc32c,
    parse_proxy_header,
)
from tests import proxykit as pk


def parse(data: bytes, accept: str = "any", max_size: int = 4096) -> tuple[ProxyHeader, bytes]:
    return parse_proxy_header(data, accept, max_size)


def feed_in(chunks: list[bytes], accept: str = "any") -> tuple[ProxyHeader, bytes]:
    """Feed ``chunks`` one by one; collect what follows the header."""
    parser = ProxyHeaderParser(accept)
    found = None
    after: list[bytes] = []
    for chunk in chunks:
        if found is None:
            found = parser.feed(chunk)
        else:
            after.append(chunk)
    if found is None:
        parser.feed_eof()
        raise AssertionError("feed_eof did not raise")
    header, rest = found
    return header, rest + b"".join(after)


def rejects(data: bytes, words: str, accept: str = "any", max_size: int = 4096) -> None:
    with pytest.raises(ProxyHeaderError) as info:
        parse(data, accept, max_size)
    assert words in info.value.reason, info.value.reason


# -- version 1 ------------------------------------------------------------------------

def test_v1_tcp4() -> None:
    header, rest = parse(pk.v1() + b"GET /")
    assert header == ProxyHeader(1, ProxyCommand.PROXY, ProxyFamily.INET,
                                 ProxyTransport.STREAM, ("192.0.2.7", 40000),
                                 ("198.51.100.1", 443), (), len(pk.v1()))
    assert rest == b"GET /"
    assert header.relayed


def test_v1_tcp6_reports_a_socket_style_address() -> None:
    header, _ = parse(pk.v1("TCP6", "2001:db8:0:0::7", "::1", 1, 65535))
    assert header.family is ProxyFamily.INET6
    assert header.source == ("2001:db8::7", 1, 0, 0)
    assert header.destination == ("::1", 65535, 0, 0)


def test_v1_unknown_keeps_the_real_peer() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        header, rest = parse(line + b"x")
        assert header.family is ProxyFamily.UNSPEC and header.source is None
        assert not header.relayed and rest == b"x"


def test_v1_at_the_limit_and_past_it() -> None:
    longest = pk.v1("TCP6", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535)
    assert len(longest) == 104  # the specification's worst case fits
    assert parse(longest)[0].size == 104
    filler = b"PROXY UNKNOWN " + b"a" * (V1_MAX - len("PROXY UNKNOWN ") - 2)
    assert parse(filler + b"\r\n")[0].size == V1_MAX
    rejects(filler + b"a\r\n", f"no CRLF within {V1_MAX} bytes")
    rejects(filler + b"a\r", f"no CRLF within {V1_MAX} bytes")  # the LF would be byte 108
    rejects(b"PROXY UNKNOWN " + b"a" * 200, f"no CRLF within {V1_MAX} bytes")


@pytest.mark.parametrize(("line", "words"), [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\n", "LF without its CR"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\rX", "CR not followed by LF"),
    (b"PROXY TCP5 192.0.2.7 198.51.100.1 40000 443\r\n", "unknown protocol 'TCP5'"),
    (b"PROXY TCP4 192.0.2.7  198.51.100.1 40000 443\r\n", "fields after TCP4"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n", "fields after TCP4"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443 \r\n", "fields after TCP4"),
    (b"PROXY TCP4 192.0.2.256 198.51.100.1 40000 443\r\n", "source address"),
    (b"PROXY TCP4 192.0.2.07 198.51.100.1 40000 443\r\n", "source address"),
    (b"PROXY TCP4 192.0.2.7 2001:db8::1 40000 443\r\n", "not a valid IPv4"),
    (b"PROXY TCP6 192.0.2.7 2001:db8::1 40000 443\r\n", "not a valid IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 2001:db8::1 40000 443\r\n", "source address"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n", "source port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 443\r\n", "source port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 -1\r\n", "destination port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 +443\r\n", "destination port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 4\xd93\r\n", "not printable"),
    (b"PROXY \r\n", "unknown protocol"),
    (b"PROXY\r\n", "expected 'PROXY '"),
    (b"proxy TCP4 192.0.2.7 198.51.100.1 40000 443\r\n", "expected a PROXY v1 or v2"),
])
def test_v1_malformed(line: bytes, words: str) -> None:
    rejects(line, words)


def test_v1_port_zero_is_valid() -> None:
    assert parse(pk.v1(sport=0, dport=0))[0].source == ("192.0.2.7", 0)


# -- version 2 ------------------------------------------------------------------------

def test_v2_inet_with_tlvs() -> None:
    extra = pk.tlvs((TLV_AUTHORITY, b"example.org"), (TLV_NOOP, b""), (0xE0, b"\x01\x02"))
    data = pk.v2_inet(extra=extra)
    header, rest = parse(data + b"hello")
    assert rest == b"hello"
    assert (header.version, header.command, header.family, header.transport) == (
        2, ProxyCommand.PROXY, ProxyFamily.INET, ProxyTransport.STREAM)
    assert header.source == ("192.0.2.7", 40000)
    assert header.destination == ("198.51.100.1", 443)
    assert header.tlvs == ((TLV_AUTHORITY, b"example.org"), (TLV_NOOP, b""),
                           (0xE0, b"\x01\x02"))
    assert header.tlv(TLV_AUTHORITY) == b"example.org" and header.tlv(0x99) is None
    assert header.size == len(data)
    with pytest.raises(AttributeError):
        header.source = None  # type: ignore[misc]  # read-only


def test_v2_inet6_udp_and_unix() -> None:
    header, _ = parse(pk.v2_inet6())
    assert header.source == ("2001:db8::7", 40000, 0, 0)
    header, _ = parse(pk.v2_inet(transport=2))
    assert header.transport is ProxyTransport.DGRAM
    header, _ = parse(pk.v2_unix())
    assert (header.family, header.source, header.destination) == (
        ProxyFamily.UNIX, "/run/client.sock", "/run/server.sock")
    header, _ = parse(pk.v2_unix(src=b"\x00abstract"))
    assert header.source == "\x00abstract"


def test_v2_local_and_unspec_keep_the_real_peer() -> None:
    for data in (pk.v2_local(), pk.v2_local(b"\x00" * 12), pk.v2(0, 0x11, b"\x00" * 12),
                 pk.v2(1, 0x00, b"")):
        header, rest = parse(data + b"!")
        assert header.source is None and not header.relayed and rest == b"!"
    assert parse(pk.v2_local())[0].command is ProxyCommand.LOCAL


@pytest.mark.parametrize(("data", "words"), [
    (pk.v2(1, 0x11, b"\x00" * 12, version=1), "unsupported version 1"),
    (pk.v2(1, 0x11, b"\x00" * 12, version=3), "unsupported version 3"),
    (pk.v2(2, 0x11, b"\x00" * 12), "unknown command 2"),
    (pk.v2(1, 0x41, b"\x00" * 12), "unknown family and transport 0x41"),
    (pk.v2(1, 0x13, b"\x00" * 12), "unknown family and transport 0x13"),
    (pk.v2(1, 0x10, b"\x00" * 12), "unknown family and transport 0x10"),
    (pk.v2(1, 0x01, b""), "unknown family and transport 0x01"),
    (pk.v2(1, 0x11, b"\x00" * 11), "shorter than the 12 address bytes"),
    (pk.v2(1, 0x21, b"\x00" * 12), "shorter than the 36 address bytes"),
    (pk.v2(1, 0x31, b"\x00" * 108), "shorter than the 216 address bytes"),
    (pk.v2_inet(extra=b"\x01\x00"), "2 stray bytes"),
    (pk.v2_inet(extra=b"\x02\x00\x05abc"), "overruns the header by 2"),
    (b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x0c" + b"\x00" * 12, "bad signature"),
    (b"\r\n\r\nX", "bad signature"),
])
def test_v2_malformed(data: bytes, words: str) -> None:
    rejects(data, words)


def with_crc(extra_before: bytes = b"", damage: bool = False) -> bytes:
    """A v2 header with a CRC32C TLV holding its checksum (one bit off with damage)."""
    zeroed = pk.v2_inet(extra=extra_before + pk.tlvs((TLV_CRC32C, bytes(4))))
    value = crc32c(zeroed) ^ (1 if damage else 0)
    return zeroed[:-4] + struct.pack("!I", value)


def test_v2_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    header, _ = parse(with_crc(pk.tlvs((TLV_NOOP, b"pad"))))
    assert header.tlv(TLV_CRC32C) is not None
    rejects(with_crc(damage=True), "CRC32C mismatch")
    rejects(pk.v2_inet(extra=pk.tlvs((TLV_CRC32C, b"\x00" * 3))), "CRC32C TLV of 3 bytes")


def test_v2_size_cap_is_checked_before_the_body_arrives() -> None:
    parser = ProxyHeaderParser("v2", max_size=300)
    head = pk.SIGNATURE + b"\x21\x11" + struct.pack("!H", 300)
    with pytest.raises(ProxyHeaderError, match="too large: 316 bytes"):
        parser.feed(head)
    assert parse(pk.v2_inet(extra=pk.tlvs((0xE1, b"x" * 200))), max_size=300)[0].size == 231


# -- choosing the version; misuse; truncation -------------------------------------------

def test_the_accepted_versions_are_never_guessed() -> None:
    rejects(pk.v1(), "expected a PROXY v2 header", accept="v2")
    rejects(pk.v2_inet(), "expected a PROXY v1 header", accept="v1")
    rejects(b"GET / HTTP/1.1\r\n", "expected a PROXY v1 or v2 header")
    rejects(b"\x16\x03\x01", "expected a PROXY v1 or v2 header")  # a TLS ClientHello
    assert parse(pk.v1(), accept="v1")[0].version == 1
    assert parse(pk.v2_inet(), accept="v2")[0].version == 2


def test_a_wrong_first_byte_fails_at_once() -> None:
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"G")
    with pytest.raises(ProxyHeaderError, match="bad signature"):
        ProxyHeaderParser().feed(b"\r\n\r\n\x01")
    with pytest.raises(ProxyHeaderError, match="expected 'PROXY '"):
        ProxyHeaderParser().feed(b"PROX!")


def test_truncated_headers() -> None:
    for whole in (pk.v1(), pk.v2_inet(), pk.v2_unix()):
        for cut in range(len(whole)):
            parser = ProxyHeaderParser()
            assert parser.feed(whole[:cut]) is None
            assert parser.buffered == cut
            with pytest.raises(ProxyHeaderError) as info:
                parser.feed_eof()
            assert ("truncated" in info.value.reason) == (cut > 0)


def test_misuse() -> None:
    with pytest.raises(ValueError, match="accept must be one of"):
        ProxyHeaderParser("v3")
    with pytest.raises(ValueError, match="max_size must be at least 232"):
        ProxyHeaderParser(max_size=100)
    parser = ProxyHeaderParser()
    assert parser.feed(pk.v1()) is not None
    parser.feed_eof()  # done: nothing to complain about
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


# -- any split gives the same result (hypothesis) ----------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlv_kinds = st.integers(0, 255).filter(lambda kind: kind != TLV_CRC32C)  # checked: own test
tlv_records = st.lists(st.tuples(tlv_kinds, st.binary(max_size=40)), max_size=5)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, object, object]:
    """A valid header and the source and destination it names."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-unix",
                                 "v2-local"]))
    sport, dport = draw(ports), draw(ports)
    extra = pk.tlvs(*draw(tlv_records))
    if kind in ("v1-4", "v2-4"):
        src, dst = draw(ipv4), draw(ipv4)
        data = pk.v1("TCP4", src, dst, sport, dport) if kind == "v1-4" else \
            pk.v2_inet(src, dst, sport, dport, extra)
        return data, (src, sport), (dst, dport)
    if kind in ("v1-6", "v2-6"):
        src, dst = draw(ipv6), draw(ipv6)
        data = pk.v1("TCP6", src, dst, sport, dport) if kind == "v1-6" else \
            pk.v2_inet6(src, dst, sport, dport, extra)
        return data, (src, sport, 0, 0), (dst, dport, 0, 0)
    if kind == "v2-unix":
        path = draw(st.text("abc/._-", min_size=1, max_size=100)).encode()
        return pk.v2_unix(path, b"/s", extra), path.decode(), "/s"
    if kind == "v2-local":
        return pk.v2_local(), None, None
    return pk.v1("UNKNOWN"), None, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, at = [], 0
    for point in points:
        pieces.append(data[at:point])
        at = point
    pieces.append(data[at:])
    return pieces


@settings(max_examples=300, deadline=None)
@given(headers(), st.binary(max_size=64), st.lists(st.integers(0, 400), max_size=12))
def test_any_split_gives_the_same_header_and_rest(
    case: tuple[bytes, object, object], after: bytes, cuts: list[int],
) -> None:
    data, source, destination = case
    whole, whole_rest = parse(data + after)
    assert (whole.source, whole.destination, whole_rest, whole.size) == (
        source, destination, after, len(data))
    header, rest = feed_in(split(data + after, cuts))
    assert header == whole and rest == after
    one_by_one, rest = feed_in([bytes([b]) for b in data + after])
    assert one_by_one == whole and rest == after


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_garbage_is_refused_the_same_way_in_any_split(data: bytes, cuts: list[int]) -> None:
    """Random bytes: either a header (the same one in any split) or a ProxyHeaderError
    (also for the chunked feed, at the latest at EOF); never anything else."""
    try:
        whole: object = parse(data)
    except ProxyHeaderError:
        whole = ProxyHeaderError
    try:
        chunked: object = feed_in(split(data, cuts))
    except ProxyHeaderError:
        chunked = ProxyHeaderError
    assert chunked == whole


@settings(max_examples=200, deadline=None)
@given(headers(), st.integers(0, 2000))
def test_a_damaged_header_is_an_error_or_a_header(case: tuple[bytes, object, object],
                                                   flip: int) -> None:
    data, _src, _dst = case
    at = flip % len(data)
    damaged = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]
    try:
        header, rest = parse(damaged)
    except ProxyHeaderError:
        return
    assert header.size + len(rest) == len(damaged)
