"""The control socket's protocol and the table's snapshot, without sockets: the command
parser, the bounded line reader, the reply framing, the row filters and the text."""

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor import Connection, ConnState
from reactor.sansio.control import CommandError as Bad
from reactor.sansio.control import (
    LineReader,
    LineTooLong,
    encode_error,
    encode_json,
    encode_text,
    parse_command,
    render_info,
)
from reactor.sansio.snapshot import (
    ConnSnapshot,
    RowIds,
    format_address,
    render_table,
    select_rows,
    snapshot_row,
)

# -- commands ----------------------------------------------------------------------------


def test_every_command_parses() -> None:
    assert parse_command(b"info").name == "info"  # type: ignore[union-attr]
    assert parse_command("INFO --json").json  # type: ignore[union-attr]
    conns = parse_command("conns read-closed --peer 10.0.0.0/8 --sort idle --limit 5 --all")
    assert conns is not None
    assert (conns.state, conns.sort, conns.limit, conns.all) == (
        ConnState.READ_CLOSED, "idle", 5, True)
    assert conns.peer == ipaddress.ip_network("10.0.0.0/8")
    assert parse_command("conns OPEN").state is ConnState.OPEN  # type: ignore[union-attr]
    assert parse_command("conns --peer 127.0.0.1").peer == (  # type: ignore[union-attr]
        ipaddress.ip_network("127.0.0.1/32"))
    assert parse_command("close 12").target == 12  # type: ignore[union-attr]
    assert parse_command("abort 3 --json").target == 3  # type: ignore[union-attr]
    assert parse_command("loglevel debug").level == "DEBUG"  # type: ignore[union-attr]
    assert parse_command("loglevel").level is None  # type: ignore[union-attr]
    for name in ("drain", "help", "quit"):
        assert parse_command(name).name == name  # type: ignore[union-attr]
    assert parse_command("  \t") is None


@pytest.mark.parametrize(("line", "message"), [
    (b"frobnicate", "unknown command 'frobnicate'"),
    (b"\xff\xfe", "UTF-8"),
    (b"--json", "needs a command"),
    (b"close", "usage: close ID"),
    (b"close x", "ID must be a positive whole number"),
    (b"abort 0", "ID must be a positive whole number"),
    (b"close 1 2", "usage: close ID"),
    (b"conns --limit", "--limit needs a value"),
    (b"conns --limit -3", "--limit must be"),
    (b"conns --sort size", "--sort takes age, idle"),
    (b"conns --peer nowhere", "--peer needs an address"),
    (b"conns sleepy", "unknown state 'sleepy'"),
    (b"conns open closing", "one STATE at most"),
    (b"conns --bogus", "unknown option '--bogus'"),
    (b"loglevel loud", "unknown log level 'loud'"),
    (b"info now", "info takes no arguments"),
    (b"drain\x1b[2J", "unknown command 'drain\\x1b[2J'"),
])
def test_malformed_commands_get_a_message(line: bytes, message: str) -> None:
    with pytest.raises(Bad) as caught:
        parse_command(line)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@given(st.binary(max_size=200))
def test_any_line_parses_or_is_refused_with_a_command_error(line: bytes) -> None:
    try:
        parse_command(line)
    except Bad as exc:
        assert "\n" not in str(exc)


# -- lines -------------------------------------------------------------------------------

LINES = b"info\r\nconns open\n\nclose 7\n"


def test_lines_fed_whole_byte_by_byte_and_in_chunks() -> None:
    expected = [b"info", b"conns open", b"", b"close 7"]
    assert LineReader().feed(LINES) == expected
    reader = LineReader()
    assert [line for i in range(len(LINES)) for line in reader.feed(LINES[i:i + 1])] \
        == expected
    reader = LineReader()
    got = reader.feed(LINES[:3]) + reader.feed(LINES[3:15]) + reader.feed(LINES[15:])
    assert got == expected
    assert reader.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=len(LINES)), max_size=6))
def test_lines_any_split(cuts: list[int]) -> None:
    points = sorted(set([0, *cuts, len(LINES)]))
    reader = LineReader()
    got = [line for a, b in itertools.pairwise(points) for line in reader.feed(LINES[a:b])]
    assert got == [b"info", b"conns open", b"", b"close 7"]


def test_an_over_long_line_is_refused_finished_or_not() -> None:
    with pytest.raises(LineTooLong, match="over 16 bytes"):
        LineReader(16).feed(b"x" * 17 + b"\n")
    reader = LineReader(16)
    reader.feed(b"x" * 10)
    with pytest.raises(LineTooLong):
        reader.feed(b"x" * 10)  # no newline yet: the partial line is bounded too
    assert LineReader(16).feed(b"y" * 16 + b"\r\n") == [b"y" * 16]


# -- replies -----------------------------------------------------------------------------


