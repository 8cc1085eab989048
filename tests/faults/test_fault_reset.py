"""Scenario 4: the peer resets in the middle of a large response; a write after the
peer has gone (EPIPE).

Each gives exactly one ``connection_lost`` (faultkit logs a count per protocol), the
queued output is freed (RSS and the table's ``write_buffered`` back), later writes
are dropped with one warning, other connections are served throughout, and no
traceback reaches the log.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, assert_idle, figure, log_lines
from servekit import read_lines

from handlers.framers.resp import encode_command

VALUE = 8 * 2**20
RESETTERS = 10
GROWTH_SLACK = 2 * 2**20  # RSS over the idle server's, after each round


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def small_buffer_client(srv: FaultServer) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(srv.tcp_address())
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "EOF"
        data += chunk
    return bytes(data)


def reset_round(srv: FaultServer) -> int:
    """RESETTERS clients GET the big value, read 64 KiB, then reset; returns the peak
    RSS while the replies were queued. Waits until the server freed them."""
    clients = [small_buffer_client(srv) for _ in range(RESETTERS)]
    with srv.sampler.rss_watch() as watch:
        for sock in clients:
            sock.sendall(encode_command([b"GET", b"big"]))
        for sock in clients:
            assert read_exactly(sock, 65536).startswith(b"$%d\r\nvvvv" % VALUE)
        # the replies are queued in the server now (the rest is in kernel buffers)
        deadline = time.monotonic() + WAIT
        while srv.stats()["write_buffered"] < RESETTERS * VALUE // 2:
            assert time.monotonic() < deadline, "the replies were never queued"
        for sock in clients:
            reset(sock)
        stats = srv.stats()
        deadline = time.monotonic() + WAIT
        while stats["open"] != 1 or stats["write_buffered"]:
            assert time.monotonic() < deadline, f"not freed: {stats}"
            stats = srv.stats()
    return watch.peak


@pytest.mark.timeout(120)
def test_reset_in_the_middle_of_large_kv_replies_frees_them(
    start_server: Callable[..., FaultServer],
) -> None:
    """Ten 8 MiB replies queued, then every client resets, three rounds; after each the
    server's RSS is back within 2 MiB of the idle server's, where a leak of the queued
    replies would keep about 50 MiB per round (the figure of the queued replies' RSS).

    The server runs with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``): by
    default glibc raises it after the first large free, so later replies come from the
    heap, whose freed memory stays in RSS by an amount that depends on the order of the
    frees (one CI run kept 5 MiB). With it fixed, every large buffer is its own mapping
    and a freed one leaves RSS at once, so what stays is what the server holds."""
    srv = start_server("kv", "--bind", "127.0.0.1:0", app_dir=False,
                       env={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    with srv.connect() as observer:
        observer.sendall(encode_command([b"SET", b"big", b"v" * VALUE]))
        assert read_exactly(observer, 5) == b"+OK\r\n"
        before = srv.usage()
        for round_ in range(3):
            peak = reset_round(srv)
            assert peak > before.rss + RESETTERS * VALUE // 2  # they really were queued
            if not round_:
                figure("reset: RSS with ten 8 MiB kv replies queued",
                       (peak - before.rss) / 2**20, "MiB over the idle server")
            after = srv.wait_back_to(before, rss_slack=GROWTH_SLACK)
            observer.sendall(b"PING\r\n")
            assert read_exactly(observer, 7) == b"+PONG\r\n"
        figure("reset: RSS over the idle server after three rounds of ten resets",
               (after.rss - before.rss) / 2**20, "MiB")
        assert srv.stats()["closed_total"] == 3 * RESETTERS
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(90)
def test_reset_mid_stream_gives_one_connection_lost(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    with srv.connect() as observer:
        clients = [small_buffer_client(srv) for _ in range(RESETTERS)]
        for sock in clients:
            sock.sendall(b"stream 1000000000\n")
        for sock in clients:
            read_exactly(sock, 100_000)
        srv.wait_for("stream started", count=RESETTERS)
        for sock in clients:
            reset(sock)
        srv.wait_for(r"lost #1 .*exc=(ConnectionResetError|BrokenPipeError)", count=RESETTERS)
        assert_idle(srv, "after 10 resets mid-stream")
        observer.sendall(b"ping\n")
        assert read_lines(observer, 1) == [b"pong"]
    srv.wait_for(r"lost #1 .*exc=None")  # the observer
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    log = srv.log  # complete now that the server exited
    assert "lost #2" not in log
    assert len(log_lines(log, "lost #1")) == RESETTERS + 1
    assert "stream done" not in log  # the streams were cut, not finished
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_writes_after_the_peer_has_gone_become_one_close_and_one_warning(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    with srv.connect() as gone:
        # the server stops reading, so it learns that we left only when send fails
        gone.sendall(b"quiet 200 30\n")
    srv.wait_for("later done")
    lost = srv.wait_for(r"lost #1 .*exc=(\w+)")
    assert lost.group(1) in ("BrokenPipeError", "ConnectionResetError"), lost.group(0)
    srv.wait_back_to(baseline)
    assert srv.stats()["open"] == 0
    assert srv.stop() == 0
    log = srv.log  # complete now that the server exited
    assert len(log_lines(log, "writes after the connection was lost are dropped")) == 1
    assert "lost #2" not in log
    srv.assert_clean_log()
