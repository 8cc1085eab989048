"""Signals reach the reactor through the wake-up descriptor and run on its thread."""

from __future__ import annotations

import os
import signal
import threading

import blockwatch
import pytest

from reactor import LocalProtocolError, Reactor


@pytest.mark.timeout(10)
def test_signal_handler_runs_on_the_reactor(reactor: Reactor) -> None:
    got: list[tuple[int, int]] = []
    def handler(tag: int) -> None:
        got.append((tag, threading.get_ident()))

    reactor.add_signal_handler(signal.SIGUSR1, handler, 7)
    os.kill(os.getpid(), signal.SIGUSR1)
    reactor.run_until(lambda: bool(got), timeout=5)
    assert got == [(7, threading.get_ident())]


@pytest.mark.skipif(not blockwatch.available(),
                    reason="reads /proc/self/task/TID/syscall (Linux)")
@pytest.mark.timeout(10)
def test_signal_wakes_a_blocked_reactor(reactor: Reactor) -> None:
    got: list[int] = []
    reactor.add_signal_handler(signal.SIGUSR2, got.append, 1)
    loop_thread = threading.get_native_id()
    blocked: list[blockwatch.Blocked] = []

    def signal_the_blocked_loop() -> None:
        blocked.append(blockwatch.wait_until_blocked(loop_thread))
        os.kill(os.getpid(), signal.SIGUSR2)

    sender = threading.Thread(target=signal_the_blocked_loop)
    sender.start()
    reactor.run_once()  # blocks with no timeout until the signal arrives
    reactor.run_until(lambda: bool(got), timeout=5)
    sender.join(5)
    assert blocked and blocked[0].forever, blocked  # it really waited, with no timeout
    assert got == [1]


def test_previous_handlers_are_restored() -> None:
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGUSR1, previous)
    old_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(old_fd)
    try:
        r = Reactor()
        r.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert signal.getsignal(signal.SIGUSR1) is not previous
        assert r.remove_signal_handler(signal.SIGUSR1)
        assert not r.remove_signal_handler(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is previous
        r.add_signal_handler(signal.SIGUSR1, lambda: None)
        r.close()
        assert signal.getsignal(signal.SIGUSR1) is previous
        # the wake-up descriptor is back to what it was
        assert signal.set_wakeup_fd(old_fd) == old_fd
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_signal_handlers_only_on_the_main_thread() -> None:
    r = Reactor()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            r.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    r.close()
    assert len(errors) == 1 and isinstance(errors[0], LocalProtocolError)


def test_uncatchable_signal_is_refused() -> None:
    r = Reactor()
    try:
        with pytest.raises(LocalProtocolError):
            r.add_signal_handler(signal.SIGKILL, lambda: None)
        # the failed attempt left no wake-up descriptor behind
        assert signal.set_wakeup_fd(-1) == -1
    finally:
        r.close()


@pytest.mark.timeout(20)
def test_signal_storm_does_not_disturb_timers(reactor: Reactor) -> None:
    """An interval timer firing every millisecond: no InterruptedError, timers on time."""
    hits: list[int] = []
    reactor.add_signal_handler(signal.SIGALRM, lambda: hits.append(1))
    fired: list[float] = []
    start = reactor.time()
    reactor.call_later(0.3, lambda: fired.append(reactor.time()))
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        reactor.run_until(lambda: bool(fired), timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    took = fired[0] - start
    assert 0.3 <= took < 0.3 + 0.2  # measured 0.300 s
    # the storm was one: each SIGALRM reached its handler (measured 280-300 in 0.3 s)
    assert len(hits) / took >= 500, f"{len(hits)} SIGALRM handled in {took:.3f} s"
