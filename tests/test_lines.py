"""handlers.framers.lines: the LineFramer state machine (no sockets) and LineHandler."""

from __future__ import annotations

import asyncio
import logging

import pytest
from handlerkit import three_ways
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.base import FramingError
from handlers.framers.lines import DEFAULT_MAX_LINE_LENGTH, LineFramer, LineHandler, LineTooLong
from reactor.sansio.errors import RemoteProtocolError
from reactor.testing import FakeTransport, ProtocolPair


def run(framer: LineFramer, chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    """Feed ``chunks``, draining lines after each; stop at the first error."""
    lines: list[bytes] = []
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                line = framer.next_line()
            except LineTooLong:
                return lines, "too long"
            if line is None:
                break
            lines.append(line)
    return lines, None


def oracle(data: bytes, delimiter: bytes, limit: int) -> tuple[list[bytes], str | None]:
    """What a framer must produce, computed the simple way."""
    pieces = data.split(delimiter)
    lines: list[bytes] = []
    for piece in pieces[:-1]:
        if len(piece) > limit:
            return lines, "too long"
        lines.append(piece)
    if len(pieces[-1]) > limit + len(delimiter) - 1:
        return lines, "too long"
    return lines, None


# -- the state machine ------------------------------------------------------------------


def test_splits_lines_and_keeps_the_rest() -> None:
    framer = LineFramer(b"\r\n")
    framer.feed(b"one\r\ntwo\r\nthr")
    assert framer.next_line() == b"one"
    assert framer.next_line() == b"two"
    assert framer.next_line() is None
    assert framer.pending() == b"thr"
    framer.feed(b"ee\r\n")
    assert framer.next_line() == b"three"
    assert framer.buffered == 0


def test_a_delimiter_split_across_pieces() -> None:
    framer = LineFramer(b"\r\n")
    assert run(framer, [b"ab\r", b"\ncd\r", b"x\r\n"]) == ([b"ab", b"cd\rx"], None)


def test_empty_lines() -> None:
    assert run(LineFramer(), [b"\n\n\n"]) == ([b"", b"", b""], None)


def test_the_default_maximum_is_64_kib() -> None:
    assert LineFramer().max_line_length == DEFAULT_MAX_LINE_LENGTH == 65536


def test_a_line_of_exactly_the_maximum_is_accepted() -> None:
    framer = LineFramer(b"\r\n", max_line_length=5)
    assert run(framer, [b"12345\r\n"]) == ([b"12345"], None)
    framer = LineFramer(b"\r\n", max_line_length=5)
    assert run(framer, [bytes([b]) for b in b"12345\r\n"]) == ([b"12345"], None)


def test_a_complete_line_over_the_maximum_fails() -> None:
    framer = LineFramer(max_line_length=4)
    framer.feed(b"ok\n12345\nafter\n")
    assert framer.next_line() == b"ok"
    with pytest.raises(LineTooLong) as info:
        framer.next_line()
    assert info.value.limit == 4
    assert "max_line_length=4" in str(info.value)
    assert isinstance(info.value, FramingError)
    assert isinstance(info.value, RemoteProtocolError)


def test_an_unterminated_line_fails_as_soon_as_it_is_over_the_maximum() -> None:
    framer = LineFramer(b"\r\n", max_line_length=4)
    framer.feed(b"12345")  # 5 bytes: could still be "1234" + "5"? no: "\r\n" is needed
    assert framer.next_line() is None  # 5 <= 4 + 2 - 1: "1234\r" would still be fine
    framer.feed(b"6")
    with pytest.raises(LineTooLong):
        framer.next_line()


def test_the_error_sticks_until_skip_line() -> None:
    framer = LineFramer(max_line_length=3)
    framer.feed(b"abcdef")
    with pytest.raises(LineTooLong):
        framer.next_line()
    assert framer.failed
    with pytest.raises(LineTooLong):
        framer.next_line()
    with pytest.raises(LineTooLong):
        framer.feed(b"more")


def test_skip_line_drops_the_long_line_and_resynchronises() -> None:
    framer = LineFramer(b"\r\n", max_line_length=3)
    framer.feed(b"abcdefg")
    with pytest.raises(LineTooLong):
        framer.next_line()
    framer.skip_line()
    assert not framer.failed
    for piece in (b"hij" * 100, b"k\r", b"\nok\r\n"):  # discarded as it arrives
        framer.feed(piece)
        line = framer.next_line()
        if piece.endswith(b"\r\n"):
            assert line == b"ok"
        else:
            assert line is None
            assert framer.buffered <= 1  # only what may start a delimiter is kept
    assert framer.pending() == b""


def test_skip_line_after_a_complete_long_line() -> None:
    framer = LineFramer(max_line_length=2)
    framer.feed(b"long line\nok\n")
    with pytest.raises(LineTooLong):
        framer.next_line()
    framer.skip_line()
    assert framer.next_line() == b"ok"


def test_skip_line_is_only_valid_after_an_error() -> None:
    with pytest.raises(RuntimeError):
        LineFramer().skip_line()


@pytest.mark.parametrize("delimiter", [b"", "x"])
def test_bad_delimiters(delimiter: object) -> None:
    with pytest.raises(ValueError):
        LineFramer(delimiter)  # type: ignore[arg-type]


def test_bad_maximum() -> None:
    with pytest.raises(ValueError):
        LineFramer(max_line_length=0)


class CountingBuffer(bytearray):
    """A bytearray that counts the bytes its ``find`` looks at (white-box check)."""

    scanned = 0

    def find(self, sub: object, start: object = 0, *rest: object) -> int:  # type: ignore[override]
        assert isinstance(start, int)
        CountingBuffer.scanned += len(self) - start
        return super().find(sub, start, *rest)  # type: ignore[arg-type]


def test_a_long_line_in_small_pieces_is_scanned_once() -> None:
    size = 256 * 1024
    framer = LineFramer(b"\r\n", max_line_length=size)
    CountingBuffer.scanned = 0
    framer._buf = CountingBuffer()  # type: ignore[assignment]
    piece = b"x" * 64
    for _ in range(size // len(piece)):
        framer.feed(piece)
        assert framer.next_line() is None
    framer.feed(b"\r\n")
    assert framer.next_line() == b"x" * size
    # linear: each byte looked at about once (plus one byte of overlap per piece);
    # rescanning from the start each time would look at size**2 / 128 bytes (512 Mi)
    assert CountingBuffer.scanned < 3 * size


# -- property tests: whole, byte by byte, random splits ---------------------------------

line_bytes = st.binary(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.one_of(line_bytes, st.sampled_from([b"\r", b"\n", b"\r\r", b"a\r"])),
                   max_size=12),
    tail=st.binary(max_size=12),
    delimiter=st.sampled_from([b"\n", b"\r\n", b"\r\n\r\n", b"||"]),
    limit=st.integers(min_value=1, max_value=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_same_lines_however_the_input_is_split(
    lines: list[bytes], tail: bytes, delimiter: bytes, limit: int, cuts: list[int]
) -> None:
    data = b"".join(line + delimiter for line in lines) + tail
    expected = oracle(data, delimiter, limit)
    for chunks in three_ways(data, cuts):
        assert run(LineFramer(delimiter, limit), chunks) == expected


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=20), max_size=10),
    delimiter=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_skipping_long_lines_gives_the_same_lines_however_split(
    lines: list[bytes], delimiter: bytes, cuts: list[int]
) -> None:
    limit = 8
    clean = [line.replace(delimiter[:1], b"") for line in lines]
    data = b"".join(line + delimiter for line in clean)
    expected = [line for line in clean if len(line) <= limit]
    for chunks in three_ways(data, cuts):
        framer = LineFramer(delimiter, limit)
        got: list[bytes] = []
        for chunk in chunks:
            framer.feed(chunk)
            while True:
                try:
                    line = framer.next_line()
                except LineTooLong:
                    framer.skip_line()
                    continue
                if line is None:
                    break
                got.append(line)
        assert got == expected


# -- the handler, driven through the test kit -------------------------------------------


class Recorder(LineHandler):
    __slots__ = ("lines", "stop_at")

    max_line_length = 16

    def __init__(self, stop_at: bytes | None = None) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.stop_at = stop_at

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        self.send_line(line.upper())
        if line == self.stop_at:
            self.close_when_done()


def test_handler_receives_lines_and_sends_lines() -> None:
    handler = Recorder()
    transport = FakeTransport(handler)
    transport.feed(b"ab\ncd\nef")
    assert handler.lines == [b"ab", b"cd"]
    assert transport.take() == b"AB\nCD\n"


def test_handler_stops_delivering_lines_once_it_closes() -> None:
    handler = Recorder(stop_at=b"quit")
    transport = FakeTransport(handler)
    transport.feed(b"a\nquit\nnot delivered\n")
    assert handler.lines == [b"a", b"quit"]
    assert transport.take() == b"A\nQUIT\n"
    assert transport.lost


def test_handler_closes_on_a_long_line_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.INFO, logger="handlers"):
        transport.feed(b"ok\n" + b"x" * 40 + b"\nnever\n")
    assert handler.lines == [b"ok"]
    assert transport.is_closing()
    assert transport.take() == b"OK\n"  # queued output is flushed before the close
    assert transport.lost
    assert "line too long" in caplog.text
    assert "max_line_length=16" in caplog.text


