"""Scenario 5: half-close. The peer shuts down its write side after its requests; the
server still writes every answer, then closes -- and does not spin on the EOF while
answers are still to come.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from faultlib import CPU_LIMIT, WAIT, FaultServer, figure
from servekit import read_until_closed

from handlers.framers.resp import encode_command
from reactor.io.transports import DEFAULT_HIGH_WATER


def half_close(srv: FaultServer, payload: bytes, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    sock.connect(srv.tcp_address())
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    return sock


@pytest.mark.timeout(90)
def test_pipelined_kv_requests_then_eof_get_every_reply(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("kv", "--bind", "127.0.0.1:0", app_dir=False)
    value = b"v" * 100_000
    with srv.connect() as setup:
        setup.sendall(encode_command([b"SET", b"k", value]))
        assert setup.recv(16) == b"+OK\r\n"
    baseline = srv.usage()
    count = 200  # 20 MB of replies: the server pauses for writing, commands wait
    sock = half_close(srv, encode_command([b"GET", b"k"]) * count + b"PING\r\n", 8192)
    # the reader waits until the server, with the EOF behind the requests, has queued
    # more than its high-water mark: it is paused, the requests wait (how much of the
    # first 100 kB reply the kernel took decides whether a whole one is queued)
    deadline = time.monotonic() + WAIT
    while (queued := srv.stats()["write_buffered"]) <= DEFAULT_HIGH_WATER:
        assert time.monotonic() < deadline, f"the server queued only {queued} bytes"
        time.sleep(0.02)  # polling a condition, with a deadline
    got = read_until_closed(sock)
    sock.close()
    reply = b"$100000\r\n" + value + b"\r\n"
    assert got == reply * count + b"+PONG\r\n"
    srv.wait_back_to(baseline, rss_slack=32 * 2**20)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("service", "payload", "expected"), [
    ("echo", b"e" * (4 * 2**20), b"e" * (4 * 2**20)),
    ("chat", b"/nick halfway\n/who\n", b"* in lobby: halfway\n"),
])
def test_echo_and_chat_answer_after_the_peer_half_closed(
    start_server: Callable[..., FaultServer], service: str, payload: bytes, expected: bytes,
) -> None:
    srv = start_server(service, "--bind", "127.0.0.1:0", app_dir=False)
    baseline = srv.usage()
    sock = half_close(srv, payload)
    got = read_until_closed(sock)
    sock.close()
    assert got.endswith(expected)
    srv.wait_back_to(baseline, rss_slack=16 * 2**20)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_answers_from_timers_after_the_eof_then_close_without_spinning(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Delayed", "--bind", "127.0.0.1:0",
                       env={"DELAYED_MS": "2500"})
    baseline = srv.usage()
    socks = [half_close(srv, b"one\ntwo\nthree\n") for _ in range(10)]
    # every connection is half-closed with answers due 2.5 s later: the server waits
    cpu = srv.sampler.cpu_fraction(2.0)
    figure("half-close: server CPU while 10 half-closed connections await answers",
           cpu * 100, "% of a core")
    assert cpu < CPU_LIMIT, f"{cpu:.0%} of a core while half-closed connections waited"
    for sock in socks:
        assert read_until_closed(sock) == b"one done\ntwo done\nthree done\n"
        sock.close()
    srv.wait_for(r"lost #1 .*exc=None", count=10)
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    assert "lost #2" not in srv.log
    srv.assert_clean_log()
