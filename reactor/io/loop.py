"""The reactor: one selector, one timer heap, one ready queue, one connection table.

Theory of operation
-------------------
One iteration (:meth:`Reactor.run_once`) is four named steps:

1. **timeout** -- zero when callbacks are ready, otherwise the time to the next timer,
   otherwise no timeout at all: an idle reactor blocks in the selector and wakes only
   for I/O, a due timer, a signal or a thread calling :meth:`Reactor.call_soon_threadsafe`.
2. **poll** -- the one blocking call, ``selector.select(timeout)``.
3. **dispatch** -- straight from the selector's results to the registered object's
   ``_read_ready`` / ``_write_ready`` (a transport, a listener, the waker). No handle or
   closure is made per event.
4. **timers** -- due timers join the ready queue, then only the callbacks that were ready
   when this step began run; callbacks they schedule wait for the next iteration.

The waker is a socketpair registered like any other descriptor. Other threads write a
byte to it; :func:`signal.set_wakeup_fd` makes the C signal handler write the signal's
number to it, so signals are dispatched by the reactor thread, never inside a handler.

Beside this module: the dispatch step and the epoll fast path (:mod:`.dispatch`), the
wake-up channel and signals (:mod:`.wakeup`), what a forked child does
(:mod:`.fork`), debug mode (:mod:`.debug`), the statistics snapshot
(:mod:`.statistics`), the iteration cut in its steps for a driver that waits in another
thread (:mod:`.steps`), running in a daemon thread (:mod:`.background`). Must not import
the facades or the command line.
"""

from __future__ import annotations

import collections
import logging
import selectors
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from math import ceil as _ceil
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..sansio.clock import Clock
from ..sansio.errors import ClosedError, LocalProtocolError
from ..sansio.table import ConnectionTable
from ..sansio.timers import Handle, OwnedTimerHandle, TimerHandle, TimerHeap, describe_owner
from . import background as _background
from . import connect as _connect
from . import debug as debug_mode
from . import fork
from . import listeners as _listeners
from .debug import LOOP_ONLY_METHODS, TRANSPORT_LOOP_ONLY_METHODS
from .dispatch import EpollPath, ReadyTarget, dispatch_selected, epoll_path
from .health import DEFAULT_SLOW_CALLBACK, LAG_INTERVAL, LoopHealth, enable_health
from .statistics import ReactorStatistics
from .steps import ReactorSteps
from .tallies import count as _tally
from .wakeup import SignalHandlers, Waker

if TYPE_CHECKING:
    from .datagram import DatagramTransport
    from .listeners import Listener
    from .stream import StreamTransport

__all__ = [
    "LOOP_ONLY_METHODS", "MAX_WAIT", "TRANSPORT_LOOP_ONLY_METHODS", "Reactor",
    "ReactorStatistics", "ReadyTarget",
]

logger = logging.getLogger("reactor")

_T = TypeVar("_T")
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

#: The longest single wait handed to the selector, in seconds. epoll and poll take at
#: most INT_MAX milliseconds (24.8 days) and raise OverflowError beyond it, so a timer
#: further away than this (a 30-day key expiry, a month-long idle timeout, ``math.inf``)
#: costs one spurious wake-up a day instead of a crash; the timer still fires when due.
MAX_WAIT: Final = 86400.0


def _clamp_wait(wait: float) -> float:
    """A wait the selector accepts: 0 to :data:`MAX_WAIT` seconds.

    Negative (a timer already due, a caller's negative timeout) is 0: epoll would read
    a negative timeout as "for ever". NaN, from a caller only, is refused.
    """
    if wait > MAX_WAIT:
        return MAX_WAIT
    if wait > 0.0:
        return wait
    if wait != wait:  # noqa: PLR0124 -- NaN
        raise ValueError("a timeout cannot be NaN")
    return 0.0


