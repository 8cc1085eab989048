"""Tests of handlers.services.kv, the Redis-protocol key-value service.

Three layers: socket-free (the protocol with a fake transport, the store with a fake
clock, the glob matcher), real loopback sockets on the reactor (redis-py, redis-cli,
redis-benchmark, raw RESP), and the same protocol class on asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_tools import redis_tool

from handlers.framers.resp import encode_command
from handlers.services.kv import (
    COMMANDS,
    FLUSH_SIZE,
    KVProtocol,
    KVServer,
    KVStore,
    compile_glob,
    glob_match,
)
from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector, FakeTransport

_T = TypeVar("_T")
TOOL_TIMEOUT = 300  # the first redis-tools test may install the package


# -- socket-free: the protocol on reactor.testing's FakeTransport ----------------------


class CountingTransport(FakeTransport):
    """A FakeTransport that also counts ``write`` calls."""

    writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        super().write(data)


class FakeClient:
    """One KVProtocol on an in-memory transport."""

    def __init__(self, server: KVServer, high_water: int = 64 * 1024) -> None:
        self.protocol = server()
        self.transport = CountingTransport(self.protocol, peername=("198.51.100.7", 4242),
                                           high_water=high_water)

    def send(self, data: bytes) -> bytes:
        self.transport.feed(data)
        return self.transport.take()

    def cmd(self, *args: bytes | str | int) -> bytes:
        return self.send(encode_command(args))


@pytest.fixture
def fake() -> Iterator[tuple[Reactor, FakeClock, KVServer]]:
    clock = FakeClock()
    reactor = Reactor(selector=FakeSelector(clock), clock=clock)
    server = KVServer(reactor)
    yield reactor, clock, server
    reactor.close()


@pytest.fixture
def client(fake: tuple[Reactor, FakeClock, KVServer]) -> FakeClient:
    return FakeClient(fake[2])


# -- commands (socket-free) -----------------------------------------------------------


def test_ping_echo_and_inline(client: FakeClient) -> None:
    assert client.cmd("PING") == b"+PONG\r\n"
    assert client.cmd("ping", "hi") == b"$2\r\nhi\r\n"
    assert client.cmd("ECHO", b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert client.send(b"PING\r\nECHO \"x y\"\r\nset k v\r\nGET k\n") == (
        b"+PONG\r\n$3\r\nx y\r\n+OK\r\n$1\r\nv\r\n"
    )


def test_strings(client: FakeClient) -> None:
    assert client.cmd("GET", "k") == b"$-1\r\n"
    assert client.cmd("SET", "k", b"\x00\xff") == b"+OK\r\n"
    assert client.cmd("GET", "k") == b"$2\r\n\x00\xff\r\n"
    assert client.cmd("MSET", "a", "1", "b", "2") == b"+OK\r\n"
    assert client.cmd("MGET", "a", "nope", "b") == b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    assert client.cmd("EXISTS", "a", "a", "nope") == b":2\r\n"
    assert client.cmd("DEL", "a", "nope", "b") == b":2\r\n"
    assert client.cmd("DBSIZE") == b":1\r\n"
    assert client.cmd("APPEND", "k", "x") == b":3\r\n"
    assert client.cmd("STRLEN", "k") == b":3\r\n"
    assert client.cmd("GETDEL", "k") == b"$3\r\n\x00\xffx\r\n"
    assert client.cmd("TYPE", "k") == b"+none\r\n"


def test_counters(client: FakeClient) -> None:
    assert client.cmd("INCR", "n") == b":1\r\n"
    assert client.cmd("INCRBY", "n", "41") == b":42\r\n"
    assert client.cmd("DECR", "n") == b":41\r\n"
    assert client.cmd("DECRBY", "n", "-9") == b":50\r\n"
    assert client.cmd("GET", "n") == b"$2\r\n50\r\n"
    not_int = b"-ERR value is not an integer or out of range\r\n"
    for bad in ("x", "+1", "01", " 1", "1_0", "-0", "9223372036854775808"):
        client.cmd("SET", "s", bad)
        assert client.cmd("INCR", "s") == not_int, bad
        assert client.cmd("INCRBY", "n", bad) == not_int, bad
    client.cmd("SET", "big", str(2**63 - 1))
    assert client.cmd("INCR", "big") == b"-ERR increment or decrement would overflow\r\n"
    assert client.cmd("DECRBY", "n", str(-(2**63))) == b"-ERR decrement would overflow\r\n"


def test_set_options(fake: tuple[Reactor, FakeClock, KVServer], client: FakeClient) -> None:
    _reactor, clock, _server = fake
    assert client.cmd("SET", "k", "1", "NX") == b"+OK\r\n"
    assert client.cmd("SET", "k", "2", "NX") == b"$-1\r\n"
    assert client.cmd("SET", "k", "2", "XX", "GET") == b"$1\r\n1\r\n"
    assert client.cmd("SET", "nope", "2", "XX") == b"$-1\r\n"
    assert client.cmd("SET", "nope", "2", "NX", "GET") == b"$-1\r\n"
    assert client.cmd("GET", "nope") == b"$1\r\n2\r\n"
    assert client.cmd("SET", "k", "3", "EX", "10") == b"+OK\r\n"
    assert client.cmd("TTL", "k") == b":10\r\n"
    assert client.cmd("SET", "k", "4", "KEEPTTL") == b"+OK\r\n"
    assert client.cmd("PTTL", "k") == b":10000\r\n"
    assert client.cmd("SET", "k", "5", "PX", "1500") == b"+OK\r\n"
    assert client.cmd("PTTL", "k") == b":1500\r\n"
    assert client.cmd("SET", "k", "6") == b"+OK\r\n"
    assert client.cmd("TTL", "k") == b":-1\r\n"
    unix_now = int(time.time())
    assert client.cmd("SET", "k", "7", "EXAT", str(unix_now + 100)) == b"+OK\r\n"
    assert 95 <= int(client.cmd("TTL", "k")[1:-2]) <= 101
    assert client.cmd("SET", "k", "8", "PXAT", str((unix_now - 10) * 1000)) == b"+OK\r\n"
    assert client.cmd("EXISTS", "k") == b":0\r\n"
    syntax = b"-ERR syntax error\r\n"
    for options in (["NX", "XX"], ["EX", "1", "PX", "1"], ["EX"], ["KEEPTTL", "EX", "1"],
                    ["FOO"], ["XX", "NX"]):
        assert client.cmd("SET", "k", "v", *options) == syntax, options
    for bad in ("0", "-1"):
        assert client.cmd("SET", "k", "v", "EX", bad) == (
            b"-ERR invalid expire time in 'set' command\r\n"
        )
    assert client.cmd("SET", "k", "v", "EX", "x") == (
        b"-ERR value is not an integer or out of range\r\n"
    )
    clock.advance(0)  # keep the fixture's clock in use


def test_errors_match_redis(client: FakeClient) -> None:
    assert client.cmd("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert client.cmd("get", "a", "b") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert client.cmd("MSET", "a") == b"-ERR wrong number of arguments for 'mset' command\r\n"
    assert client.cmd("MSET", "a", "1", "b") == (
        b"-ERR wrong number of arguments for 'mset' command\r\n"
    )
    assert client.cmd("FOO", "bar", "baz") == (
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n"
    )
    client.cmd("RPUSH", "list", "x")
    wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    assert client.cmd("GET", "list") == wrongtype
    assert client.cmd("INCR", "list") == wrongtype
    assert client.cmd("SET", "list", "v", "GET") == wrongtype
    assert client.cmd("LLEN", "list") == b":1\r\n"  # SET ... GET did not overwrite
    client.cmd("SET", "s", "v")
    assert client.cmd("LPUSH", "s", "x") == wrongtype


def test_lists(client: FakeClient) -> None:
    assert client.cmd("RPUSH", "l", "a", "b", "c") == b":3\r\n"
    assert client.cmd("LPUSH", "l", "z") == b":4\r\n"
    assert client.cmd("LRANGE", "l", "0", "-1") == (
        b"*4\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    )
    assert client.cmd("LRANGE", "l", "-2", "100") == b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
    assert client.cmd("LRANGE", "l", "3", "1") == b"*0\r\n"
    assert client.cmd("TYPE", "l") == b"+list\r\n"
    assert client.cmd("LPOP", "l") == b"$1\r\nz\r\n"
    assert client.cmd("RPOP", "l", "2") == b"*2\r\n$1\r\nc\r\n$1\r\nb\r\n"
    assert client.cmd("LPOP", "l", "5") == b"*1\r\n$1\r\na\r\n"
    assert client.cmd("EXISTS", "l") == b":0\r\n"  # an emptied list is deleted
    assert client.cmd("LPOP", "l") == b"$-1\r\n"
    assert client.cmd("LPOP", "l", "2") == b"*-1\r\n"


def test_keys_glob(client: FakeClient) -> None:
    for key in ("hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other"):
        client.cmd("SET", key, "1")

    def keys(pattern: str) -> set[bytes]:
        reply = client.cmd("KEYS", pattern)
        lines = reply.split(b"\r\n")
        return set(lines[2::2])

    assert keys("h?llo") == {b"hello", b"hallo", b"hxllo", b"h*llo"}
    assert keys("h*llo") == {b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo"}
    assert keys("h[ae]llo") == {b"hello", b"hallo"}
    assert keys("h[^e]llo") == {b"hallo", b"hxllo", b"h*llo"}
    assert keys("h[a-b]llo") == {b"hallo"}
    assert keys("h\\*llo") == {b"h*llo"}
    assert keys("*") == {b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo", b"other"}
    assert keys("nothing") == set()


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (b"*", b"", True),
        (b"**a**", b"xxa", True),
        (b"a*", b"a", True),
        (b"a*b", b"ab", True),
        (b"a*b", b"axxbxb", True),
        (b"a*b", b"axxbx", False),
        (b"?", b"", False),
        (b"[abc]", b"b", True),
        (b"[abc]", b"d", False),
        (b"[^abc]", b"d", True),
        (b"[^abc]", b"a", False),
        (b"[z-a]", b"m", True),  # a reversed range is swapped
        (b"[a-]", b"]", True),  # Redis reads "a-]" as the range a..]
        (b"[\\]]", b"]", True),
        (b"[\\-]", b"-", True),
        (b"[abc", b"c", True),  # an unterminated class ends with the pattern
        (b"[]", b"a", False),
        (b"[^]", b"a", True),
        (b"\\?", b"?", True),
        (b"\\?", b"x", False),
        (b"a\\", b"a\\", True),  # a trailing backslash is literal
        (b"\\*x", b"*x", True),
        (b"\\*x", b"yx", False),
        (b"*.txt", b"a.txt", True),
        (b"*.txt", b"a.txtx", False),
        (b"user:*:name", b"user:42:name", True),
        (b"\xff*", b"\xff\x00", True),
    ],
)
def test_glob_rules(pattern: bytes, text: bytes, expected: bool) -> None:
    assert glob_match(pattern, text) is expected


@pytest.mark.timeout(30)
def test_glob_has_no_exponential_backtracking() -> None:
    match = compile_glob(b"a*a*a*a*a*a*a*a*a*a*b")
    assert not match(b"a" * 3000)
    assert match(b"a" * 3000 + b"b")


def test_expire_ttl_persist(fake: tuple[Reactor, FakeClock, KVServer],
                            client: FakeClient) -> None:
    _reactor, clock, _server = fake
    assert client.cmd("EXPIRE", "k", "10") == b":0\r\n"
    client.cmd("SET", "k", "v")
    assert client.cmd("TTL", "k") == b":-1\r\n"
    assert client.cmd("TTL", "nope") == b":-2\r\n"
    assert client.cmd("PTTL", "nope") == b":-2\r\n"
    assert client.cmd("EXPIRE", "k", "10", "XX") == b":0\r\n"
    assert client.cmd("EXPIRE", "k", "10", "NX") == b":1\r\n"
    assert client.cmd("EXPIRE", "k", "20", "NX") == b":0\r\n"
    assert client.cmd("EXPIRE", "k", "5", "GT") == b":0\r\n"
    assert client.cmd("EXPIRE", "k", "30", "GT") == b":1\r\n"
    assert client.cmd("EXPIRE", "k", "40", "LT") == b":0\r\n"
    assert client.cmd("PEXPIRE", "k", "2500", "LT") == b":1\r\n"
    clock.advance(1.0)
    assert client.cmd("PTTL", "k") == b":1500\r\n"
    assert client.cmd("TTL", "k") == b":2\r\n"  # rounded, as Redis does
    assert client.cmd("PERSIST", "k") == b":1\r\n"
    assert client.cmd("PERSIST", "k") == b":0\r\n"
    assert client.cmd("TTL", "k") == b":-1\r\n"
    assert client.cmd("EXPIRE", "k", "0") == b":1\r\n"
    assert client.cmd("EXISTS", "k") == b":0\r\n"
    assert client.cmd("EXPIRE", "k", "10", "NX", "XX") == (
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    )
    assert client.cmd("EXPIRE", "k", "10", "GT", "LT") == (
        b"-ERR GT and LT options at the same time are not compatible\r\n"
    )
    assert client.cmd("EXPIRE", "k", "10", "FOO") == b"-ERR Unsupported option FOO\r\n"
    assert client.cmd("EXPIRE", "k", str(2**62)) == (
        b"-ERR invalid expire time in 'expire' command\r\n"
    )


def test_lazy_expiry(fake: tuple[Reactor, FakeClock, KVServer], client: FakeClient) -> None:
    _reactor, clock, server = fake
    client.cmd("SET", "k", "v", "PX", "100")
    clock.advance(0.2)  # no reactor iteration: the timer has not run
    assert len(server.store) == 1
    assert client.cmd("GET", "k") == b"$-1\r\n"
    assert len(server.store) == 0
    assert server.store.expired_keys == 1


def test_active_expiry_on_reactor_timers(fake: tuple[Reactor, FakeClock, KVServer],
                                         client: FakeClient) -> None:
    reactor, clock, server = fake
    client.cmd("SET", "a", "1", "EX", "10")
    client.cmd("SET", "b", "1", "EX", "20")
    client.cmd("SET", "c", "1", "EX", "5")
    client.cmd("SET", "c", "2")  # the TTL is gone: its heap entry is stale
    client.cmd("SET", "keep", "1")
    start = clock()
    reactor.run_once()  # FakeSelector advances the clock to the next timer
    assert clock() - start == pytest.approx(5.0)  # the stale deadline: a no-op wake-up
    assert len(server.store) == 4
    reactor.run_once()
    assert clock() - start == pytest.approx(10.0)
    assert sorted(server.store.keys()) == [b"b", b"c", b"keep"]
    reactor.run_once()
    assert clock() - start == pytest.approx(20.0)
    assert sorted(server.store.keys()) == [b"c", b"keep"]
    assert server.store.expired_keys == 2
    assert server.statistics().expiring == 0
    # nothing left to expire: the reactor has no timer and would block for I/O only
    assert reactor.next_timeout() is None


def test_active_expiry_deletes_in_bounded_batches() -> None:
    clock = FakeClock()
    with Reactor(selector=FakeSelector(clock), clock=clock) as reactor:
        store = KVStore(reactor)
        for i in range(2500):
            store.set(b"k%d" % i, b"v", deadline=clock() + 1)
        clock.advance(2)
        reactor.run_once(0)
        assert len(store) == 1500
        reactor.run_once(0)
        reactor.run_once(0)
        assert len(store) == 0


def test_store_rebuilds_its_heap_of_stale_deadlines() -> None:
    clock = FakeClock()
    with Reactor(selector=FakeSelector(clock), clock=clock) as reactor:
        store = KVStore(reactor)
        store.set(b"k", b"v")
        for i in range(10_000):
            store.set_deadline(b"k", clock() + 100 + i)
        assert len(store._heap) <= 2 * store.expiring + 65


def test_store_binds_once() -> None:
    clock = FakeClock()
    with Reactor(selector=FakeSelector(clock), clock=clock) as one, \
            Reactor(selector=FakeSelector(clock), clock=clock) as two:
        store = KVStore(one)
        store.bind(one)
        with pytest.raises(Exception, match="already bound"):
            store.bind(two)


def test_multi_exec(client: FakeClient) -> None:
    assert client.cmd("EXEC") == b"-ERR EXEC without MULTI\r\n"
    assert client.cmd("DISCARD") == b"-ERR DISCARD without MULTI\r\n"
    assert client.cmd("MULTI") == b"+OK\r\n"
    assert client.cmd("MULTI") == b"-ERR MULTI calls can not be nested\r\n"
    assert client.cmd("SET", "m", "1") == b"+QUEUED\r\n"
    assert client.cmd("INCR", "m") == b"+QUEUED\r\n"
    assert client.cmd("GET", "m") == b"+QUEUED\r\n"
    assert client.cmd("EXEC") == b"*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n"
    client.cmd("MULTI")
    client.cmd("SET", "m", "5")
    assert client.cmd("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert client.cmd("EXEC") == (
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    )
    assert client.cmd("GET", "m") == b"$1\r\n2\r\n"
    client.cmd("MULTI")
    client.cmd("SET", "m", "x")
    client.cmd("INCR", "m")  # fails at EXEC time, the rest still runs
    assert client.cmd("EXEC") == (
        b"*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n"
    )
    client.cmd("MULTI")
    client.cmd("SET", "m", "y")
    assert client.cmd("DISCARD") == b"+OK\r\n"
    assert client.cmd("GET", "m") == b"$1\r\nx\r\n"


def test_connection_commands(client: FakeClient) -> None:
    assert client.cmd("SELECT", "0") == b"+OK\r\n"
    assert client.cmd("SELECT", "16") == b"-ERR DB index is out of range\r\n"
    assert client.cmd("SELECT", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert client.cmd("CLIENT", "SETNAME", "worker-1") == b"+OK\r\n"
    assert client.cmd("CLIENT", "GETNAME") == b"$8\r\nworker-1\r\n"
    assert client.cmd("CLIENT", "SETNAME", "a b") == (
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    )
    assert client.cmd("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == b"+OK\r\n"
    assert client.cmd("CLIENT", "SETINFO", "lib-ver", "8.1.0") == b"+OK\r\n"
    assert client.cmd("CLIENT", "SETINFO", "FOO", "x") == b"-ERR Unrecognized option 'FOO'\r\n"
    assert client.cmd("CLIENT", "ID") == b":1\r\n"
    info = client.cmd("CLIENT", "INFO")
    assert b"id=1 addr=198.51.100.7:4242 name=worker-1" in info
    assert b"lib-name=redis-py lib-ver=8.1.0" in info
    assert client.cmd("CLIENT", "BOGUS") == (
        b"-ERR unknown subcommand 'BOGUS'. Try CLIENT HELP.\r\n"
    )
    assert client.cmd("AUTH", "default", "anything") == b"+OK\r\n"
    assert client.cmd("AUTH", "bob", "x").startswith(b"-WRONGPASS")
    assert client.cmd("AUTH", "pw").startswith(b"-ERR AUTH <password> called without")


def test_hello_switches_protocol(client: FakeClient) -> None:
    assert client.cmd("HELLO", "4") == b"-NOPROTO unsupported protocol version\r\n"
    assert client.cmd("HELLO", "x") == (
        b"-ERR Protocol version is not an integer or out of range\r\n"
    )
    reply2 = client.cmd("HELLO", "2")
    assert reply2.startswith(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    assert b"$5\r\nproto\r\n:2\r\n" in reply2
    assert client.cmd("GET", "nope") == b"$-1\r\n"
    reply3 = client.cmd("HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me")
    assert reply3.startswith(b"%7\r\n$6\r\nserver\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in reply3
    assert client.cmd("CLIENT", "GETNAME") == b"$2\r\nme\r\n"
    assert client.cmd("GET", "nope") == b"_\r\n"
    assert client.cmd("MGET", "nope") == b"*1\r\n_\r\n"
    assert client.cmd("CONFIG", "GET", "appendonly") == b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"


def test_server_commands(client: FakeClient) -> None:
    assert client.cmd("CONFIG", "GET", "save") == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    assert client.cmd("CONFIG", "GET", "appendonly", "nothing") == (
        b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    )
    assert client.cmd("CONFIG", "GET", "max*").startswith(b"*6\r\n$9\r\nmaxmemory\r\n")
    assert client.cmd("CONFIG", "GET") == (
        b"-ERR wrong number of arguments for 'config|get' command\r\n"
    )
    assert client.cmd("CONFIG", "SET", "save", "").startswith(b"-ERR Unknown option")
    assert client.cmd("CONFIG", "RESETSTAT") == b"+OK\r\n"
    count = len({command.name for command in COMMANDS.values()})
    assert client.cmd("COMMAND", "COUNT") == b":%d\r\n" % count
    assert client.cmd("COMMAND").startswith(b"*%d\r\n*10\r\n" % count)
    assert client.cmd("COMMAND", "INFO", "get", "nope") == (
        b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        b"*3\r\n+@read\r\n+@fast\r\n+@string\r\n*0\r\n*0\r\n*0\r\n$-1\r\n"
    )
    docs = client.cmd("COMMAND", "DOCS", "set")
    assert docs.startswith(b"*2\r\n$3\r\nset\r\n*6\r\n$7\r\nsummary\r\n")
    assert client.cmd("COMMAND", "NOPE") == (
        b"-ERR unknown subcommand 'NOPE'. Try COMMAND HELP.\r\n"
    )
    client.cmd("SET", "x", "1")
    assert b"db0:keys=1,expires=0" in client.cmd("INFO")
    assert b"redis_version:" in client.cmd("INFO", "server")
    assert client.cmd("FLUSHDB", "BOGUS") == b"-ERR syntax error\r\n"
    assert client.cmd("FLUSHDB") == b"+OK\r\n"
    assert client.cmd("DBSIZE") == b":0\r\n"
    assert client.cmd("TIME").startswith(b"*2\r\n")


def test_quit_replies_then_closes_and_ignores_the_rest(client: FakeClient) -> None:
    assert client.send(b"PING\r\nQUIT\r\nSET after 1\r\n") == b"+PONG\r\n+OK\r\n"
    assert client.transport.lost
    assert client.protocol.store.get(b"after") is None


def test_pipeline_of_1000_commands_is_one_write(client: FakeClient) -> None:
    script = b"".join(encode_command(["INCR", "n"]) for _ in range(1000))
    client.transport.writes = 0
    replies = client.send(script)
    assert client.transport.writes == 1
    assert replies == b"".join(b":%d\r\n" % i for i in range(1, 1001))


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=25))
def test_replies_do_not_depend_on_how_input_is_split(cuts: list[int]) -> None:
    script = (b"SET a 1\r\n" + encode_command(["INCRBY", "a", "41"]) + b"GET a\r\n"
              + encode_command(["MSET", "x", "\r\n", "y", ""]) + b"MGET x y z\r\n"
              + encode_command(["ECHO", "e" * 100]) + b'ECHO "q\\x41"\r\nPING\r\n')

    def replies(chunks: list[bytes]) -> bytes:
        client = FakeClient(KVServer())
        out = bytearray()
        for chunk in chunks:
            out += client.send(chunk)
        return bytes(out)

    whole = replies([script])
    assert whole.startswith(b"+OK\r\n:42\r\n$2\r\n42\r\n+OK\r\n")
    assert whole.endswith(b"$2\r\nqA\r\n+PONG\r\n")
    assert replies([script[i : i + 1] for i in range(len(script))]) == whole
    points = sorted(set(cuts))
    pieces = [script[a:b] for a, b in zip([0, *points], [*points, len(script)], strict=True)]
    assert replies(pieces) == whole


def test_protocol_error_replies_and_closes(client: FakeClient) -> None:
    reply = client.send(b"PING\r\n*1\r\n$x\r\nPING\r\n")
    assert reply == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert client.transport.lost
    assert client.protocol._server.statistics().protocol_errors == 1


def test_unbalanced_quotes_reply_but_keep_the_connection(client: FakeClient) -> None:
    reply = client.send(b'ECHO "oops\r\nPING\r\n')
    assert reply == b"-ERR Protocol error: unbalanced quotes in request\r\n+PONG\r\n"
    assert not client.transport.is_closing()


def test_backpressure_pauses_reading_and_keeps_commands(
    fake: tuple[Reactor, FakeClock, KVServer],
) -> None:
    server = fake[2]
    client = FakeClient(server, high_water=64 * 1024)
    transport = client.transport
    value = b"v" * 100_000
    client.cmd("SET", "big", value)
    transport.feed(encode_command(["GET", "big"]) * 200)
    # the server stopped running commands once the transport paused it
    assert not transport.is_reading()
    bound = 64 * 1024 + FLUSH_SIZE + len(value) + 100
    assert len(transport.buffer) < bound
    received = bytearray()
    while transport.buffer:
        received += transport.take(50_000)  # a slow reader
        assert len(transport.buffer) < bound
    assert transport.is_reading()
    assert bytes(received) == (b"$100000\r\n" + value + b"\r\n") * 200


def test_server_validates_limits() -> None:
    with pytest.raises(ValueError, match="max_bulk_length"):
        KVServer(max_bulk_length=0)


def test_statistics_and_client_table(fake: tuple[Reactor, FakeClock, KVServer]) -> None:
    server = fake[2]
    one, two = FakeClient(server), FakeClient(server)
    one.cmd("SET", "a", "1", "EX", "100")
    assert b"id=1" in two.cmd("CLIENT", "LIST") and b"id=2" in two.cmd("CLIENT", "LIST")
    stats = server.statistics()
    assert (stats.keys, stats.expiring, stats.clients, stats.connections_total) == (1, 1, 2, 2)
    one.transport.lose()
    assert server.statistics().clients == 1
    assert isinstance(one.protocol, KVProtocol)


# -- over real sockets on the reactor -------------------------------------------------


class Served:
    """A KVServer on a reactor running in a background thread."""

    def __init__(self, server: KVServer | None = None, **listen: Any) -> None:
        self.reactor = Reactor()
        self.server = server if server is not None else KVServer(self.reactor)
        self.listener = self.reactor.listen_tcp("127.0.0.1", 0, self.server, **listen)
        self.port = self.listener.port
        self.thread = threading.Thread(target=self.reactor.run, name="kv-reactor", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Run ``fn`` on the reactor thread and return its result."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # pragma: no cover - reported to the caller
                future.set_exception(exc)

        self.reactor.call_soon_threadsafe(run)
        return future.result(timeout)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.call(condition):
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            time.sleep(0.01)

    def close(self) -> None:
        self.reactor.stop()
        self.thread.join(10)
        self.reactor.close()


@pytest.fixture
def served() -> Iterator[Served]:
    instance = Served()
    yield instance
    instance.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_client(served: Served, protocol: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=served.port, protocol=protocol,
                         client_name="tester", socket_timeout=20)
    try:
        assert client.ping()
        assert client.set("greeting", "hello", ex=100)
        assert client.get("greeting") == b"hello"
        assert 99 <= client.ttl("greeting") <= 100
        assert client.set("greeting", "x", nx=True) is None
        assert client.incr("counter") == 1
        assert client.incrby("counter", 9) == 10
        assert client.decr("counter") == 9
        assert client.mset({"a": "1", "b": "2"})
        assert client.mget("a", "b", "nope") == [b"1", b"2", None]
        assert sorted(client.keys("*")) == [b"a", b"b", b"counter", b"greeting"]
        assert client.exists("a", "nope") == 1
        assert client.delete("a", "b") == 2
        assert client.expire("counter", 50)
        assert client.pexpire("counter", 50_000)
        assert 49_000 <= client.pttl("counter") <= 50_000
        assert client.persist("counter")
        assert client.client_getname() == "tester" or client.client_getname() == b"tester"
        assert client.dbsize() == 2
        assert client.echo("hi") == b"hi"
        assert client.config_get("appendonly") in ({"appendonly": "no"},
                                                   {b"appendonly": b"no"})
        with pytest.raises(redis.ResponseError, match="value is not an integer"):
            client.incr("greeting")
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command("NOPE", "x")  # type: ignore[no-untyped-call]
        client.rpush("list", "x")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            client.get("list")
        pipe = client.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i)
            pipe.get(f"p{i}")
        results = pipe.execute()
        assert results[1::2] == [str(i).encode() for i in range(100)]
        transaction = client.pipeline()
        transaction.set("t", 1)
        transaction.incr("t")
        transaction.get("t")
        assert transaction.execute() == [True, 2, b"2"]
        assert client.flushdb()
        assert client.dbsize() == 0
    finally:
        client.close()


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_cli(served: Served) -> None:
    cli = redis_tool("redis-cli")

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(served.port), *args],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("PING") == "PONG\n"
    assert run("SET", "foo", "bar with spaces") == "OK\n"
    assert run("GET", "foo") == "bar with spaces\n"
    assert run("INCR", "n") == "1\n"
    assert run("EXPIRE", "n", "100") == "1\n"
    assert run("TTL", "n") == "100\n"
    assert run("KEYS", "f*") == "foo\n"
    assert run("GET", "nope") == "\n"
    assert run("--no-raw", "GET", "nope") == "(nil)\n"
    assert "wrong number of arguments for 'get' command" in run("GET")
    assert run("-3", "GET", "foo") == "bar with spaces\n"  # HELLO 3 first
    assert run("DBSIZE") == "2\n"
    # commands on stdin, many per connection
    assert run(stdin="SET a 1\nINCR a\nGET a\n") == "OK\n2\n2\n"


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_cli_pipe_mode(served: Served) -> None:
    cli = redis_tool("redis-cli")
    script = b"".join(encode_command(["SET", f"key:{i}", f"value:{i}"]) for i in range(1000))
    done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(served.port), "--pipe"],
                          input=script, capture_output=True, timeout=60, check=False)
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert "errors: 0, replies: 1000" in output
    assert served.call(lambda: len(served.server.store)) == 1000


@pytest.mark.timeout(TOOL_TIMEOUT)
@pytest.mark.parametrize("pipeline", [1, 16])
def test_redis_benchmark(served: Served, pipeline: int) -> None:
    benchmark = redis_tool("redis-benchmark")
    done = subprocess.run(
        [benchmark, "-h", "127.0.0.1", "-p", str(served.port), "-t", "ping,set,get",
         "-n", "2000", "-c", "20", "-P", str(pipeline), "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for test in ("PING_INLINE", "PING_MBULK", "SET", "GET"):
        assert f"{test}: " in output and "requests per second" in output, output
    # redis-benchmark 7 prints "Error from server: ..." and exits 1 on an error reply
    assert "rror" not in output, output
    assert served.call(lambda: served.server.statistics().protocol_errors) == 0


@pytest.mark.timeout(60)
def test_malformed_resp_gets_an_error_and_a_close(served: Served) -> None:
    with connect(served.port) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n")
        assert read_until_closed(sock) == (
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        )
    with connect(served.port) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n:1\r\n")
        assert read_until_closed(sock) == (
            b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n"
        )


@pytest.mark.timeout(60)
def test_oversize_bulk_and_array_refused_without_payload() -> None:
    served = Served(KVServer(max_bulk_length=1024, max_array_length=8))
    try:
        with connect(served.port) as sock:
            # only the header: the server must answer without waiting for 1 MB
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n")
            assert read_until_closed(sock) == b"-ERR Protocol error: invalid bulk length\r\n"
        with connect(served.port) as sock:
            sock.sendall(b"*9\r\n")
            assert read_until_closed(sock) == (
                b"-ERR Protocol error: invalid multibulk length\r\n"
            )
        with connect(served.port) as sock:  # at the limits: fine
            sock.sendall(encode_command([b"SET", b"k", b"v" * 1024]) + b"QUIT\r\n")
            assert read_until_closed(sock) == b"+OK\r\n+OK\r\n"
        served.wait_for(lambda: served.server.statistics().clients == 0)
        assert served.call(lambda: served.server.statistics().protocol_errors) == 2
    finally:
        served.close()


@pytest.mark.timeout(60)
def test_pipelining_1000_commands(served: Served) -> None:
    script = b"".join(encode_command(["SET", f"k{i}", f"v{i}"]) for i in range(1000))
    script += b"".join(encode_command(["GET", f"k{i}"]) for i in range(1000))
    expected = b"+OK\r\n" * 1000 + b"".join(
        b"$%d\r\nv%d\r\n" % (len(b"v%d" % i), i) for i in range(1000)
    )
    with connect(served.port) as sock:
        sock.sendall(script)
        assert read_exactly(sock, len(expected)) == expected
        sock.sendall(b"QUIT\r\n")
        assert read_until_closed(sock) == b"+OK\r\n"


@pytest.mark.timeout(60)
def test_inline_commands_over_a_socket(served: Served) -> None:
    with connect(served.port) as sock:
        sock.sendall(b'SET greeting "hello world"\r\nGET greeting\nECHO \'x\r\nQUIT\r\n')
        assert read_until_closed(sock) == (
            b"+OK\r\n$11\r\nhello world\r\n"
            b"-ERR Protocol error: unbalanced quotes in request\r\n+OK\r\n"
        )


@pytest.mark.timeout(60)
def test_slow_reader_pauses_reading_and_memory_stays_bounded() -> None:
    served = Served(high_water=64 * 1024)
    value = b"x" * 65536
    count = 300  # about 20 MB of replies
    try:
        with connect(served.port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(encode_command(["SET", "big", value]))
            assert read_exactly(sock, 5) == b"+OK\r\n"
            request = encode_command(["GET", "big"]) * count
            sender = threading.Thread(target=sock.sendall, args=(request,), daemon=True)
            sender.start()

            def paused() -> bool:
                (protocol,) = served.server.clients.values()
                transport = protocol._transport
                return transport is not None and not transport.is_reading()

            served.wait_for(paused)

            def buffered() -> int:
                rows = list(served.reactor.connections)
                return sum(row.write_buffer_size for row in rows)

            assert served.call(buffered) < 64 * 1024 + FLUSH_SIZE + 2 * len(value)
            expected = b"$65536\r\n" + value + b"\r\n"
            received = 0
            high = 0
            reads = 0
            while received < count * len(expected):
                chunk = sock.recv(256 * 1024)
                assert chunk
                received += len(chunk)
                reads += 1
                if reads % 8 == 0:  # look at the server's write buffer now and then
                    high = max(high, served.call(buffered))
            sender.join(10)
            assert received == count * len(expected)
            assert high < 64 * 1024 + FLUSH_SIZE + 2 * len(value)
    finally:
        served.close()


@pytest.mark.timeout(60)
def test_active_expiry_over_sockets(served: Served) -> None:
    with connect(served.port) as sock:
        sock.sendall(encode_command(["SET", "short", "1", "PX", "50"])
                     + encode_command(["SET", "long", "1", "EX", "100"]))
        assert read_exactly(sock, 10) == b"+OK\r\n+OK\r\n"
    # nobody reads "short": only the reactor timer can delete it
    served.wait_for(lambda: len(served.server.store) == 1)
    assert served.call(lambda: served.server.store.expired_keys) == 1


@pytest.mark.timeout(60)
def test_unbound_server_binds_to_the_reactor() -> None:
    served = Served(KVServer())
    try:
        with connect(served.port) as sock:
            sock.sendall(encode_command(["SET", "k", "v", "PX", "20"]))
            assert read_exactly(sock, 5) == b"+OK\r\n"
        assert served.call(lambda: served.server.store.loop) is served.reactor
        served.wait_for(lambda: len(served.server.store) == 0)
    finally:
        served.close()


# -- the same protocol class on asyncio -----------------------------------------------

SCRIPT = [
    ["PING"], ["SET", "k", "v"], ["GET", "k"], ["GET", "nope"], ["INCR", "n"],
    ["INCRBY", "n", "41"], ["DECR", "n"], ["MSET", "a", "1", "b", "2"], ["MGET", "a", "b", "x"],
    ["EXISTS", "a", "b", "x"], ["DEL", "a"], ["KEYS", "k"], ["SET", "e", "1", "EX", "100"],
    ["TTL", "e"], ["PERSIST", "e"], ["TTL", "e"], ["EXPIRE", "e", "100"], ["DBSIZE"],
    ["RPUSH", "l", "1", "2"], ["GET", "l"], ["LRANGE", "l", "0", "-1"], ["INCR", "k"],
    ["GET"], ["NOPE", "x"], ["SELECT", "0"], ["CONFIG", "GET", "save"], ["COMMAND", "COUNT"],
    ["MULTI"], ["SET", "m", "1"], ["INCR", "m"], ["EXEC"], ["HELLO", "3"], ["GET", "nope"],
    ["FLUSHDB"], ["DBSIZE"],
]


def _script_bytes() -> bytes:
    return (b"".join(encode_command(command) for command in SCRIPT)
            + b"PING inline\r\nECHO \"quoted word\"\r\nQUIT\r\n")


def _run_script_against(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(_script_bytes())
        return read_until_closed(sock)


@pytest.mark.timeout(60)
def test_same_replies_on_asyncio_and_on_the_reactor(served: Served) -> None:
    on_reactor = _run_script_against(served.port)

    async def on_asyncio() -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        server = KVServer()  # binds itself to the running asyncio loop
        listener = await loop.create_server(server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            replies = await asyncio.to_thread(_run_script_against, port)
            # active expiry on asyncio's call_at
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_command(["SET", "gone", "1", "PX", "30"]))
            assert await reader.readexactly(5) == b"+OK\r\n"
            writer.close()
            deadline = loop.time() + 20
            while len(server.store) and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert server.store.loop is loop
            return replies, len(server.store)
        finally:
            listener.close()
            await listener.wait_closed()

    replies, left = asyncio.run(on_asyncio())
    assert replies == on_reactor
    assert left == 0
    assert on_reactor.endswith(b"_\r\n+OK\r\n:0\r\n$6\r\ninline\r\n$11\r\nquoted word\r\n+OK\r\n")
    assert b"-ERR unknown command 'NOPE'" in on_reactor


# -- against a real redis-server, when one is installed ------------------------------

DIFF_SCRIPT = [
    ["FLUSHALL"], ["PING"], ["PING", "a", "b"], ["ECHO"], ["GET", "k"], ["SET", "k", "v"],
    ["SET", "k", "v", "NX", "XX"], ["SET", "k", "v", "EX", "0"], ["SET", "k", "v", "EX", "x"],
    ["SET", "k", "w", "XX", "GET"], ["SET", "k", "v", "EX", "10", "EX", "20"], ["TTL", "k"],
    ["INCR", "k"], ["SET", "n", "01"], ["INCR", "n"], ["SET", "n", "9223372036854775807"],
    ["INCR", "n"], ["DECRBY", "n", "-9223372036854775808"], ["MSET", "a", "1", "b"],
    ["MSET", "a", "1"], ["MGET", "a", "zz"], ["RPUSH", "L", "x", "y"], ["GET", "L"],
    ["LPOP", "L", "5"], ["LPOP", "L"], ["LPOP", "L", "2"], ["EXPIRE", "a", "100", "NX"],
    ["EXPIRE", "a", "50", "GT"], ["EXPIRE", "a", "10", "NX", "XX"], ["EXPIRE", "a", "1", "FOO"],
    ["TTL", "a"], ["PERSIST", "a"], ["TTL", "zz"], ["KEYS", "[a]"], ["KEYS", "\\a"],
    ["SELECT", "99"], ["SELECT", "x"], ["FOO", "bar", "baz"], ["CONFIG", "GET", "appendonly"],
    ["CONFIG", "FOO"], ["CLIENT", "SETNAME", "a b"], ["HELLO", "4"], ["AUTH", "x"],
    ["MULTI"], ["SET", "m", "1"], ["GET"], ["EXEC"], ["MULTI"], ["INCR", "m"], ["EXEC"],
    ["DISCARD"], ["HELLO", "3"], ["GET", "zz"], ["MGET", "zz"], ["CONFIG", "GET", "save"],
    ["FLUSHDB"], ["DBSIZE"],
]


def _read_reply(stream: Any) -> bytes:
    line: bytes = stream.readline()
    kind = line[:1]
    if kind in b"$=":
        size = int(line[1:-2])
        return line + (stream.read(size + 2) if size >= 0 else b"")
    if kind in b"*%~>":
        count = int(line[1:-2]) * (2 if kind == b"%" else 1)
        return line + b"".join(_read_reply(stream) for _ in range(max(count, 0)))
    return line


def _connect(sock: socket.socket, address: Any) -> None:
    """Connect, retrying a refusal for a while: redis-server's Unix socket path exists
    from its bind(), a moment before its listen() (one CI run under load hit that)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            sock.connect(address)
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _replies(address: Any, family: int) -> list[bytes]:
    with socket.socket(family) as sock:
        sock.settimeout(20)
        _connect(sock, address)
        stream = sock.makefile("rb")
        out = []
        for command in DIFF_SCRIPT:
            sock.sendall(encode_command(command))
            out.append(_read_reply(stream))
        return out


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_replies_match_a_real_redis_server(served: Served, tmp_path: Path) -> None:
    binary = redis_tool("redis-server")  # installed when missing, where possible
    path = str(tmp_path / "redis.sock")
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not Path(path).exists():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)
        expected = _replies(path, socket.AF_UNIX)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
            process.wait(10)
    actual = _replies(("127.0.0.1", served.port), socket.AF_INET)
    hello = DIFF_SCRIPT.index(["HELLO", "3"])
    for i, command in enumerate(DIFF_SCRIPT):
        if i == hello:  # the server version and the client id differ
            assert actual[i].startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
            continue
        assert actual[i] == expected[i], command


# -- the redis-tools helper -----------------------------------------------------------


def test_redis_tools_helper_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import redis_tools

    monkeypatch.setattr(redis_tools, "find_redis_tool", lambda name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(redis_tools, "_install_outcome", {})
    with pytest.raises(pytest.skip.Exception, match=r"redis-tools is not .* do not run as root"):
        redis_tools.redis_tool("redis-cli")
    assert redis_tools._install_outcome["redis-tools"]  # tried once; the reason is kept
    with pytest.raises(pytest.skip.Exception, match=r"redis-server is not .* do not run as root"):
        redis_tools.redis_tool("redis-server")
    with pytest.raises(ValueError, match="unknown tool"):
        redis_tools.redis_tool("redis-sentinel")
