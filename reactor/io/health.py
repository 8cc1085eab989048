"""Loop health: how late the reactor runs its timers, and callbacks that hold it.

::

    health = reactor.enable_health(slow_callback_duration=0.1)
    ...
    health.facts()   # {"lag_seconds": ..., "slow_callbacks": ...}

Theory of operation
-------------------
*Lag* is measured by a timer of its own (:class:`LoopHealth` arms it every
``lag_interval`` seconds, 1 by default): when it runs, how late it runs is the loop's
lag, the time a due timer waited for whatever held the loop. Nothing else on any path
measures anything, so lag costs one timer a second, and only on a reactor where it was
enabled (an idle reactor then wakes once a second; without it, it does not wake at
all). The last reading, the largest of the last :data:`WINDOW` readings and their
count are kept.

*Slow callbacks* are timed only when asked for (``slow_callback_duration`` not None):
then :meth:`Reactor.enable_health <reactor.io.loop.Reactor.enable_health>` puts a timed
copy of the ready step (:meth:`LoopHealth.run_ready`) and of the epoll fast path's
dispatch step (:class:`TimedEpollPath`) in place of the loop's own, as instance
attributes: a reactor that never enabled it runs the untimed steps, with no test added
anywhere. A callback that held the loop ``slow_callback_duration`` seconds or longer is
counted, and logged at WARNING naming the callback and the connection it served, at
most once a second per callback (the suppressed ones are counted in the next line).
Under another selector than epoll only the ready step (timers, ``call_soon``) is timed.

Must not import the loop, the facades or the command line.
"""

from __future__ import annotations

import collections
import logging
import selectors
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.timers import Handle, TimerHandle, TimerHeap, describe_owner
from .dispatch import _NOT_EPOLLIN, _NOT_EPOLLOUT, EpollPath, dispatch_failed

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["DEFAULT_SLOW_CALLBACK", "LAG_INTERVAL", "WINDOW", "LoopHealth", "TimedEpollPath",
           "enable_health"]

logger = logging.getLogger("reactor.health")

DEFAULT_SLOW_CALLBACK: Final = 0.1
LAG_INTERVAL: Final = 1.0
WINDOW: Final = 60  # lag readings kept for the maximum (a minute at the default interval)
WARN_EVERY: Final = 1.0  # seconds between two warnings about one callback

_KEY: Final = selectors.SelectorKey


def _io_name(obj: Any, step: str) -> str:
    protocol = getattr(obj, "_protocol", None)
    where = f"{type(obj).__qualname__}.{step}"
    return where if protocol is None else f"{type(protocol).__qualname__} via {where}"


def _describe(obj: Any) -> str | None:
    describe = getattr(obj, "describe", None)
    try:
        text = describe() if callable(describe) else None
    except Exception:  # a closed transport may not describe itself: the count goes on
        return None
    return text if isinstance(text, str) else None


def _handle_name(handle: Handle) -> str:
    callback = handle._callback
    name = getattr(callback, "__qualname__", None)
    return name if isinstance(name, str) else repr(callback)