class Reactor(fork.ReactorForking, ReactorSteps):
    """A selector-driven event loop with an explicit connection table.

    Args:
        selector: a :class:`selectors.BaseSelector`; :class:`selectors.DefaultSelector`
            when None.
        clock: a callable returning monotonic seconds; :func:`time.monotonic` when None.
        debug: check the calling thread (see below); None: on when Python runs in
            development mode (``-X dev``, ``PYTHONDEVMODE=1``).

    Thread safety: only :meth:`call_soon_threadsafe` and :meth:`stop` may be called from
    other threads; everything else belongs to the thread running the reactor. In debug
    mode, calling one of :data:`LOOP_ONLY_METHODS` (or a transport's
    :data:`TRANSPORT_LOOP_ONLY_METHODS`) from another thread while :meth:`run` is
    active raises :exc:`RuntimeError` naming the method; without debug mode nothing
    checks, and such a call is a race, but while the reactor runs in
    :meth:`background` its commonest entry points check anyway (see
    :mod:`reactor.io.background`).

    Attributes:
        now: the clock's reading taken right after the last poll (or at creation):
            what transports stamp activity with, read without a clock call. Within one
            iteration it does not advance (:meth:`time` reads the clock). A plain
            attribute, not a property, because it is read on every event (a property
            is a Python call: measured, 1 162 more instructions per echo request);
            read it, never set it.
        connections: the connection table (every connection is a row).
        listeners: the listeners open on this reactor.
        health: the loop's lag and slow callbacks (:mod:`reactor.io.health`), None
            until :meth:`enable_health` is called.
        epoll_path: the fast path over a plain :class:`selectors.EpollSelector`
            (:class:`~reactor.io.dispatch.EpollPath`), through which the loop polls and
            transports register; None for any other selector and in a forked child.
            Read it, never set it.
    """

    now: float
    epoll_path: EpollPath | None

    def __init__(
        self, selector: selectors.BaseSelector | None = None, clock: Clock | None = None,
        *, debug: bool | None = None,
    ) -> None:
        self._selector = selector if selector is not None else selectors.DefaultSelector()
        # the real clock is time.monotonic itself, not MonotonicClock(): one Python
        # frame less on every reading (twice per iteration)
        self._clock: Clock = clock if clock is not None else time.monotonic
        self.now = self._clock()
        self._ready: collections.deque[Handle] = collections.deque()
        self._timers = TimerHeap()
        self.connections = ConnectionTable()
        self.listeners: list[Listener] = []
        self.health: LoopHealth | None = None
        self._iterations = 0
        self._stopping = False
        self._closed = False
        self._in_iteration = False
        self._thread_id: int | None = None
        self._signals = SignalHandlers(self._ready)
        self._waker = Waker(self._signals.deliver)
        self._selector.register(self._waker.rsock, EVENT_READ, self._waker)
        self._use_selector(self._selector)
        fork.track(self, Reactor._after_fork_in_child, Reactor._before_fork)
        self._debug = bool(sys.flags.dev_mode) if debug is None else bool(debug)
        if self._debug:
            debug_mode.install(self)

    @property
    def debug(self) -> bool:
        """Whether loop-thread-only calls check the calling thread (fixed at creation)."""
        return self._debug

    # -- scheduling -------------------------------------------------------------------

    def time(self) -> float:
        """The reactor clock's current reading."""
        return self._clock()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Run ``callback(*args)`` in the next iteration. Not thread-safe."""
        handle = Handle(callback, args)
        self._ready.append(handle)
        if not self._in_iteration:
            self._waker.wake()  # an embedding host learns there is work
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Like :meth:`call_soon`, from any thread; wakes the reactor at once."""
        if self._closed:
            raise ClosedError("the reactor is closed")
        handle = Handle(callback, args)
        self._ready.append(handle)
        self._waker.wake()
        return handle

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, owner: object = None
    ) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle.

        A zero or negative ``delay`` runs the callback as soon as possible (the next
        iteration, after callbacks already due); ``math.inf`` never runs it (the handle
        stays pending until cancelled); a finite delay of any size is honoured, however
        long (waits are cut into :data:`MAX_WAIT` slices).

        Args:
            delay: seconds from now.
            callback: what to call.
            *args: its positional arguments.
            owner: what the timer belongs to (a connection row, a listener): if the
                callback raises, the log names it through its ``describe()``. A bound
                method of an object with ``describe()`` is its own owner.

        Raises:
            ValueError: ``delay`` is NaN.
        """
        return self._schedule(self._clock() + delay, callback, args, owner)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, owner: object = None
    ) -> TimerHandle:
        """Run ``callback(*args)`` when the reactor clock reads ``when``.

        ``when`` in the past runs it as soon as possible; ``math.inf`` never. See
        :meth:`call_later` for ``owner``.

        Raises:
            ValueError: ``when`` is NaN (it would corrupt the timer heap's order).
        """
        return self._schedule(when, callback, args, owner)

    def _schedule(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...], owner: object
    ) -> TimerHandle:
        """The body of :meth:`call_later` and :meth:`call_at` (the arguments passed as a
        tuple, not forwarded as ``*args``)."""
        # NaN: neither due nor not due, and unordered in the heap (a compare is cheaper
        # than math.isnan on this path)
        if when != when:  # noqa: PLR0124
            raise ValueError("a timer cannot be due at NaN")
        handle = self._timers.push(
            TimerHandle(when, callback, args) if owner is None
            else OwnedTimerHandle(when, callback, args, owner)
        )
        if not self._in_iteration:
            self._waker.wake()
        return handle

    # -- running ----------------------------------------------------------------------

    def run(self) -> None:
        """Run iterations until :meth:`stop` is called.

        Raises:
            LocalProtocolError: the reactor is already running in another thread.
            ClosedError: the reactor is closed.
        """
        self._check_closed()
        if self._thread_id is not None:
            raise LocalProtocolError("the reactor is already running")
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self._stopping = False
            self._thread_id = None

    def stop(self) -> None:
        """Make :meth:`run` return after the current iteration. Any thread may call it."""
        self._stopping = True
        if not self._closed:
            self._waker.wake()

    def run_once(self, timeout: float | None = None) -> None:
        """Run one iteration, waiting at most ``timeout`` seconds (None: no limit)."""
        if self._closed:
            self._check_closed()  # raises
        self._in_iteration = True
        try:
            wait = self._compute_timeout(timeout)
            path = self.epoll_path
            if path is not None:
                # the fast path's poll: epoll's own units (-1 waits for ever; never wake
                # a millisecond early) and at most one event per registration
                if wait is None:
                    wait = -1
                elif wait > 0:
                    wait = _ceil(wait * 1e3) * 1e-3
                fd_events = path.epoll.poll(wait, path.keys.size or 1)
                self.now = self._clock()
                path.dispatch(fd_events)
            else:
                events = self._selector.select(wait)
                self.now = self._clock()
                dispatch_selected(self._selector.get_map(), events)
            if self._ready or self._timers.heap:  # else there is nothing to run
                self._run_ready()
        finally:
            self._in_iteration = False
            self._iterations += 1

    def background(self, *, name: str | None = None) -> _background.Background:
        """Run in a daemon thread: ``with reactor.background() as loop:`` starts it and
        stops it on exit; ``loop.call(fn, *args)`` runs ``fn`` in that thread (see
        :class:`~reactor.io.background.Background`)."""
        return _background.Background(self, name=name)

    def run_until(self, condition: Callable[[], bool], timeout: float | None = None) -> None:
        """Run iterations until ``condition()`` is true.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else self._clock() + timeout
        wake = None if deadline is None else self.call_at(deadline, lambda: None)
        try:
            while not condition():
                if deadline is not None and self._clock() >= deadline:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self.run_once()
        finally:
            if wake is not None:
                wake.cancel()

    def run_until_complete(self, future: Future[_T], timeout: float | None = None) -> _T:
        """Run iterations until ``future`` is done; return its result (or raise)."""
        self.run_until(future.done, timeout)
        return future.result()

    def _compute_timeout(self, limit: float | None) -> float | None:
        if self._ready or self._stopping:
            return 0
        if not self._timers.heap:  # no timer at all: skip the heap's method call
            return limit if limit is None else _clamp_wait(limit)
        deadline = self._timers.next_deadline()
        if deadline is None:
            return limit if limit is None else _clamp_wait(limit)
        wait = deadline - self._clock()
        if limit is not None and limit < wait:
            wait = limit
        return _clamp_wait(wait)

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        """The generic dispatch step alone, for ``selector.select()``'s pairs (see
        :mod:`reactor.io.dispatch`): what tests feed literal event lists."""
        dispatch_selected(self._selector.get_map(), events)

    def _dispatch_epoll(self, events: list[tuple[int, int]]) -> None:
        """The epoll fast path's dispatch step alone, for raw ``(fd, epoll mask)``
        pairs (see :class:`~reactor.io.dispatch.EpollPath`)."""
        assert self.epoll_path is not None
        self.epoll_path.dispatch(events)

    def _use_selector(self, selector: selectors.BaseSelector) -> None:
        """Poll ``selector`` from now on, through the epoll fast path if it has one."""
        self._selector = selector
        self.epoll_path = epoll_path(selector)

    @property
    def _epoll(self) -> Any:
        """The fast path's ``select.epoll`` object, or None (read by tests)."""
        return self.epoll_path.epoll if self.epoll_path is not None else None

    def _run_ready(self) -> None:
        now = self.now = self._clock()
        ready = self._ready
        entries = self._timers.heap  # peek: most iterations have no timer due
        if entries and entries[0][0] <= now:
            ready.extend(self._timers.pop_due(now))
        if not ready:
            return
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            try:
                handle.run()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._callback_failed(handle, exc)

    def _callback_failed(self, handle: Handle, exc: BaseException) -> None:
        # the exception path only: the owner is looked up here, never when scheduling
        _tally(self, "errors", "callback")
        where = describe_owner(handle)
        if where is None:
            logger.error("callback %r raised", handle, exc_info=exc)
        else:
            logger.error("%s: callback %r raised", where, handle, exc_info=exc)

    def enable_health(
        self, slow_callback_duration: float | None = DEFAULT_SLOW_CALLBACK,
        lag_interval: float = LAG_INTERVAL,
    ) -> LoopHealth:
        """Measure the loop's lag and, unless ``slow_callback_duration`` is None, time
        every callback (see :mod:`reactor.io.health`); returns :attr:`health`.

        Until this is called nothing is measured. Calling it again changes the
        threshold; timing, once installed, stays until the reactor is closed.

        Raises:
            ValueError: ``slow_callback_duration`` is negative or ``lag_interval`` is
                not positive.
        """
        return enable_health(self, slow_callback_duration, lag_interval)

    # -- listening and connecting -----------------------------------------------------

    def listen_tcp(
        self, host: str | None, port: int, protocol_factory: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Listener:
        """Listen on TCP; see :func:`reactor.io.listeners.listen_tcp` for the options."""
        self._check_closed()
        return _listeners.listen_tcp(self, host, port, protocol_factory, **kwargs)

    def listen_unix(
        self, path: str, protocol_factory: Callable[[], Any] | None = None, **kwargs: Any
    ) -> Listener:
        """Listen on a Unix stream socket; see :func:`reactor.io.listeners.listen_unix`."""
        self._check_closed()
        return _listeners.listen_unix(self, path, protocol_factory, **kwargs)

    def listen_udp(
        self, host: str | None, port: int, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> DatagramTransport:
        """Open a UDP endpoint; see :func:`reactor.io.listeners.listen_udp`."""
        self._check_closed()
        return _listeners.listen_udp(self, host, port, protocol_factory, **kwargs)

    def listen_unix_datagram(
        self, path: str | None, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> DatagramTransport:
        """Open a Unix datagram endpoint; see :func:`reactor.io.listeners.listen_unix_datagram`."""
        self._check_closed()
        return _listeners.listen_unix_datagram(self, path, protocol_factory, **kwargs)

    def connect_tcp(
        self, host: str, port: int, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> Future[tuple[StreamTransport, Any]]:
        """Connect out over TCP; see :func:`reactor.io.connect.connect_tcp`."""
        self._check_closed()
        return _connect.connect_tcp(self, host, port, protocol_factory, **kwargs)

    def connect_unix(
        self, path: str, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> Future[tuple[StreamTransport, Any]]:
        """Connect out to a Unix stream socket; see :func:`reactor.io.connect.connect_unix`."""
        self._check_closed()
        return _connect.connect_unix(self, path, protocol_factory, **kwargs)

    # -- introspection ----------------------------------------------------------------

    @property
    def selector(self) -> selectors.BaseSelector:
        """The selector this reactor polls."""
        return self._selector

    def is_running(self) -> bool:
        """Whether :meth:`run` is active."""
        return self._thread_id is not None

    @property
    def running_thread_id(self) -> int | None:
        """The :func:`threading.get_ident` of the thread inside :meth:`run`, or None."""
        return self._thread_id

    def is_closed(self) -> bool:
        return self._closed

    def statistics(self) -> ReactorStatistics:
        """An immutable snapshot: connections by state, totals, timers, iterations."""
        table = self.connections.statistics()
        return ReactorStatistics(
            # a forked child's selector before first use reports the class it will be
            backend=fork.backend_name(self._selector),
            iterations=self._iterations,
            open=table.open,
            by_state=table.by_state,
            by_kind=table.by_kind,
            opened_total=table.opened_total,
            closed_total=table.closed_total,
            bytes_in=table.bytes_in,
            bytes_out=table.bytes_out,
            write_buffered=table.write_buffered,
            discarded=table.discarded,
            refused_by_address=table.refused_by_address,
            refused_by_credentials=table.refused_by_credentials, closes=table.closes,
            listeners=len(self.listeners),
            pending_timers=len(self._timers),
            ready_callbacks=len(self._ready),
            timer_heap=self._timers.size,
        )

    # -- embedding --------------------------------------------------------------------

    def fileno(self) -> int:
        """A descriptor that is readable whenever the reactor has I/O or queued work.

        Timers do not make it readable: a host loop also waits at most
        :meth:`next_timeout` seconds, then calls ``run_once(0)``.

        Raises:
            LocalProtocolError: the selector (select, poll) has no descriptor of its own.
        """
        fileno = getattr(self._selector, "fileno", None)
        if fileno is None:
            raise LocalProtocolError(
                f"{type(self._selector).__name__} has no descriptor to embed; "
                "use an epoll, kqueue or devpoll selector"
            )
        fd: int = fileno()
        return fd

    def next_timeout(self) -> float | None:
        """Seconds until the reactor has work due: 0 if callbacks are ready, the time
        to the next timer, or None when only I/O can wake it."""
        return self._compute_timeout(None)

    # -- signals ----------------------------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the reactor thread whenever ``sig`` arrives.

        The previous handler is restored by :meth:`remove_signal_handler` or
        :meth:`close`.

        Raises:
            LocalProtocolError: not called from the main thread, or ``sig`` cannot be
                caught.
        """
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise LocalProtocolError("signal handlers can only be added on the main thread")
        self._signals.add(sig, Handle(callback, args), self._waker.wsock.fileno())

    def remove_signal_handler(self, sig: int) -> bool:
        """Stop handling ``sig`` and restore its previous handler; False if not handled."""
        return self._signals.remove(sig)

    # -- life -------------------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._closed:
            raise ClosedError("the reactor is closed")

    def close(self) -> None:
        """Close listeners and connections (abort), the selector and the wake-up channel,
        and restore signal handlers. Closing twice is harmless.

        Raises:
            LocalProtocolError: the reactor is running.
        """
        if self._closed:
            return
        if self._thread_id is not None:
            raise LocalProtocolError("cannot close a running reactor; stop it first")
        for listener in list(self.listeners):
            listener.close()
        self.connections.begin_stopping()  # the aborts below count as "shutdown"
        for row in self.connections:
            abort = getattr(row, "abort", None)
            if abort is not None:
                abort()
        # let the aborted connections run their connection_lost callbacks
        for _ in range(3):
            if not self._ready:
                break
            self._in_iteration = True
            try:
                self._run_ready()
            finally:
                self._in_iteration = False
        self._signals.remove_all()
        self._closed = True
        if self.health is not None:
            self.health.close()
        fork.untrack(self)
        self._timers.clear()
        self._ready.clear()
        self._selector.close()
        self._waker.close()

    def __enter__(self) -> Reactor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.is_running() else "idle")
        return (
            f"<Reactor {type(self._selector).__name__} {state} "
            f"connections={len(self.connections)}>"
        )
