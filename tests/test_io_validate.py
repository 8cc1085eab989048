"""The I/O layer checks its arguments at the call, as asyncio does.

``getaddrinfo("127.0.0.1", 99999)`` quietly binds port 34463 and ``listen(-1)`` means
the kernel's default; the listening and connecting functions refuse such values with
``ValueError`` (``TypeError`` for the wrong kind) before any socket exists, so nothing
is bound, registered or leaked. Bind failures name the address as users write it
(``127.0.0.1:80``, not a tuple), and counts in messages agree with their nouns.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from pathlib import Path

import psutil
import pytest

from reactor import Reactor
from reactor.io.validate import address_text, check_backlog, check_port, check_timeout
from reactor.sansio.words import counted


def num_fds() -> int:
    return psutil.Process().num_fds()


@pytest.mark.parametrize("port", [99999, 65536, -1])
def test_listen_tcp_refuses_a_port_out_of_range(reactor: Reactor, port: int) -> None:
    before = num_fds()
    with pytest.raises(ValueError, match=rf"port must be a whole number from 0 to 65535 "
                                         rf"\(0 picks a free port\), not {port}$"):
        reactor.listen_tcp("127.0.0.1", port, asyncio.Protocol)
    assert reactor.listeners == [] and num_fds() == before


@pytest.mark.parametrize(("port", "kind"), [("8080", 'the text "8080"'), (True, "a boolean"),
                                            (80.0, "80.0"), (None, "None")])
def test_listen_tcp_refuses_a_port_of_the_wrong_kind(reactor: Reactor, port: object,
                                                     kind: str) -> None:
    with pytest.raises(TypeError, match=f"port must be a whole number from 0 to 65535, "
                                        f"not {kind}$"):
        reactor.listen_tcp("127.0.0.1", port, asyncio.Protocol)  # type: ignore[arg-type]


def test_a_negative_backlog_is_refused_before_anything_is_bound(reactor: Reactor,
                                                               sockdir: str) -> None:
    before = num_fds()
    with pytest.raises(ValueError, match=r"backlog must be zero or more .* not -1"):
        reactor.listen_tcp("127.0.0.1", 0, asyncio.Protocol, backlog=-1)
    path = os.path.join(sockdir, "s.sock")
    with pytest.raises(ValueError, match="backlog must be zero or more"):
        reactor.listen_unix(path, asyncio.Protocol, backlog=-5)
    assert not os.path.exists(path)  # checked before bind: no file left behind
    assert reactor.listeners == [] and num_fds() == before
    listener = reactor.listen_tcp("127.0.0.1", 0, asyncio.Protocol, backlog=0)  # allowed
    listener.close()


def test_listen_udp_refuses_a_port_out_of_range(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="not 70000"):
        reactor.listen_udp("127.0.0.1", 70000, asyncio.DatagramProtocol)
    assert len(reactor.connections) == 0


def test_empty_unix_paths_are_refused(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="path must not be empty"):
        reactor.listen_unix("", asyncio.Protocol)
    with pytest.raises(ValueError, match="path must not be empty"):
        reactor.listen_unix_datagram("", asyncio.DatagramProtocol)
    with pytest.raises(ValueError, match="path must not be empty"):
        reactor.connect_unix("", asyncio.Protocol)
    with pytest.raises(TypeError, match="path must be a str, not an object of type PosixPath"):
        reactor.listen_unix(Path("/tmp/x.sock"), asyncio.Protocol)  # type: ignore[arg-type]
    assert reactor.listeners == []


@pytest.mark.timeout(10)
def test_connect_checks_its_port_and_timeout_at_the_call(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="not 99999"):
        reactor.connect_tcp("127.0.0.1", 99999, asyncio.Protocol)
    for timeout in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout must be more than zero seconds"):
            reactor.connect_tcp("127.0.0.1", 80, asyncio.Protocol, timeout=timeout)
        with pytest.raises(ValueError, match="timeout must be more than zero seconds"):
            reactor.connect_unix("/nonexistent.sock", asyncio.Protocol, timeout=timeout)
    with pytest.raises(TypeError, match='timeout must be a number of seconds or None, '
                                        'not the text "5"'):
        reactor.connect_tcp("127.0.0.1", 80, asyncio.Protocol, timeout="5")
    assert len(reactor.connections) == 0


def test_the_checks_return_what_they_accept() -> None:
    assert check_port(0) == 0 and check_port(65535) == 65535
    assert check_backlog(0) == 0
    assert check_timeout(None) is None and check_timeout(2) == 2.0


def test_a_bind_failure_names_the_address_without_a_tuple(reactor: Reactor) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(OSError) as info:
            reactor.listen_tcp("127.0.0.1", port, asyncio.Protocol)
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in str(info.value)
    assert "('" not in str(info.value)


@pytest.mark.parametrize(("address", "text"), [
    (("127.0.0.1", 80), "127.0.0.1:80"),
    (("::1", 80, 0, 0), "[::1]:80"),
    ("/run/app.sock", "/run/app.sock"),
    ("\0hidden", "@hidden"),
    (b"/run/b.sock", "/run/b.sock"),
])
def test_address_text(address: object, text: str) -> None:
    assert address_text(address) == text


def test_counted_agrees_with_the_number() -> None:
    assert counted(1, "connection") == "1 connection"
    assert counted(0, "connection") == "0 connections"
    assert counted(2, "member") == "2 members"
    assert counted(3, "child process", "child processes") == "3 child processes"
