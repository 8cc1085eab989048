"""handlers.rpc.replycache: UDP retransmissions get the reply already sent."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.rpc.dispatch import Call, Dispatcher, Procedure, Program, Version
from handlers.rpc.message import AcceptStat, decode_reply, encode_call
from handlers.rpc.replycache import ReplyCache
from handlers.rpc.server import RPCDatagramProtocol
from handlers.rpc.xdr import Int, Opaque, decode, encode

PROG = 0x2000_0999
A, B = ("10.0.0.1", 700), ("10.0.0.2", 700)


def call(xid: int, n: int = 1) -> bytes:
    return encode_call(xid, PROG, 1, 1, encode(Int(), n))


def test_a_stored_reply_answers_the_same_call_only() -> None:
    cache = ReplyCache()
    assert cache.lookup(A, call(1)) is None
    cache.store(A, call(1), b"reply-1")
    assert cache.lookup(A, call(1)) == b"reply-1"
    assert cache.hits == 1
    assert cache.lookup(B, call(1)) is None  # another client
    assert cache.lookup(A, call(2)) is None  # another xid
    assert cache.lookup(A, call(1, n=5)) is None  # the xid reused for another call
    cache.store(A, call(1, n=5), b"reply-5")  # replaces the entry for (A, xid 1)
    assert len(cache) == 1 and cache.size == len(b"reply-5")
    assert cache.lookup(A, call(1, n=5)) == b"reply-5"
    assert cache.lookup(A, b"\0\0") is None
    cache.store(A, b"\0\0", b"x")  # too short to have an xid: not kept
    assert len(cache) == 1


def test_the_least_recently_used_go_first() -> None:
    cache = ReplyCache(max_entries=2)
    cache.store(A, call(1), b"1")
    cache.store(A, call(2), b"2")
    assert cache.lookup(A, call(1)) == b"1"  # now the most recent
    cache.store(A, call(3), b"3")
    assert cache.lookup(A, call(2)) is None
    assert cache.lookup(A, call(1)) == b"1" and cache.lookup(A, call(3)) == b"3"


def test_the_bytes_held_are_bounded() -> None:
    cache = ReplyCache(max_bytes=10)
    cache.store(A, call(1), b"x" * 6)
    cache.store(A, call(2), b"y" * 6)
    assert len(cache) == 1 and cache.size == 6
    assert cache.lookup(A, call(2)) == b"y" * 6
    cache.store(A, call(3), b"z" * 11)  # larger than the whole cache: not kept
    assert cache.lookup(A, call(3)) is None and cache.size == 6
    off = ReplyCache(max_entries=0)
    off.store(A, call(1), b"1")
    assert off.lookup(A, call(1)) is None
    with pytest.raises(ValueError, match="must not be negative"):
        ReplyCache(max_bytes=-1)


class Sent:
    """The part of a datagram transport the protocol uses: sendto, recorded."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))


def test_a_retransmitted_call_does_not_run_twice() -> None:
    runs: list[int] = []

    def add(call: Call, n: int) -> int:
        runs.append(n)
        return len(runs)

    def big(call: Call, args: None) -> bytes:
        runs.append(0)
        return b"x" * 5000

    version = Version(1, {1: Procedure(1, add, Int(), Int()),
                          2: Procedure(2, big, result=Opaque())})
    protocol = RPCDatagramProtocol(Dispatcher([Program(PROG, {1: version})]),
                                   max_udp_reply=1000)
    sent = Sent()
    protocol.connection_made(sent)  # type: ignore[arg-type]
    for datagram, client in ((call(1), A), (call(1), A), (call(1), B), (call(1, 7), A),
                             (call(1, 7), A)):
        protocol.datagram_received(datagram, client)
    assert runs == [1, 1, 7]
    replies = [(decode_reply(data), addr) for data, addr in sent.datagrams]
    assert [decode(Int(), r.results) for r, _ in replies] == [1, 1, 2, 3, 3]
    assert [addr for _, addr in replies] == [A, A, B, A, A]
    assert protocol.cache.hits == 2
    # a reply replaced by SYSTEM_ERR (too large for a datagram) is what is cached
    oversized = encode_call(9, PROG, 1, 2)
    protocol.datagram_received(oversized, A)
    protocol.datagram_received(oversized, A)
    assert runs == [1, 1, 7, 0]
    assert [decode_reply(d).accept_stat for d, _ in sent.datagrams[-2:]] == [
        AcceptStat.SYSTEM_ERR, AcceptStat.SYSTEM_ERR]
