"""Tests of handlers.framers.resp: the socket-free RESP parser and encoder.

Every parse is checked fed whole, byte by byte and split at random points.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.framers import resp
from handlers.framers.resp import (
    HEADER_LIMIT,
    RespParser,
    RespProtocolError,
    encode,
    encode_array,
    encode_bulk,
    encode_command,
    encode_error,
    encode_integer,
    encode_map,
    encode_simple,
    split_inline,
)


def parse_chunks(chunks: list[bytes], **limits: int) -> list[list[bytes]]:
    """Feed chunks one by one, collecting every command after each."""
    parser = RespParser(**limits)
    commands = []
    for chunk in chunks:
        parser.feed(chunk)
        while (command := parser.next_command()) is not None:
            commands.append(command)
    return commands


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def three_ways(data: bytes, **limits: int) -> list[list[bytes]]:
    """Parse whole, byte by byte and in a few fixed splits; all must agree."""
    whole = parse_chunks([data], **limits)
    assert parse_chunks([data[i : i + 1] for i in range(len(data))], **limits) == whole
    for step in (2, 3, 7):
        assert parse_chunks([data[i : i + step] for i in range(0, len(data), step)],
                            **limits) == whole
    return whole


# -- parsing --------------------------------------------------------------------------


def test_multibulk_command() -> None:
    assert three_ways(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n") == [[b"GET", b"key"]]


def test_binary_safe_bulk_with_crlf_inside() -> None:
    data = encode_command([b"SET", b"k", b"a\r\nb\x00\xff"])
    assert three_ways(data) == [[b"SET", b"k", b"a\r\nb\x00\xff"]]


def test_empty_bulk_string() -> None:
    assert three_ways(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n") == [[b"SET", b"k", b""]]


def test_inline_commands_lf_and_crlf() -> None:
    assert three_ways(b"PING\r\nSET a  b\nGET\ta\r\n") == [
        [b"PING"], [b"SET", b"a", b"b"], [b"GET", b"a"]
    ]


def test_empty_lines_and_empty_arrays_are_ignored() -> None:
    assert three_ways(b"\r\n\n   \r\n*0\r\n*-1\r\nPING\r\n") == [[b"PING"]]


def test_pipelined_mix_of_multibulk_and_inline() -> None:
    data = (encode_command(["SET", "a", "1"]) + b"GET a\r\n" + encode_command(["INCR", "a"])) * 50
    commands = three_ways(data)
    assert commands == [[b"SET", b"a", b"1"], [b"GET", b"a"], [b"INCR", b"a"]] * 50


def test_incomplete_command_waits() -> None:
    parser = RespParser()
    parser.feed(b"*2\r\n$3\r\nGET\r\n$3\r\nke")
    assert parser.next_command() is None
    assert parser.buffered == 2  # "ke": parsed headers and arguments are not counted
    parser.feed(b"y\r\n")
    assert parser.next_command() == [b"GET", b"key"]
    assert parser.next_command() is None
    assert parser.buffered == 0


def test_commands_left_unread_survive_more_input() -> None:
    # A server that stops reading commands (backpressure) and is fed again later.
    parser = RespParser()
    parser.feed(b"PING\r\nECHO a\r\n")
    assert parser.next_command() == [b"PING"]
    parser.feed(b"ECHO b\r\n")
    assert parser.next_command() == [b"ECHO", b"a"]
    assert parser.next_command() == [b"ECHO", b"b"]
    assert parser.next_command() is None


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = RespParser()
    parser.feed(bytearray(b"PI"))
    parser.feed(memoryview(b"NG\r\n"))
    assert parser.next_command() == [b"PING"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'SET k "hello world"', [b"SET", b"k", b"hello world"]),
        (b"SET k 'it''s'", None),  # the closing quote must end the word
        (b"SET k 'it\\'s'", [b"SET", b"k", b"it's"]),
        (b'ECHO "a\\nb\\tc\\x41\\x4a\\\\\\"q"', [b"ECHO", b'a\nb\tcAJ\\"q']),
        (b'ECHO "\\xZZ"', [b"ECHO", b"xZZ"]),  # not a hex escape: backslash-anything
        (b'ECHO ""', [b"ECHO", b""]),
        (b'ECHO x"y z"', [b"ECHO", b"xy z"]),  # a quote may start inside a word
        (b'ECHO "abc', None),
        (b"ECHO 'abc", None),
        (b'ECHO "a"b', None),
        (b"  ", []),
    ],
)
def test_split_inline(line: bytes, expected: list[bytes] | None) -> None:
    if expected is None:
        with pytest.raises(RespProtocolError) as info:
            split_inline(line)
        assert not info.value.fatal
        assert info.value.reply == b"-ERR Protocol error: unbalanced quotes in request\r\n"
    else:
        assert split_inline(line) == expected


def test_unbalanced_quotes_are_not_fatal() -> None:
    parser = RespParser()
    parser.feed(b'ECHO "abc\r\nPING\r\n')
    with pytest.raises(RespProtocolError) as info:
        parser.next_command()
    assert not info.value.fatal
    assert parser.next_command() == [b"PING"]
    assert not parser.broken


# -- property tests -------------------------------------------------------------------

_words = st.binary(min_size=0, max_size=40)
_commands = st.lists(st.lists(_words, min_size=1, max_size=6), min_size=1, max_size=12)


def _inline_safe(word: bytes) -> bool:
    return bool(word) and not any(c in b" \t\r\n\x0b\x0c\"'" for c in word)


_INLINE_SAFE = st.binary(min_size=1, max_size=12).filter(
    lambda word: _inline_safe(word) and word[:1] != b"*"
)


def _encode_mixed(commands: list[list[bytes]], inline: list[bool]) -> bytes:
    out = []
    for command, as_inline in zip(commands, inline, strict=False):
        if as_inline and all(_inline_safe(word) for word in command) \
                and command[0][:1] != b"*":
            out.append(b" ".join(command) + b"\r\n")
        else:
            out.append(encode_command(command))
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(commands=_commands, inline=st.lists(st.booleans(), min_size=12, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_any_split_gives_the_same_commands(
    commands: list[list[bytes]], inline: list[bool], cuts: list[int]
) -> None:
    data = _encode_mixed(commands, inline)
    whole = parse_chunks([data])
    assert whole == commands
    assert parse_chunks([data[i : i + 1] for i in range(len(data))]) == commands
    assert parse_chunks(split_at(data, cuts)) == commands


@settings(max_examples=100, deadline=None)
@given(commands=st.lists(st.lists(_INLINE_SAFE, min_size=1, max_size=5), min_size=1,
                         max_size=10),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20))
def test_inline_commands_any_split(commands: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(b" ".join(command) + b"\n" for command in commands)
    assert parse_chunks(split_at(data, cuts)) == commands
    assert parse_chunks([data[i : i + 1] for i in range(len(data))]) == commands


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=200),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_garbage_never_crashes_and_splits_agree(garbage: bytes, cuts: list[int]) -> None:
    def run(chunks: list[bytes]) -> list[object]:
        parser = RespParser(max_bulk_length=100, max_array_length=10, max_inline_length=50)
        events: list[object] = []
        for chunk in chunks:
            parser.feed(chunk)
            while True:
                try:
                    command = parser.next_command()
                except RespProtocolError as exc:
                    events.append(exc.reply)
                    if exc.fatal:
                        return events
                    continue
                if command is None:
                    break
                events.append(command)
        return events

    whole = run([garbage])
    # A limit error may be noticed at a different point when the input comes in pieces
    # (before vs. after a newline arrives), but the commands before it are the same.
    def commands_only(events: list[object]) -> list[object]:
        return [e for e in events if isinstance(e, list)]

    assert commands_only(run(split_at(garbage, cuts))) == commands_only(whole)
    assert commands_only(run([garbage[i : i + 1] for i in range(len(garbage))])) \
        == commands_only(whole)


# -- errors ---------------------------------------------------------------------------


def _first_error(data: bytes, **limits: int) -> RespProtocolError:
    parser = RespParser(**limits)
    parser.feed(data)
    with pytest.raises(RespProtocolError) as info:
        while parser.next_command() is not None:
            pass
    return info.value


_MULTIBULK = "invalid multibulk length"
_BULK = "invalid bulk length"


@pytest.mark.parametrize(
    ("data", "message", "reply"),
    [
        # the log message says what was seen; the reply is redis-server 7's, word for word
        (b"*x\r\n", "invalid multibulk length 'x'", _MULTIBULK),
        (b"*\r\n", "invalid multibulk length ''", _MULTIBULK),
        (b"*+1\r\n", "invalid multibulk length '+1'", _MULTIBULK),
        (b"* 1\r\n", "invalid multibulk length ' 1'", _MULTIBULK),
        (b"*01\r\n", "invalid multibulk length '01'", _MULTIBULK),
        (b"*-0\r\n", "invalid multibulk length '-0'", _MULTIBULK),
        (b"*\x01\xff\r\n", "invalid multibulk length '\\x01\\xff'", _MULTIBULK),
        (b"*-9223372036854775809\r\n", "invalid multibulk length '-9223372036854775809'",
         _MULTIBULK),
        (b"*1\n", "invalid multibulk length (the line ends in LF without CR)", _MULTIBULK),
        (b"*1\r\nGET\r\n", "expected '$', got 'G'", "expected '$', got 'G'"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'", "expected '$', got ':'"),
        (b"*1\r\n\x01\r\n", "expected '$', got '\\x01'", "expected '$', got '\x01'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length -1", _BULK),
        (b"*1\r\n$abc\r\n", "invalid bulk length 'abc'", _BULK),
        (b"*1\r\n$03\r\n", "invalid bulk length '03'", _BULK),
        (b"*1\r\n$3\n", "invalid bulk length (the line ends in LF without CR)", _BULK),
        (b"*1\r\n$3\r\nGETxx", "expected CRLF after a bulk string",
         "expected CRLF after a bulk string"),
        (b"*1" + b"1" * 100, "invalid multibulk length (a header line over 63 bytes)",
         _MULTIBULK),
        (b"*1\r\n$" + b"1" * 100, "invalid bulk length (a header line over 63 bytes)", _BULK),
    ],
)
def test_malformed_input_is_fatal(data: bytes, message: str, reply: str) -> None:
    error = _first_error(data)
    assert error.fatal
    assert error.message == message
    assert error.reply == f"-ERR Protocol error: {reply}\r\n".encode()
    # the same error, whatever the chunking
    parser = RespParser()
    with pytest.raises(RespProtocolError) as info:
        for byte in data:
            parser.feed(bytes([byte]))
            while parser.next_command() is not None:
                pass
    assert info.value.message == message


@pytest.mark.parametrize("data", [b"*-5\r\n", b"*-9223372036854775808\r\n", b"*0\r\n",
                                  b"*-1\r\n"])
def test_empty_and_negative_arrays_are_ignored_as_redis_does(data: bytes) -> None:
    assert three_ways(data + b"PING\r\n") == [[b"PING"]]


def test_fatal_error_is_sticky_and_input_is_dropped() -> None:
    parser = RespParser()
    parser.feed(b"*1\r\n$x\r\nPING\r\n")
    with pytest.raises(RespProtocolError):
        parser.next_command()
    assert parser.broken
    parser.feed(b"PING\r\n")
    assert parser.buffered == 0
    with pytest.raises(RespProtocolError):
        parser.next_command()


def test_commands_before_an_error_are_returned_first() -> None:
    parser = RespParser()
    parser.feed(b"PING\r\n" + encode_command(["ECHO", "x"]) + b"*1\r\n$z\r\n")
    assert parser.next_command() == [b"PING"]
    assert parser.next_command() == [b"ECHO", b"x"]
    with pytest.raises(RespProtocolError):
        parser.next_command()


def test_oversize_bulk_is_refused_at_its_header() -> None:
    parser = RespParser(max_bulk_length=1024)
    parser.feed(b"*2\r\n$3\r\nSET\r\n$1025\r\n")  # the header only, no payload yet
    with pytest.raises(RespProtocolError) as info:
        parser.next_command()
    assert info.value.fatal
    assert "1025" in info.value.message and "1024" in info.value.message
    assert parser.buffered == 0
    parser.feed(b"x" * 5000)  # the payload that follows is never buffered
    assert parser.buffered == 0


def test_bulk_at_the_limit_is_accepted() -> None:
    data = encode_command([b"SET", b"k", b"v" * 1024])
    assert three_ways(data, max_bulk_length=1024) == [[b"SET", b"k", b"v" * 1024]]


def test_oversize_array_is_refused_at_its_header() -> None:
    error = _first_error(b"*11\r\n", max_array_length=10)
    assert error.fatal
    assert error.message.startswith("invalid multibulk length 11")
    assert three_ways(encode_command(["X"] * 10), max_array_length=10) == [[b"X"] * 10]


def test_oversize_command_total_is_refused() -> None:
    data = encode_command([b"MSET", b"a" * 60, b"b" * 60])
    error = _first_error(data, max_command_size=100)
    assert error.fatal and error.message.startswith("command too large")


def test_inline_line_limit() -> None:
    assert three_ways(b"ECHO " + b"x" * 45 + b"\r\n", max_inline_length=51) == [
        [b"ECHO", b"x" * 45]
    ]
    error = _first_error(b"ECHO " + b"x" * 100, max_inline_length=50)
    assert error.fatal and error.message.startswith("too big inline request")
    # fed in pieces, the error comes as soon as the partial line passes the limit
    parser = RespParser(max_inline_length=50)
    fed = 0
    with pytest.raises(RespProtocolError):
        for _ in range(100):
            parser.feed(b"xxxxx")
            fed += 5
            parser.next_command()
    assert fed <= 55


def test_header_limit_applies_to_partial_headers() -> None:
    parser = RespParser()
    with pytest.raises(RespProtocolError):
        for _ in range(HEADER_LIMIT + 1):
            parser.feed(b"1" if parser.buffered else b"*")
            parser.next_command()


@pytest.mark.parametrize("name", ["max_bulk_length", "max_array_length",
                                  "max_inline_length", "max_command_size"])
def test_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RespParser(**{name: 0})


# -- no quadratic rescanning ----------------------------------------------------------


class _CountingParses:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = RespParser._parse

        def counting(parser: RespParser) -> list[bytes] | None:
            self.calls += 1
            return original(parser)

        monkeypatch.setattr(RespParser, "_parse", counting)


def test_big_bulk_in_small_pieces_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountingParses(monkeypatch)
    payload = bytes(range(256)) * 1024  # 256 KiB
    data = encode_command([b"SET", b"k", payload])
    parser = RespParser()
    commands = []
    for i in range(0, len(data), 16):
        parser.feed(data[i : i + 16])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    assert commands == [[b"SET", b"k", payload]]
    # 16 390 feeds; the parser ran only when a header line or the payload completed
    assert counter.calls <= 12


def test_long_inline_line_in_small_pieces_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = _CountingParses(monkeypatch)
    line = b"ECHO " + b"y" * 60000 + b"\r\n"
    parser = RespParser()
    commands = []
    for i in range(0, len(line), 7):
        parser.feed(line[i : i + 7])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    assert commands == [[b"ECHO", b"y" * 60000]]
    assert counter.calls <= 3


# -- encoding -------------------------------------------------------------------------


def test_encoders() -> None:
    assert encode_simple("OK") == resp.OK
    assert encode_error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert encode_integer(-42) == b":-42\r\n"
    assert encode_bulk(b"ab") == b"$2\r\nab\r\n"
    assert encode_bulk(None) == resp.NULL_BULK
    assert encode_array([encode_integer(1), encode_bulk(b"x")]) == b"*2\r\n:1\r\n$1\r\nx\r\n"
    assert encode_array(None) == resp.NULL_ARRAY
    pairs = [(encode_bulk(b"a"), encode_integer(1))]
    assert encode_map(pairs) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert encode_map(pairs, resp3=True) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert encode([b"a", "b", 3, None, [1]]) == (
        b"*5\r\n$1\r\na\r\n$1\r\nb\r\n:3\r\n$-1\r\n*1\r\n:1\r\n"
    )
    with pytest.raises(ValueError):
        encode_simple("a\nb")
    with pytest.raises(TypeError):
        encode(True)
    with pytest.raises(TypeError):
        encode(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_command([])


@given(st.lists(st.one_of(st.binary(max_size=30), st.integers(), st.text(max_size=10)),
                min_size=1, max_size=8))
def test_encode_command_round_trip(args: list[bytes | int | str]) -> None:
    expected = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert parse_chunks([encode_command(args)]) == [expected]
