"""The request-buffer scanners, without sockets: fed whole, byte by byte, and split at
random points, they must reach the same verdict at the same byte."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.sansio.request_buffer import (
    FirstBytesRequestBuffer,
    HTTPRequestBuffer,
    LineRequestBuffer,
    Progress,
    RequestBuffer,
    RequestRejected,
)


def ready_at(buffer: RequestBuffer, chunks: list[bytes]) -> int | None:
    """Feed ``chunks``; return how many bytes had arrived when READY came (or None)."""
    scanner = buffer.scanner()
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if scanner.feed(chunk) is Progress.READY:
            return seen
    return None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def three_ways(buffer: RequestBuffer, data: bytes, cuts: list[int]) -> set[int | None]:
    """The READY position is 'the chunk that completed it'; byte-by-byte gives the exact
    byte. Whole and split feeds must agree that READY happens, and byte-by-byte must
    find the same first byte whatever the split."""
    whole = ready_at(buffer, [data])
    bytewise = ready_at(buffer, [data[i:i + 1] for i in range(len(data))])
    chunks = split(data, cuts)
    pieces = ready_at(buffer, chunks)
    assert (whole is None) == (bytewise is None) == (pieces is None)
    if pieces is not None:
        assert bytewise is not None and bytewise <= pieces
    return {bytewise}


GET = b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"
POST = b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"


def head_end(data: bytes) -> int:
    return data.index(b"\r\n\r\n") + 4


CHUNKED = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"
CONTINUE = b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
BAD_LENGTH = b"POST / HTTP/1.1\r\nContent-Length: x1\r\n\r\nabc"
TWO_LENGTHS = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"
EMPTY_BODY = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "ready"),
    [
        (GET, len(GET)),
        (POST, len(POST)),
        (b"\r\n\r\nGET / HTTP/1.0\r\n\r\n", 22),  # blank lines before the request line
        (b"GET /plain\r\n", 12),  # HTTP/0.9: one line
        (b"GET / HTTP/1.1\nHost: x\n\n", 24),  # bare LF line ends
        (EMPTY_BODY, len(EMPTY_BODY)),
        (CHUNKED, head_end(CHUNKED)),  # the handler reads a chunked body
        (CONTINUE, len(CONTINUE)),  # the client waits for "100 Continue"
        (BAD_LENGTH, head_end(BAD_LENGTH)),  # the handler judges a bad Content-Length
        (TWO_LENGTHS, len(TWO_LENGTHS)),  # ... and conflicting ones
    ],
)
def test_http_ready_positions(data: bytes, ready: int) -> None:
    buffer = HTTPRequestBuffer()
    assert ready_at(buffer, [data[i:i + 1] for i in range(len(data))]) == ready
    assert ready_at(buffer, [data]) == len(data)


def test_http_incomplete_head_and_body_wait() -> None:
    buffer = HTTPRequestBuffer()
    assert ready_at(buffer, [GET[:-1]]) is None
    assert ready_at(buffer, [POST[:-1]]) is None


def test_http_body_larger_than_the_buffer_is_left_to_the_handler() -> None:
    buffer = HTTPRequestBuffer(max_size=200)
    head = b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
    assert ready_at(buffer, [head]) == len(head)


def test_http_eof() -> None:
    scanner = HTTPRequestBuffer().scanner()
    assert scanner.feed_eof() is Progress.MORE  # nothing arrived: close, no handler
    scanner = HTTPRequestBuffer().scanner()
    scanner.feed(b"GET / HT")
    assert scanner.feed_eof() is Progress.READY  # something arrived: the handler answers


def test_http_responses_are_complete_http() -> None:
    buffer = HTTPRequestBuffer()
    for response, status in ((buffer.timeout_response(), b"408"),
                             (buffer.too_large_response(), b"431")):
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status)
        assert b"Connection: close" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert length == len(body)


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_http_any_split_gives_the_same_verdict(cuts: list[int]) -> None:
    for data in (GET, POST, GET + POST, b"\r\n" + POST + b"extra"):
        three_ways(HTTPRequestBuffer(), data, cuts)


@given(
    st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=8),
)
def test_http_arbitrary_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    three_ways(HTTPRequestBuffer(max_size=100), data, cuts)


@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=8),
       st.sampled_from([b"\n", b"\r\n", b"END"]))
def test_line_buffer_is_ready_at_the_first_terminator(
    data: bytes, cuts: list[int], terminator: bytes
) -> None:
    buffer = LineRequestBuffer(terminator)
    three_ways(buffer, data, cuts)
    first = data.find(terminator)
    expected = None if first < 0 else first + len(terminator)
    assert ready_at(buffer, [data[i:i + 1] for i in range(len(data))]) == expected


def test_line_buffer_eof() -> None:
    scanner = LineRequestBuffer().scanner()
    assert scanner.feed_eof() is Progress.MORE
    scanner = LineRequestBuffer().scanner()
    scanner.feed(b"partial")
    assert scanner.feed_eof() is Progress.READY


def test_first_bytes() -> None:
    buffer = FirstBytesRequestBuffer(3)
    assert ready_at(buffer, [b"a", b"b", b"c"]) == 3
    assert ready_at(buffer, [b"abcdef"]) == 6
    assert buffer.scanner().feed_eof() is Progress.MORE


def test_limits_are_validated_and_shown() -> None:
    with pytest.raises(ValueError):
        HTTPRequestBuffer(max_size=0)
    with pytest.raises(ValueError):
        HTTPRequestBuffer(timeout=0)
    with pytest.raises(ValueError):
        LineRequestBuffer(b"")
    with pytest.raises(ValueError):
        FirstBytesRequestBuffer(0)
    with pytest.raises(NotImplementedError):
        RequestBuffer().scanner()
    assert "max_size=10" in repr(LineRequestBuffer(max_size=10))
    assert RequestBuffer().timeout_response() == b""
    assert RequestBuffer().too_large_response() == b""


def test_rejected_carries_reason_and_response() -> None:
    exc = RequestRejected("bad", b"NO\n")
    assert exc.reason == "bad" and exc.response == b"NO\n" and str(exc) == "bad"


def test_http_scanner_is_linear_on_a_slow_long_head() -> None:
    # a 60 KiB head arriving one byte at a time: every byte is looked at once
    scanner = HTTPRequestBuffer().scanner()
    scanner.feed(b"GET / HTTP/1.1\r\n")
    line = b"X-Long: " + b"a" * 60_000
    for i in range(len(line)):
        assert scanner.feed(line[i:i + 1]) is Progress.MORE
    assert scanner.feed(b"\r\n\r\n") is Progress.READY
