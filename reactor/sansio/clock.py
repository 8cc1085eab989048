"""Clocks: the real monotonic one and a fake one for tests.

The reactor never calls :func:`time.monotonic` directly; it calls the clock it was
given, so tests drive time by hand with :class:`FakeClock`.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


class Clock(Protocol):
    """Anything callable that returns monotonic seconds as a float."""

    def __call__(self) -> float: ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`."""

    __slots__ = ()

    def __call__(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to.

    Args:
        start: the initial reading.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Raises:
            ValueError: ``seconds`` is negative (a monotonic clock never goes back).
        """
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds

    def set(self, now: float) -> None:
        """Set the reading to ``now``, which must not be earlier than the current one."""
        self.advance(now - self._now)
