"""A worker's lifecycle table and the start-up backoff (socket-free)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.sansio.errors import IllegalTransition
from reactor.sansio.workerlife import (
    MAX_BACKOFF,
    MIN_BACKOFF,
    WORKER_LIFECYCLE,
    StartupBackoff,
    WorkerEvent,
    WorkerState,
)


def test_a_reload_and_a_crash() -> None:
    state = WorkerState.STARTING
    for event, expected in [(WorkerEvent.READY, WorkerState.SERVING),
                            (WorkerEvent.RETIRE, WorkerState.RETIRING),
                            (WorkerEvent.DRAIN, WorkerState.DRAINING),
                            (WorkerEvent.EXIT, WorkerState.EXITED)]:
        state = WORKER_LIFECYCLE.next(state, event)
        assert state is expected
    with pytest.raises(IllegalTransition):
        WORKER_LIFECYCLE.next(WorkerState.EXITED, WorkerEvent.READY)
    assert WORKER_LIFECYCLE.next(WorkerState.DRAINING, WorkerEvent.READY) is (
        WorkerState.DRAINING)  # a drained worker never serves again


@given(st.lists(st.sampled_from(list(WorkerEvent)), max_size=30))
def test_any_walk_ends_exited_and_never_serves_again_once_draining(
        events: list[WorkerEvent]) -> None:
    state = WorkerState.STARTING
    drained = False
    for event in events:
        if not WORKER_LIFECYCLE.allows(state, event):
            continue
        state = WORKER_LIFECYCLE.next(state, event)
        drained = drained or state is WorkerState.DRAINING
        assert not (drained and state is WorkerState.SERVING)
    if state is not WorkerState.EXITED:
        assert WORKER_LIFECYCLE.next(state, WorkerEvent.EXIT) is WorkerState.EXITED


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = StartupBackoff()
    delays = [backoff.failed() for _ in range(12)]
    assert delays[0] == MIN_BACKOFF and delays[1] == 2 * MIN_BACKOFF
    assert max(delays) == MAX_BACKOFF and delays == sorted(delays)
    # a worker that can never start: at most a handful of forks in the first ten seconds
    assert sum(1 for total in _cumulative(delays) if total <= 10.0) <= 8
    backoff.succeeded()
    assert backoff.failed() == MIN_BACKOFF
    with pytest.raises(ValueError):
        StartupBackoff(0, 1)


def _cumulative(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for value in values:
        total += value
        out.append(total)
    return out
