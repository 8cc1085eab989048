"""Tests of the kv service's hashes, sets, databases (SELECT), WATCH and SCAN.

Socket-free (the protocol on reactor.testing's FakeTransport, a fake clock) for what the
differential test against redis-server (tests/faults/test_kv_differential*.py) cannot
see: two connections at once, time passing, keys coming and going in the middle of a
scan, the work one call does. Then real clients over loopback: redis-py and
redis-benchmark.
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_tools import redis_tool
from test_kv import Served

import handlers.services.kv
from handlers.framers.resp import encode_command
from handlers.services.kv import (
    COMMANDS,
    DATABASES,
    KVServer,
    KVStore,
    ScanIndex,
    compile_glob,
)
from handlers.services.kv import scan as scan_module
from handlers.services.kv.scan import CHUNK, MAX_SCAN_COUNT, SYNC_BATCH
from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector, FakeTransport

NOT_INT = b"-ERR value is not an integer or out of range\r\n"
SYNTAX = b"-ERR syntax error\r\n"
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
TOOL_TIMEOUT = 300  # the first redis-tools test may install the package


class Client:
    """One connection of a KVServer, on an in-memory transport."""

    def __init__(self, server: KVServer, port: int = 4242, **extra: object) -> None:
        self.transport = FakeTransport(server(), peername=("198.51.100.7", port),
                                       high_water=1 << 30, extra=extra)

    def cmd(self, *args: bytes | str | int) -> bytes:
        self.transport.feed(encode_command(args))
        return self.transport.take()

    def close(self) -> None:
        self.transport.close()


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.reactor = Reactor(selector=FakeSelector(self.clock), clock=self.clock)
        self.server = KVServer(self.reactor)

    def client(self, port: int = 4242) -> Client:
        return Client(self.server, port)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of loop time pass, running the timers due."""
        self.clock.advance(seconds)
        self.reactor.run_once(0)


@pytest.fixture
def world() -> Iterator[World]:
    instance = World()
    yield instance
    instance.reactor.close()


@pytest.fixture
def client(world: World) -> Client:
    return world.client()


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def members_of(reply: bytes) -> set[bytes]:
    """The bulk strings of a flat array or set reply."""
    return set(re.findall(rb"\$\d+\r\n([^\r]*)\r\n", reply))


# -- hashes -----------------------------------------------------------------------------


def test_hash_commands(client: Client) -> None:
    assert client.cmd("HSET", "h", "f1", "a", "f2", "b") == b":2\r\n"
    assert client.cmd("HSET", "h", "f1", "A", "f3", "c") == b":1\r\n"  # new fields only
    assert client.cmd("HGET", "h", "f1") == bulk(b"A")
    assert client.cmd("HGET", "h", "nope") == b"$-1\r\n"
    assert client.cmd("HGET", "nokey", "f") == b"$-1\r\n"
    assert client.cmd("HMGET", "h", "f2", "nope", "f3") == (
        b"*3\r\n" + bulk(b"b") + b"$-1\r\n" + bulk(b"c"))
    assert client.cmd("HMGET", "nokey", "a", "b") == b"*2\r\n$-1\r\n$-1\r\n"
    assert client.cmd("HGETALL", "h") == (
        b"*6\r\n" + bulk(b"f1") + bulk(b"A") + bulk(b"f2") + bulk(b"b") + bulk(b"f3")
        + bulk(b"c"))
    assert client.cmd("HGETALL", "nokey") == b"*0\r\n"
    assert client.cmd("HLEN", "h") == b":3\r\n"
    assert client.cmd("HEXISTS", "h", "f2") == b":1\r\n"
    assert client.cmd("HEXISTS", "h", "f9") == b":0\r\n"
    assert client.cmd("TYPE", "h") == b"+hash\r\n"
    assert client.cmd("HMSET", "h", "f4", "d") == b"+OK\r\n"
    assert client.cmd("HDEL", "h", "f1", "nope", "f1") == b":1\r\n"
    assert client.cmd("HDEL", "nokey", "f") == b":0\r\n"
    assert client.cmd("HDEL", "h", "f2", "f3", "f4") == b":3\r\n"
    # emptied: gone, as in Redis
    assert client.cmd("EXISTS", "h") == b":0\r\n"
    assert client.cmd("TYPE", "h") == b"+none\r\n"
    assert client.cmd("HLEN", "h") == b":0\r\n"


