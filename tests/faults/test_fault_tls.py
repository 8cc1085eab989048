"""Scenario 32: TLS handshake failure or stall, and TLS clients that never read.

``reactor serve echo`` over TLS (trustme certificates) meets 30 bad clients at once:
garbage instead of a ClientHello, half a ClientHello and then silence, half a
ClientHello and then gone. Each is closed with exactly one INFO line naming the peer
and the reason -- the stalled ones at the handshake deadline -- while a good TLS client
keeps its round trips; no row, descriptor or busy loop is left behind.

Then TLS clients that pour data and never read: the echo's writes pause at the write
limits (which count the ciphertext queued), its reading pauses with them, and the
server's memory stays bounded.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, assert_idle, figure, log_lines
from servekit import read_until_closed
from tlskit import Certs

HANDSHAKE_TIMEOUT = 1.0
SLACK = 1.5  # scheduling on a loaded machine
PER_KIND = 10
POURERS = 10
POUR_RSS_BOUND = 8 * 2**20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("fault-certs"))


def start_tls_echo(start_server: Callable[..., FaultServer], certs: Certs,
                   *more: str) -> FaultServer:
    return start_server("echo", "--bind", "127.0.0.1:0", "--tls-cert", str(certs.cert_file),
                        "--tls-key", str(certs.key_file), *more, app_dir=False)


def client_hello(certs: Certs) -> bytes:
    engine = certs.client_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(),
                                             server_hostname="localhost")
    try:
        engine.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def round_trip(sock: ssl.SSLSocket, payload: bytes) -> float:
    started = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "the good client's connection was closed"
        got += chunk
    assert got == payload
    return time.monotonic() - started


def closed_after(sock: socket.socket, start: float) -> float:
    """Seconds from ``start`` until the server closed ``sock`` (reset counts)."""
    read_until_closed(sock)
    return time.monotonic() - start


@pytest.mark.timeout(90)
def test_bad_handshakes_are_closed_with_one_line_each(
    start_server: Callable[..., FaultServer], certs: Certs,
) -> None:
    srv = start_tls_echo(start_server, certs, "--tls-handshake-timeout",
                         str(HANDSHAKE_TIMEOUT))
    host, port = srv.tcp_address()
    hello = client_hello(certs)
    with socket.create_connection((host, port), timeout=WAIT) as raw:
        good = certs.client_context().wrap_socket(raw, server_hostname="localhost")
        round_trip(good, b"warm up")
        baseline = srv.usage()  # one good connection open
        garbage = [socket.create_connection((host, port), timeout=WAIT)
                   for _ in range(PER_KIND)]
        stalled = [socket.create_connection((host, port), timeout=WAIT)
                   for _ in range(PER_KIND)]
        vanished = [socket.create_connection((host, port), timeout=WAIT)
                    for _ in range(PER_KIND)]
        start = time.monotonic()
        for sock in garbage:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        for sock in stalled + vanished:
            sock.sendall(hello[: len(hello) // 2])
        for sock in vanished:
            sock.close()
        # the good client is served while the stalled ones wait for their deadline
        slowest = max(round_trip(good, os.urandom(4096)) for _ in range(20))
        figure("tls: slowest good round trip while 30 bad handshakes are pending",
               slowest * 1000, "ms")
        assert slowest < 0.3
        cpu = assert_idle(srv, "tls: bad handshakes pending", seconds=0.5)
        assert cpu < 0.05
        garbage_closed = [closed_after(sock, start) for sock in garbage]
        stalled_closed = [closed_after(sock, start) for sock in stalled]
        figure("tls: stalled handshakes closed after (--tls-handshake-timeout 1)",
               max(stalled_closed), "s")
        assert max(garbage_closed) < HANDSHAKE_TIMEOUT
        assert min(stalled_closed) >= HANDSHAKE_TIMEOUT - 0.05
        assert max(stalled_closed) < HANDSHAKE_TIMEOUT + SLACK
        for sock in garbage + stalled:
            sock.close()
        srv.wait_idle(open_=1)
        srv.wait_back_to(baseline)
        round_trip(good, b"still here")
        good.close()
    srv.wait_idle(open_=0)
    lines = log_lines(srv.log, "reactor.tls:")
    figure("tls: log lines for 30 bad handshakes", len(lines), "lines")
    assert len(lines) == 3 * PER_KIND, "\n".join(lines)
    assert all("127.0.0.1" in line and line.endswith("; closed") for line in lines)
    assert len([x for x in lines if "handshake failed" in x]) == PER_KIND
    assert len([x for x in lines if "timed out after 1 s" in x]) == PER_KIND
    assert len([x for x in lines if "during the handshake" in x]) == PER_KIND
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(90)
def test_tls_clients_that_never_read_leave_memory_bounded(
    start_server: Callable[..., FaultServer], certs: Certs,
) -> None:
    srv = start_tls_echo(start_server, certs)
    address = srv.tcp_address()
    baseline = srv.usage()
    clients = []
    for _ in range(POURERS):
        raw = socket.create_connection(address, timeout=WAIT)
        clients.append(certs.client_context().wrap_socket(raw, server_hostname="localhost"))
    block = os.urandom(65536)
    with srv.sampler.rss_watch() as watch:
        poured = 0
        for sock in clients:
            sock.settimeout(0.5)
            try:
                for _ in range(64 * 16):  # up to 64 MiB each, never reading
                    sock.sendall(block)
                    poured += len(block)
            except TimeoutError:
                pass  # the server stopped reading: its echo is paused
        assert_idle(srv, "tls: clients that never read")
    growth = watch.peak - baseline.rss
    figure("tls: RSS growth, 10 TLS clients pouring and never reading", growth / 2**20,
           "MiB")
    assert growth < POUR_RSS_BOUND, f"RSS grew {growth / 2**20:.1f} MiB"
    assert poured < POURERS * 16 * 2**20  # bounded by buffers, not by the pour
    for sock in clients:
        sock.close()
    srv.wait_idle(open_=0)
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()
