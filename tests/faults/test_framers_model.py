"""The framers and the RESP parser against models.

Each model is a reference implementation written here the obvious way: it sees the
whole input at once and walks it from the front, with no buffers, states or fast
paths. Hypothesis generates input (valid frames mixed with garbage and frames over the
limits, which are set small so the limits are reached) and cuts it at random points;
the framer under test, fed the pieces one by one and drained after each, must produce
exactly the model's frames and the model's error, at the same place.

Budget: :data:`SHORT_EXAMPLES` derandomized examples per framer in ``make test``,
:data:`LONG_EXAMPLES` random ones in ``make test-faults`` (``REACTOR_LONG_FAULTS=1``).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handlers.framers.lines import LineFramer, LineTooLong
from handlers.framers.records import RecordFramer, RecordTooLarge
from handlers.framers.resp import HEADER_LIMIT, RespParser, RespProtocolError, encode_command
from handlers.framers.terminator import TERMINATOR, TerminatorFramer, TerminatorOverflow

LONG = os.environ.get("REACTOR_LONG_FAULTS") == "1"
SHORT_EXAMPLES = 300
LONG_EXAMPLES = 5000
SETTINGS = settings(max_examples=LONG_EXAMPLES if LONG else SHORT_EXAMPLES,
                    derandomize=not LONG, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


cuts = st.lists(st.integers(min_value=0, max_value=1 << 12), max_size=30)
one_byte_each = st.just([-1])  # marker: feed the input one byte at a time


def split(data: bytes, chosen: list[int]) -> list[bytes]:
    if chosen == [-1]:
        return [data[i : i + 1] for i in range(len(data))]
    return pieces(data, chosen)


splits = one_byte_each | cuts


# -- lines ----------------------------------------------------------------------------


def lines_model(data: bytes, delimiter: bytes, limit: int) -> list[Any]:
    """Lines of ``data``; a line over ``limit`` is reported (and skipped) once."""
    out: list[Any] = []
    pos = 0
    while True:
        end = data.find(delimiter, pos)
        if end < 0:
            if len(data) - pos > limit + len(delimiter) - 1:  # no delimiter can save it
                out.append("too long")
            return out
        line = data[pos:end]
        out.append("too long" if len(line) > limit else line)
        pos = end + len(delimiter)


def lines_run(chunks: list[bytes], delimiter: bytes, limit: int) -> list[Any]:
    framer = LineFramer(delimiter, limit)
    out: list[Any] = []
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                line = framer.next_line()
            except LineTooLong:
                out.append("too long")
                framer.skip_line()
                continue
            if line is None:
                break
            out.append(line)
    return out


@SETTINGS
@given(delimiter=st.sampled_from([b"\n", b"\r\n", b"ab", b"aab", b"\x00\x00\x00"]),
       limit=st.integers(1, 12), body=st.lists(
           st.sampled_from([b"a", b"b", b"\r", b"\n", b"\x00", b"xyz", b"\r\n", b"aab"]),
           max_size=60).map(b"".join), chosen=splits)
def test_lines_match_the_model(delimiter: bytes, limit: int, body: bytes,
                               chosen: list[int]) -> None:
    assert lines_run(split(body, chosen), delimiter, limit) == lines_model(
        body, delimiter, limit)


# -- terminators ----------------------------------------------------------------------


def terminator_model(data: bytes, script: list[bytes | int | None],
                     limit: int) -> tuple[list[bytes], bytes, bool]:
    """(records, data after the last terminator, overflowed) for a consumer that
    takes the next terminator from ``script`` after each one (then None)."""
    records: list[bytes] = []
    pos = 0
    for terminator in [*script, None]:
        if not terminator:  # None or 0: everything left is data
            return records, data[pos:], False
        if isinstance(terminator, int):
            if len(data) - pos < terminator:
                return records, data[pos:], False
            records.append(data[pos : pos + terminator])
            pos += terminator
            continue
        end = data.find(terminator, pos)
        if end < 0:
            rest = data[pos:]
            held = max((n for n in range(len(terminator)) if n and rest.endswith(
                terminator[:n])), default=0)
            given_out = rest[: len(rest) - held]
            return records, given_out, len(given_out) > limit
        if end - pos > limit:
            return records, data[pos:end], True
        records.append(data[pos:end])
        pos = end + len(terminator)
    raise AssertionError("unreachable")


def terminator_run(chunks: list[bytes], script: list[bytes | int | None],
                   limit: int) -> tuple[list[bytes], bytes, bool]:
    framer = TerminatorFramer(script[0] if script else None, limit)
    following = iter([*script[1:], None])
    records: list[bytes] = []
    current = bytearray()
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                event = framer.next_event()
            except TerminatorOverflow:
                return records, bytes(current), True
            if event is None:
                break
            if event is TERMINATOR:
                records.append(bytes(current))
                current.clear()
                framer.set_terminator(next(following))
            else:
                assert isinstance(event, bytes)
                current += event
    return records, bytes(current), False


terminator = st.sampled_from([b"\r\n", b"\n", b"ab", b"aab", b"END"]) | st.integers(0, 6)


@SETTINGS
@given(script=st.lists(terminator, min_size=1, max_size=8), limit=st.integers(1, 12),
       body=st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"xyz", b"\r\n", b"aab",
                                      b"EN", b"END"]), max_size=60).map(b"".join),
       chosen=splits)
def test_terminators_match_the_model(script: list[bytes | int | None], limit: int,
                                     body: bytes, chosen: list[int]) -> None:
    model = terminator_model(body, script, limit)
    records, rest, overflowed = terminator_run(split(body, chosen), script, limit)
    assert (records, overflowed) == (model[0], model[2])
    if not overflowed:
        assert rest == model[1]


# -- length-prefixed records ----------------------------------------------------------


def records_model(data: bytes, prefix: int, order: str, limit: int) -> list[Any]:
    out: list[Any] = []
    pos = 0
    while len(data) - pos >= prefix:
        size = int.from_bytes(data[pos : pos + prefix], order)  # type: ignore[arg-type]
        if size > limit:
            out.append(("too large", size))
            return out
        if len(data) - pos - prefix < size:
            return out
        out.append(data[pos + prefix : pos + prefix + size])
        pos += prefix + size
    return out


def records_run(chunks: list[bytes], prefix: int, order: str, limit: int) -> list[Any]:
    framer = RecordFramer(prefix, order, limit)  # type: ignore[arg-type]
    out: list[Any] = []
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                record = framer.next_record()
            except RecordTooLarge as exc:
                out.append(("too large", exc.size))
                return out
            if record is None:
                break
            out.append(record)
    return out


@st.composite
def record_streams(draw: st.DrawFn) -> tuple[bytes, int, str, int]:
    prefix = draw(st.sampled_from([1, 2, 4, 8]))
    order = draw(st.sampled_from(["big", "little"]))
    limit = draw(st.integers(0, 20))
    parts = draw(st.lists(st.one_of(
        st.binary(max_size=24).map(
            lambda p: len(p).to_bytes(prefix, order) + p),  # type: ignore[arg-type]
        st.binary(max_size=6),  # garbage: read as prefixes and payloads
    ), max_size=8))
    return b"".join(parts), prefix, order, limit


@SETTINGS
@given(stream=record_streams(), chosen=splits)
def test_records_match_the_model(stream: tuple[bytes, int, str, int],
                                 chosen: list[int]) -> None:
    data, prefix, order, limit = stream
    assert records_run(split(data, chosen), prefix, order, limit) == records_model(
        data, prefix, order, limit)


# -- the RESP parser --------------------------------------------------------------------

LIMITS = {"max_bulk_length": 16, "max_array_length": 4, "max_inline_length": 20,
          "max_command_size": 40}
WHITESPACE = b" \t\n\r\x0b\x0c"


def _number(text: bytes) -> int | None:
    """A header's number as Redis reads one (optional '-', no leading zero, 64 bits)."""
    digits = text[1:] if text.startswith(b"-") else text
    if not digits or any(c not in b"0123456789" for c in digits):
        return None
    if (digits.startswith(b"0") and len(digits) > 1) or text == b"-0":
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def resp_model(data: bytes) -> tuple[list[list[bytes]], bytes | None]:
    """The commands of ``data`` and the error reply that stops the stream (None when
    the input just ends)."""
    commands: list[list[bytes]] = []

    def error(text: bytes) -> tuple[list[list[bytes]], bytes | None]:
        return commands, b"-ERR Protocol error: " + text.replace(b"\r", b" ").replace(
            b"\n", b" ") + b"\r\n"

    def header_line(pos: int) -> tuple[bytes | None, int, bool]:
        """(line without CRLF, position after, complete); (None, ., True): too long."""
        nl = data.find(b"\n", pos, pos + HEADER_LIMIT)
        if nl < 0:
            return None, 0, len(data) - pos < HEADER_LIMIT
        return data[pos : nl + 1], nl + 1, True

    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] != b"*":  # inline
            limit = LIMITS["max_inline_length"]
            nl = data.find(b"\n", pos, pos + limit + 1)
            if nl < 0:
                if len(data) - pos > limit:
                    return error(b"too big inline request")
                return commands, None
            words = data[pos:nl].split()
            assert all(c not in data[pos:nl] for c in b"\"'"), "the model takes no quotes"
            pos = nl + 1
            if words:
                commands.append(words)
            continue
        line, after, complete = header_line(pos)
        if line is None:
            return (commands, None) if complete else error(b"invalid multibulk length")
        if not line.endswith(b"\r\n") or (count := _number(line[1:-2])) is None:
            return error(b"invalid multibulk length")
        pos = after
        if count <= 0:
            continue
        if count > LIMITS["max_array_length"]:
            return error(b"invalid multibulk length")
        args: list[bytes] = []
        size = 0
        while len(args) < count:
            if pos >= len(data):
                return commands, None
            line, after, complete = header_line(pos)
            if line is None and complete:
                return commands, None
            if data[pos : pos + 1] != b"$":
                return error(b"expected '$', got '" + data[pos : pos + 1] + b"'")
            if line is None:
                return error(b"invalid bulk length")
            if not line.endswith(b"\r\n") or (bulk := _number(line[1:-2])) is None:
                return error(b"invalid bulk length")
            if bulk < 0 or bulk > LIMITS["max_bulk_length"]:
                return error(b"invalid bulk length")
            size += bulk
            if size > LIMITS["max_command_size"]:
                return error(b"command too large (over the limit of 40 bytes)")
            if len(data) - after < bulk + 2:
                return commands, None
            if data[after + bulk : after + bulk + 2] != b"\r\n":
                return error(b"expected CRLF after a bulk string")
            args.append(data[after : after + bulk])
            pos = after + bulk + 2
        commands.append(args)
    return commands, None