def test_a_reply_ends_with_the_only_empty_line() -> None:
    reply = encode_text(["one", "", "peer /tmp/a\nb", "\r"])
    assert reply.endswith(b"\n\n")
    assert reply[:-2].count(b"\n\n") == 0
    assert reply == b"one\n-\npeer /tmp/a\\nb\n\\r\n\n"
    assert encode_text([]) == b"ok\n\n"


def test_json_and_error_replies() -> None:
    reply = encode_json({"path": "a\n\nb"})
    assert reply.count(b"\n") == 2 and json.loads(reply) == {"path": "a\n\nb"}
    assert encode_error("no") == b"error: no\n\n"
    assert json.loads(encode_error("no", True)) == {"error": "no"}


def test_info_renders_as_key_value_lines() -> None:
    lines = render_info({"pid": 7, "uptime": 1.5, "loop": {"iterations": 3},
                         "listeners": [{"address": "x", "active": 1}], "none": None,
                         "server": {"addresses": ["a", "b"], "limits": {"backlog": 9}}})
    assert lines == ["pid: 7", "uptime: 1.5", "loop: iterations=3",
                     "listener: address=x active=1", "none: -",
                     "server: addresses=a,b limits.backlog=9"]


# -- the snapshot ------------------------------------------------------------------------


def _row(peer: object, state: ConnState = ConnState.OPEN, created: float = 0.0) -> Connection:
    row = Connection(state, peer, created)
    return row


def test_a_row_snapshot_with_tls_and_proxy_facts() -> None:
    class Session:
        def describe(self) -> str:
            return "established TLSv1.3"

    class Header:
        version = 2

    row = _row(("10.1.2.3", 4000), created=10.0)
    row.bytes_in, row.bytes_out, row.last_activity = 5, 7, 12.0
    row.set_meta("tls", Session())
    row.set_meta("proxy", ("127.0.0.1", 555))
    row.set_meta("proxy_header", Header())
    snap = snapshot_row(row, 4, 15.0, listener="127.0.0.1:80")
    assert snap.as_dict() == {
        "id": 4, "kind": "connection", "peer": "10.1.2.3:4000", "local": "-",
        "state": "open", "age": 5.0, "idle": 3.0, "bytes_in": 5, "bytes_out": 7,
        "queued": 0, "role": "served", "listener": "127.0.0.1:80",
        "tls": "established TLSv1.3", "proxy": "127.0.0.1:555 v2"}


def test_addresses_as_people_write_them() -> None:
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"
    assert format_address(("1.2.3.4", 5)) == "1.2.3.4:5"
    assert format_address("\0hidden") == "@hidden"
    assert format_address(b"/tmp/s") == "/tmp/s"
    assert format_address("/tmp/new\nline") == "/tmp/new\\nline"
    assert format_address("") == format_address(None) == "-"


def test_ids_are_never_reused() -> None:
    ids = RowIds()
    a, b = _row(None), _row(None)
    assert (ids.of(a), ids.of(b), ids.of(a)) == (1, 2, 1)
    ids.retain([b])
    assert ids.find(1) is None and ids.find(2) is b
    assert ids.of(a) == 3 and len(ids) == 2


def _snaps() -> list[ConnSnapshot]:
    peers = [("10.0.0.1", 1), ("192.168.1.2", 2), ("::ffff:10.0.0.9", 3), "/tmp/u"]
    rows = []
    for n, peer in enumerate(peers, 1):
        row = _row(peer, ConnState.OPEN if n % 2 else ConnState.CLOSING, created=float(n))
        row.bytes_in = 10 * (5 - n)
        rows.append(snapshot_row(row, n, 10.0))
    return rows


def test_select_filters_sorts_and_limits() -> None:
    rows = _snaps()
    assert [r.id for r in select_rows(rows)] == [1, 2, 3, 4]
    assert [r.id for r in select_rows(rows, state=ConnState.CLOSING)] == [2, 4]
    ten = ipaddress.ip_network("10.0.0.0/8")
    assert [r.id for r in select_rows(rows, peer=ten)] == [1, 3]  # v4-mapped too
    assert [r.id for r in select_rows(rows, sort="age")] == [1, 2, 3, 4]
    assert [r.id for r in select_rows(rows, sort="bytes_in", limit=2)] == [1, 2]
    with pytest.raises(ValueError, match="unknown sort key"):
        select_rows(rows, sort="colour")


def test_the_table_text_keeps_one_line_per_row() -> None:
    rows = [r.as_dict() for r in _snaps()]
    rows[3]["peer"] = "/tmp/evil\n\nname"
    rows[0]["role"] = "control"
    lines = render_table(rows)
    assert len(lines) == 5 and all(lines)
    assert lines[0].split() == ["ID", "KIND", "PEER", "LOCAL", "STATE", "AGE", "IDLE",
                                "IN", "OUT", "QUEUED"]
    assert lines[1].endswith("role=control")
    assert "/tmp/evil\\n\\nname" in lines[4]
    assert render_table([])[-1] == "(no connections)"