def test_hash_replies_in_resp3(client: Client) -> None:
    client.cmd("HELLO", "3")
    client.cmd("HSET", "h", "f", "v")
    assert client.cmd("HGETALL", "h") == b"%1\r\n" + bulk(b"f") + bulk(b"v")
    assert client.cmd("HGETALL", "nokey") == b"%0\r\n"
    assert client.cmd("HGET", "h", "nope") == b"_\r\n"
    assert client.cmd("HMGET", "h", "f", "nope") == b"*2\r\n" + bulk(b"v") + b"_\r\n"


def test_hash_arity_errors_name_the_command(client: Client) -> None:
    assert client.cmd("HSET", "h", "f") == (
        b"-ERR wrong number of arguments for 'hset' command\r\n")
    assert client.cmd("HSET", "h", "f", "v", "g") == (
        b"-ERR wrong number of arguments for 'hset' command\r\n")
    assert client.cmd("HMSET", "h", "f", "v", "g") == (
        b"-ERR wrong number of arguments for 'hmset' command\r\n")
    assert client.cmd("hget", "h") == b"-ERR wrong number of arguments for 'hget' command\r\n"
    assert client.cmd("HDEL", "h") == b"-ERR wrong number of arguments for 'hdel' command\r\n"
    assert client.cmd("EXISTS", "h") == b":0\r\n"  # nothing was created


def test_hincrby_at_the_64_bit_edges(client: Client) -> None:
    assert client.cmd("HINCRBY", "h", "n", "9223372036854775807") == b":9223372036854775807\r\n"
    assert client.cmd("HINCRBY", "h", "n", "1") == (
        b"-ERR increment or decrement would overflow\r\n")
    assert client.cmd("HINCRBY", "h", "n", "-9223372036854775808") == b":-1\r\n"
    assert client.cmd("HINCRBY", "h", "n", "-9223372036854775808") == (
        b"-ERR increment or decrement would overflow\r\n")
    assert client.cmd("HGET", "h", "n") == bulk(b"-1")
    # the increment must be a 64-bit integer written plainly
    for bad in ("9223372036854775808", "-9223372036854775809", "1.5", "", "01", " 1",
                "+1", "x", "9" * 100):
        assert client.cmd("HINCRBY", "h", "n", bad) == NOT_INT, bad
    client.cmd("HSET", "h", "s", "abc", "z", "007")
    assert client.cmd("HINCRBY", "h", "s", "1") == b"-ERR hash value is not an integer\r\n"
    assert client.cmd("HINCRBY", "h", "z", "1") == b"-ERR hash value is not an integer\r\n"
    # a refused increment creates nothing
    assert client.cmd("HINCRBY", "new", "f", "x") == NOT_INT
    assert client.cmd("EXISTS", "new") == b":0\r\n"
    assert client.cmd("HINCRBY", "new", "f", "-5") == b":-5\r\n"


# -- sets -------------------------------------------------------------------------------


def test_set_commands(client: Client) -> None:
    assert client.cmd("SADD", "s", "a", "b", "a") == b":2\r\n"
    assert client.cmd("SADD", "s", "b", "c") == b":1\r\n"
    assert client.cmd("SCARD", "s") == b":3\r\n"
    reply = client.cmd("SMEMBERS", "s")
    assert reply.startswith(b"*3\r\n") and members_of(reply) == {b"a", b"b", b"c"}
    assert client.cmd("SISMEMBER", "s", "a") == b":1\r\n"
    assert client.cmd("SISMEMBER", "s", "z") == b":0\r\n"
    assert client.cmd("SISMEMBER", "nokey", "z") == b":0\r\n"
    assert client.cmd("TYPE", "s") == b"+set\r\n"
    assert client.cmd("SMEMBERS", "nokey") == b"*0\r\n"
    assert client.cmd("SREM", "s", "a", "z") == b":1\r\n"
    assert client.cmd("SREM", "nokey", "a") == b":0\r\n"
    assert client.cmd("SREM", "s", "b", "c") == b":2\r\n"
    assert client.cmd("EXISTS", "s") == b":0\r\n"
    assert client.cmd("SCARD", "s") == b":0\r\n"
    client.cmd("HELLO", "3")
    client.cmd("SADD", "s", "x")
    assert client.cmd("SMEMBERS", "s") == b"~1\r\n" + bulk(b"x")
    assert client.cmd("SMEMBERS", "nokey") == b"~0\r\n"


