"""Regression: a wake-up that lands while the reactor drains the wake-up channel is
never lost (the channel's "byte pending" flag is cleared only after the drain)."""

from __future__ import annotations

import select
import threading
from typing import Any

import pytest

from reactor import Reactor


class _WakeDuringDrain:
    """Wraps the waker's read socket: the first recv lets another wake() happen."""

    def __init__(self, sock: Any, waker: Any) -> None:
        self.sock = sock
        self.waker = waker
        self.fired = False

    def recv(self, n: int) -> bytes:
        if not self.fired:
            self.fired = True
            self.waker.wake()  # another thread's call_soon_threadsafe, mid-drain
        return bytes(self.sock.recv(n))

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(20)
def test_a_wake_during_the_drain_is_not_lost() -> None:
    reactor = Reactor()
    waker = reactor._waker
    real = waker.rsock
    waker.wake()
    waker.rsock = _WakeDuringDrain(real, waker)
    waker._read_ready()  # drains both bytes
    waker.rsock = real
    waker.wake()  # must still write a byte: the reactor has to wake up
    readable, _, _ = select.select([real], [], [], 1.0)
    assert readable, "wake() after a drain wrote nothing: the wake-up was lost"
    reactor.close()


@pytest.mark.timeout(30)
def test_stop_from_other_threads_under_a_storm_of_wakes() -> None:
    for _ in range(20):
        reactor = Reactor()
        done = threading.Event()

        def storm(r: Reactor = reactor, stop: threading.Event = done) -> None:
            while not stop.is_set():
                try:
                    r.call_soon_threadsafe(lambda: None)
                except Exception:
                    return

        threads = [threading.Thread(target=storm) for _ in range(3)]
        for t in threads:
            t.start()
        runner = threading.Thread(target=reactor.run)
        runner.start()
        for _ in range(50):
            reactor.call_soon_threadsafe(lambda: None)
        done.set()
        for t in threads:
            t.join(10)
        reactor.stop()
        runner.join(10)
        assert not runner.is_alive(), "stop() was lost"
        reactor.close()
