"""Differential tests of the kv service against redis-server across requests: WATCH
with the change made by a second connection, and SCAN followed to its end.

The sequences of test_kv_differential.py run on one connection and compare SCAN only
from its start (each server's cursors are its own). Here a scan is followed, cursor by
cursor, to the end on each server, and the union of the keys it returned must be the
same; and a key watched by one connection is changed (or not) by another before the
first runs its transaction. The servers and the comparison rules are those of
test_kv_differential.py (kvdiffkit).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvdiffkit import IO_TIMEOUT, Servers, both_servers, normal, read_reply, same_within
from test_kv_differential import Arg, Renderer, Request, as_request, key, on_key

from handlers.framers.resp import encode_command

LONG = os.environ.get("REACTOR_LONG_FAULTS") == "1"
SETTINGS = settings(
    max_examples=1000 if LONG else 60,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETUP_TIMEOUT = 300  # seconds for a test that may be the first: installs redis-server
MAX_SCAN_CALLS = 2000  # a scan that has not ended by then never will


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with both_servers() as pair:
        yield pair


class Session:
    """One connection kept open: requests in, their replies read one by one."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(path)
        self.buffer = b""

    def call(self, data: bytes, replies: int) -> list[tuple[Any, bytes]]:
        """Send ``data``; return its ``replies`` replies (value tree, raw bytes)."""
        self.sock.sendall(data)
        out: list[tuple[Any, bytes]] = []
        while len(out) < replies:
            try:
                value, end = read_reply(self.buffer, 0)
            except (ValueError, AssertionError, IndexError):  # incomplete: read more
                chunk = self.sock.recv(65536)
                assert chunk, f"closed before {replies} replies: {out!r}"
                self.buffer += chunk
                continue
            out.append((value, self.buffer[:end]))
            self.buffer = self.buffer[end:]
        return out

    def command(self, *args: bytes) -> tuple[Any, bytes]:
        return self.call(encode_command(list(args)), 1)[0]

    def close(self) -> None:
        self.sock.close()


# -- WATCH across two connections ------------------------------------------------------


def _steps(k: bytes) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.booleans(),  # RESP3 for the watcher
        st.lists(on_key(k), max_size=3),  # the watcher's set-up
        st.lists(key, max_size=2),  # more keys watched
        st.lists(on_key(k), max_size=3),  # the other connection's commands
        st.lists(on_key(k), max_size=2),  # the watcher's transaction
    )


watch_cases = key.flatmap(lambda k: st.tuples(st.just(k), _steps(k)))


def _watch_run(path: str, k: bytes, steps: tuple[Any, ...],
               renderer: Renderer) -> list[tuple[Request, tuple[Any, bytes]]]:
    resp3, setup, more, others, queued = steps
    watcher, other = Session(path), Session(path)
    try:
        log = []

        def run(session: Session, args: list[Arg]) -> None:
            request = as_request(args, False)
            log.append((request, session.call(renderer.request(request), 1)[0]))

        run(watcher, [b"FLUSHALL"])
        if resp3:
            watcher.command(b"HELLO", b"3")
        for args in setup:
            run(watcher, args)
        run(watcher, [b"WATCH", k, *more])
        for args in others:
            run(other, args)
        run(watcher, [b"MULTI"])
        for args in queued:
            run(watcher, args)
        exec_request = as_request([b"EXEC"], False)
        exec_request.unordered = any(as_request(a, False).unordered for a in queued)
        exec_request.scan = any(as_request(a, False).scan for a in queued)
        log.append((exec_request, watcher.call(encode_command([b"EXEC"]), 1)[0]))
        return log
    finally:
        watcher.close()
        other.close()