def test_wrong_types_are_refused(client: Client) -> None:
    client.cmd("SET", "str", "v")
    client.cmd("HSET", "h", "f", "v")
    client.cmd("SADD", "s", "m")
    client.cmd("RPUSH", "l", "x")
    for key in ("str", "s", "l"):
        for args in (("HSET", key, "f", "v"), ("HGET", key, "f"), ("HMGET", key, "f"),
                     ("HDEL", key, "f"), ("HGETALL", key), ("HINCRBY", key, "f", "1"),
                     ("HEXISTS", key, "f"), ("HLEN", key), ("HMSET", key, "f", "v")):
            assert client.cmd(*args) == WRONGTYPE, args
    for key in ("str", "h", "l"):
        for args in (("SADD", key, "m"), ("SREM", key, "m"), ("SMEMBERS", key),
                     ("SISMEMBER", key, "m"), ("SCARD", key)):
            assert client.cmd(*args) == WRONGTYPE, args
    for key in ("h", "s"):
        assert client.cmd("GET", key) == WRONGTYPE
        assert client.cmd("LPUSH", key, "x") == WRONGTYPE
    assert [client.cmd("TYPE", k) for k in ("str", "h", "s", "l", "none")] == [
        b"+string\r\n", b"+hash\r\n", b"+set\r\n", b"+list\r\n", b"+none\r\n"]


def test_new_commands_are_listed_with_their_arity() -> None:
    arities = {"hset": -4, "hget": 3, "hmget": -3, "hdel": -3, "hgetall": 2, "hincrby": 4,
               "hexists": 3, "hlen": 2, "sadd": -3, "srem": -3, "smembers": 2,
               "sismember": 3, "scard": 2, "scan": -2, "watch": -2, "unwatch": 1}
    for name, arity in arities.items():
        assert COMMANDS[name.encode()].arity == arity
        assert COMMANDS[name.upper().encode()] is COMMANDS[name.encode()]


# -- databases --------------------------------------------------------------------------


def test_select_gives_each_connection_its_database(world: World) -> None:
    one, two = world.client(1), world.client(2)
    assert one.cmd("SET", "k", "zero") == b"+OK\r\n"
    assert two.cmd("SELECT", "15") == b"+OK\r\n"
    assert two.cmd("GET", "k") == b"$-1\r\n"
    assert two.cmd("SET", "k", "fifteen") == b"+OK\r\n"
    assert one.cmd("GET", "k") == bulk(b"zero")
    assert two.cmd("GET", "k") == bulk(b"fifteen")
    assert two.cmd("DBSIZE") == b":1\r\n"
    assert two.cmd("KEYS", "*") == b"*1\r\n" + bulk(b"k")
    assert b"db=15 " in two.cmd("CLIENT", "INFO")
    info = one.cmd("INFO", "keyspace")
    assert b"db0:keys=1,expires=0" in info and b"db15:keys=1,expires=0" in info
    # FLUSHDB empties the connection's database only, FLUSHALL all of them
    assert two.cmd("FLUSHDB") == b"+OK\r\n"
    assert one.cmd("GET", "k") == bulk(b"zero")
    two.cmd("SET", "k", "again")
    assert one.cmd("FLUSHALL") == b"+OK\r\n"
    assert one.cmd("DBSIZE") == two.cmd("DBSIZE") == b":0\r\n"
    assert one.cmd("CONFIG", "GET", "databases") == b"*2\r\n" + bulk(b"databases") + bulk(b"16")
    assert world.server.statistics().keys == 0


def test_select_refuses_what_redis_refuses(client: Client) -> None:
    assert DATABASES == 16
    for index in range(DATABASES):
        assert client.cmd("SELECT", str(index)) == b"+OK\r\n"
    out_of_range = b"-ERR DB index is out of range\r\n"
    assert client.cmd("SELECT", "16") == out_of_range
    assert client.cmd("SELECT", "-1") == out_of_range
    assert client.cmd("SELECT", "2147483647") == out_of_range
    int_range = b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"
    assert client.cmd("SELECT", "2147483648") == int_range
    assert client.cmd("SELECT", str(2**63 - 1)) == int_range
    assert client.cmd("SELECT", str(2**63)) == NOT_INT
    for bad in ("x", "", "01", "1.0", " 1"):
        assert client.cmd("SELECT", bad) == NOT_INT
    assert b"db=15 " in client.cmd("CLIENT", "INFO")  # a refused SELECT changes nothing


def test_expiry_runs_in_every_database(world: World, client: Client) -> None:
    client.cmd("SELECT", "3")
    client.cmd("SET", "k", "v", "PX", "500")
    client.cmd("SELECT", "0")
    client.cmd("SET", "k", "v", "PX", "900")
    world.advance(0.6)  # active expiry: nobody reads either key
    assert len(world.server.databases[3]) == 0
    assert len(world.server.databases[0]) == 1
    world.advance(0.5)
    assert world.server.statistics().keys == 0
    assert world.server.statistics().expired_keys == 2


