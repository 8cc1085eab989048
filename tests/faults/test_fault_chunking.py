"""Scenario 9: pathological fragmentation.

The same valid input, fed whole, one byte at a time and cut at points hypothesis
chooses, gives byte-for-byte the same output from every framer-based handler (lines,
asynchat-style terminators switching between delimiters and counts, length-prefixed
records, ONC RPC record marking), the chat service and the kv service. Over real
sockets, a client sending one byte per segment gets the same replies as one sending
everything at once (each byte is sent once the server has read the one before).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from faultkit import Lines, Records
from faultlib import WAIT, FaultServer, figure
from handlerkit import three_ways
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.framers.resp import encode_command
from handlers.framers.rpcrecord import RPCRecordHandler, encode_record
from handlers.framers.terminator import TerminatorHandler
from handlers.services.chat import ChatServer
from handlers.services.kv import KVServer
from reactor.testing import FakeTransport

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40)


class Rpc(RPCRecordHandler):
    __slots__ = ()

    def record_received(self, record: bytes) -> None:
        self.send_record(record[::-1])


class Counted(TerminatorHandler):
    """A header line ``N\\r\\n`` then N bytes (terminator switched to a count), answered
    reversed; then back to lines."""

    __slots__ = ()
    terminator = b"\r\n"

    def found_terminator(self) -> None:
        data = self.take_data()
        if self.get_terminator() == b"\r\n":
            size = int(data)
            if size:
                self.set_terminator(size)
            else:
                self.send(b"<>")
        else:
            self.send(b"<" + data[::-1] + b">")
            self.set_terminator(b"\r\n")


def run(factory: Callable[[], Any], pieces: list[bytes]) -> bytes:
    transport = FakeTransport(factory(), high_water=1 << 30)
    out = bytearray(transport.take())
    for piece in pieces:
        if piece:
            transport.feed(piece)
            out += transport.take()
    assert not transport.lost, "the handler closed on valid input"
    return bytes(out)


def same_however_split(factory: Callable[[], Any], data: bytes, points: list[int]) -> bytes:
    outputs = [run(factory, pieces) for pieces in three_ways(data, points)]
    assert outputs[0] == outputs[1] == outputs[2]
    return outputs[0]


line = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))
payload = st.binary(max_size=2000)


@SETTINGS
@given(st.lists(line, max_size=20), cuts)
def test_lines(lines: list[bytes], points: list[int]) -> None:
    data = b"".join(item + b"\n" for item in lines)
    assert same_however_split(Lines, data, points) == data


@SETTINGS
@given(st.lists(payload, max_size=10).map(lambda ps: [p[:1024] for p in ps]), cuts)
def test_length_prefixed_records(payloads: list[bytes], points: list[int]) -> None:
    data = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
    expected = b"".join(len(p).to_bytes(4, "big") + p[::-1] for p in payloads)
    assert same_however_split(Records, data, points) == expected


@SETTINGS
@given(st.lists(st.tuples(payload, st.integers(1, 64)), max_size=8), cuts)
def test_rpc_record_marking(records: list[tuple[bytes, int]], points: list[int]) -> None:
    data = b"".join(encode_record(p, fragment) for p, fragment in records)
    expected = b"".join(encode_record(p[::-1]) for p, _ in records)
    assert same_however_split(Rpc, data, points) == expected


@SETTINGS
@given(st.lists(payload, max_size=10), cuts)
def test_terminators_switching_between_lines_and_counts(bodies: list[bytes],
                                                        points: list[int]) -> None:
    data = b"".join(b"%d\r\n" % len(b) + b for b in bodies)
    expected = b"".join(b"<" + b[::-1] + b">" for b in bodies)
    assert same_however_split(Counted, data, points) == expected


chat_line = st.sampled_from([
    b"/nick ann", b"/nick bob", b"/who", b"/join kitchen", b"/join lobby", b"hello all",
    b"//slash", b"/bogus", b"", b"  ", "caf\u00e9 \u2615".encode(), b"x" * 5000,
])


@SETTINGS
@given(st.lists(chat_line, max_size=15), cuts)
def test_chat(lines: list[bytes], points: list[int]) -> None:
    data = b"".join(item + b"\r\n" for item in lines)
    # a fresh server per run, so nicknames start from guest1 each time
    outputs = [run(ChatServer(max_line_length=4096), pieces)
               for pieces in three_ways(data, points)]
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].startswith(b"* welcome, you are guest1")


key = st.sampled_from([b"a", b"b", b"counter", b"list", b"k\r\nwith crlf", b""])
value = st.binary(max_size=200)
kv_command = st.one_of(
    st.tuples(st.just(b"SET"), key, value),
    st.tuples(st.just(b"GET"), key),
    st.tuples(st.just(b"APPEND"), key, value),
    st.tuples(st.just(b"INCR"), st.just(b"counter")),
    st.tuples(st.just(b"DEL"), key, key),
    st.tuples(st.just(b"RPUSH"), st.just(b"list"), value, value),
    st.tuples(st.just(b"LRANGE"), st.just(b"list"), st.just(b"0"), st.just(b"-1")),
    st.tuples(st.just(b"MSET"), key, value, key, value),
    st.tuples(st.just(b"MGET"), key, key),
    st.tuples(st.just(b"ECHO"), value),
    st.tuples(st.just(b"PING")),
    st.tuples(st.just(b"EXISTS"), key),
)


def kv_wire(commands: list[tuple[bytes, ...]], inline: list[bool]) -> bytes:
    out = bytearray()
    for i, command in enumerate(commands):
        as_inline = inline[i] if i < len(inline) else False
        words = list(command)
        if as_inline and all(w and w.isalnum() for w in words):
            out += b" ".join(words) + b"\r\n"
        else:
            out += encode_command(words)
    return bytes(out)


@SETTINGS
@given(st.lists(kv_command, max_size=25), st.lists(st.booleans(), max_size=25), cuts)
def test_kv(commands: list[tuple[bytes, ...]], inline: list[bool], points: list[int]) -> None:
    data = kv_wire(commands, inline)
    outputs = [run(KVServer(), pieces) for pieces in three_ways(data, points)]
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count(b"\r\n") >= len(commands)


# -- over real sockets: one byte per segment ---------------------------------------------------


def exchange(srv: FaultServer, data: bytes, reply_size: int, bytewise: bool) -> bytes:
    """Send ``data`` whole, or one byte at a time -- each byte only once the server has
    read the one before (its ``bytes_in``), so that every read it does is one byte --
    and return the reply."""
    with socket.create_connection(srv.tcp_address(), timeout=WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if bytewise:
            read = srv.stats()["bytes_in"]
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
                deadline = time.monotonic() + WAIT
                while (now := srv.stats()["bytes_in"]) < read + 1:
                    assert time.monotonic() < deadline, f"byte {i} never read"
                assert now == read + 1, f"the server read {now - read} bytes at once"
                read = now
        else:
            sock.sendall(data)
        got = b""
        deadline = time.monotonic() + WAIT
        while len(got) < reply_size:
            assert time.monotonic() < deadline, got
            chunk = sock.recv(65536)
            assert chunk, f"EOF after {len(got)} of {reply_size} bytes"
            got += chunk
        return got


@pytest.mark.timeout(90)
@pytest.mark.parametrize("service", ["kv", "faultkit:Records"])
def test_one_byte_segments_over_loopback(start_server: Callable[..., FaultServer],
                                         service: str) -> None:
    srv = start_server(service, "--bind", "127.0.0.1:0")
    if service == "kv":
        data = (encode_command([b"SET", b"k\r\n", b"v" * 300]) + b"GET k\r\n"
                + encode_command([b"GET", b"k\r\n"]) + b"PING\r\n"
                + encode_command([b"DEL", b"k\r\n"]))
        reply = b"+OK\r\n$-1\r\n$300\r\n" + b"v" * 300 + b"\r\n+PONG\r\n:1\r\n"
    else:
        payloads = [b"", b"a", b"record two", b"r" * 1000]
        data = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
        reply = b"".join(len(p).to_bytes(4, "big") + p[::-1] for p in payloads)
    assert exchange(srv, data, len(reply), bytewise=True) == reply
    figure(f"chunking ({service}): one-byte segments, each read alone by the server",
           len(data), "bytes")
    assert exchange(srv, data, len(reply), bytewise=False) == reply
    assert srv.stop() == 0
    srv.assert_clean_log()
