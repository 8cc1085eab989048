"""handlers.rpc.server: RPC over TCP (record marking) and UDP, in memory and on the reactor.

The system's ``rpcinfo`` (Debian package ``rpcbind``, installed by the test when it runs
as root) reaches the NULL procedure over TCP and UDP, sees PROG_MISMATCH's range and
PROG_UNAVAIL.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from handlerkit import three_ways
from hypothesis import given, settings
from hypothesis import strategies as st
from rpckit import DEADLINE, read_replies, rpcinfo, serving

from handlers.framers.rpcrecord import RecordMarkingFramer, encode_record
from handlers.rpc.dispatch import Call, Dispatcher, Procedure, Program, Version
from handlers.rpc.message import AcceptStat, RejectStat, decode_reply, encode_call
from handlers.rpc.server import RPCEndpoints, RPCServer
from handlers.rpc.xdr import Int, Opaque, String, decode, encode
from handlers.rpc.xdrlang import load_xdr
from reactor.testing import FakeTransport

PROG = 0x2000_0777
ROOT = Path(__file__).resolve().parent.parent


def echo(call: Call, data: bytes) -> bytes:
    return data


def double(call: Call, n: int) -> int:
    return 2 * n


def programs() -> list[Program]:
    v1 = Version(1, {1: Procedure(1, double, Int(), Int(), "DOUBLE")})
    v2 = Version(2, {1: Procedure(1, double, Int(), Int(), "DOUBLE"),
                     2: Procedure(2, echo, Opaque(), Opaque(), "ECHO")})
    return [Program(PROG, {1: v1, 2: v2}, "TEST")]


def call(xid: int, proc: int = 1, args: bytes = b"", vers: int = 2, **kw: Any) -> bytes:
    return encode_call(xid, PROG, vers, proc, args, **kw)


def replies_of(stream: bytes) -> list[Any]:
    framer = RecordMarkingFramer()
    framer.feed(stream)
    out = []
    while (record := framer.next_record()) is not None:
        out.append(decode_reply(record))
    return out


# -- in memory ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=8))
def test_pipelined_calls_get_replies_in_order_however_split(cuts: list[int]) -> None:
    stream = b"".join(encode_record(call(i, args=encode(Int(), i)), max_fragment_size=7)
                      for i in range(10))
    for chunks in three_ways(stream, cuts):
        transport = FakeTransport(RPCServer(programs()).stream_handler())
        for chunk in chunks:
            transport.feed(chunk)
        replies = replies_of(transport.take())
        assert [r.xid for r in replies] == list(range(10))
        assert [decode(Int(), r.results) for r in replies] == [2 * i for i in range(10)]


def test_a_slow_reader_stops_the_reading() -> None:
    transport = FakeTransport(RPCServer(programs()).stream_handler(), high_water=1000,
                              low_water=100)
    big = encode(Opaque(), b"x" * 600)
    transport.feed(encode_record(call(1, 2, big)) + encode_record(call(2, 2, big)))
    assert not transport.is_reading()
    assert len(replies_of(transport.take())) == 2
    assert transport.is_reading()


@pytest.mark.parametrize("record", [b"garbage!", call(1)[:20], b""])
def test_a_record_that_is_not_a_call_closes_the_connection(record: bytes) -> None:
    transport = FakeTransport(RPCServer(programs()).stream_handler())
    transport.feed(encode_record(call(7, args=encode(Int(), 1))) + encode_record(record))
    assert [r.xid for r in replies_of(transport.take())] == [7]
    assert transport.is_closing()


def test_a_record_over_the_maximum_closes_the_connection_before_it_is_buffered() -> None:
    transport = FakeTransport(RPCServer(programs(), max_record_size=1000).stream_handler())
    transport.feed((0x8000_0000 | 1001).to_bytes(4, "big"))
    assert transport.is_closing()
    transport = FakeTransport(RPCServer(programs()).stream_handler())
    transport.feed(b"\xff\xff\xff\xff")  # a last fragment of 2 GiB
    assert transport.is_closing()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="limits must be positive"):
        RPCServer(programs(), max_udp_reply=0)


# -- on the reactor ----------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[RPCEndpoints]:
    with serving(RPCServer(Dispatcher(programs()), max_udp_reply=2000)) as endpoints:
        yield endpoints


@pytest.mark.timeout(60)
def test_tcp_and_udp_on_one_port(served: RPCEndpoints) -> None:
    assert served.tcp is not None and served.udp is not None
    with socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as tcp:
        tcp.sendall(b"".join(encode_record(call(i, args=encode(Int(), i)))
                             for i in range(200)))
        replies = read_replies(tcp, 200)
        assert [decode(Int(), r.results) for r in replies] == [2 * i for i in range(200)]
        tcp.sendall(encode_record(call(1, vers=9)))
        mismatch = read_replies(tcp, 1)[0]
        assert (mismatch.accept_stat, mismatch.low, mismatch.high) == (
            AcceptStat.PROG_MISMATCH, 1, 2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(DEADLINE)
        udp.connect(("127.0.0.1", served.port))
        udp.send(b"not a call")  # dropped: the next reply is the NULL call's
        udp.send(call(41, proc=0))
        reply = decode_reply(udp.recv(65536))
        assert (reply.xid, reply.accept_stat) == (41, AcceptStat.SUCCESS)
        udp.send(call(42, rpcvers=3))
        assert decode_reply(udp.recv(65536)).reject_stat == RejectStat.RPC_MISMATCH
        udp.send(call(43, 2, encode(Opaque(), b"y" * 1900)))
        reply = decode_reply(udp.recv(65536))
        assert decode(Opaque(), reply.results) == b"y" * 1900
        udp.send(call(44, 2, encode(Opaque(), b"y" * 2000)))  # the reply would not fit
        reply = decode_reply(udp.recv(65536))
        assert (reply.xid, reply.accept_stat) == (44, AcceptStat.SYSTEM_ERR)


@pytest.mark.timeout(60)
def test_garbage_on_tcp_closes_only_that_connection(served: RPCEndpoints) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as bad, \
            socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as good:
        bad.sendall(b"\x7f\xff\xff\xff")  # a fragment of 2 GiB - 1: over the maximum
        assert bad.recv(100) == b""
        good.sendall(encode_record(call(5, proc=0)))
        assert read_replies(good, 1)[0].accept_stat == AcceptStat.SUCCESS


# -- the system's rpcinfo ----------------------------------------------------------------


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE,
                          check=False)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("netid", ["tcp", "udp"])
def test_rpcinfo_reaches_null(served: RPCEndpoints, netid: str) -> None:
    # rpcinfo -a ADDRESS -T NETID calls the server directly. (Debian's "-n PORT -t"
    # asks rpcbind on port 111 for the address first, then swaps the port in, so it
    # needs a portmapper on 111; these tests use no fixed port.)
    tool = rpcinfo()
    uaddr = f"127.0.0.1.{served.port >> 8}.{served.port & 0xFF}"
    for vers in ("1", "2"):
        done = run(tool, "-a", uaddr, "-T", netid, str(PROG), vers)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"program {PROG} version {vers} ready and waiting"
    # without a version, rpcinfo asks for version 0 and pings the range PROG_MISMATCH gives
    done = run(tool, "-a", uaddr, "-T", netid, str(PROG))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"program {PROG} version {v} ready and waiting"
                                        for v in (1, 2)]
    done = run(tool, "-a", uaddr, "-T", netid, str(PROG), "5")
    assert done.returncode != 0
    assert "low version = 1, high version = 2" in done.stderr
    done = run(tool, "-a", uaddr, "-T", netid, str(PROG + 1), "1")
    assert done.returncode != 0
    assert "Program unavailable" in done.stderr


@pytest.mark.timeout(60)
def test_the_readme_example_serves_the_inventory() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [snippet] = [b for b in blocks if "RPCServer(" in b]
    proc = subprocess.Popen([sys.executable, "-c", snippet], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"-a 127\.0\.0\.1\.(\d+)\.(\d+) -T tcp (\d+) 1", line)
        assert match, line
        port = int(match[1]) * 256 + int(match[2])
        prog = int(match[3])
        spec = load_xdr(str(ROOT / "tests" / "data" / "inventory.x"))
        item = spec.types["item"].cls(name="saw", kind=2, count=1, serial=5, weight=2.5,
                                      fragile=True, tags="", sum=bytes(16))
        calls = [encode_call(1, prog, 1, 1, encode(spec.types["item"], item)),
                 encode_call(2, prog, 1, 2, encode(String(), "saw")),
                 encode_call(3, prog, 2, 3, encode(Int(), 1))]  # REPORT: not written
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
            s.sendall(b"".join(map(encode_record, calls)))
            added, found, report = read_replies(s, 3)
        assert decode(spec.types["status"], added.results) == 0
        assert decode(spec.types["lookup_result"], found.results).value == item
        assert report.accept_stat == AcceptStat.PROC_UNAVAIL
    finally:
        proc.kill()  # the example has nothing to flush
        proc.communicate(timeout=DEADLINE)