def test_unbound_server_binds_every_database() -> None:
    clock = FakeClock()
    reactor = Reactor(selector=FakeSelector(clock), clock=clock)
    try:
        server = KVServer()
        one = Client(server, connection=SimpleNamespace(reactor=reactor))
        assert all(store.loop is reactor for store in server.databases)
        one.cmd("SELECT", "9")
        one.cmd("SET", "k", "v", "PX", "100")
        clock.advance(0.2)
        reactor.run_once(0)
        assert len(server.databases[9]) == 0
    finally:
        reactor.close()


# -- WATCH ------------------------------------------------------------------------------

NIL = b"*-1\r\n"


def run_transaction(client: Client) -> bytes:
    assert client.cmd("MULTI") == b"+OK\r\n"
    assert client.cmd("INCR", "counter") == b"+QUEUED\r\n"
    return client.cmd("EXEC")


@pytest.mark.parametrize("change", [
    ("SET", "k", "other"), ("DEL", "k"), ("EXPIRE", "k", "100"), ("PERSIST", "k"),
    ("APPEND", "k", "x"), ("GETDEL", "k"), ("RENAME-BY-HSET",), ("FLUSHDB",),
    ("FLUSHALL",), ("SET", "k", "v", "PXAT", "1"),
])
def test_a_change_by_another_connection_fails_exec(world: World,
                                                   change: tuple[str, ...]) -> None:
    watcher, other = world.client(1), world.client(2)
    watcher.cmd("SET", "k", "v", "EX", "1000")
    assert watcher.cmd("WATCH", "k") == b"+OK\r\n"
    if change == ("RENAME-BY-HSET",):
        other.cmd("DEL", "k")
        other.cmd("HSET", "k", "f", "v")
    else:
        other.cmd(*change)
    assert run_transaction(watcher) == NIL
    assert watcher.cmd("GET", "counter") == b"$-1\r\n"  # nothing ran
    # EXEC unwatched: the next transaction runs
    assert run_transaction(watcher) == b"*1\r\n:1\r\n"


@pytest.mark.parametrize("change", [
    ("HSET", "k", "f", "2"), ("HDEL", "k", "f"), ("HINCRBY", "k", "f", "1"),
    ("SADD", "s", "new"), ("SREM", "s", "m"), ("LPUSH", "l", "x"), ("RPOP", "l"),
    ("LPOP", "l", "0"),
])
def test_collections_changed_in_place_fail_exec(world: World,
                                                change: tuple[str, ...]) -> None:
    watcher, other = world.client(1), world.client(2)
    watcher.cmd("HSET", "k", "f", "1")
    watcher.cmd("SADD", "s", "m")
    watcher.cmd("RPUSH", "l", "a", "b")
    watcher.cmd("WATCH", "k", "s", "l")
    other.cmd(*change)
    assert run_transaction(watcher) == NIL


@pytest.mark.parametrize("no_change", [
    ("GET", "k"), ("SET", "k", "v", "NX"), ("SET", "other", "v"), ("DEL", "nokey"),
    ("SADD", "s", "m"), ("SREM", "s", "absent"), ("HDEL", "h", "absent"),
    ("EXPIRE", "k", "100", "NX"), ("SELECT", "1"), ("HGETALL", "h"), ("SCAN", "0"),
])
def test_reads_and_writes_that_change_nothing_let_exec_run(
        world: World, no_change: tuple[str, ...]) -> None:
    watcher, other = world.client(1), world.client(2)
    watcher.cmd("SET", "k", "v", "EX", "1000")
    watcher.cmd("SADD", "s", "m")
    watcher.cmd("HSET", "h", "f", "v")
    watcher.cmd("WATCH", "k", "s", "h", "nokey")
    other.cmd(*no_change)
    assert run_transaction(watcher) == b"*1\r\n:1\r\n"


def test_watch_is_per_database(world: World) -> None:
    watcher, other = world.client(1), world.client(2)
    watcher.cmd("SELECT", "2")
    watcher.cmd("WATCH", "k")
    other.cmd("SET", "k", "in db 0")
    assert run_transaction(watcher) == b"*1\r\n:1\r\n"
    watcher.cmd("WATCH", "k")
    watcher.cmd("SELECT", "0")  # the watch stays on database 2's key
    other.cmd("SELECT", "2")
    other.cmd("SET", "k", "in db 2")
    assert run_transaction(watcher) == NIL


