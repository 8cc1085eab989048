"""Scenario 34: a timer storm -- 100 000 timers, 99 % cancelled.

No crash, I/O served while the storm is pending (within a bounded number of
iterations), and the memory back after cancellation: the heap compacts, so its length
and the memory it holds follow the live timers, not every timer ever scheduled.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from netkit import WAIT

from reactor import Reactor
from reactor.sansio.timers import COMPACT_MIN

STORM = 100_000
KEEP_EVERY = 100  # 1 % stays scheduled


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture
def r() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def noop() -> None:
    pass


def schedule_storm(r: Reactor) -> list[object]:
    """STORM timers 1 h to 2 h away; every one but each KEEP_EVERY-th cancelled."""
    handles = [r.call_later(3600.0 + i * 0.036, noop) for i in range(STORM)]
    for i, handle in enumerate(handles):
        if i % KEEP_EVERY:
            handle.cancel()
    return [h for i, h in enumerate(handles) if not i % KEEP_EVERY]


def iterations_to_echo(r: Reactor, port: int) -> int:
    """Loop iterations from a client's request to its echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
        client.setblocking(False)
        start = r.statistics().iterations
        client.sendall(b"ping")
        deadline = time.monotonic() + WAIT
        got = b""
        while got != b"ping":
            assert time.monotonic() < deadline, "no echo while the storm is pending"
            r.run_once(0.05)
            try:
                got += client.recv(16)
            except BlockingIOError:
                pass
        return r.statistics().iterations - start


def test_the_heap_compacts_and_memory_comes_back(r: Reactor) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        r.run_once(0)
        baseline = tracemalloc.get_traced_memory()[0]
        live = schedule_storm(r)
        assert r.statistics().pending_timers == len(live) == STORM // KEEP_EVERY
        # compaction keeps cancelled entries at most as many as the live ones
        assert r.statistics().timer_heap <= 2 * len(live) + COMPACT_MIN + 1
        gc.collect()
        with_live = tracemalloc.get_traced_memory()[0] - baseline
        # 1 000 live timers (handle + heap entry, about 250 B each) and no trace of the
        # 99 000 cancelled ones (which took about 25 MB while scheduled)
        assert with_live < 1_000 * 1_000, f"{with_live} B held for 1 000 live timers"

        for handle in live:
            handle.cancel()  # type: ignore[attr-defined]
        live.clear()
        r.run_once(0)  # the cancelled entries left at the top are dropped
        assert r.statistics().pending_timers == 0
        assert r.statistics().timer_heap == 0
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - baseline
        assert after < 64 * 1024, f"{after} B still held after cancelling every timer"
    finally:
        tracemalloc.stop()


def test_io_is_served_while_the_storm_is_pending(r: Reactor) -> None:
    listener = r.listen_tcp("127.0.0.1", 0, Echo)
    live = schedule_storm(r)
    assert iterations_to_echo(r, listener.port) <= 5
    assert r.statistics().pending_timers == len(live)


def test_io_is_served_while_due_timers_keep_rescheduling(r: Reactor) -> None:
    """A storm of timers due now that re-arm themselves: each iteration runs only the
    callbacks due when it began, so the selector is polled between rounds."""
    listener = r.listen_tcp("127.0.0.1", 0, Echo)
    rounds = [0]

    def again() -> None:
        rounds[0] += 1
        r.call_later(0, again)

    for _ in range(10_000):
        r.call_later(0, again)
    iterations = iterations_to_echo(r, listener.port)
    assert iterations <= 5, f"echo took {iterations} iterations"
    assert rounds[0] >= 10_000  # the storm did run meanwhile


def test_a_storm_of_due_timers_runs_in_order_without_crashing(r: Reactor) -> None:
    fired: list[int] = []
    now = r.time()
    handles = [r.call_at(now - 1.0 + (i % 1000) * 1e-3, fired.append, i) for i in range(STORM)]
    for i, handle in enumerate(handles):
        if i % KEEP_EVERY:
            handle.cancel()
    r.run_once(0)
    expected = sorted(range(0, STORM, KEEP_EVERY), key=lambda i: (i % 1000, i))
    assert fired == expected
    assert r.statistics().pending_timers == 0 and r.statistics().timer_heap == 0
