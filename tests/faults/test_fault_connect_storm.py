"""Scenario 16: a connect storm larger than the backlog.

The echo service listens with a backlog of 64 while waves of 1 000 clients connect at
once (5 000 in all; 100 000 in the long variant). Established connections keep being
answered promptly throughout -- accepts come in bounded batches, so the storm cannot
starve them -- and every storm client is eventually served, none refused. The same for
a ``ThreadingTCPServer`` facade (``request_queue_size`` 64): waves of 128 with a thread
per connection, waves of 1 000 with a pool of 16 threads (``max_threads``).

Afterwards the server is back at its baseline, except for connections ESTABLISHED with
a peer address that no socket on the host has any more (see
:func:`faultlib.ghost_connections`). CI once saw the pool server hold one descriptor
more than its baseline for over 30 s after a storm in which every client had finished;
the likely cause is a handshake the kernel completed from a SYN cookie after its client
had gone, which leaves the server such a connection. Neither server here has a deadline
for silent connections, so it would hold one like any open connection; the test excuses
exactly those, and counts them as a figure.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, churn, figure, ghost_connections

BACKLOG = 64
ESTABLISHED = 10
RTT_BOUND = 0.3  # seconds, the slowest established round trip (measured 5-55 ms loaded)


class Pinger(threading.Thread):
    """Established clients doing echo round trips back to back; records the slowest."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.socks = [socket.create_connection(address, timeout=WAIT)
                      for _ in range(ESTABLISHED)]
        self.stop = threading.Event()
        self.rounds = 0
        self.slowest = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for sock in self.socks:
                    started = time.monotonic()
                    sock.sendall(b"ping")
                    got = b""
                    while len(got) < 4:
                        chunk = sock.recv(4 - len(got))
                        assert chunk, "an established connection was closed"
                        got += chunk
                    self.slowest = max(self.slowest, time.monotonic() - started)
                self.rounds += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.join(WAIT)
        for sock in self.socks:
            sock.close()


def storm(start_server: Callable[..., FaultServer], total: int, wave: int,
          timeout: float, facade: bool = False, max_threads: int | None = None) -> None:
    if facade:
        pool = ("--max-threads", str(max_threads)) if max_threads else ()
        srv = start_server("--queue", str(BACKLOG), *pool, facade="threading")
    else:
        srv = start_server("echo", "--bind", "127.0.0.1:0", "--backlog", str(BACKLOG),
                           app_dir=False)
    address = srv.tcp_address()
    initial = srv.usage()
    pinger = Pinger(address)
    if facade:  # a thread per established connection
        deadline = time.monotonic() + WAIT
        while srv.usage().threads < initial.threads + ESTABLISHED:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling a condition, with a deadline
    else:
        srv.wait_idle(ESTABLISHED)
    pinger.start()
    try:
        done = churn(address, total, concurrency=wave, rst_every=1, timeout=timeout)
        rounds = pinger.rounds
    finally:
        pinger.close()
    assert pinger.error is None, pinger.error
    assert done.failed == 0, done.errors  # nobody refused or reset
    assert done.completed == total
    assert rounds > 0, "the established connections were starved"
    name = "ThreadingTCPServer" if facade else "echo"
    if max_threads:
        name += f"(max_threads={max_threads})"
    figure(f"connect storm ({name}, {total} clients, waves of {wave}, backlog {BACKLOG}): "
           "slowest established round trip", pinger.slowest * 1000, "ms")
    figure(f"connect storm ({name}, {total} clients): slowest storm client served after",
           done.slowest, "s")
    assert pinger.slowest < RTT_BOUND, \
        f"an established client waited {pinger.slowest:.3f} s for its echo"
    pid = srv.proc.pid
    if not facade:
        srv.wait_idle(excused=lambda: len(ghost_connections(pid)))

    def ghosts() -> tuple[int, int]:
        """Descriptors and threads excused: one of each per ghost connection (a
        descriptor only, with a pool, whose workers are counted already)."""
        count = len(ghost_connections(pid))
        return count, count if facade and not max_threads else 0

    # a pool keeps its idle workers for the next requests (until server_close)
    idle_workers = max_threads or 0
    srv.wait_back_to(dataclasses.replace(initial, threads=initial.threads + idle_workers),
                     rss_slack=8 * 2**20, allowance=ghosts)
    figure(f"connect storm ({name}, {total} clients): connections completed by the kernel "
           "for clients already gone", len(ghost_connections(pid)), "connections")
    assert srv.stop() == 0
    srv.assert_clean_log()
    if facade:
        assert "threads=1 children=0" in srv.log  # server_close() ended every worker


@pytest.mark.timeout(180)
def test_connect_storm_short(start_server: Callable[..., FaultServer]) -> None:
    storm(start_server, 5_000, 1_000, timeout=150)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_connect_storm_long(start_server: Callable[..., FaultServer]) -> None:
    storm(start_server, 100_000, 2_000, timeout=800)


@pytest.mark.timeout(180)
def test_connect_storm_threading_facade_short(start_server: Callable[..., FaultServer]) -> None:
    # waves of 128 (2 x the backlog): with a thread per connection (the standard
    # library's ThreadingTCPServer just the same) accepting is slow enough that under
    # 1 000 at once the kernel drops completed handshakes from the full accept queue;
    # those clients wait in TCP retransmission for up to a minute and a few are reset.
    # With the CPU shared with one or two busy processes, waves of 256 saw the same (21
    # to 24 of the 5 000 clients reset, in 4 runs of 12); waves of 128 passed 10 of 10.
    # A bounded pool (max_threads) accepts fast enough: see the next tests.
    storm(start_server, 5_000, 128, timeout=150, facade=True)


@pytest.mark.timeout(180)
def test_connect_storm_threading_facade_pool_short(
    start_server: Callable[..., FaultServer],
) -> None:
    storm(start_server, 5_000, 1_000, timeout=150, facade=True, max_threads=16)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_connect_storm_threading_facade_pool_long(
    start_server: Callable[..., FaultServer],
) -> None:
    storm(start_server, 100_000, 1_000, timeout=800, facade=True, max_threads=16)
