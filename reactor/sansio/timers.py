"""Callback handles and the timer heap.

Theory of operation
-------------------
Every delayed call is a :class:`TimerHandle` in one binary heap ordered by
``(when, sequence)``; the sequence number keeps calls due at the same instant in the
order they were scheduled. Cancelling does not search the heap: it marks the handle and
counts it (lazy deletion). Cancelled entries are dropped when they reach the top, and
when they become both numerous (more than :data:`COMPACT_MIN`) and the majority of the
heap, the heap is rebuilt without them, so a program that schedules and cancels
deadlines all day keeps a heap proportional to its live timers.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "COMPACT_MIN", "Handle", "OwnedTimerHandle", "TimerHandle", "TimerHeap", "describe_owner",
]

COMPACT_MIN: Final = 100


class Handle:
    """A callback with its arguments, scheduled to run once; cancellable."""

    __slots__ = ("_args", "_callback", "_cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        """Prevent the callback from running; harmless if it already ran."""
        if not self._cancelled:
            self._cancelled = True
            self._callback = _cancelled_callback
            self._args = ()

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def run(self) -> None:
        """Call the callback. Exceptions propagate to the caller (the reactor)."""
        self._callback(*self._args)

    @property
    def callback(self) -> Callable[..., object]:
        return self._callback

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        name = getattr(self._callback, "__qualname__", repr(self._callback))
        return f"<{type(self).__name__} {name}{state}>"


def _cancelled_callback(*_: object) -> None:
    """Stands in for a cancelled handle's callback, releasing the real one."""


class TimerHandle(Handle):
    """A :class:`Handle` due at a point in time (the reactor clock's seconds)."""

    __slots__ = ("_heap", "_when")

    def __init__(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        super().__init__(callback, args)
        self._when = when
        self._heap: TimerHeap | None = None

    def when(self) -> float:
        """The clock reading at which the callback is due."""
        return self._when

    def cancel(self) -> None:
        if not self._cancelled:
            super().cancel()
            heap = self._heap
            if heap is not None:
                heap._note_cancelled()


class OwnedTimerHandle(TimerHandle):
    """A :class:`TimerHandle` that knows what it belongs to (a connection, a listener).

    A separate class so that the common timer, which has no owner, carries no extra
    field.
    """

    __slots__ = ("owner",)

    def __init__(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...],
        owner: object,
    ) -> None:
        super().__init__(when, callback, args)
        self.owner = owner

    def cancel(self) -> None:
        super().cancel()
        self.owner = None


def describe_owner(handle: Handle) -> str | None:
    """What ``handle`` belongs to, for a log line: its owner's ``describe()``, else that
    of the object its callback is bound to; None when neither describes itself."""
    owner = getattr(handle, "owner", None)
    if owner is None:
        owner = getattr(handle._callback, "__self__", None)
    describe = getattr(owner, "describe", None)
    if not callable(describe):
        return None
    try:
        text = describe()
    except Exception:  # a broken describe() must not hide the original error
        return None
    return text if isinstance(text, str) else None


class TimerHeap:
    """A heap of :class:`TimerHandle` with lazy deletion and compaction."""

    __slots__ = ("_cancelled", "_seq", "heap")

    def __init__(self) -> None:
        #: The heap itself, ``(when, sequence, handle)`` entries, cancelled ones not
        #: dropped yet included; always the same list object. Read-only for others:
        #: the loop peeks at ``heap`` (empty?) and ``heap[0][0]`` (earliest entry due)
        #: without a method call on every iteration; never mutate it.
        self.heap: list[tuple[float, int, TimerHandle]] = []
        self._cancelled = 0
        self._seq = 0

    def __len__(self) -> int:
        """The number of timers that are scheduled and not cancelled."""
        return len(self.heap) - self._cancelled

    @property
    def size(self) -> int:
        """Entries physically in the heap, cancelled ones included."""
        return len(self.heap)

    def push(self, handle: TimerHandle) -> TimerHandle:
        """Schedule ``handle`` at ``handle.when()``.

        Raises:
            ValueError: the handle is already scheduled or was cancelled.
        """
        if handle._heap is not None or handle._cancelled:
            raise ValueError("a timer handle can be scheduled only once")
        handle._heap = self
        self._seq += 1
        heapq.heappush(self.heap, (handle._when, self._seq, handle))
        return handle

    def _note_cancelled(self) -> None:
        self._cancelled += 1
        entries = self.heap
        if self._cancelled > COMPACT_MIN and self._cancelled * 2 > len(entries):
            live = [e for e in entries if not e[2]._cancelled]
            for entry in entries:
                if entry[2]._cancelled:
                    entry[2]._heap = None
            heapq.heapify(live)
            entries[:] = live  # in place: ``heap`` stays the same list
            self._cancelled = 0

    def _drop_cancelled_top(self) -> None:
        entries = self.heap
        while entries and entries[0][2]._cancelled:
            heapq.heappop(entries)[2]._heap = None
            self._cancelled -= 1

    def next_deadline(self) -> float | None:
        """When the earliest live timer is due, or None when there is none."""
        entries = self.heap
        if entries and entries[0][2]._cancelled:  # the loop asks once per iteration:
            self._drop_cancelled_top()  # no call for a live top
        return entries[0][0] if entries else None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Remove and return, in order, every live timer due at or before ``now``."""
        due: list[TimerHandle] = []
        entries = self.heap
        while entries and entries[0][0] <= now:
            handle = heapq.heappop(entries)[2]
            handle._heap = None
            if handle._cancelled:
                self._cancelled -= 1
            else:
                due.append(handle)
        return due

    def clear(self) -> None:
        """Cancel and drop every timer."""
        for entry in self.heap:
            entry[2]._heap = None
            entry[2].cancel()
        self.heap.clear()
        self._cancelled = 0
