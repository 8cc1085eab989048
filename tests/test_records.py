"""handlers.framers.records: length-prefixed RecordFramer (no sockets) and RecordHandler."""

from __future__ import annotations

import asyncio
import logging

import pytest
from handlerkit import run_framer as run
from handlerkit import three_ways
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.base import FramingError
from handlers.framers.records import (
    DEFAULT_MAX_RECORD_SIZE,
    PREFIX_SIZES,
    RecordFramer,
    RecordHandler,
    RecordTooLarge,
)
from reactor.testing import FakeTransport, ProtocolPair

# -- the state machine ------------------------------------------------------------------


@pytest.mark.parametrize(("size", "order", "wire"), [
    (1, "big", b"\x03abc"),
    (2, "big", b"\x00\x03abc"),
    (2, "little", b"\x03\x00abc"),
    (4, "big", b"\x00\x00\x00\x03abc"),
    (4, "little", b"\x03\x00\x00\x00abc"),
    (8, "big", b"\x00" * 7 + b"\x03abc"),
    (8, "little", b"\x03" + b"\x00" * 7 + b"abc"),
])
def test_wire_format(size: int, order: str, wire: bytes) -> None:
    framer = RecordFramer(size, order)  # type: ignore[arg-type]
    assert framer.encode(b"abc") == wire
    assert run(framer, [wire + wire[:2]]) == ([b"abc"], False)
    assert run(framer, [wire[2:]]) == ([b"abc"], False)
    assert framer.buffered == 0


def test_empty_records() -> None:
    framer = RecordFramer(2)
    assert run(framer, [b"\x00\x00\x00\x00\x00\x01z"]) == ([b"", b"", b"z"], False)


def test_an_oversized_record_is_refused_from_its_prefix_alone() -> None:
    framer = RecordFramer(4, max_record_size=100)
    framer.feed(b"\x00\x00\x00\x65")  # 101 announced; no payload sent yet
    with pytest.raises(RecordTooLarge) as info:
        framer.next_record()
    assert (info.value.size, info.value.limit) == (101, 100)
    assert "max_record_size=100" in str(info.value)
    assert isinstance(info.value, FramingError)
    assert framer.buffered == 0  # nothing of it is kept
    assert framer.failed
    with pytest.raises(RecordTooLarge):
        framer.feed(b"x" * 101)
    assert framer.buffered == 0
    with pytest.raises(RecordTooLarge):
        framer.next_record()


def test_a_record_of_exactly_the_maximum_is_accepted() -> None:
    framer = RecordFramer(2, max_record_size=3)
    assert run(framer, [framer.encode(b"abc")]) == ([b"abc"], False)


def test_the_maximum_is_capped_by_the_prefix() -> None:
    assert RecordFramer(1, max_record_size=10**9).max_record_size == 255
    assert RecordFramer(2, max_record_size=10**9).max_record_size == 65535
    assert RecordFramer(4).max_record_size == DEFAULT_MAX_RECORD_SIZE


def test_encode_refuses_a_payload_over_the_maximum() -> None:
    with pytest.raises(ValueError, match="max_record_size=255"):
        RecordFramer(1).encode(b"x" * 256)


@pytest.mark.parametrize("kwargs", [{"prefix_size": 3}, {"byteorder": "middle"},
                                    {"max_record_size": -1}])
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RecordFramer(**kwargs)  # type: ignore[arg-type]


# -- property tests ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), max_size=10),
    size=st.sampled_from(PREFIX_SIZES),
    order=st.sampled_from(["big", "little"]),
    trailing=st.binary(max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_same_records_however_the_input_is_split(
    payloads: list[bytes], size: int, order: str, trailing: bytes, cuts: list[int]
) -> None:
    encoder = RecordFramer(size, order)  # type: ignore[arg-type]
    data = b"".join(encoder.encode(p) for p in payloads) + trailing
    results = [run(RecordFramer(size, order), chunks)  # type: ignore[arg-type]
               for chunks in three_ways(data, cuts)]
    assert all(result[0][:len(payloads)] == payloads for result in results)
    assert all(result == results[0] for result in results)


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=30), max_size=8),
    limit=st.integers(min_value=0, max_value=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_an_oversized_record_fails_at_the_same_place_however_split(
    payloads: list[bytes], limit: int, cuts: list[int]
) -> None:
    data = b"".join(len(p).to_bytes(2, "big") + p for p in payloads)
    expected: list[bytes] = []
    for p in payloads:
        if len(p) > limit:
            break
        expected.append(p)
    failed = len(expected) < len(payloads)
    for chunks in three_ways(data, cuts):
        assert run(RecordFramer(2, max_record_size=limit), chunks) == (expected, failed)


# -- the handler --------------------------------------------------------------------------


class Reverser(RecordHandler):
    __slots__ = ("seen",)

    prefix_size = 2
    byteorder = "little"
    max_record_size = 1000

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def record_received(self, record: bytes) -> None:
        self.seen.append(record)
        self.send_record(record[::-1])


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.framer = RecordFramer(2, "little")
        self.records: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        while (record := self.framer.next_record()) is not None:
            self.records.append(record)


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_handler_round_trip(chunk_size: int | None) -> None:
    client, server = Client(), Reverser()
    pair = ProtocolPair(client, server)
    for payload in (b"abc", b"", b"x" * 999):
        pair.client_transport.write(client.framer.encode(payload))
    pair.pump(chunk_size=chunk_size)
    assert server.seen == [b"abc", b"", b"x" * 999]
    assert client.records == [b"cba", b"", b"x" * 999]


def test_handler_closes_on_an_oversized_record(caplog: pytest.LogCaptureFixture) -> None:
    handler = Reverser()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.INFO, logger="handlers"):
        transport.feed(b"\x02\x00ok" + (1001).to_bytes(2, "little") + b"y" * 50)
    assert handler.seen == [b"ok"]
    assert transport.take() == b"\x02\x00ko"
    assert transport.lost
    assert "record too large: 1001 bytes announced (max_record_size=1000)" in caplog.text
    assert handler.framer.buffered == 0


def test_handler_without_record_received_is_a_clear_error() -> None:
    transport = FakeTransport(RecordHandler())
    with pytest.raises(NotImplementedError):
        transport.feed(b"\x00\x00\x00\x00")