def test_expiry_of_a_watched_key_fails_exec(world: World) -> None:
    watcher = world.client(1)
    # lazily: nobody read the key; EXEC sees its time has passed
    watcher.cmd("SET", "lazy", "v", "PX", "100")
    watcher.cmd("WATCH", "lazy")
    world.clock.advance(0.2)
    assert run_transaction(watcher) == NIL
    # actively: the expiry timer deletes it
    watcher.cmd("SET", "active", "v", "PX", "100")
    watcher.cmd("WATCH", "active")
    world.advance(0.2)
    assert len(world.server.store) == 0  # deleted by the timer, not by a read
    assert run_transaction(watcher) == NIL
    # a key that had expired before WATCH is absent, not changed
    watcher.cmd("SET", "gone", "v", "PX", "100")
    world.clock.advance(0.2)
    watcher.cmd("WATCH", "gone")
    assert run_transaction(watcher) == b"*1\r\n:1\r\n"


def test_watch_rules(world: World, client: Client) -> None:
    other = world.client(2)
    assert client.cmd("WATCH") == b"-ERR wrong number of arguments for 'watch' command\r\n"
    # WATCH inside MULTI: an error that does not abort the transaction
    client.cmd("MULTI")
    assert client.cmd("WATCH", "k") == b"-ERR WATCH inside MULTI is not allowed\r\n"
    assert client.cmd("INCR", "counter") == b"+QUEUED\r\n"
    assert client.cmd("EXEC") == b"*1\r\n:1\r\n"
    # UNWATCH forgets; inside MULTI it is queued
    client.cmd("WATCH", "k")
    assert client.cmd("UNWATCH") == b"+OK\r\n"
    other.cmd("SET", "k", "1")
    assert run_transaction(client) == b"*1\r\n:2\r\n"
    client.cmd("WATCH", "k")
    client.cmd("MULTI")
    assert client.cmd("UNWATCH") == b"+QUEUED\r\n"
    other.cmd("SET", "k", "2")
    assert client.cmd("EXEC") == NIL
    # DISCARD unwatches
    client.cmd("WATCH", "k")
    other.cmd("SET", "k", "3")
    client.cmd("MULTI")
    assert client.cmd("DISCARD") == b"+OK\r\n"
    assert run_transaction(client) == b"*1\r\n:3\r\n"
    # a queued error wins over a change: EXECABORT, and the watch is gone
    client.cmd("WATCH", "k")
    other.cmd("SET", "k", "4")
    client.cmd("MULTI")
    client.cmd("GET")
    assert client.cmd("EXEC").startswith(b"-EXECABORT")
    assert run_transaction(client) == b"*1\r\n:4\r\n"
    # EXEC refused for its arguments also unwatches
    client.cmd("WATCH", "k")
    other.cmd("SET", "k", "5")
    assert client.cmd("EXEC", "x").startswith(b"-EXECABORT")
    assert run_transaction(client) == b"*1\r\n:5\r\n"
    # RESP3's nil
    client.cmd("HELLO", "3")
    client.cmd("WATCH", "k")
    other.cmd("SET", "k", "6")
    assert run_transaction(client) == b"_\r\n"


def test_watches_are_forgotten(world: World) -> None:
    store = world.server.store
    watcher = world.client(1)
    watcher.cmd("WATCH", "a", "b", "a")
    assert store.watched == 2
    run_transaction(watcher)
    assert store.watched == 0
    watcher.cmd("WATCH", "a")
    watcher.cmd("SELECT", "5")
    watcher.cmd("WATCH", "a")
    assert store.watched == world.server.databases[5].watched == 1
    watcher.close()  # the connection ends: nothing is left behind
    assert store.watched == world.server.databases[5].watched == 0


# -- SCAN -------------------------------------------------------------------------------


def scan_reply(reply: bytes) -> tuple[int, list[bytes]]:
    match = re.match(rb"\*2\r\n\$\d+\r\n(\d+)\r\n\*(\d+)\r\n", reply)
    assert match, reply
    keys = re.findall(rb"\$\d+\r\n([^\r]*)\r\n", reply[match.end():])
    assert len(keys) == int(match.group(2))
    return int(match.group(1)), keys


def full_scan(client: Client, *options: str) -> tuple[list[bytes], int]:
    """Every key a SCAN returns, cursor 0 to 0, and how many calls it took."""
    cursor, keys, calls = 0, [], 0
    while True:
        cursor, found = scan_reply(client.cmd("SCAN", cursor, *options))
        keys.extend(found)
        calls += 1
        if cursor == 0:
            return keys, calls


