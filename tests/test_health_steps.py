"""``--loop-health`` swaps in timed copies of the loop's ready step (and of the epoll
dispatch step: tests/test_loop_dispatch.py runs every dispatch scenario on that copy
too). The timed ready step must run the same callbacks, in the same order, with the
same error handling, as the plain one: the same script on both, compared."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from reactor import FakeClock, Reactor
from reactor.testing import FakeSelector


def script(reactor: Reactor, clock: FakeClock) -> list[Any]:
    """Ready callbacks, timers due and not due, a cancelled one, one that raises, one
    that schedules more: what ran, in order."""
    ran: list[Any] = []

    def boom() -> None:
        ran.append("boom")
        raise RuntimeError("raised on purpose")

    def chain(n: int) -> None:
        ran.append(("chain", n))
        if n < 3:
            reactor.call_soon(chain, n + 1)

    reactor.call_soon(ran.append, "first")
    reactor.call_later(0.5, ran.append, "timer 0.5")
    reactor.call_later(0.2, ran.append, "timer 0.2")
    reactor.call_later(0.3, ran.append, "cancelled").cancel()
    reactor.call_soon(boom)
    reactor.call_soon(chain, 1)
    reactor.call_later(10, ran.append, "not due")
    for _ in range(3):
        reactor.run_once(0)
    clock.advance(1.0)
    for _ in range(3):
        reactor.run_once(0)
    return ran


@pytest.mark.parametrize("threshold", [0.0, 0.1])
def test_the_timed_ready_step_runs_what_the_plain_one_runs(
        threshold: float, caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for timed in (False, True):
        caplog.clear()
        clock = FakeClock()
        with Reactor(selector=FakeSelector(), clock=clock) as reactor:
            if timed:
                reactor.enable_health(slow_callback_duration=threshold)
            ran = script(reactor, clock)
        errors = [r.getMessage() for r in caplog.records
                  if r.levelno >= logging.ERROR and "raised" in r.getMessage()]
        results.append((ran, len(errors)))
    assert results[0] == results[1]
    assert results[0][1] == 1  # boom's error, logged once on both
    assert "not due" not in results[0][0] and "cancelled" not in results[0][0]
