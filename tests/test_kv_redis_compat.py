"""Regression tests for what the differential test (tests/faults/test_kv_differential.py)
found: each reply below is redis-server 7.0.15's, byte for byte, and each case failed
before its fix. Socket-free: the protocol on reactor.testing's FakeTransport."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from handlers.framers.resp import encode_command
from handlers.services.kv import KVServer
from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector, FakeTransport


class Client:
    def __init__(self, server: KVServer) -> None:
        self.transport = FakeTransport(server(), peername=("198.51.100.7", 4242))

    def cmd(self, *args: bytes | str | int) -> bytes:
        self.transport.feed(encode_command(args))
        return self.transport.take()


@pytest.fixture
def client() -> Iterator[Client]:
    clock = FakeClock()
    reactor = Reactor(selector=FakeSelector(clock), clock=clock)
    yield Client(KVServer(reactor))
    reactor.close()


# -- error wording --------------------------------------------------------------------


def test_select_out_of_int_range(client: Client) -> None:
    assert client.cmd("SELECT", "-9223372036854775808") == (
        b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n")
    assert client.cmd("SELECT", "2147483648") == (
        b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n")
    assert client.cmd("SELECT", "-1") == b"-ERR DB index is out of range\r\n"
    assert client.cmd("SELECT", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert client.cmd("SELECT", "0") == b"+OK\r\n"


def test_pop_count_that_is_not_an_integer(client: Client) -> None:
    for count in ("-0", "x", "1 ", "-1"):
        assert client.cmd("RPOP", "l", count) == (
            b"-ERR value is out of range, must be positive\r\n")


def test_unknown_command_quotes_the_bytes_as_redis_does(client: Client) -> None:
    assert client.cmd(b"", b"1", b"\x7f", b"\x80\x84", b"\xca") == (
        b"-ERR unknown command '', with args beginning with: '1' '\x7f' '\x80\x84' '\xca' \r\n")
    # a NUL ends an argument; the list stops once it passes 128 bytes
    assert client.cmd(b"no\x00pe", b"a\x00b", b"x" * 200, b"y") == (
        b"-ERR unknown command 'no', with args beginning with: 'a' '" + b"x" * 124 + b"' \r\n")


def test_expire_names_the_first_unsupported_option(client: Client) -> None:
    client.cmd("SET", "a", "1")
    assert client.cmd("EXPIRE", "a", "10", "FOO", "BAR") == b"-ERR Unsupported option FOO\r\n"
    assert client.cmd("EXPIRE", "a", "10", b"\xff\x00z") == b"-ERR Unsupported option \xff\r\n"


# -- EXEC refused -----------------------------------------------------------------------


def test_exec_with_arguments_aborts_in_multi_or_not(client: Client) -> None:
    abort = (b"-EXECABORT Transaction discarded because of: wrong number of arguments "
             b"for 'exec' command\r\n")
    assert client.cmd("EXEC", "x") == abort
    assert client.cmd("MULTI") == b"+OK\r\n"
    assert client.cmd("INCR", "n") == b"+QUEUED\r\n"
    assert client.cmd("EXEC", "x") == abort
    assert client.cmd("EXEC") == b"-ERR EXEC without MULTI\r\n"  # the transaction is gone
    assert client.cmd("GET", "n") == b"$-1\r\n"


# -- expiry times -----------------------------------------------------------------------

INVALID_SET = b"-ERR invalid expire time in 'set' command\r\n"


def test_set_parses_every_option_before_checking_values(client: Client) -> None:
    assert client.cmd("SET", "k", "1", "PX", "9223371036854775807", "EX", "-1", "PX", "-1") == (
        b"-ERR syntax error\r\n")
    assert client.cmd("SET", "k", "1", "EX", "x", "BOGUS") == b"-ERR syntax error\r\n"
    assert client.cmd("SET", "k", "1", "EX", "x") == (
        b"-ERR value is not an integer or out of range\r\n")
    # an option may repeat, the last one wins; NX twice is NX
    assert client.cmd("SET", "k", "1", "NX", "NX", "GET", "GET") == b"$-1\r\n"
    assert client.cmd("SET", "k", "2", "KEEPTTL", "KEEPTTL") == b"+OK\r\n"
    assert client.cmd("SET", "k", "3", "EX", "5", "EX", "100") == b"+OK\r\n"
    assert client.cmd("TTL", "k") == b":100\r\n"
    assert client.cmd("SET", "k", "1", "NX", "XX") == b"-ERR syntax error\r\n"
    assert client.cmd("SET", "k", "1", "EX", "5", "KEEPTTL") == b"-ERR syntax error\r\n"


def test_set_expiry_limits_follow_redis(client: Client) -> None:
    # milliseconds: valid while now (Unix ms) plus the delay fits in 64 bits
    assert client.cmd("SET", "k", "1", "PX", "9223372036854775807") == INVALID_SET
    assert client.cmd("SET", "k", "1", "PX", "9223371036854775807") == INVALID_SET
    # seconds: at most INT64_MAX // 1000, and the same overflow rule in milliseconds
    assert client.cmd("SET", "k", "1", "EX", "9223372036854776") == INVALID_SET
    assert client.cmd("SET", "k", "1", "EX", "9223372036854775") == INVALID_SET
    assert client.cmd("SET", "k", "1", "EX", "0") == INVALID_SET
    # absolute times are not added to now: far ones are accepted
    assert client.cmd("SET", "k", "1", "PXAT", "9223372036854775807") == b"+OK\r\n"
    ttl = int(client.cmd("TTL", "k")[1:-2])
    assert abs(ttl - (9223372036854775807 // 1000 - int(time.time()))) <= 2


def test_expire_limits_follow_redis(client: Client) -> None:
    invalid = b"-ERR invalid expire time in 'pexpire' command\r\n"
    client.cmd("SET", "a", "1")
    assert client.cmd("PEXPIRE", "a", "9223371036854775807") == invalid
    assert client.cmd("EXPIRE", "a", "9223372036854775") == (
        b"-ERR invalid expire time in 'expire' command\r\n")
    # a negative time of any size in milliseconds deletes the key
    assert client.cmd("PEXPIRE", "a", "-9223372036854775808") == b":1\r\n"
    assert client.cmd("EXISTS", "a") == b":0\r\n"
    # the options are checked before the time
    client.cmd("SET", "a", "1")
    assert client.cmd("EXPIRE", "a", "x", "FOO") == b"-ERR Unsupported option FOO\r\n"
    assert client.cmd("EXPIRE", "a", "x", "NX", "XX") == (
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n")