def test_scan_returns_every_key_with_its_filters(client: Client) -> None:
    assert scan_reply(client.cmd("SCAN", "0")) == (0, [])
    client.cmd("MSET", "s1", "v", "s2", "v", "t1", "v")
    client.cmd("HSET", "h1", "f", "v")
    client.cmd("SADD", "set1", "m")
    client.cmd("RPUSH", "l1", "x")
    keys, _ = full_scan(client)
    assert sorted(keys) == [b"h1", b"l1", b"s1", b"s2", b"set1", b"t1"]
    assert sorted(full_scan(client, "MATCH", "s*")[0]) == [b"s1", b"s2", b"set1"]
    assert full_scan(client, "TYPE", "HASH")[0] == [b"h1"]
    assert full_scan(client, "TYPE", "set", "MATCH", "s*")[0] == [b"set1"]
    assert full_scan(client, "TYPE", "zset")[0] == []
    keys, calls = full_scan(client, "COUNT", "1")
    assert sorted(keys) == [b"h1", b"l1", b"s1", b"s2", b"set1", b"t1"] and calls >= 6


def test_scan_skips_expired_keys(world: World, client: Client) -> None:
    client.cmd("SET", "old", "v", "PX", "100")
    client.cmd("SET", "new", "v")
    world.clock.advance(0.2)
    assert full_scan(client)[0] == [b"new"]
    assert len(world.server.store) == 1  # the expired key was deleted on the way


def test_scan_arguments_at_their_extremes(client: Client) -> None:
    client.cmd("SET", "k", "v")
    invalid = b"-ERR invalid cursor\r\n"
    for cursor in ("x", " 0", "0 ", "\t1", "1.5", "0x1", "+", "-", str(2**64),
                   "-" + str(2**64), "9" * 5000):
        assert client.cmd("SCAN", cursor) == invalid, cursor
    # what C's strtoul accepts, as redis-server does: a sign, leading zeros, nothing
    for cursor in ("", "0", "+0", "-0", "000", "0\x00junk"):
        assert scan_reply(client.cmd("SCAN", cursor)) == (0, [b"k"]), cursor
    for cursor in (str(2**64 - 1), "-1", "-" + str(2**64 - 1), "0" * 5000 + "1"):
        assert client.cmd("SCAN", cursor).startswith(b"*2\r\n"), cursor
    for count in ("0", "-1", str(-2**63)):
        assert client.cmd("SCAN", "0", "COUNT", count) == SYNTAX, count
    for count in (str(2**63), "x", "1.0", ""):
        assert client.cmd("SCAN", "0", "COUNT", count) == NOT_INT, count
    assert scan_reply(client.cmd("SCAN", "0", "COUNT", str(2**63 - 1))) == (0, [b"k"])
    for options in (("MATCH",), ("COUNT",), ("TYPE",), ("BOGUS", "1"), ("MATCH", "*", "x")):
        assert client.cmd("SCAN", "0", *options) == SYNTAX, options
    # options are read in order: the first bad one decides the error
    assert client.cmd("SCAN", "0", "COUNT", "x", "BOGUS") == NOT_INT
    assert client.cmd("SCAN", "0", "BOGUS", "COUNT", "x") == SYNTAX
    assert client.cmd("SCAN", "x", "COUNT", "x") == invalid


def test_scan_does_bounded_work_whatever_count_says(client: Client) -> None:
    total = 3 * MAX_SCAN_COUNT + 5
    client.cmd("MSET", *[f"k{i}" for i in range(total) for _ in (0, 1)])
    cursor, keys = scan_reply(client.cmd("SCAN", "0", "COUNT", str(2**63 - 1)))
    assert len(keys) == MAX_SCAN_COUNT and cursor != 0
    found, calls = full_scan(client, "COUNT", str(2**63 - 1))
    assert sorted(found) == sorted(f"k{i}".encode() for i in range(total)) and calls == 4
    # a pattern that matches nothing still costs at most the same per call
    found, calls = full_scan(client, "MATCH", "nothing*", "COUNT", "100000")
    assert found == [] and calls == 4


# The SCAN guarantee, with keys coming and going between the calls of a scan: every key
# present from its start to its end is returned at least once, and the scan ends.
steps = st.lists(st.tuples(
    st.integers(1, 50),  # COUNT of this call
    st.lists(st.integers(0, 400), max_size=60),  # keys deleted before the next call
    st.lists(st.integers(0, 400), max_size=60),  # keys added before the next call
    st.booleans(),  # expire a batch of keys too
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 400), max_size=400), steps, st.sampled_from([1, 3, 8]))
def test_scan_returns_every_key_present_throughout(initial: set[int],
                                                   plan: list[tuple[int, list[int], list[int],
                                                                    bool]],
                                                   chunk_bits: int) -> None:
    world = World()
    # small chunks: many emptied and dropped, as a big keyspace has
    with mock.patch.object(scan_module, "CHUNK_BITS", chunk_bits), \
            mock.patch.object(scan_module, "CHUNK", 1 << chunk_bits):
        run_scan_plan(world, initial, plan)


