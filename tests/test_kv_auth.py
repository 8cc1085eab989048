"""The kv service's password (``KVServer(requirepass=...)``): AUTH, HELLO AUTH and the
NOAUTH gate. Socket-free: the protocol on reactor.testing's FakeTransport. Every reply
below is redis-server 7.0.15's with ``--requirepass`` (tests/test_kv_auth_clients.py
compares them with a real one)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from test_kv_redis_compat import Client

from handlers.framers.resp import encode_command
from handlers.services.kv import KVServer, auth
from reactor import FakeClock, Reactor
from reactor.cli.main import UsageError, load_factory
from reactor.testing import FakeSelector

PASSWORD = "s3cret-pass"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
HELLO_NOAUTH = (
    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    b"HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    b"the RESP protocol version at the same time\r\n")
NO_PASSWORD = (
    b"-ERR AUTH <password> called without any password configured for the default user. "
    b"Are you sure your configuration is correct?\r\n")


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    clock = FakeClock()
    reactor = Reactor(selector=FakeSelector(clock), clock=clock)
    yield reactor
    reactor.close()


@pytest.fixture
def locked(reactor: Reactor) -> Client:
    return Client(KVServer(reactor, requirepass=PASSWORD))


def test_every_command_but_auth_hello_quit_needs_the_password(locked: Client) -> None:
    assert locked.cmd("SET", "k", "v") == NOAUTH
    assert locked.cmd("GET", "k") == NOAUTH
    assert locked.cmd("PING") == NOAUTH
    assert locked.cmd("ECHO", "x") == NOAUTH
    assert locked.cmd("SELECT", "1") == NOAUTH
    assert locked.cmd("CLIENT", "SETNAME", "x") == NOAUTH
    assert locked.cmd("COMMAND") == NOAUTH
    assert locked.cmd("MULTI") == NOAUTH
    assert locked.cmd("DISCARD") == NOAUTH
    assert locked.cmd("EXEC") == (
        b"-EXECABORT Transaction discarded because of: NOAUTH Authentication required.\r\n")
    # as Redis: an unknown command and a wrong arity are reported before NOAUTH
    assert locked.cmd("NOPE") == b"-ERR unknown command 'NOPE', with args beginning with: \r\n"
    assert locked.cmd("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert locked.cmd("HELLO") == HELLO_NOAUTH
    assert locked.cmd("HELLO", "2") == HELLO_NOAUTH
    assert locked.cmd("HELLO", "4") == b"-NOPROTO unsupported protocol version\r\n"
    assert not locked.transport.protocol.authenticated


def test_auth_with_the_password_unlocks_the_connection(locked: Client) -> None:
    assert locked.cmd("AUTH", "wrong") == WRONGPASS
    assert locked.cmd("AUTH", "bob", PASSWORD) == WRONGPASS  # the only user is default
    assert locked.cmd("AUTH", "a", "b", "c") == b"-ERR syntax error\r\n"
    assert locked.cmd("AUTH") == b"-ERR wrong number of arguments for 'auth' command\r\n"
    assert locked.cmd("GET", "k") == NOAUTH
    assert locked.cmd("AUTH", PASSWORD) == b"+OK\r\n"
    assert locked.cmd("SET", "k", "v") == b"+OK\r\n"
    assert locked.cmd("GET", "k") == b"$1\r\nv\r\n"
    # a failed AUTH afterwards does not take the access away (as Redis)
    assert locked.cmd("AUTH", "wrong") == WRONGPASS
    assert locked.cmd("GET", "k") == b"$1\r\nv\r\n"


def test_auth_default_user_form(locked: Client) -> None:
    assert locked.cmd("AUTH", "default", "wrong") == WRONGPASS
    assert locked.cmd("AUTH", "default", PASSWORD) == b"+OK\r\n"
    assert locked.cmd("PING") == b"+PONG\r\n"


def test_hello_auth_authenticates_and_switches_protocol(locked: Client) -> None:
    assert locked.cmd("HELLO", "3", "AUTH", "default", "wrong") == WRONGPASS
    assert locked.cmd("HELLO", "3", "AUTH", "default") == (
        b"-ERR Syntax error in HELLO option 'AUTH'\r\n")
    assert not locked.transport.protocol.resp3
    reply = locked.cmd("HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "me")
    assert reply.startswith(b"%7\r\n$6\r\nserver\r\n")
    assert locked.transport.protocol.resp3
    assert locked.cmd("CLIENT", "GETNAME") == b"$2\r\nme\r\n"
    assert locked.cmd("GET", "nothing") == b"_\r\n"
    assert locked.cmd("HELLO", "2").startswith(b"*14\r\n")  # authenticated: no AUTH needed


def test_auth_and_commands_in_one_chunk(locked: Client) -> None:
    locked.transport.feed(encode_command(["GET", "k"]) + encode_command(["AUTH", PASSWORD])
                          + encode_command(["SET", "k", "1"]) + encode_command(["INCR", "k"]))
    assert locked.transport.take() == NOAUTH + b"+OK\r\n+OK\r\n:2\r\n"


def test_quit_needs_no_password(locked: Client) -> None:
    assert locked.cmd("QUIT") == b"+OK\r\n"
    assert locked.transport.is_closing()


def test_rejected_commands_are_counted(reactor: Reactor) -> None:
    server = KVServer(reactor, requirepass=PASSWORD)
    client = Client(server)
    client.cmd("GET", "k")
    client.cmd("AUTH", PASSWORD)
    assert server.statistics().commands_processed == 2


def test_without_a_password_auth_gets_redis_error(reactor: Reactor) -> None:
    client = Client(KVServer(reactor))
    assert client.transport.protocol.authenticated
    assert client.cmd("GET", "k") == b"$-1\r\n"
    assert client.cmd("AUTH", "anything") == NO_PASSWORD
    assert client.cmd("AUTH", "default", "anything") == b"+OK\r\n"  # Redis's nopass user
    assert client.cmd("AUTH", "bob", "anything") == WRONGPASS
    assert client.cmd("HELLO", "2", "AUTH", "default", "x").startswith(b"*14\r\n")


def test_an_empty_password_is_no_password(reactor: Reactor) -> None:
    assert KVServer(reactor, requirepass="").requirepass is None
    assert KVServer(reactor, requirepass=b"p").requirepass == b"p"
    client = Client(KVServer(reactor, requirepass=""))
    assert client.cmd("GET", "k") == b"$-1\r\n"


def test_the_password_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    assert auth.password_matches(b"pw", b"default", b"pw")
    assert not auth.password_matches(b"pw", b"default", b"px")
    assert not auth.password_matches(b"pw", b"bob", b"pw")
    assert calls == [(b"pw", b"pw"), (b"px", b"pw"), (b"pw", b"pw")]


def test_the_password_is_never_logged_nor_reported(
    locked: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert locked.cmd("AUTH", "guess-one") == WRONGPASS
    assert locked.cmd("HELLO", "3", "AUTH", "default", "guess-two") == WRONGPASS
    assert locked.cmd("AUTH", PASSWORD) == b"+OK\r\n"
    assert "kv client 198.51.100.7:4242: authentication failed" in caplog.text
    for secret in (PASSWORD, "guess-one", "guess-two"):
        assert secret not in caplog.text
    reply = locked.cmd("CONFIG", "GET", "*")
    assert PASSWORD.encode() not in reply


def test_requirepass_is_a_kv_setting_only(reactor: Reactor) -> None:
    name, factory = load_factory("kv", reactor, requirepass=PASSWORD)
    assert name == "kv"
    assert isinstance(factory, KVServer) and factory.requirepass == PASSWORD.encode()
    with pytest.raises(UsageError, match="--requirepass does not apply to the echo service"):
        load_factory("echo", reactor, requirepass=PASSWORD)
