"""The loop: scheduling, fairness, timeouts, waking and stopping.

Deterministic parts run on a FakeSelector and a FakeClock; the waking and blocking
behaviour runs on every real selector backend.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

import blockwatch
import pytest

from reactor import ClosedError, FakeClock, LocalProtocolError, Reactor
from reactor.testing import FakeSelector

needs_blockwatch = pytest.mark.skipif(not blockwatch.available(),
                                      reason="reads /proc/self/task/TID/syscall (Linux)")


@pytest.fixture
def fake() -> tuple[Reactor, FakeSelector, FakeClock]:
    clock = FakeClock()
    selector = FakeSelector(clock)
    return Reactor(selector=selector, clock=clock), selector, clock


def test_callbacks_run_in_order(fake: tuple[Reactor, FakeSelector, FakeClock]) -> None:
    r, _, _ = fake
    out: list[int] = []
    for i in range(5):
        r.call_soon(out.append, i)
    r.run_once()
    assert out == [0, 1, 2, 3, 4]


def test_callbacks_queued_during_an_iteration_wait_for_the_next(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, _, _ = fake
    out: list[str] = []

    def first() -> None:
        out.append("first")
        r.call_soon(out.append, "second")

    r.call_soon(first)
    r.run_once()
    assert out == ["first"]
    r.run_once()
    assert out == ["first", "second"]


def test_a_self_rescheduling_callback_does_not_starve_io(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, selector, _ = fake
    a, b = socket.socketpair()
    try:
        seen: list[str] = []

        class Reader:
            def _read_ready(self) -> None:
                seen.append("io")

            def _write_ready(self) -> None:
                pass

        def spin() -> None:
            seen.append("spin")
            r.call_soon(spin)

        selector.register(a, selectors.EVENT_READ, Reader())
        r.call_soon(spin)
        selector.set_ready(a, selectors.EVENT_READ)
        r.run_once()
        r.run_once()
        assert "io" in seen
        assert seen.count("spin") == 2
    finally:
        a.close()
        b.close()


def test_idle_loop_blocks_without_timeout(fake: tuple[Reactor, FakeSelector, FakeClock]) -> None:
    r, selector, _ = fake
    r.run_once()
    assert selector.timeouts[-1] is None
    r.call_soon(lambda: None)
    r.run_once()
    assert selector.timeouts[-1] == 0


def test_timeout_is_the_time_to_the_next_timer(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, selector, clock = fake
    fired: list[float] = []
    r.call_later(5.0, lambda: fired.append(clock()))
    r.call_later(2.0, lambda: fired.append(clock()))
    start = clock()
    r.run_once()
    assert selector.timeouts[-1] == pytest.approx(2.0)
    assert fired == [start + 2.0]
    r.run_once()
    assert selector.timeouts[-1] == pytest.approx(3.0)
    assert fired == [start + 2.0, start + 5.0]
    r.run_once(timeout=7.0)
    assert selector.timeouts[-1] == 7.0


def test_run_once_timeout_caps_the_wait(fake: tuple[Reactor, FakeSelector, FakeClock]) -> None:
    r, selector, _ = fake
    r.call_later(100.0, lambda: None)
    r.run_once(timeout=1.5)
    assert selector.timeouts[-1] == 1.5


def test_cancelled_timer_does_not_run_or_shorten_the_wait(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, selector, _ = fake
    out: list[str] = []
    h = r.call_later(1.0, out.append, "early")
    r.call_later(10.0, out.append, "late")
    h.cancel()
    assert r.statistics().pending_timers == 1
    r.run_once()
    assert selector.timeouts[-1] == pytest.approx(10.0)
    assert out == ["late"]


def test_call_at_and_time(fake: tuple[Reactor, FakeSelector, FakeClock]) -> None:
    r, _, clock = fake
    out: list[float] = []
    r.call_at(r.time() + 3, lambda: out.append(clock()))
    clock.advance(3)
    r.run_once()
    assert out == [r.time()]


def test_exception_in_a_callback_is_logged_and_the_loop_goes_on(
    fake: tuple[Reactor, FakeSelector, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    r, _, _ = fake
    out: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    r.call_soon(boom)
    r.call_soon(out.append, 1)
    r.run_once()
    assert out == [1]
    assert "boom" in caplog.text
    assert any(rec.exc_info for rec in caplog.records)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_exit_exceptions_propagate(
    fake: tuple[Reactor, FakeSelector, FakeClock], exc: type[BaseException]
) -> None:
    r, _, _ = fake

    def stop() -> None:
        raise exc

    r.call_soon(stop)
    with pytest.raises(exc):
        r.run_once()


def test_stop_makes_run_return_after_the_iteration(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, _, _ = fake
    out: list[int] = []
    r.call_soon(out.append, 1)
    r.call_soon(r.stop)
    r.call_soon(out.append, 2)
    r.run()
    assert out == [1, 2]
    assert not r.is_running()


def test_run_until_times_out(fake: tuple[Reactor, FakeSelector, FakeClock]) -> None:
    r, _, _ = fake
    with pytest.raises(TimeoutError):
        r.run_until(lambda: False, timeout=5)


def test_statistics_is_an_immutable_snapshot(
    fake: tuple[Reactor, FakeSelector, FakeClock],
) -> None:
    r, _, _ = fake
    r.call_later(1, lambda: None)
    r.call_soon(lambda: None)
    stats = r.statistics()
    assert stats.backend == "FakeSelector"
    assert stats.pending_timers == 1
    assert stats.ready_callbacks == 1
    r.run_once()
    assert stats.ready_callbacks == 1  # unchanged: a snapshot
    assert r.statistics().iterations == stats.iterations + 1
    with pytest.raises(AttributeError):
        stats.iterations = 5  # type: ignore[misc]


def test_closed_reactor_refuses_work() -> None:
    r = Reactor()
    r.close()
    r.close()  # twice is harmless
    with pytest.raises(ClosedError):
        r.run_once()
    with pytest.raises(ClosedError):
        r.call_soon_threadsafe(lambda: None)
    with pytest.raises(ClosedError):
        r.listen_tcp("127.0.0.1", 0, lambda: None)


# -- real backends --------------------------------------------------------------------


@pytest.mark.timeout(10)
@needs_blockwatch
def test_call_soon_threadsafe_wakes_a_blocked_loop(reactor: Reactor) -> None:
    done = threading.Event()
    woke_at: list[float] = []
    sent_at: list[float] = []
    blocked: list[blockwatch.Blocked] = []
    loop_thread = threading.get_native_id()

    def from_thread() -> None:
        # only once the loop (this test's main thread) is blocked in its selector
        blocked.append(blockwatch.wait_until_blocked(loop_thread))
        sent_at.append(time.monotonic())
        reactor.call_soon_threadsafe(lambda: (woke_at.append(time.monotonic()), done.set()))

    t = threading.Thread(target=from_thread)
    t.start()
    reactor.run_until(done.is_set, timeout=5)
    t.join()
    assert blocked, "the loop never blocked"
    assert woke_at[0] - sent_at[0] < 0.5  # not run_until's 5 s


@pytest.mark.timeout(10)
def test_stop_from_another_thread_takes_effect_within_milliseconds(reactor: Reactor) -> None:
    running = threading.Event()
    reactor.call_soon(running.set)
    t = threading.Thread(target=reactor.run)
    t.start()
    assert running.wait(5)
    start = time.monotonic()
    reactor.stop()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - start < 0.25  # generous for a loaded 2-core machine


@pytest.mark.timeout(10)
def test_run_twice_is_refused(reactor: Reactor) -> None:
    running = threading.Event()
    reactor.call_soon(running.set)
    t = threading.Thread(target=reactor.run)
    t.start()
    try:
        assert running.wait(5)
        with pytest.raises(LocalProtocolError):
            reactor.run()
        with pytest.raises(LocalProtocolError):
            reactor.close()
    finally:
        reactor.stop()
        t.join(5)


@pytest.mark.timeout(20)
@needs_blockwatch
def test_no_idle_wakeups_with_100_idle_connections(reactor: Reactor) -> None:
    import asyncio

    listener = reactor.listen_tcp("127.0.0.1", 0, asyncio.Protocol)
    clients = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(100)]
    try:
        reactor.run_until(lambda: len(reactor.connections) == 100, timeout=10)
        # let the loop settle: nothing is due, nothing is ready
        reactor.run_once(timeout=0)
        t = threading.Thread(target=reactor.run)
        t.start()
        try:
            assert t.native_id is not None
            blocked = blockwatch.wait_until_blocked(t.native_id)
            before = reactor.statistics().iterations
            time.sleep(0.5)  # a measurement window: nothing may happen in it
            during = reactor.statistics().iterations
            still = blockwatch.blocked_in(t.native_id)
        finally:
            reactor.stop()
            t.join(5)
        assert blocked.forever, f"idle, yet {blocked.syscall} was given a timeout"
        assert during == before, f"{during - before} iterations while idle"
        assert still is not None and still.forever, "the idle loop woke up"
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(10)
def test_timers_fire_on_real_backends(reactor: Reactor) -> None:
    fired: list[str] = []
    reactor.call_later(0.05, fired.append, "b")
    reactor.call_later(0.01, fired.append, "a")
    start = time.monotonic()
    reactor.run_until(lambda: len(fired) == 2, timeout=5)
    assert fired == ["a", "b"]
    assert time.monotonic() - start >= 0.04
