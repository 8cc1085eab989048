"""handlers.framers.terminator: the asynchat-style TerminatorFramer (no sockets) and its handler."""

from __future__ import annotations

import logging

import pytest
from handlerkit import three_ways
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.base import FramingError
from handlers.framers.terminator import (
    TERMINATOR,
    TerminatorFramer,
    TerminatorHandler,
    TerminatorOverflow,
)
from reactor.testing import FakeTransport


def records(framer: TerminatorFramer, chunks: list[bytes]) -> tuple[list[bytes], bytes, bool]:
    """Feed ``chunks``; return the terminated records, the data after the last
    terminator, and whether the framer overflowed."""
    done: list[bytes] = []
    current = bytearray()
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                event = framer.next_event()
            except TerminatorOverflow:
                return done, bytes(current), True
            if event is None:
                break
            if event is TERMINATOR:
                done.append(bytes(current))
                current.clear()
            else:
                assert isinstance(event, bytes) and event
                current += event
    return done, bytes(current), False


# -- the state machine ------------------------------------------------------------------


def test_bytes_terminator() -> None:
    framer = TerminatorFramer(b"\r\n")
    assert records(framer, [b"GET /\r\nHost: x\r\n\r\npartial"]) == (
        [b"GET /", b"Host: x", b""], b"partial", False)


def test_data_is_handed_out_as_soon_as_it_cannot_be_the_terminator() -> None:
    framer = TerminatorFramer(b"END")
    framer.feed(b"abcE")
    assert framer.next_event() == b"abc"
    assert framer.next_event() is None
    assert framer.buffered == 1  # "E" may start "END"
    framer.feed(b"Nx")
    assert framer.next_event() == b"ENx"
    framer.feed(b"EN")
    assert framer.next_event() is None
    framer.feed(b"D")
    assert framer.next_event() is TERMINATOR


def test_count_terminator_then_terminator_becomes_zero() -> None:
    framer = TerminatorFramer(5)
    framer.feed(b"abc")
    assert framer.next_event() == b"abc"
    assert framer.get_terminator() == 2
    framer.feed(b"defgh")
    assert framer.next_event() == b"de"
    assert framer.get_terminator() == 0
    assert framer.next_event() is TERMINATOR
    # 0 (like None) means: everything is data
    assert framer.next_event() == b"fgh"
    assert framer.next_event() is None


def test_none_terminator_passes_everything_through() -> None:
    framer = TerminatorFramer(None)
    data = b"x" * 200_000
    framer.feed(data)
    assert framer.next_event() == data  # no maximum in pass-through mode
    assert framer.next_event() is None


def test_changing_the_terminator_between_events() -> None:
    """A header line, then a body of the length it announces, then a header again."""
    framer = TerminatorFramer(b"\n")
    framer.feed(b"3\nabc4\nwxyz")
    out: list[object] = []
    body = False
    while (event := framer.next_event()) is not None:
        out.append(event)
        if event is TERMINATOR:
            if body:
                framer.set_terminator(b"\n")
            else:
                framer.set_terminator(int(bytes(out[-2])))  # type: ignore[arg-type]
            body = not body
    assert out == [b"3", TERMINATOR, b"abc", TERMINATOR, b"4", TERMINATOR, b"wxyz",
                   TERMINATOR]


def test_overflow_without_the_terminator() -> None:
    framer = TerminatorFramer(b"\r\n", max_size=10)
    framer.feed(b"0123456789")
    assert framer.next_event() == b"0123456789"
    framer.feed(b"A")
    with pytest.raises(TerminatorOverflow) as info:
        framer.next_event()
    assert info.value.limit == 10
    assert "max_size=10" in str(info.value)
    assert isinstance(info.value, FramingError)
    assert framer.failed
    with pytest.raises(TerminatorOverflow):
        framer.next_event()
    with pytest.raises(TerminatorOverflow):
        framer.feed(b"more")


def test_exactly_the_maximum_is_accepted() -> None:
    framer = TerminatorFramer(b"\r\n", max_size=4)
    assert records(framer, [b"abcd\r\nefgh\r\n"]) == ([b"abcd", b"efgh"], b"", False)