def run_scan_plan(world: World, initial: set[int],
                  plan: list[tuple[int, list[int], list[int], bool]]) -> None:
    try:
        client = world.client()
        for i in sorted(initial):
            client.cmd("SET", f"k{i}", "v")
        present_throughout = {f"k{i}".encode() for i in initial}
        returned: list[bytes] = []
        cursor = 0
        for count, deleted, added, expire in [*plan, *[(1000, [], [], False)] * 400]:
            cursor, keys = scan_reply(client.cmd("SCAN", cursor, "COUNT", count))
            returned.extend(keys)
            if cursor == 0:
                break
            for i in deleted:
                client.cmd("DEL", f"k{i}")
                present_throughout.discard(f"k{i}".encode())
            for i in added:
                client.cmd("SET", f"k{i}", "again")  # a deleted key comes back at the end
            if expire:
                for i in deleted:
                    client.cmd("SET", f"x{i}", "v", "PX", "1")
                world.advance(0.01)
        assert cursor == 0, "the scan did not end"
        assert present_throughout <= set(returned)
        live = set(world.server.store.keys())
        assert set(returned) <= live | {f"k{i}".encode() for i in range(401)} | {
            f"x{i}".encode() for i in range(401)}
    finally:
        world.reactor.close()


def test_scan_index_keeps_slots_and_frees_memory() -> None:
    store = KVStore()
    index = store.scan_index
    for i in range(10 * CHUNK):
        store.set(b"k%d" % i, b"v")
    cursor, first = index.scan(0, 50)
    assert first == [b"k%d" % i for i in range(50)]
    # deleting keys before and after the cursor moves no other key
    for i in range(0, 10 * CHUNK, 2):
        store.delete(b"k%d" % i)
    cursor, second = index.scan(cursor, 50)
    assert second == [b"k%d" % i for i in range(51, 151, 2)]
    # emptied chunks go, and so do their numbers once they outnumber the rest
    for i in range(1, 10 * CHUNK, 2):
        store.delete(b"k%d" % i)
    assert index.numbered == 0 and index.chunks <= 10
    for round_ in range(200):
        for i in range(CHUNK):
            store.set(b"r%d-%d" % (round_, i), b"v")
        index.scan(0, 1)
        for i in range(CHUNK):
            store.delete(b"r%d-%d" % (round_, i))
    assert index.chunks <= 64 + 2
    # a scan of an emptied store ends; an old cursor too
    store.set(b"a", b"v")
    index.scan(0, 1)
    store.flush()
    assert index.scan(cursor, 10) == (0, [])
    assert ScanIndex({}).scan(2**64 - 1, 10) == (0, [])


def test_scan_gives_slots_a_batch_at_a_time() -> None:
    store = KVStore()
    total = 3 * SYNC_BATCH + 7
    for i in range(total):
        store.set(b"k%d" % i, b"v")
    index = store.scan_index
    cursor, keys = index.scan(0, 10)
    assert index.numbered == SYNC_BATCH and cursor != 0 and len(keys) == 10
    found = set(keys)
    calls = 1
    while cursor:
        cursor, keys = index.scan(cursor, MAX_SCAN_COUNT)
        found.update(keys)
        calls += 1
    assert len(found) == total and index.numbered == total
    assert calls <= total // MAX_SCAN_COUNT + 5


def test_scan_costs_nothing_until_used() -> None:
    store = KVStore()
    for i in range(1000):
        store.set(b"k%d" % i, b"v")
        store.delete(b"k%d" % i)
    assert store.scan_index.numbered == store.scan_index.chunks == 0


