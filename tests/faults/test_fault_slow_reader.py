"""Scenario 7: clients that do not read.

* faultkit's Streamer sets out to stream 1 GiB to each of 20 clients that never read:
  every producer is paused by the transport's write limits (64 KiB high water), so the
  server's RSS grows by less than 2 x high water per client (plus a fixed allowance),
  it does not spin, and with ``--write-timeout`` each stalled connection is closed.
* 1 GiB really streamed to a reader that reads slowly, in bursts: RSS stays flat.
* echo and kv clients that send without reading: the services stop reading them.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Callable

import pytest
from faultlib import CPU_LIMIT, WAIT, FaultServer, figure, log_lines

from handlers.framers.resp import encode_command

GIB = 2**30
HIGH_WATER = 64 * 1024
CLIENTS = 20
ALLOWANCE = 3 * 2**20  # interpreter noise: allocator arenas, log records, ...


def non_reader(srv: FaultServer, line: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(srv.tcp_address())
    sock.sendall(line)
    return sock


def wait_quiet(srv: FaultServer, key: str = "bytes_out", timeout: float = WAIT) -> dict[str, int]:
    """Statistics once ``key`` stopped moving between two looks 0.3 s apart."""
    deadline = time.monotonic() + timeout
    last = srv.stats()
    while True:
        time.sleep(0.3)  # looking twice, with a deadline
        now = srv.stats()
        if now[key] == last[key]:
            return now
        assert time.monotonic() < deadline, f"{key} kept moving"
        last = now


@pytest.mark.timeout(90)
def test_never_reading_clients_pause_the_producer_and_memory_stays_bounded(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    with srv.sampler.rss_watch() as watch:
        socks = [non_reader(srv, b"stream %d\n" % GIB) for _ in range(CLIENTS)]
        srv.wait_for("stream started", count=CLIENTS)
        stats = wait_quiet(srv)
        cpu = srv.sampler.cpu_fraction()
    growth = watch.peak - baseline.rss
    figure("slow reader: RSS growth, 20 non-readers each owed 1 GiB", growth / 2**20, "MiB")
    figure("slow reader: server CPU with 20 paused producers", cpu * 100, "% of a core")
    assert growth < CLIENTS * 2 * HIGH_WATER + ALLOWANCE, \
        f"RSS grew {growth / 2**20:.1f} MiB for {CLIENTS} stalled clients"
    assert cpu < CPU_LIMIT, f"{cpu:.0%} of a core while producers were paused"
    assert stats["write_buffered"] <= CLIENTS * 2 * HIGH_WATER
    assert stats["bytes_out"] < CLIENTS * 16 * 2**20  # kernel buffers at most, not 1 GiB
    for sock in socks:
        sock.close()
    srv.wait_for("lost #1", count=CLIENTS)
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    assert "stream done" not in srv.log  # no producer ran past the write limits
    srv.assert_clean_log()


@pytest.mark.timeout(90)
def test_write_timeout_closes_stalled_connections_and_spares_readers(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0", "--write-timeout", "1.5",
                       "--log-level", "debug")  # each close's line (INFO: once per episode)
    baseline = srv.usage()
    socks = [non_reader(srv, b"stream %d\n" % GIB) for _ in range(5)]
    with socket.create_connection(srv.tcp_address(), timeout=WAIT) as reader:
        reader.sendall(b"stream %d\n" % (64 * 2**20))
        received = 0
        while received < 64 * 2**20:  # a slow but steady reader: never stalled for 1.5 s
            chunk = reader.recv(256 * 1024)
            assert chunk, f"the reader was cut off after {received} bytes"
            received += len(chunk)
            time.sleep(0.002)  # pacing the reader
    srv.wait_for(r"closing: write stalled", count=5)
    started = log_time(srv.wait_for(rf".*stream started {GIB}").group(0))
    # stalled from (a few ms after) the start: closed 1.5 s later (log times: +-1 ms)
    closes = log_lines(srv.log, "closing: write stalled")
    after = [log_time(line) - started for line in closes]
    figure("write timeout (1.5 s): 5 stalled connections closed after", max(after), "s")
    assert min(after) >= 1.5 - 0.002 and max(after) < 1.5 + 0.5, after
    srv.wait_for(r"lost #1 .*exc=DeadlineExceeded", count=5)
    for sock in socks:
        sock.close()
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    assert len(log_lines(srv.log, "closing: write stalled")) == 5
    srv.assert_clean_log()


def log_time(line: str) -> float:
    """The time of a log line (``YYYY-MM-DD HH:MM:SS,mmm ...``) in seconds."""
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def stream_to_a_bursty_reader(srv: FaultServer, size: int) -> tuple[int, int]:
    """Stream ``size`` bytes to a reader that stops for 50 ms every 32 MiB; returns the
    bytes received and the peak RSS meanwhile."""
    with srv.sampler.rss_watch() as watch, socket.create_connection(
            srv.tcp_address(), timeout=WAIT) as sock:
        sock.sendall(b"stream %d\n" % size)
        received = 0
        mark = 32 * 2**20
        while received < size:
            chunk = sock.recv(1 << 20)
            assert chunk, f"EOF after {received} bytes"
            received += len(chunk)
            if received >= mark:
                mark += 32 * 2**20
                time.sleep(0.05)  # the reader falls behind for a moment
    return received, watch.peak


@pytest.mark.timeout(120)
def test_a_gibibyte_to_a_slow_reader_with_flat_memory(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0")
    stream_to_a_bursty_reader(srv, 16 * 2**20)  # warm up the allocator
    baseline = srv.usage()
    started = time.monotonic()
    received, peak = stream_to_a_bursty_reader(srv, GIB)
    figure("slow reader: 1 GiB streamed to a bursty reader in", time.monotonic() - started, "s")
    assert received == GIB
    growth = peak - baseline.rss
    figure("slow reader: peak RSS growth while streaming 1 GiB", growth / 2**20, "MiB")
    assert growth < 2 * HIGH_WATER + ALLOWANCE, f"RSS grew {growth / 2**20:.1f} MiB"
    pauses = int(srv.wait_for(rf"stream done {GIB} pauses=(\d+)").group(1))
    assert pauses > 0  # the producer really was paused
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("service", "unit"), [
    ("echo", b"x" * 65536),
    ("kv", encode_command([b"ECHO", b"y" * 1000]) * 64),
])
def test_services_stop_reading_a_client_that_sends_without_reading(
    start_server: Callable[..., FaultServer], service: str, unit: bytes,
) -> None:
    srv = start_server(service, "--bind", "127.0.0.1:0", app_dir=False)
    baseline = srv.usage()
    with srv.sampler.rss_watch() as watch, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(srv.tcp_address())
        sock.setblocking(False)
        sent = 0
        stuck_since = None
        deadline = time.monotonic() + WAIT
        while True:  # send until the server has stopped taking bytes for 1 s
            try:
                sent += sock.send(unit)
                stuck_since = None
            except BlockingIOError:
                now = time.monotonic()
                stuck_since = stuck_since or now
                if now - stuck_since > 1.0:
                    break
                time.sleep(0.01)  # polling a condition, with a deadline
            assert time.monotonic() < deadline, "the server kept reading"
        cpu = srv.sampler.cpu_fraction(1.0)
    assert cpu < CPU_LIMIT
    growth = watch.peak - baseline.rss
    figure(f"{service}: RSS growth, a client sending without reading", growth / 2**20, "MiB")
    assert growth < 4 * HIGH_WATER + 2 * 256 * 1024 + ALLOWANCE, f"{growth / 2**20:.1f} MiB"
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()
