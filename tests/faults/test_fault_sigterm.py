"""Scenario 11: SIGTERM with requests in flight; a second SIGINT.

30 kv clients have pipelined 400 commands each (some with 10 KiB values) into the
server when SIGTERM arrives, and one has a 4 MiB reply waiting unread: the server stops
accepting at once, every request sent before the signal gets its complete reply,
every connection closes within the grace period, and the exit status is 0. With a
connection that will not finish, a second SIGINT exits at once with 130.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, figure
from servekit import TESTS, read_lines, read_until_closed

from handlers.framers.resp import encode_command

CLIENTS = 30
DRAIN_BOUND = 2.0  # seconds from SIGTERM to exit (graceful timeout 30 s); measured 0.4 s
EXIT_BOUND = 0.5  # seconds from the second SIGINT to exit (grace period 120 s); 0.03 s
PAIRS = 200


def workload(n: int) -> tuple[bytes, bytes]:
    """Client n's pipelined requests and the replies they must get, in order."""
    requests, replies = bytearray(), bytearray()
    for i in range(PAIRS):
        value = (b"%d-%d:" % (n, i)) * (1000 if i % 50 == 0 else 1)
        requests += encode_command([b"SET", b"k%d-%d" % (n, i), value])
        requests += encode_command([b"GET", b"k%d-%d" % (n, i)])
        replies += b"+OK\r\n$%d\r\n%s\r\n" % (len(value), value)
    return bytes(requests), bytes(replies)


@pytest.mark.timeout(120)
def test_sigterm_answers_every_request_in_flight_then_exits_0(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("kv", "--bind", "127.0.0.1:0", "--graceful-timeout", "30",
                       app_dir=False)
    big = 4 * 2**20
    with srv.connect() as setup:
        setup.sendall(encode_command([b"SET", b"big", b"B" * big]))
        assert setup.recv(16) == b"+OK\r\n"
    clients = []
    for n in range(CLIENTS):
        sock = srv.connect()
        requests, replies = workload(n)
        sock.setblocking(False)
        clients.append((sock, requests, replies))
    bulky = srv.connect()
    bulky.sendall(encode_command([b"GET", b"big"]))
    # everything is sent before the signal: pipelined and unread by the server
    for sock, requests, _ in clients:
        sock.setblocking(True)
        sock.settimeout(WAIT)
        sock.sendall(requests)
    srv.signal(signal.SIGTERM)
    started = time.monotonic()
    srv.wait_for("stopping gracefully")
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(srv.tcp_address(), timeout=WAIT).close()
    for sock, _, replies in clients:
        got = read_until_closed(sock)
        assert got == replies, f"{len(got)} of {len(replies)} reply bytes"
        sock.close()
    got = read_until_closed(bulky)
    assert got == b"$%d\r\n" % big + b"B" * big + b"\r\n"
    bulky.close()
    assert srv.wait() == 0
    elapsed = time.monotonic() - started
    figure("SIGTERM: 31 connections with requests in flight drained and exited in",
           elapsed, "s")
    assert elapsed < DRAIN_BOUND, f"drained and exited in {elapsed:.2f} s"
    assert "aborting" not in srv.log
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_a_second_sigint_exits_at_once(start_server: Callable[..., FaultServer]) -> None:
    srv = start_server("servekit:Stubborn", "--bind", "127.0.0.1:0",
                       "--graceful-timeout", "120", "--app-dir", str(TESTS), app_dir=False)
    with srv.connect() as client:
        client.sendall(b"hi\n")
        assert read_lines(client, 1) == [b"hi done"]
        srv.signal(signal.SIGINT)
        srv.wait_for("stopping gracefully")
        assert read_lines(client, 1) == [b"shutting down"]  # it will not close by itself
        started = time.monotonic()
        srv.signal(signal.SIGINT)
        assert srv.wait() == 130
        took = time.monotonic() - started
        figure("SIGINT twice: exited after the second in", took, "s")
        assert took < EXIT_BOUND, f"{took:.2f} s, with a 120 s grace period"
        assert read_until_closed(client) == b""
    assert not srv.sampler.children()
    srv.assert_clean_log()
