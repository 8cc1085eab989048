"""handlers.framers.rpcrecord: ONC RPC record marking (RFC 5531 section 11), framer and handler."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from handlerkit import run_framer as run
from handlerkit import three_ways
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.base import FramingError
from handlers.framers.rpcrecord import (
    LAST_FRAGMENT,
    MAX_FRAGMENT_SIZE,
    RecordMarkingFramer,
    RPCRecordHandler,
    RPCRecordTooLarge,
    encode_record,
)
from reactor.testing import FakeTransport, ProtocolPair


def fragment(payload: bytes, last: bool) -> bytes:
    """Build one fragment by hand, independently of encode_record."""
    return struct.pack(">I", len(payload) | (0x80000000 if last else 0)) + payload




# -- encoding ----------------------------------------------------------------------------


def test_constants() -> None:
    assert LAST_FRAGMENT == 1 << 31
    assert MAX_FRAGMENT_SIZE == (1 << 31) - 1


def test_encode_one_fragment() -> None:
    assert encode_record(b"hello") == b"\x80\x00\x00\x05hello"


def test_encode_an_empty_record() -> None:
    assert encode_record(b"") == b"\x80\x00\x00\x00"


def test_encode_splits_into_fragments() -> None:
    assert encode_record(b"abcdefg", max_fragment_size=3) == (
        fragment(b"abc", False) + fragment(b"def", False) + fragment(b"g", True))
    assert encode_record(b"abcdef", max_fragment_size=3) == (
        fragment(b"abc", False) + fragment(b"def", True))


@pytest.mark.parametrize("size", [0, MAX_FRAGMENT_SIZE + 1])
def test_encode_bad_fragment_size(size: int) -> None:
    with pytest.raises(ValueError):
        encode_record(b"x", max_fragment_size=size)


# -- decoding ----------------------------------------------------------------------------


def test_reassembles_fragments() -> None:
    wire = fragment(b"he", False) + fragment(b"", False) + fragment(b"llo", True)
    framer = RecordMarkingFramer()
    assert run(framer, [wire + fragment(b"", True)]) == ([b"hello", b""], False)
    assert framer.buffered == 0
    assert framer.fragments == 0


def test_a_partial_record_waits() -> None:
    framer = RecordMarkingFramer()
    framer.feed(fragment(b"part", False) + fragment(b"ia", True)[:5])
    assert framer.next_record() is None
    assert framer.fragments == 1
    framer.feed(b"a")
    assert framer.next_record() == b"partia"


def test_a_record_over_the_maximum_is_refused_at_the_header() -> None:
    framer = RecordMarkingFramer(max_record_size=10)
    framer.feed(fragment(b"123456", False))
    assert framer.next_record() is None
    framer.feed(struct.pack(">I", LAST_FRAGMENT | 5))  # 6 + 5 > 10, payload not sent
    with pytest.raises(RPCRecordTooLarge) as info:
        framer.next_record()
    assert (info.value.size, info.value.limit) == (11, 10)
    assert "max_record_size=10" in str(info.value)
    assert isinstance(info.value, FramingError)
    assert framer.buffered == 0
    with pytest.raises(RPCRecordTooLarge):
        framer.feed(b"x")
    with pytest.raises(RPCRecordTooLarge):
        framer.next_record()


def test_a_huge_fragment_header_is_refused_without_buffering() -> None:
    framer = RecordMarkingFramer()
    framer.feed(b"\xff\xff\xff\xff")
    with pytest.raises(RPCRecordTooLarge):
        framer.next_record()


def test_exactly_the_maximum_across_fragments_is_accepted() -> None:
    framer = RecordMarkingFramer(max_record_size=6)
    wire = fragment(b"abc", False) + fragment(b"def", True)
    assert run(framer, [wire]) == ([b"abcdef"], False)


def test_bad_maximum() -> None:
    with pytest.raises(ValueError):
        RecordMarkingFramer(-1)


# -- property tests ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), max_size=8),
    fragment_size=st.integers(min_value=1, max_value=16),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_same_records_however_the_input_is_split(
    payloads: list[bytes], fragment_size: int, cuts: list[int]
) -> None:
    data = b"".join(encode_record(p, fragment_size) for p in payloads)
    for chunks in three_ways(data, cuts):
        assert run(RecordMarkingFramer(), chunks) == (payloads, False)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=4), max_size=6),
    limit=st.integers(min_value=0, max_value=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_oversized_records_fail_at_the_same_place_however_split(
    records: list[list[bytes]], limit: int, cuts: list[int]
) -> None:
    data = b"".join(
        fragment(frag, i == len(frags) - 1) for frags in records for i, frag in enumerate(frags))
    expected: list[bytes] = []
    for frags in records:
        if sum(map(len, frags)) > limit:
            break
        expected.append(b"".join(frags))
    failed = len(expected) < len(records)
    for chunks in three_ways(data, cuts):
        assert run(RecordMarkingFramer(limit), chunks) == (expected, failed)


# -- the handler --------------------------------------------------------------------------


class NullProc(RPCRecordHandler):
    """Answers every record with its length, as one record in 2-byte fragments."""

    __slots__ = ("seen",)

    max_record_size = 100
    max_fragment_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def record_received(self, record: bytes) -> None:
        self.seen.append(record)
        self.send_record(b"%d" % len(record))


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.framer = RecordMarkingFramer()
        self.records: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        while (record := self.framer.next_record()) is not None:
            self.records.append(record)


@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_handler_round_trip(chunk_size: int | None) -> None:
    client, server = Client(), NullProc()
    pair = ProtocolPair(client, server)
    pair.client_transport.write(encode_record(b"x" * 100, 7) + encode_record(b""))
    pair.pump(chunk_size=chunk_size)
    assert server.seen == [b"x" * 100, b""]
    assert client.records == [b"100", b"0"]


def test_handler_closes_on_an_oversized_record(caplog: pytest.LogCaptureFixture) -> None:
    handler = NullProc()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.INFO, logger="handlers"):
        transport.feed(fragment(b"a" * 60, False) + fragment(b"b" * 41, True))
    assert handler.seen == []
    assert transport.lost
    assert "RPC record too large" in caplog.text


def test_handler_without_record_received_is_a_clear_error() -> None:
    transport = FakeTransport(RPCRecordHandler())
    with pytest.raises(NotImplementedError):
        transport.feed(encode_record(b""))