@pytest.mark.timeout(SETUP_TIMEOUT)
@SETTINGS
@given(watch_cases)
def test_watch_across_connections_as_redis_server_does(
        servers: Servers, case: tuple[bytes, tuple[Any, ...]]) -> None:
    k, steps = case
    renderer = Renderer()
    theirs = _watch_run(servers.redis.path, k, steps, renderer)
    renderer.count = 0  # the same expiry times for both
    ours = _watch_run(servers.ours.path, k, steps, renderer)
    for (request, (t_value, t_raw)), (_, (o_value, o_raw)) in zip(theirs, ours, strict=True):
        if t_raw == o_raw:
            continue
        if request.unordered:
            t_value, o_value = normal(t_value, True), normal(o_value, True)
        assert same_within(o_value, t_value, request.timing, request.live_count,
                           request.scan), (
            f"{request.args!r}: redis-server {t_raw!r}, ours {o_raw!r}\n"
            f"case: {case!r}")


# -- SCAN to the end -------------------------------------------------------------------

KINDS = [b"string", b"hash", b"set", b"list", b"expired"]
names = st.sets(st.integers(0, 999).map(lambda i: b"key:%d" % i)
                | st.binary(min_size=1, max_size=3), max_size=250)
keyspace = names.flatmap(lambda ns: st.lists(st.sampled_from(KINDS), min_size=len(ns),
                                             max_size=len(ns)).map(
    lambda kinds: list(zip(sorted(ns), kinds, strict=True))))
match_option = st.sampled_from([[], [b"MATCH", b"*"], [b"MATCH", b"key:1*"], [b"MATCH", b"?"],
                                 [b"MATCH", b"*[0-4]"], [b"MATCH", b"nothing*"]])
# not TYPE none: redis-server 7.0 returns the keys whose time has passed and it has not
# deleted yet (a documented difference, in test_kv_differential.py)
type_option = st.sampled_from([[], [b"TYPE", b"string"], [b"TYPE", b"hash"], [b"TYPE", b"SET"],
                               [b"TYPE", b"list"], [b"TYPE", b"zset"]])
counts = st.lists(st.integers(1, 30) | st.sampled_from([1000, 2**63 - 1]), min_size=1,
                  max_size=4)


def _fill(session: Session, database: bytes, space: list[tuple[bytes, bytes]]) -> None:
    session.command(b"FLUSHALL")
    session.command(b"SELECT", database)
    commands = []
    for name, kind in space:
        commands.append({
            b"string": [b"SET", name, b"v"], b"hash": [b"HSET", name, b"f", b"v"],
            b"set": [b"SADD", name, b"m"], b"list": [b"RPUSH", name, b"x"],
            b"expired": [b"SET", name, b"v", b"PXAT", b"1"],
        }[kind])
    if commands:
        session.call(b"".join(encode_command(c) for c in commands), len(commands))


def _scan_all(session: Session, options: list[bytes], counts: list[int]) -> set[bytes]:
    cursor = b"0"
    found: set[bytes] = set()
    for call in range(MAX_SCAN_CALLS):
        count = b"%d" % counts[call % len(counts)]
        (kind, body), raw = session.command(b"SCAN", cursor, *options, b"COUNT", count)
        assert kind == b"*" and len(body) == 2, raw
        cursor = body[0][1]
        found.update(item for _, item in body[1][1])
        if cursor == b"0":
            return found
    raise AssertionError(f"no end of the scan after {MAX_SCAN_CALLS} calls")


@pytest.mark.timeout(SETUP_TIMEOUT)
@SETTINGS
@given(keyspace, match_option, type_option, counts, st.sampled_from([b"0", b"7"]))
def test_a_whole_scan_returns_the_keys_redis_server_returns(
        servers: Servers, space: list[tuple[bytes, bytes]], match: list[bytes],
        type_: list[bytes], count_list: list[int], database: bytes) -> None:
    unions = []
    for path in (servers.redis.path, servers.ours.path):
        session = Session(path)
        try:
            _fill(session, database, space)
            unions.append(_scan_all(session, match + type_, count_list))
        finally:
            session.close()
    theirs, ours = unions
    assert ours == theirs, (f"only redis-server: {sorted(theirs - ours)!r}, "
                            f"only ours: {sorted(ours - theirs)!r}")
