"""A worker's lifecycle table and the start-up backoff (socket-free)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.sansio.errors import IllegalTransition
from reactor.sansio.workerlife import (
    HEARTBEATS,
    MAX_BACKOFF,
    MAX_DEADLINE,
    MIN_BACKOFF,
    MIN_WORKER_TIMEOUT,
    WORKER_LIFECYCLE,
    StartupBackoff,
    WorkerDeadlines,
    WorkerEvent,
    WorkerState,
)

S, E = WorkerState, WorkerEvent


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
    drained = stuck = False
    for event in events:
        if not WORKER_LIFECYCLE.allows(state, event):
            continue
        state = WORKER_LIFECYCLE.next(state, event)
        drained = drained or state is WorkerState.DRAINING
        stuck = stuck or state is WorkerState.STUCK
        assert not (drained and state is WorkerState.SERVING)
        assert not (stuck and state not in (WorkerState.STUCK, WorkerState.EXITED))
    if state is not WorkerState.EXITED:
        assert WORKER_LIFECYCLE.next(state, WorkerEvent.EXIT) is WorkerState.EXITED


def test_deadlines_move_a_worker_to_stuck_and_an_abandoned_reload_keeps_it() -> None:
    assert WORKER_LIFECYCLE.next(S.STARTING, E.LATE) is S.STUCK
    assert WORKER_LIFECYCLE.next(S.SERVING, E.SILENT) is S.STUCK
    assert WORKER_LIFECYCLE.next(S.RETIRING, E.SILENT) is S.STUCK
    assert WORKER_LIFECYCLE.next(S.RETIRING, E.KEEP) is S.SERVING
    assert WORKER_LIFECYCLE.next(S.STUCK, E.READY) is S.STUCK  # too late: no serving
    assert WORKER_LIFECYCLE.events(S.STUCK) == {E.READY, E.EXIT}
    # only a worker that was ready retires, so KEEP never makes an unready one serve
    assert not WORKER_LIFECYCLE.allows(S.STARTING, E.RETIRE)
    assert not WORKER_LIFECYCLE.allows(S.STARTING, E.KEEP)
    assert not WORKER_LIFECYCLE.allows(S.DRAINING, E.SILENT)


def test_each_state_has_its_deadline() -> None:
    deadlines = WorkerDeadlines(start=3, silence=8, drain=15, kill_grace=2)
    assert deadlines.due(S.STARTING, entered=100, heard=0) == 103
    assert deadlines.due(S.SERVING, entered=100, heard=110) == 118  # from the last beat
    assert deadlines.due(S.RETIRING, entered=100, heard=111) == 119
    assert deadlines.due(S.DRAINING, entered=100, heard=111) == 115
    assert deadlines.due(S.STUCK, entered=100, heard=111) == 102
    assert deadlines.due(S.EXITED, entered=100, heard=111) is None
    assert deadlines.heartbeat == 8 / HEARTBEATS
    off = WorkerDeadlines(start=3, silence=0)
    assert off.due(S.SERVING, entered=100, heard=110) is None and off.heartbeat is None


@pytest.mark.parametrize("start", [0, -1, float("nan"), float("inf"), MAX_DEADLINE * 2])
def test_a_start_timeout_out_of_range_is_refused(start: float) -> None:
    with pytest.raises(ValueError, match="start-up timeout"):
        WorkerDeadlines(start=start)


@pytest.mark.parametrize("silence", [-1, 0.5, float("nan"), float("inf"), MAX_DEADLINE + 1])
def test_a_worker_timeout_out_of_range_is_refused(silence: float) -> None:
    with pytest.raises(ValueError, match="worker timeout"):
        WorkerDeadlines(silence=silence)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    WorkerDeadlines(start=MAX_DEADLINE, silence=MAX_DEADLINE)
    WorkerDeadlines(start=1e-3, silence=MIN_WORKER_TIMEOUT)
    assert WorkerDeadlines(drain=float("inf")).due(S.DRAINING, 1, 1) == float("inf")
    with pytest.raises(ValueError):
        WorkerDeadlines(drain=float("nan"))


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