class LoopHealth:
    """A reactor's lag and slow-callback counts (see the module docstring).

    Made by :meth:`Reactor.enable_health <reactor.io.loop.Reactor.enable_health>`,
    which hands it the loop's ready queue, timer heap and failure hook.

    Attributes:
        slow_callback_duration: seconds a callback may hold the loop before it counts
            as slow; None: callbacks are not timed.
        lag_interval: seconds between two lag readings.
        lag: the last reading, in seconds.
        slow_callbacks: callbacks that held the loop too long, so far.
        slowest: the longest such hold, in seconds.
    """

    def __init__(
        self, reactor: Reactor, ready: collections.deque[Handle], timers: TimerHeap,
        callback_failed: Callable[[Handle, BaseException], None],
        clock: Callable[[], float], *, lag_interval: float = LAG_INTERVAL,
    ) -> None:
        if not lag_interval > 0:
            raise ValueError("lag_interval must be positive")
        self.reactor = reactor
        self._ready = ready
        self._timers = timers
        self._callback_failed = callback_failed
        self._clock = clock
        self.slow_callback_duration: float | None = None
        self.lag_interval = lag_interval
        self.lag = 0.0
        self._lags: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.slow_callbacks = 0
        self.slowest = 0.0
        self._warned: dict[str, tuple[float, int]] = {}  # name -> (last warning, held)
        self._probe: TimerHandle | None = None
        self._arm()

    # -- lag ----------------------------------------------------------------------------

    def _arm(self) -> None:
        self._probe = self.reactor.call_later(self.lag_interval, self._measure,
                                              self._clock() + self.lag_interval)

    def _measure(self, due: float) -> None:
        self.lag = max(0.0, self._clock() - due)
        self._lags.append(self.lag)
        self._arm()

    @property
    def lag_max(self) -> float:
        """The largest of the last :data:`WINDOW` lag readings (0 before the first)."""
        return max(self._lags, default=0.0)

    def close(self) -> None:
        """Stop measuring lag (timing of callbacks stays as installed)."""
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def facts(self) -> dict[str, Any]:
        """Plain values for ``info``, the metrics and the status page."""
        return {
            "lag_seconds": round(self.lag, 6),
            "lag_max_seconds": round(self.lag_max, 6),
            "lag_readings": len(self._lags),
            "slow_callback_duration": self.slow_callback_duration,
            "slow_callbacks": self.slow_callbacks,
            "slowest_seconds": round(self.slowest, 6),
        }

    # -- slow callbacks -----------------------------------------------------------------

    def slow(self, name: str, where: str | None, took: float) -> None:
        """Count a callback ``name`` (serving ``where``) that held the loop ``took``
        seconds; warn unless this callback was warned about less than a second ago."""
        self.slow_callbacks += 1
        self.slowest = max(self.slowest, took)
        now = self._clock()
        last, held = self._warned.get(name, (-WARN_EVERY, 0))
        if now - last < WARN_EVERY:
            self._warned[name] = (last, held + 1)
            return
        if len(self._warned) > 1024:  # bounded: forget the quiet ones
            self._warned = {k: v for k, v in self._warned.items() if now - v[0] < WARN_EVERY}
        self._warned[name] = (now, 0)
        more = f" ({held} more time{'s' if held != 1 else ''} since the last warning)" \
            if held else ""
        logger.warning("slow callback: %s held the loop %.3f s (over %.3f s)%s%s",
                       name, took, self.slow_callback_duration or 0.0,
                       f" serving {where}" if where else "", more)

    def run_ready(self) -> None:
        """The loop's ready step, each callback timed (installed as the reactor's
        ``_run_ready`` when callbacks are timed; the same steps as the loop's own)."""
        clock = self._clock
        now = self.reactor.now = clock()
        ready = self._ready
        timers = self._timers
        entries = timers.heap
        if entries and entries[0][0] <= now:
            ready.extend(timers.pop_due(now))
        if not ready:
            return
        limit = self.slow_callback_duration or 0.0
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            start = clock()
            try:
                handle.run()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._callback_failed(handle, exc)
            took = clock() - start
            if took >= limit:
                self.slow(_handle_name(handle), describe_owner(handle), took)

    def timed_path(self, path: EpollPath) -> TimedEpollPath:
        """A :class:`TimedEpollPath` over ``path``'s epoll object and key map."""
        timed = TimedEpollPath(path.epoll, path.keys)
        timed.exclusive = path.exclusive
        timed.health = self
        return timed


class TimedEpollPath(EpollPath):
    """The epoll fast path with each dispatched callback timed (the same steps as
    :meth:`EpollPath.dispatch`, the same stale-key rule)."""

    __slots__ = ("health",)
    health: LoopHealth

    def dispatch(self, events: list[tuple[int, int]]) -> None:
        health = self.health
        clock = health._clock
        limit = health.slow_callback_duration or 0.0
        fd_to_key = self.keys
        slots = fd_to_key.slots
        fd_to_key.batch = events
        try:
            for fd, event in events:
                obj = slots[fd]
                if obj is None:
                    continue
                if type(obj) is _KEY:
                    wanted = obj[2]
                    obj = obj[3]
                else:
                    wanted = obj._mask
                start = clock()
                step = "_read_ready"
                try:
                    if event & _NOT_EPOLLOUT and wanted & 1:
                        obj._read_ready()
                    if event & _NOT_EPOLLIN and wanted & 2:
                        step = "_write_ready"
                        obj._write_ready()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    dispatch_failed(obj, exc)
                took = clock() - start
                if took >= limit:
                    health.slow(_io_name(obj, step), _describe(obj), took)
        finally:
            fd_to_key.batch = None
            if fd_to_key.polled:
                fd_to_key.end_batch()


def enable_health(reactor: Reactor, slow_callback_duration: float | None,
                  lag_interval: float) -> LoopHealth:
    """:meth:`Reactor.enable_health`'s work: make the reactor's :class:`LoopHealth` on
    first use and, with a threshold, shadow its ready and epoll steps with timed ones
    (on that instance only)."""
    if slow_callback_duration is not None and not slow_callback_duration >= 0:
        raise ValueError("slow_callback_duration must be zero or more seconds")
    health = reactor.health
    if health is None:
        health = reactor.health = LoopHealth(
            reactor, reactor._ready, reactor._timers, reactor._callback_failed,
            reactor._clock, lag_interval=lag_interval)
    if slow_callback_duration is not None:
        if health.slow_callback_duration is None:
            reactor._run_ready = health.run_ready  # type: ignore[method-assign]
            if reactor.epoll_path is not None:
                reactor.epoll_path = health.timed_path(reactor.epoll_path)
        health.slow_callback_duration = slow_callback_duration
    return health