@pytest.mark.parametrize("bad", [b"", -1, 1.5, "x", True])
def test_bad_terminators(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        TerminatorFramer(bad)  # type: ignore[arg-type]
    framer = TerminatorFramer()
    with pytest.raises((TypeError, ValueError)):
        framer.set_terminator(bad)  # type: ignore[arg-type]


def test_bad_maximum() -> None:
    with pytest.raises(ValueError):
        TerminatorFramer(max_size=0)


# -- property tests ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.one_of(st.binary(max_size=20), st.sampled_from([b"\r", b"\r\n", b"\n"])),
                   max_size=15),
    terminator=st.sampled_from([b"\n", b"\r\n", b"\r\n\r\n", b"aa"]),
    limit=st.integers(min_value=1, max_value=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_same_records_however_the_input_is_split(
    parts: list[bytes], terminator: bytes, limit: int, cuts: list[int]
) -> None:
    data = b"".join(parts)
    pieces = data.split(terminator)
    expected_done = []
    overflow = False
    for piece in pieces[:-1]:
        if len(piece) > limit:
            overflow = True
            break
        expected_done.append(piece)
    results = [records(TerminatorFramer(terminator, limit), chunks)
               for chunks in three_ways(data, cuts)]
    for done, _rest, failed in results:
        assert done == expected_done
        if overflow:
            assert failed
    # the tail after the last terminator overflows (or not) the same way every time
    assert len({failed for _, _, failed in results}) == 1
    if not results[0][2]:  # the tail is handed out, except what may start a terminator
        for _, rest, _ in results:
            assert pieces[-1].startswith(rest)
            assert len(pieces[-1]) - len(rest) < len(terminator)


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=30), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_mixed_terminators_however_split(bodies: list[bytes], cuts: list[int]) -> None:
    """A length line ended by CRLF, then that many bytes: terminators change mid-stream."""
    data = b"".join(b"%d\r\n" % len(body) + body for body in bodies)
    for chunks in three_ways(data, cuts):
        framer = TerminatorFramer(b"\r\n")
        got: list[bytes] = []
        current = bytearray()
        for chunk in chunks:
            framer.feed(chunk)
            while (event := framer.next_event()) is not None:
                if event is not TERMINATOR:
                    assert isinstance(event, bytes)
                    current += event
                    continue
                if isinstance(framer.get_terminator(), bytes):
                    size = int(current)
                    if size:
                        framer.set_terminator(size)
                    else:
                        got.append(b"")
                else:
                    got.append(bytes(current))
                    framer.set_terminator(b"\r\n")
                current.clear()
        assert got == bodies


# -- the handler --------------------------------------------------------------------------


class Http10ish(TerminatorHandler):
    """Header lines until an empty one; then a body of Content-Length bytes."""

    __slots__ = ("body_length", "headers", "messages")

    max_buffer_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[bytes] = []
        self.messages: list[tuple[list[bytes], bytes]] = []
        self.body_length = 0

    def found_terminator(self) -> None:
        data = self.take_data()
        if isinstance(self.get_terminator(), bytes):
            if data:
                self.headers.append(data)
                if data.lower().startswith(b"content-length:"):
                    self.body_length = int(data.split(b":")[1])
                return
            if self.body_length:
                self.set_terminator(self.body_length)
                return
            data = b""
        self.messages.append((self.headers, data))
        self.send(b"got %d\r\n" % len(data))
        self.headers, self.body_length = [], 0
        self.set_terminator(b"\r\n")


def test_handler_parses_messages_with_changing_terminators() -> None:
    handler = Http10ish()
    transport = FakeTransport(handler)
    stream = (b"A: 1\r\nContent-Length: 5\r\n\r\nhello"
              b"B: 2\r\n\r\n"
              b"Content-Length: 3\r\n\r\nxyz")
    for i in range(len(stream)):
        transport.feed(stream[i:i + 1])
    assert handler.messages == [
        ([b"A: 1", b"Content-Length: 5"], b"hello"),
        ([b"B: 2"], b""),
        ([b"Content-Length: 3"], b"xyz"),
    ]
    assert transport.take() == b"got 5\r\ngot 0\r\ngot 3\r\n"


def test_handler_closes_when_the_terminator_never_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Http10ish()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.INFO, logger="handlers"):
        transport.feed(b"x" * 65)
    assert transport.lost
    assert "max_size=64" in caplog.text
    transport.feed_eof()  # a lost transport ignores EOF


def test_handler_limits_what_it_collects_for_a_count(caplog: pytest.LogCaptureFixture) -> None:
    handler = Http10ish()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.INFO, logger="handlers"):
        transport.feed(b"Content-Length: 100\r\n\r\n" + b"y" * 70)
    assert transport.lost
    assert "max_buffer_size=64" in caplog.text
    assert handler.messages == []


def test_handler_without_found_terminator_is_a_clear_error() -> None:
    transport = FakeTransport(TerminatorHandler())
    with pytest.raises(NotImplementedError):
        transport.feed(b"x\r\n")
