"""Differential testing of the kv service against the real thing: redis-server.

Hypothesis generates sequences of requests over the commands handlers.services.kv supports --
well formed, with wrong arities, wrong types, keys from a small alphabet so that they
collide, values at the 64-bit edges, expiry times at their extremes, inline commands,
and as the last request something malformed -- and every sequence is sent as raw bytes
over a Unix socket to a redis-server started by the test and to our kv on a reactor in
this process. The two byte streams that come back must be identical, reply by reply,
except where the README's "documented differences" say otherwise (each of those is
asserted exactly, on both sides, in the tests at the end of this file).

Every sequence starts on a fresh connection after FLUSHALL (half of them switch to
RESP3 with HELLO 3 first) and ends with QUIT, so both servers close and the whole
answer is read to the end of the stream.

Time: both servers use their real clocks, and the sequence reaches redis-server and
ours a moment apart, so replies that carry a remaining time are compared with a rule:
the integers that TTL and PTTL answer may differ by at most :data:`TTL_SLACK_S` and
:data:`PTTL_SLACK_MS` when both are non-negative (everything else in those replies must
match). Positive expiry times are made distinct within a sequence (each use adds 3 s),
so EXPIRE ... GT/LT never compares two equal deadlines, whose outcome depends on
whether redis-server's millisecond clock ticked between the two commands. KEYS replies
are compared as sets: neither server promises an order.

Budget: ``make test`` runs :data:`SHORT_EXAMPLES` examples, derandomized (the same
sequences every run); ``make test-faults`` (``REACTOR_LONG_FAULTS=1``) runs
:data:`LONG_EXAMPLES` fresh random ones.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kvdiffkit import (
    OurKV,
    Servers,
    both_servers,
    exchange,
    normal,
    read_reply,
    same_within,
    split_replies,
)

from handlers.framers.resp import encode_command

LONG = os.environ.get("REACTOR_LONG_FAULTS") == "1"
SHORT_EXAMPLES = 150
LONG_EXAMPLES = 3000
SETTINGS = settings(
    max_examples=LONG_EXAMPLES if LONG else SHORT_EXAMPLES,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETUP_TIMEOUT = 300  # seconds for a test that may be the first: installs redis-server
TTL_SLACK_S = 2
PTTL_SLACK_MS = 3000
TTL_STEP_S = 3  # what each positive expiry time in a sequence adds to the last


# -- requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ttl:
    """An expiry argument, rendered per sequence (see the module docstring).

    ``amount`` > 0 with ``distinct``: a positive time, made distinct in the sequence;
    else sent as is. ``absolute``: a Unix time (EXAT/PXAT), ``amount`` after now.
    """

    amount: int
    millis: bool
    absolute: bool = False
    distinct: bool = True


Arg = bytes | Ttl


@dataclass
class Request:
    """One request: ``args`` (multibulk, or an inline line when ``inline``), or ``raw``
    bytes; ``replies``: how many top-level replies it gets."""

    args: list[Arg] = field(default_factory=list)
    inline: bool = False
    raw: bytes = b""
    replies: int = 1
    timing: int = 0  # slack for the integers of its reply (TTL, PTTL)
    unordered: bool = False  # KEYS
    live_count: bool = False  # DBSIZE
    scan: bool = False  # SCAN: see same_within
    skip: bool = False  # not compared (HELLO: server version and client id)

    @property
    def name(self) -> bytes:
        first = self.args[0] if self.args else b""
        return first.lower() if isinstance(first, bytes) else b""


class Renderer:
    """Turns requests into bytes, giving each positive expiry time its own value."""

    def __init__(self) -> None:
        self.count = 0
        self.now = time.time()

    def arg(self, arg: Arg) -> bytes:
        if isinstance(arg, bytes):
            return arg
        amount = arg.amount
        if arg.distinct and amount > 0:
            amount += self.count * TTL_STEP_S * (1000 if arg.millis else 1)
            self.count += 1
        if arg.absolute:
            amount += int(self.now * 1000) if arg.millis else int(self.now)
        return b"%d" % amount

    def request(self, request: Request) -> bytes:
        if request.raw:
            return request.raw
        args = [self.arg(arg) for arg in request.args]
        if request.inline:
            return b" ".join(args) + b"\r\n"
        return encode_command(args)


KEYS = [b"a", b"b", b"c", b"l", b"m"]
key = st.sampled_from(KEYS) | st.binary(max_size=3)
INT_EDGES = [b"0", b"1", b"-1", b"10", b"9223372036854775807", b"-9223372036854775808",
             b"9223372036854775806", b"-9223372036854775807"]
NOT_INTS = [b"", b"01", b"+1", b" 1", b"1 ", b"1.5", b"-0", b"0x10", b"abc",
            b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999999"]
integer = (st.sampled_from(INT_EDGES) | st.sampled_from(NOT_INTS)
           | st.integers(-5, 5).map(lambda n: b"%d" % n))
value = (st.sampled_from([b"", b"v", b"0", b"1", b"-1", b"\x00\xff\r\n", b"hello world"])
         | st.sampled_from(INT_EDGES) | st.sampled_from(NOT_INTS) | st.binary(max_size=6))

# expiry times: accepted ones under 24.8 days, the invalid ones, and (once the loop
# survives far timers) the far ones
SAFE_SECONDS = [1000, 100000, 2000000]
FAR_SECONDS = [2592000, 9223372036853, 9223372036854775 - 10**13, 9223372036854775 - 10**12]
FAR_MILLIS = [99999999999, 9223372036854775807 - 10**16]
INVALID_SECONDS = [0, -1, -100, 9223372036854776, 9223372036854775807,
                   -9223372036854775808, 9223372036854775, 9223372036854775 - 10**9]
INVALID_MILLIS = [0, -1, 9223372036854775807, -9223372036854775808,
                  9223372036854775807 - 10**12]


def _ttl(millis: bool) -> st.SearchStrategy[Arg]:
    safe = [Ttl(s * 1000 if millis else s, millis) for s in SAFE_SECONDS]
    invalid = [Ttl(n, millis, distinct=False)
               for n in (INVALID_MILLIS if millis else INVALID_SECONDS)]
    far = [Ttl(n, millis, distinct=False) for n in (FAR_MILLIS if millis else FAR_SECONDS)]
    choices = st.sampled_from(safe) | st.sampled_from(invalid) | st.sampled_from(far)
    return choices | integer.filter(lambda raw: not raw.lstrip(b"-").isdigit()
                                    or int(raw) <= 0)


def _absolute(millis: bool) -> st.SearchStrategy[Arg]:
    safe = [Ttl(s * 1000 if millis else s, millis, absolute=True) for s in SAFE_SECONDS]
    past = [Ttl(n, millis, distinct=False) for n in (1, 1000, 0, -1)]
    return st.sampled_from(safe) | st.sampled_from(past)


seconds = _ttl(False)
millis = _ttl(True)


def cmd(*parts: st.SearchStrategy[Any] | bytes) -> st.SearchStrategy[list[Arg]]:
    """A command: bytes parts are literal, strategies draw an argument (or a list)."""
    strategies = [st.just(part) if isinstance(part, bytes) else part for part in parts]

    def flatten(drawn: tuple[Any, ...]) -> list[Arg]:
        out: list[Arg] = []
        for item in drawn:
            out.extend(item if isinstance(item, list) else [item])
        return out

    return st.tuples(*strategies).map(flatten)


set_option = st.one_of(
    st.sampled_from([[b"NX"], [b"XX"], [b"GET"], [b"KEEPTTL"], [b"nx"], [b"get"],
                     [b"BOGUS"], [b"EX"]]),
    st.tuples(st.sampled_from([b"EX", b"ex"]), seconds).map(list),
    st.tuples(st.just(b"PX"), millis).map(list),
    st.tuples(st.just(b"EXAT"), _absolute(False)).map(list),
    st.tuples(st.just(b"PXAT"), _absolute(True)).map(list),
)
set_options = st.lists(set_option, max_size=3).map(lambda lists: [a for x in lists for a in x])
expire_flags = st.lists(st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"gt", b"FOO"]),
                        max_size=2)
keys = st.lists(key, min_size=1, max_size=4)
pattern = st.sampled_from([b"*", b"a*", b"?", b"[ab]", b"[^a]", b"[a-c]", b"[c-a]", b"\\a",
                           b"[", b"*[", b"a\\", b"l*", b"", b"[\\]]", b"\x00*"])
pairs = st.lists(st.tuples(key, value).map(list), max_size=3).map(
    lambda ps: [a for p in ps for a in p])

# the commands whose replies both servers must give identically (no server version,
# client id, configuration, time or statistics in them)
GENERIC_NAMES = [
    b"ping", b"echo", b"get", b"set", b"getdel", b"mget", b"mset", b"append",
    b"strlen", b"incr", b"decr", b"incrby", b"decrby", b"del", b"unlink", b"exists",
    b"type", b"keys", b"expire", b"pexpire", b"ttl", b"pttl", b"persist", b"lpush",
    b"rpush", b"lpop", b"rpop", b"llen", b"lrange", b"dbsize", b"flushdb", b"multi",
    b"exec", b"discard", b"nosuchcommand", b"",
    b"hset", b"hmset", b"hget", b"hmget", b"hdel", b"hgetall", b"hincrby", b"hexists",
    b"hlen", b"sadd", b"srem", b"smembers", b"sismember", b"scard", b"select", b"watch",
    b"unwatch", b"flushall",
]
database = st.integers(0, 16).map(lambda n: b"%d" % n)
field = st.sampled_from([b"f", b"g", b"h", b"F"]) | st.binary(max_size=2)
fields = st.lists(field, min_size=1, max_size=3)
field_values = st.lists(st.tuples(field, value).map(list), min_size=1, max_size=3).map(
    lambda ps: [a for p in ps for a in p])
members = st.lists(value | key, min_size=1, max_size=4)
zero_cursor = st.sampled_from([b"0", b"", b"-0", b"+0", b"00", b"0\x00x"])
bad_cursor = st.sampled_from([b" 0", b"0 ", b"x", b"0x1", b"+", b"-", b"1.5", b"\t1",
                              b"18446744073709551616", b"-18446744073709551616",
                              b"99999999999999999999999"])
# TYPE none: a documented difference (below), not drawn
scan_type = st.sampled_from([b"string", b"list", b"hash", b"set", b"HASH", b"zset", b"bogus",
                             b""])
scan_option = st.one_of(
    st.tuples(st.sampled_from([b"MATCH", b"match"]), pattern).map(list),
    st.tuples(st.sampled_from([b"TYPE", b"type"]), scan_type).map(list),
    st.tuples(st.sampled_from([b"COUNT", b"count"]),
              st.sampled_from([b"1000", b"9223372036854775807"]) | integer).map(list),
    st.sampled_from([[b"MATCH"], [b"COUNT"], [b"TYPE"], [b"BOGUS", b"1"], [b"COUNT", b"0"]]),
)
scan_options = st.lists(scan_option, max_size=3).map(lambda lists: [a for x in lists for a in x])
command_name = st.sampled_from(GENERIC_NAMES).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.capitalize()]))

commands: st.SearchStrategy[list[Arg]] = st.one_of(
    cmd(b"GET", key), cmd(b"SET", key, value), cmd(b"SET", key, value, set_options),
    cmd(b"GETDEL", key), cmd(b"MGET", keys), cmd(b"MSET", pairs), cmd(b"MSET", key),
    cmd(b"APPEND", key, value), cmd(b"STRLEN", key), cmd(b"INCR", key), cmd(b"DECR", key),
    cmd(b"INCRBY", key, integer), cmd(b"DECRBY", key, integer), cmd(b"DEL", keys),
    cmd(b"UNLINK", keys), cmd(b"EXISTS", keys), cmd(b"TYPE", key), cmd(b"KEYS", pattern),
    cmd(b"EXPIRE", key, seconds, expire_flags), cmd(b"PEXPIRE", key, millis, expire_flags),
    cmd(b"TTL", key), cmd(b"PTTL", key), cmd(b"PERSIST", key),
    cmd(b"LPUSH", key, st.lists(value, min_size=1, max_size=3)),
    cmd(b"RPUSH", key, st.lists(value, min_size=1, max_size=3)),
    cmd(b"LPOP", key), cmd(b"RPOP", key), cmd(b"LPOP", key, integer),
    cmd(b"RPOP", key, integer, st.lists(integer, max_size=1)), cmd(b"LLEN", key),
    cmd(b"LRANGE", key, integer, integer), cmd(b"DBSIZE"),
    cmd(b"FLUSHDB", st.lists(st.sampled_from([b"ASYNC", b"sync", b"x"]), max_size=2)),
    cmd(b"PING", st.lists(value, max_size=2)), cmd(b"ECHO", st.lists(value, max_size=2)),
    cmd(b"SELECT", database | integer),
    cmd(b"SELECT", st.lists(integer, max_size=2).filter(lambda args: len(args) != 1)),
    cmd(b"MULTI"), cmd(b"EXEC"), cmd(b"DISCARD"), cmd(b"FLUSHALL"),
    cmd(b"WATCH", keys), cmd(b"UNWATCH"),
    # hashes
    cmd(b"HSET", key, field_values), cmd(b"HSET", key, field_values, field),
    cmd(b"HMSET", key, field_values), cmd(b"HGET", key, field),
    cmd(b"HMGET", key, fields), cmd(b"HDEL", key, fields), cmd(b"HGETALL", key),
    cmd(b"HINCRBY", key, field, integer), cmd(b"HEXISTS", key, field), cmd(b"HLEN", key),
    # sets
    cmd(b"SADD", key, members), cmd(b"SREM", key, members), cmd(b"SMEMBERS", key),
    cmd(b"SISMEMBER", key, value), cmd(b"SCARD", key),
    # SCAN from the start (a cursor of our own is no cursor of redis-server's): its
    # options and errors; to the end of a scan in test_kv_differential_sessions.py
    cmd(b"SCAN", zero_cursor, scan_options), cmd(b"SCAN", bad_cursor, scan_options),
    # any command with any number of arguments: wrong arities, unknown commands
    cmd(command_name, st.lists(key | value | integer, max_size=4)),
)

INLINE_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:*?")


def as_request(args: list[Arg], inline: bool) -> Request:
    name = args[0].lower() if isinstance(args[0], bytes) else b""
    slack = TTL_SLACK_S if name == b"ttl" else PTTL_SLACK_MS if name == b"pttl" else 0
    can_inline = all(isinstance(a, Ttl) or (a and set(a) <= INLINE_SAFE) for a in args)
    return Request(args, inline=inline and can_inline, timing=slack,
                   unordered=name in (b"keys", b"smembers", b"scan"),
                   live_count=name == b"dbsize", scan=name == b"scan")


request = st.builds(as_request, commands, st.booleans())
noise = st.sampled_from([
    Request(raw=b"\r\n", replies=0), Request(raw=b"   \n", replies=0),
    Request(raw=b"*0\r\n", replies=0), Request(raw=b"*-1\r\n", replies=0),
    Request(raw=b"*-5\r\n", replies=0), Request(raw=b'ECHO "a b\\x41\\n" \'c\\\'d\'\r\n'),
])

# malformed input: the last request; both servers must answer it the same way and close
MALFORMED = [
    b"*abc\r\n", b"*+1\r\n", b"*01\r\n$4\r\nPING\r\n", b"*-0\r\n", b"*\r\n", b"* 1\r\n",
    b"*1\n$4\nPING\r\n", b"*1\r\n$abc\r\n", b"*1\r\n$-1\r\n", b"*1\r\n$-5\r\n",
    b"*1\r\n$04\r\nPING\r\n", b"*1\r\n$+4\r\nPING\r\n", b"*1\r\n$ 4\r\n", b"*1\r\n$4 \r\n",
    b"*1\r\n$\r\n", b"*1\r\n$3\nGET\r\n", b"*" + b"1" * 100 + b"\r\n",
    b"*1\r\n$" + b"9" * 80 + b"\r\n", b"*2147483648\r\n", b"*99999999999999999999\r\n",
    b"*1\r\n$536870913\r\n", b"*1\r\n$-9223372036854775809\r\n",
]
malformed = (
    st.sampled_from(MALFORMED)
    | st.tuples(st.binary(min_size=1, max_size=1).filter(lambda b: b not in b"$\x00"),
                st.sampled_from([b"oops\r\n", b"\r\n", b"1\r\nx\r\n"])).map(
        lambda t: b"*2\r\n$3\r\nGET\r\n" + t[0] + t[1])
).map(lambda raw: Request(raw=raw))



# Runs of commands on one key (a hash, a set, a watched key), so that the commands on
# a collection meet one another and WATCH meets every kind of change, more often than
# random keys would make them.
small_field = st.sampled_from([b"f", b"g", b"1"])
small_member = st.sampled_from([b"1", b"2", b"x", b"-1", b"10", b"00"])


def on_key(k: bytes) -> st.SearchStrategy[list[Arg]]:
    fs = st.lists(small_field, min_size=1, max_size=3)
    pairs = st.lists(st.tuples(small_field, value).map(list), min_size=1, max_size=3).map(
        lambda ps: [a for p in ps for a in p])
    ms = st.lists(small_member, min_size=1, max_size=3)
    return st.one_of(
        cmd(b"HSET", k, pairs), cmd(b"HGET", k, small_field), cmd(b"HMGET", k, fs),
        cmd(b"HDEL", k, fs), cmd(b"HGETALL", k), cmd(b"HINCRBY", k, small_field, integer),
        cmd(b"HEXISTS", k, small_field), cmd(b"HLEN", k),
        cmd(b"SADD", k, ms), cmd(b"SREM", k, ms), cmd(b"SMEMBERS", k),
        cmd(b"SISMEMBER", k, small_member), cmd(b"SCARD", k),
        cmd(b"TYPE", k), cmd(b"EXISTS", k), cmd(b"GET", k), cmd(b"SET", k, value, set_options),
        cmd(b"DEL", k), cmd(b"EXPIRE", k, seconds, expire_flags), cmd(b"PERSIST", k),
        cmd(b"LPUSH", k, ms), cmd(b"LPOP", k, st.lists(integer, max_size=1)),
        cmd(b"INCR", k), cmd(b"APPEND", k, value), cmd(b"GETDEL", k), cmd(b"FLUSHDB"),
        cmd(b"SELECT", st.sampled_from([b"0", b"1"])),
        cmd(b"SCAN", b"0", st.sampled_from([[], [b"TYPE", b"hash"], [b"TYPE", b"set"]])),
    )


def _watched(k: bytes) -> st.SearchStrategy[list[list[Arg]]]:
    """WATCH k, commands (changes of k among them, or not), then a transaction."""
    return st.tuples(
        st.lists(on_key(k), max_size=2),
        cmd(b"WATCH", k, st.lists(key, max_size=1)),
        st.lists(on_key(k), max_size=3),
        st.lists(cmd(b"MULTI") | cmd(b"UNWATCH") | cmd(b"DISCARD"), max_size=1),
        cmd(b"MULTI"), st.lists(on_key(k), max_size=2), cmd(b"EXEC"),
    ).map(lambda parts: [c for part in parts
                         for c in (part if not part or isinstance(part[0], list) else [part])])


runs = (key.flatmap(lambda k: st.lists(on_key(k), min_size=2, max_size=8))
        | key.flatmap(_watched)).map(lambda run: [as_request(args, False) for args in run])

sequences = st.tuples(
    st.booleans(),  # RESP3
    st.lists(request.map(lambda r: [r]) | noise.map(lambda r: [r]) | runs, max_size=12).map(
        lambda parts: [r for part in parts for r in part][:40]),
    st.none() | malformed,
)


def run_sequence(servers: Servers, resp3: bool, body: list[Request],
                 tail: Request | None) -> None:
    """Send the sequence to both servers and compare what comes back."""
    requests = [Request([b"FLUSHALL"])]
    if resp3:
        requests.append(Request([b"HELLO", b"3"], skip=True))
    requests.extend(body)
    # MULTI ... EXEC: the EXEC reply holds the queued commands' replies
    queued: list[Request] = []
    in_multi = False
    for req in requests:
        if req.name == b"multi" and not in_multi:  # a nested MULTI is an error
            in_multi = True
            queued = []
        elif in_multi and (req.name == b"exec" or (req.name == b"discard"
                                                    and len(req.args) == 1)):
            in_multi = False
            if req.name == b"exec":
                req.timing = max([q.timing for q in queued], default=0)
                req.unordered = any(q.unordered for q in queued)
                req.live_count = any(q.live_count for q in queued)
                req.scan = any(q.scan for q in queued)
        elif in_multi:
            queued.append(req)
    requests.append(Request(raw=tail.raw + b"QUIT\r\n") if tail else Request([b"QUIT"]))
    renderer = Renderer()
    data = b"".join(renderer.request(req) for req in requests)
    expected = exchange(servers.redis.path, data)
    assert servers.ours.alive(), "our kv's reactor thread died in an earlier example"
    actual = exchange(servers.ours.path, data)
    assert servers.ours.alive(), "our kv's reactor thread died"
    if actual == expected:
        return
    compare(requests, data, expected, actual)


def compare(requests: list[Request], data: bytes, expected: bytes, actual: bytes) -> None:
    """The streams differ: allowed only within the rules (TTL slack, KEYS order,
    HELLO), reply by reply."""
    theirs = split_replies(expected)
    ours = split_replies(actual)
    i = 0
    for number, req in enumerate(requests):
        count = req.replies if req is not requests[-1] else max(len(theirs), len(ours)) - i
        for _ in range(count):
            context = (f"request {number} {req.args or req.raw!r}\nsent: {data!r}\n"
                       f"redis-server: {expected!r}\nours: {actual!r}")
            assert i < len(theirs) and i < len(ours), f"reply count differs at {context}"
            (t_value, t_raw), (o_value, o_raw) = theirs[i], ours[i]
            i += 1
            if t_raw == o_raw or req.skip:
                continue
            if req.unordered:
                t_value, o_value = normal(t_value, True), normal(o_value, True)
            assert same_within(o_value, t_value, req.timing, req.live_count, req.scan), (
                f"reply differs: redis-server {t_raw!r}, ours {o_raw!r}, at {context}")
    assert i == len(theirs) == len(ours), "reply count differs"


# -- the tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with both_servers() as pair:
        yield pair



@pytest.mark.timeout(2 * SETUP_TIMEOUT if LONG else SETUP_TIMEOUT)
@SETTINGS
@given(sequences)
@example((False, [Request([b"SET", b"n", b"9223372036854775807"]), Request([b"INCR", b"n"]),
                  Request([b"DECRBY", b"n", b"-9223372036854775808"])], None))
# what it found (each fixed, with a plain test in tests/test_kv_redis_compat.py too)
@example((True, [Request([b"MULTI"]), Request([b"INCR", b"c"]), Request([b"EXEC", b"x"]),
                 Request([b"EXEC"]), Request([b"RPOP", b"l", b"-0"]),
                 Request([b"SELECT", b"-9223372036854775808"]),
                 Request([b"", b"1", b"\x7f", b"\x80\x84", b"\xca"])], None))
@example((False, [Request([b"SET", b"k", b"1", b"PX", b"9223371036854775807", b"EX", b"-1"]),
                  Request([b"SET", b"k", b"1", b"NX", b"NX", b"GET", b"GET"]),
                  Request([b"EXPIRE", b"k", b"x", b"FOO", b"BAR"]),
                  Request([b"PEXPIRE", b"k", b"-9223372036854775808"]),
                  Request([b"EXPIRE", b"k", b"9223372036854775"])],
          Request(raw=b"*01\r\n$4\r\nPING\r\n")))
def test_kv_answers_as_redis_server_does(
    servers: Servers, sequence: tuple[bool, list[Request], Request | None]
) -> None:
    resp3, body, tail = sequence
    run_sequence(servers, resp3, body, tail)


@pytest.mark.timeout(SETUP_TIMEOUT)
def test_the_oracle_is_the_redis_server_the_readme_names(servers: Servers) -> None:
    # the documented differences were checked against this version
    assert "v=7.0." in servers.redis.version, servers.redis.version


@pytest.mark.timeout(SETUP_TIMEOUT)
def test_far_expiry_times_keep_the_server_serving(servers: Servers) -> None:
    # 30 days, about 3 years in milliseconds, and the farthest Redis accepts
    far = [[b"SET", b"k", b"v", b"EX", b"2592000"], [b"SET", b"k", b"v", b"PX", b"99999999999"],
           [b"EXPIRE", b"k", b"9223370000000000"], [b"PEXPIRE", b"k", b"9223370000000000000"],
           [b"SET", b"k", b"v", b"PXAT", b"9223372036854775807"], [b"TTL", b"k"], [b"PING"]]
    data = b"".join(encode_command(args) for args in [[b"FLUSHALL"], *far, [b"QUIT"]])
    expected = exchange(servers.redis.path, data)
    assert expected.endswith(b"+PONG\r\n+OK\r\n")
    with tempfile.TemporaryDirectory(prefix="kvfar-") as directory:
        ours = OurKV(directory)  # its own: the others must survive this test's failure
        try:
            actual = exchange(ours.path, data)
            # the far timers are armed now: the loop must still wait and serve
            assert exchange(ours.path, b"PING\r\nQUIT\r\n") == b"+PONG\r\n+OK\r\n"
            assert ours.alive(), "our kv's reactor thread died"
        finally:
            ours.close()
    compare([as_request(args, False) for args in [[b"FLUSHALL"], *far]] + [Request([b"QUIT"])],
            data, expected, actual)


# -- the documented differences (README, kv: "Documented differences") ----------------

ERR = b"-ERR Protocol error: "
DIFFERENCES = [
    # (request, redis-server's answer, ours); every request ends with QUIT
    pytest.param(b"*1\r\n$4\r\nPINGxx", b"+PONG\r\n+OK\r\n",
                 ERR + b"expected CRLF after a bulk string\r\n", id="bulk-without-crlf"),
    pytest.param(b"*1\rx$4\r\nPING\r\n", b"+PONG\r\n+OK\r\n",
                 ERR + b"invalid multibulk length\r\n", id="header-cr-without-lf"),
    pytest.param(b"*1\r\n$4\rxPING\r\n", b"+PONG\r\n+OK\r\n",
                 ERR + b"invalid bulk length\r\n", id="bulk-header-cr-without-lf"),
    pytest.param(b"*1048577\r\n", ERR + b"expected '$', got 'Q'\r\n",
                 ERR + b"invalid multibulk length\r\n", id="array-over-our-limit"),
    pytest.param(b'ECHO "x\r\nPING\r\n', ERR + b"unbalanced quotes in request\r\n",
                 ERR + b"unbalanced quotes in request\r\n+PONG\r\n+OK\r\n",
                 id="unbalanced-quotes-keep-the-connection"),
    pytest.param(b"SET k v PXAT 1\r\nDBSIZE\r\n", b"+OK\r\n:1\r\n+OK\r\n",
                 b"+OK\r\n:0\r\n+OK\r\n", id="dbsize-counts-live-keys"),
    pytest.param(b"SET k v PXAT 1\r\nSCAN 0 TYPE none\r\nSCAN 0 TYPE none\r\n",
                 b"+OK\r\n*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n*2\r\n$1\r\n0\r\n*0\r\n+OK\r\n",
                 b"+OK\r\n*2\r\n$1\r\n0\r\n*0\r\n*2\r\n$1\r\n0\r\n*0\r\n+OK\r\n",
                 id="scan-type-none-finds-no-expired-key"),
]


@pytest.mark.timeout(SETUP_TIMEOUT)
@pytest.mark.parametrize(("request_", "theirs", "ours"), DIFFERENCES)
def test_documented_differences(servers: Servers, request_: bytes, theirs: bytes,
                                ours: bytes) -> None:
    data = encode_command([b"FLUSHALL"]) + request_ + b"QUIT\r\n"
    assert exchange(servers.redis.path, data) == b"+OK\r\n" + theirs
    assert exchange(servers.ours.path, data) == b"+OK\r\n" + ours


@pytest.mark.timeout(SETUP_TIMEOUT)
def test_documented_difference_nul_in_a_header(servers: Servers) -> None:
    # redis-server scans a header with strchr, which stops at a NUL: it waits for more
    data = b"*2\r\n$3\r\nGET\r\n\x00oops\r\n"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        sock.connect(servers.redis.path)
        sock.sendall(data)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    assert exchange(servers.ours.path, data) == ERR + b"expected '$', got '\x00'\r\n"


def test_the_comparison_rules_are_as_narrow_as_stated() -> None:
    def tree(raw: bytes) -> Any:
        return read_reply(raw, 0)[0]

    assert same_within(tree(b":99998\r\n"), tree(b":100000\r\n"), PTTL_SLACK_MS)
    assert not same_within(tree(b":95000\r\n"), tree(b":100000\r\n"), PTTL_SLACK_MS)
    assert not same_within(tree(b":-2\r\n"), tree(b":0\r\n"), PTTL_SLACK_MS)
    assert not same_within(tree(b"$1\r\n5\r\n"), tree(b":5\r\n"), TTL_SLACK_S)
    assert same_within(tree(b":0\r\n"), tree(b":1\r\n"), 0, live_count=True)
    assert not same_within(tree(b":2\r\n"), tree(b":1\r\n"), 0, live_count=True)
    assert not same_within(tree(b":0\r\n"), tree(b":1\r\n"), 0)
    keys = tree(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")
    swapped = tree(b"*2\r\n$1\r\nb\r\n$1\r\na\r\n")
    assert not same_within(keys, swapped, 0)
    assert same_within(normal(keys, True), normal(swapped, True), 0)
    assert split_replies(b"+OK\r\n*1\r\n$-1\r\n_\r\n") == [
        ((b"+", b"OK"), b"+OK\r\n"), ((b"*", [(b"$", None)]), b"*1\r\n$-1\r\n"),
        ((b"_", b""), b"_\r\n")]