def test_a_huge_match_pattern_costs_memory_in_proportion(client: Client) -> None:
    pattern = b"[k]" * 350_000 + b"*"  # 1 MiB: as many classes, all the same
    client.cmd("SET", "k" * 350_000 + "tail", "v")
    tracemalloc.start()
    try:
        assert full_scan(client, "MATCH", pattern)[0] == [b"k" * 350_000 + b"tail"]
        assert client.cmd("KEYS", pattern).startswith(b"*1\r\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * len(pattern)  # one table for the one class; 256 bytes each before
    assert compile_glob(pattern) is not compile_glob(pattern)  # not kept after the call
    assert compile_glob(b"k*") is compile_glob(b"k*")


# -- no Python reprs in what users read -------------------------------------------------

# b'...' or b"..." (Python's bytes), \xNN escapes, U+FFFD (bytes decoded with "replace")
REPR = re.compile(rb"""\bb['"]|\\x[0-9a-f]{2}|\xef\xbf\xbd""")


def test_error_replies_and_logs_have_no_python_reprs(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    names = sorted({command.name for command in COMMANDS.values()} - {"quit"})
    awkward = [b"\xff\xfe", b"x\x00y", b"-1", b"9" * 30, b"", b"\xc3("]
    client.cmd("SET", "str", "v")
    client.cmd("HSET", "h", "f", "\xff")
    for name in names:
        for count in range(4):
            for arg in awkward:
                for key in (b"str", b"h", arg):
                    reply = client.cmd(name, *([key] + [arg] * count)[:count])
                    if reply.startswith(b"-"):
                        assert not REPR.search(reply), (name, count, arg, reply)
        client.cmd("DISCARD")
    server = KVServer()
    with caplog.at_level(logging.INFO, logger="handlers.kv"):
        for bad in (b"*\xff\r\n", b"*1\r\n$\x01\x02\r\n", b"*1\r\n$-9x\r\n"):
            transport = FakeTransport(server(), peername=("2001:db8::1", 6379, 0, 0))
            transport.feed(bad)
            assert b"Protocol error" in transport.take()
    assert caplog.messages
    for message in caplog.messages:
        assert "[2001:db8::1]:6379" in message
        assert "b'" not in message and "('" not in message, message


def test_no_repr_in_the_text_of_errors_and_log_lines() -> None:
    # the grep, as a test: nothing that builds a reply or a log line uses repr()
    package = Path(handlers.services.kv.__file__).parent
    for path in [*package.glob("*.py"), package.parent.parent / "framers" / "resp.py"]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FormattedValue):
                assert node.conversion != ord("r"), f"{path}:{node.lineno}: !r"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "repr", f"{path}:{node.lineno}: repr()"


# -- real clients -----------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[Served]:
    instance = Served()
    yield instance
    instance.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_hashes_sets_scan_and_watch(served: Served, protocol: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=served.port, protocol=protocol,
                         socket_timeout=20)
    other = redis.Redis(host="127.0.0.1", port=served.port, protocol=protocol,
                        socket_timeout=20)
    try:
        assert client.hset("h", mapping={"a": "1", "b": "2"}) == 2
        assert client.hget("h", "a") == b"1"
        assert client.hmget("h", ["a", "nope"]) == [b"1", None]
        assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}
        assert client.hincrby("h", "a", 41) == 42
        assert client.hexists("h", "b") and client.hlen("h") == 2
        assert client.hdel("h", "a", "b") == 2 and not client.exists("h")
        assert client.sadd("s", "x", "y") == 2
        assert client.smembers("s") == {b"x", b"y"}
        assert client.sismember("s", "x") and client.scard("s") == 2
        assert client.srem("s", "x") == 1
        assert client.type("s") in (b"set", "set")
        client.mset({f"key:{i}": i for i in range(300)})
        assert len(set(client.scan_iter(match="key:*", count=7))) == 300
        assert set(client.scan_iter(_type="SET")) == {b"s"}
        db1 = redis.Redis(host="127.0.0.1", port=served.port, db=1, protocol=protocol,
                          socket_timeout=20)
        try:
            assert db1.dbsize() == 0 and db1.set("only-in-1", "v")
            assert client.get("only-in-1") is None
        finally:
            db1.close()
        with client.pipeline() as pipe:
            pipe.watch("balance")
            other.set("balance", 100)  # another connection changes it
            pipe.multi()
            pipe.incr("balance")
            with pytest.raises(redis.WatchError):
                pipe.execute()

        def add_one(pipe: redis.client.Pipeline) -> None:
            value = int(pipe.get("balance") or 0)
            pipe.multi()
            pipe.set("balance", value + 1)

        client.transaction(add_one, "balance")
        assert client.get("balance") == b"101"
    finally:
        client.close()
        other.close()


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_benchmark_hset_and_sadd(served: Served) -> None:
    benchmark = redis_tool("redis-benchmark")
    done = subprocess.run(
        [benchmark, "-h", "127.0.0.1", "-p", str(served.port), "-t", "hset,sadd",
         "-n", "2000", "-r", "1000", "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for test in ("HSET", "SADD"):
        assert f"{test}: " in output and "requests per second" in output, output
    assert "rror" not in output, output  # redis-benchmark 7 stops at an error reply
    stats = served.call(served.server.statistics)
    assert stats.protocol_errors == 0 and stats.keys == 2  # one hash, one set