def test_handler_can_skip_long_lines() -> None:
    class Lenient(Recorder):
        __slots__ = ()

        def line_too_long(self, exc: LineTooLong) -> bool:
            self.send(b"ERR too long\n")
            return True

    handler = Lenient()
    pair = ProtocolPair(client := _Sink(), handler)
    pair.client_transport.write(b"a\n" + b"y" * 100 + b"\nb\n")
    pair.pump(chunk_size=7)
    assert handler.lines == [b"a", b"b"]
    assert bytes(client.data) == b"A\nERR too long\nB\n"


@pytest.mark.parametrize(("partial", "dropped"), [(b"partial", "7 bytes"), (b"p", "1 byte")])
def test_handler_logs_a_partial_line_at_eof(caplog: pytest.LogCaptureFixture, partial: bytes,
                                            dropped: str) -> None:
    handler = Recorder()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.DEBUG, logger="handlers"):
        transport.feed(partial)
        transport.feed_eof()
    assert f"inside a line ({dropped} dropped)" in caplog.text
    assert transport.lost


def test_handler_without_line_received_is_a_clear_error() -> None:
    transport = FakeTransport(LineHandler())
    with pytest.raises(NotImplementedError):
        transport.feed(b"x\n")


class _Sink(asyncio.Protocol):
    """A minimal client protocol collecting what it receives."""

    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data
