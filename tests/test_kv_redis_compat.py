"""Regression tests for what the differential test (tests/faults/test_kv_differential.py)
found: each reply below is redis-server 7.0.15's, byte for byte, and each case failed
before its fix. Socket-free: the protocol on reactor.testing's FakeTransport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from handlers.kv import KVServer
from handlers.resp import encode_command
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
