"""The timer heap: order, lazy deletion, compaction -- no sockets, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.sansio.timers import COMPACT_MIN, Handle, TimerHandle, TimerHeap


def noop() -> None:
    pass


def test_due_timers_come_out_in_time_order_and_fifo_for_ties() -> None:
    heap = TimerHeap()
    order = [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2")]
    handles = {name: heap.push(TimerHandle(when, noop, (name,))) for when, name in order}
    assert len(heap) == 4
    assert heap.next_deadline() == 1.0
    due = heap.pop_due(2.0)
    assert [h._args[0] for h in due] == ["a1", "a2", "b"]
    assert heap.next_deadline() == 3.0
    assert heap.pop_due(2.999) == []
    assert heap.pop_due(3.0) == [handles["c"]]
    assert heap.next_deadline() is None


def test_cancelled_timers_are_skipped_and_not_counted() -> None:
    heap = TimerHeap()
    a = heap.push(TimerHandle(1.0, noop, ()))
    b = heap.push(TimerHandle(2.0, noop, ()))
    a.cancel()
    a.cancel()  # twice is harmless
    assert len(heap) == 1
    assert heap.next_deadline() == 2.0
    assert heap.pop_due(10.0) == [b]
    assert len(heap) == 0 and heap.size == 0


def test_cancel_after_running_does_not_corrupt_the_count() -> None:
    heap = TimerHeap()
    a = heap.push(TimerHandle(1.0, noop, ()))
    assert heap.pop_due(1.0) == [a]
    a.cancel()
    assert len(heap) == 0
    heap.push(TimerHandle(5.0, noop, ()))
    assert len(heap) == 1


def test_heap_is_compacted_when_most_entries_are_cancelled() -> None:
    heap = TimerHeap()
    n = COMPACT_MIN * 4
    handles = [heap.push(TimerHandle(float(i), noop, ())) for i in range(n)]
    keep = handles[-10:]
    for h in handles[:-10]:
        h.cancel()
    # physically shrunk, not just marked
    assert heap.size < n // 2
    assert len(heap) == 10
    assert heap.pop_due(float(n)) == keep


def test_a_handle_cannot_be_scheduled_twice() -> None:
    heap = TimerHeap()
    h = heap.push(TimerHandle(1.0, noop, ()))
    with pytest.raises(ValueError):
        heap.push(h)


def test_cancelled_handle_releases_its_callback() -> None:
    class Big:
        pass

    obj = Big()
    h = Handle(lambda o: None, (obj,))
    h.cancel()
    assert h.cancelled()
    assert h._args == ()
    h.run()  # a cancelled handle runs nothing


def test_clear_cancels_everything() -> None:
    heap = TimerHeap()
    hs = [heap.push(TimerHandle(float(i), noop, ())) for i in range(5)]
    heap.clear()
    assert all(h.cancelled() for h in hs)
    assert len(heap) == 0 and heap.next_deadline() is None


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.floats(0, 100, allow_nan=False)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
        st.tuples(st.just("pop"), st.floats(0, 100, allow_nan=False)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_heap_matches_a_simple_model(operations: list[tuple[str, float]]) -> None:
    heap = TimerHeap()
    model: list[tuple[float, int, TimerHandle]] = []
    pushed: list[TimerHandle] = []
    seq = 0
    for op, arg in operations:
        if op == "push":
            seq += 1
            h = heap.push(TimerHandle(arg, noop, ()))
            pushed.append(h)
            model.append((arg, seq, h))
        elif op == "cancel" and pushed:
            h = pushed[int(arg) % len(pushed)]
            h.cancel()
            model = [m for m in model if m[2] is not h]
        elif op == "pop":
            expected = sorted(m for m in model if m[0] <= arg)
            model = [m for m in model if m[0] > arg]
            assert heap.pop_due(arg) == [m[2] for m in expected]
        assert len(heap) == len(model)
        deadline = min((m[0] for m in model), default=None)
        assert heap.next_deadline() == deadline