def resp_run(chunks: list[bytes]) -> tuple[list[list[bytes]], bytes | None]:
    parser = RespParser(**LIMITS)
    commands: list[list[bytes]] = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                command = parser.next_command()
            except RespProtocolError as exc:
                assert exc.fatal
                return commands, exc.reply
            if command is None:
                break
            commands.append(command)
    return commands, None


word = st.binary(max_size=18)
inline_word = st.sampled_from([b"GET", b"k", b"SET", b"x" * 9, b"PING", b"-1"])
fragment = st.one_of(
    st.lists(word, min_size=1, max_size=5).map(encode_command),  # valid, or over limits
    st.lists(inline_word, max_size=5).map(lambda ws: b" ".join(ws) + b"\r\n"),
    st.sampled_from([b"\r\n", b"\n", b"*0\r\n", b"*-1\r\n", b"*-7\r\n", b"*01\r\n",
                     b"*1\r\n$03\r\nabc\r\n", b"$", b"*", b"*1\r\n", b"*2\r\n$1\r\nx\r\n",
                     b"*1\r\n$2\r\nabcd", b"*1\r\n$x\r\n", b"*1\r\n!oops\r\n",
                     b"*1\r\n$-1\r\n", b"*1\n", b"*1\r\r\n", b"*" + b"7" * 70,
                     b"*1\r\n$" + b"1" * 70, b"GET " + b"v" * 30]),
    st.binary(max_size=8),
)


@SETTINGS
@given(parts=st.lists(fragment, max_size=10).map(  # quotes: split_inline's own tests
    lambda ps: b"".join(ps).replace(b'"', b"q").replace(b"'", b"q")), chosen=splits)
@example(parts=b"*2\r\n$3\r\nGET\r\n!", chosen=[])  # judged once the line is whole
@example(parts=b"*1\r\n\x01", chosen=[-1])
def test_resp_parser_matches_the_model(parts: bytes, chosen: list[int]) -> None:
    assert resp_run(split(parts, chosen)) == resp_model(parts)


@pytest.mark.parametrize("chunks", [[b"*2\r\n$3\r\nGET\r\n!"], [b"*2\r\n$3\r\nGET\r\n", b"!"]])
def test_a_bad_element_header_is_judged_when_its_line_is_whole(chunks: list[bytes]) -> None:
    parser = RespParser()
    for chunk in chunks:
        parser.feed(chunk)
        assert parser.next_command() is None
    parser.feed(b"oops\r\n")
    with pytest.raises(RespProtocolError) as info:
        parser.next_command()
    assert info.value.reply == b"-ERR Protocol error: expected '$', got '!'\r\n"
