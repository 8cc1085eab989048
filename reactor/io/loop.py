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
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ..sansio.clock import Clock
from ..sansio.connection import Row
from ..sansio.errors import ClosedError, LocalProtocolError
from ..sansio.table import ConnectionTable, _empty_counts
from ..sansio.timers import Handle, OwnedTimerHandle, TimerHandle, TimerHeap, describe_owner
from . import connect as _connect
from . import listeners as _listeners

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


class ReadyTarget(Protocol):
    """What the loop dispatches to: the ``data`` of every selector registration.

    Transports, listeners, outgoing connections and the waker implement it; so do the
    fakes that feed the dispatch steps literal event lists in tests. Both methods must
    tolerate a spurious call (level-triggered polling: the kernel may report readiness
    that a ``recv``/``accept`` then finds gone). Optional: ``describe()`` (named in the
    log when a method raises) and ``_force_close(exc)`` (called after that log line).
    """

    def _read_ready(self) -> None:
        """The descriptor is readable (or in error, or hung up)."""

    def _write_ready(self) -> None:
        """The descriptor is writable (or in error, or hung up)."""


@dataclass(frozen=True)
class ReactorStatistics:
    """An immutable snapshot of a reactor (see :meth:`Reactor.statistics`).

    Attributes:
        backend: the selector class name (``EpollSelector``, ``PollSelector``, ...).
        iterations: loop iterations so far (each returned from one ``select``).
        open: connections in the table now.
        by_state: connections per lifecycle state name.
        by_kind: connections per transport kind.
        opened_total: connections ever added to the table.
        closed_total: connections ever removed.
        bytes_in: bytes received over the reactor's life.
        bytes_out: bytes sent over the reactor's life.
        write_buffered: bytes queued for writing now.
        discarded: bytes aborted connections dropped unsent from their write queues.
        listeners: listening sockets now.
        pending_timers: scheduled, uncancelled timers.
        timer_heap: entries in the timer heap, cancelled ones not dropped yet included
            (the heap compacts, so this stays within about twice ``pending_timers``
            plus :data:`~reactor.sansio.timers.COMPACT_MIN`).
        ready_callbacks: callbacks waiting for the next iteration.
    """

    backend: str
    iterations: int
    open: int
    by_state: MappingProxyType[str, int] | Any = field(default_factory=_empty_counts)
    by_kind: MappingProxyType[str, int] | Any = field(default_factory=_empty_counts)
    opened_total: int = 0
    closed_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    write_buffered: int = 0
    discarded: int = 0
    listeners: int = 0
    pending_timers: int = 0
    ready_callbacks: int = 0
    timer_heap: int = 0


class _Waker:
    """The wake-up channel: a non-blocking socketpair read by the reactor."""

    __slots__ = ("_pending", "_reactor", "rsock", "wsock")

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self.rsock, self.wsock = socket.socketpair()
        self.rsock.setblocking(False)
        self.wsock.setblocking(False)
        self._pending = False

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        try:
            self.wsock.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full: the reactor will wake anyway
        except OSError:
            if self.wsock.fileno() != -1:
                raise

    def _read_ready(self) -> None:
        try:
            while True:
                try:
                    data = self.rsock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    return
                if not data:
                    return
                if data.strip(b"\0"):
                    for signum in data:
                        if signum:
                            self._reactor._deliver_signal(signum)
        finally:
            # Cleared only after draining: clearing first let another thread's wake()
            # set the flag and send a byte that this loop then drained, leaving the
            # flag set with nothing to read, so every later wake() was skipped (a lost
            # wake-up). A wake() that finds the flag still set here needs no byte: its
            # callback or stop request is seen later in this same iteration.
            self._pending = False

    def _write_ready(self) -> None:  # never registered for writing
        pass

    def close(self) -> None:
        self.rsock.close()
        self.wsock.close()


_EPOLLIN: Final = getattr(select, "EPOLLIN", 1)
_NOT_EPOLLOUT: Final = ~select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 0
_NOT_EPOLLIN: Final = ~select.EPOLLIN if hasattr(select, "EPOLLIN") else 0


class _BatchKeyMap(dict[int, selectors.SelectorKey]):
    """An EpollSelector's fd-to-key map that keeps the stale-key rule for the batch
    being dispatched, so that :meth:`Reactor._dispatch_epoll` checks nothing per event.

    Outside a batch it is a plain dict (a check of ``batch`` per registration change).
    During one, the first change to a descriptor records the object it was registered
    to at poll time; when it is registered again, or modified, to another object, its
    events left in the batch are held (their mask set to 0, so nothing is called),
    and released if it goes back to that object. Unregistering needs nothing: the
    event then finds no key. Costs fall on registration changes (accept, close, a
    write that blocks), never on an event.
    """

    __slots__ = ("batch", "held", "polled")

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        super().__init__(keys)
        self.batch: list[tuple[int, int]] | None = None
        self.polled: dict[int, Any] = {}  # fd -> its object at poll time
        self.held: dict[int, list[tuple[int, int]]] = {}  # fd -> (index, mask) held

    def pop(self, fd: int, *default: Any) -> Any:
        key = dict.pop(self, fd, *default)
        if self.batch is not None and key is not None and fd not in self.polled:
            self.polled[fd] = key[3]
        return key

    def __setitem__(self, fd: int, key: selectors.SelectorKey) -> None:
        # a descriptor neither registered now nor dropped in this batch (a new
        # connection's) has no event in the batch: no call for it
        if self.batch is not None and (fd in self or fd in self.polled):
            self._changed(fd, key[3])
        dict.__setitem__(self, fd, key)

    def _changed(self, fd: int, data: Any) -> None:
        polled = self.polled
        if fd in polled:
            was = polled[fd]
        else:
            old = dict.get(self, fd)
            if old is None:
                return  # not registered at poll time: no event of this batch is its
            was = polled[fd] = old[3]
        batch = self.batch
        assert batch is not None
        if data is not was:
            if fd not in self.held:
                held = self.held[fd] = []
                for index, (event_fd, mask) in enumerate(batch):
                    if event_fd == fd and mask:
                        held.append((index, mask))
                        batch[index] = (fd, 0)
        else:
            for index, mask in self.held.pop(fd, ()):
                batch[index] = (fd, mask)

    def end_batch(self) -> None:
        self.batch = None
        if self.polled:
            self.polled.clear()
            self.held.clear()


def _epoll_fast_path(
    selector: selectors.BaseSelector,
) -> tuple[Any, _BatchKeyMap | None]:
    """The epoll object and fd map of a plain EpollSelector, or (None, None).

    The selector's map is replaced by a :class:`_BatchKeyMap` with the same keys.

    Only the standard library's own class qualifies (a subclass may override
    ``select``), and only when it has the internals this shortcut reads.
    """
    if type(selector) is not getattr(selectors, "EpollSelector", None):
        return None, None
    epoll = getattr(selector, "_selector", None)
    fd_to_key = getattr(selector, "_fd_to_key", None)
    if not isinstance(fd_to_key, dict) or not hasattr(epoll, "poll"):
        return None, None
    if not isinstance(fd_to_key, _BatchKeyMap):
        fd_to_key = _BatchKeyMap(fd_to_key)
        selector._fd_to_key = fd_to_key  # type: ignore[attr-defined]
    return epoll, fd_to_key


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


# Every reactor that is not closed, for the at-fork hook. Weak: the set keeps no reactor
# alive, and a program that never forks pays one set insertion per reactor.
_live_reactors: weakref.WeakSet[Reactor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: detach each live reactor from the
    kernel state it shares with the parent (see :meth:`Reactor._detach_from_parent`)."""
    for reactor in list(_live_reactors):
        try:
            reactor._detach_from_parent()
        except Exception:  # a hook must not fail the fork; the child gets a closed reactor
            logger.exception("could not detach %r from its parent after fork", reactor)
            reactor._closed = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _AfterForkSelector(selectors.BaseSelector):
    """A forked child's selector until first use: any call builds the real one (see
    :meth:`Reactor._detach_from_parent`), which then replaces this object."""

    def __init__(self, reactor: Reactor, inherited: selectors.BaseSelector) -> None:
        self._reactor = reactor
        self._inherited = inherited
        self._real: selectors.BaseSelector | None = None

    def _build(self) -> selectors.BaseSelector:
        if self._real is None:
            self._real = self._reactor._selector_after_fork(self._inherited)
        return self._real

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._build().register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._build().unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._build().modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._build().select(timeout)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._build().get_map()

    def fileno(self) -> int:
        fileno: int = self._build().fileno()  # type: ignore[attr-defined]
        return fileno

    def close(self) -> None:
        if self._real is not None:
            self._real.close()


# -- debug mode: loop-thread-only methods check the calling thread ----------------------
#
# Installed only when a reactor is made with debug=True (or under -X dev): the checks are
# instance attributes shadowing the reactor's methods, and transports in its table are
# switched to a subclass whose methods check. A reactor without debug mode runs the
# undecorated methods: no branch is added to any path.

#: Reactor methods that only the reactor's thread may call while it runs.
LOOP_ONLY_METHODS: Final = (
    "call_soon", "call_later", "call_at", "run_once", "run_until", "run_until_complete",
    "listen_tcp", "listen_unix", "listen_udp", "listen_unix_datagram",
    "connect_tcp", "connect_unix", "add_signal_handler", "remove_signal_handler",
)
#: Transport methods that only the reactor's thread may call while it runs.
TRANSPORT_LOOP_ONLY_METHODS: Final = (
    "write", "writelines", "write_eof", "sendto", "close", "abort", "pause_reading",
    "resume_reading", "set_write_buffer_limits", "set_protocol", "set_deadline",
)


def _wrong_thread(reactor: Reactor, name: str) -> None:
    """Raise if the reactor runs in a thread other than the caller's."""
    loop_thread = reactor._thread_id
    if loop_thread is not None and loop_thread != threading.get_ident():
        raise RuntimeError(
            f"{name}() called from thread {threading.get_ident()} while the reactor runs "
            f"in thread {loop_thread}: it may only be called from the reactor's thread; "
            f"from another thread, use reactor.call_soon_threadsafe(...) to run it there"
        )


def _checked_reactor_method(reactor: Reactor, name: str) -> Callable[..., Any]:
    method = getattr(reactor, name)
    label = f"Reactor.{name}"

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _wrong_thread(reactor, label)
        return method(*args, **kwargs)

    return checked


def _checked_transport_method(cls: type, name: str) -> Callable[..., Any]:
    function = getattr(cls, name)
    label = f"{cls.__name__}.{name}"

    @functools.wraps(function)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        _wrong_thread(self._reactor, label)
        return function(self, *args, **kwargs)

    return checked


_checked_classes: dict[type, type] = {}


def _checked_class(cls: type) -> type:
    """``cls`` with thread checks on its loop-only methods (same layout: no new slot, so
    a row can be switched to it), or ``cls`` itself when it has none of them."""
    checked = _checked_classes.get(cls)
    if checked is None:
        names = [n for n in TRANSPORT_LOOP_ONLY_METHODS if callable(getattr(cls, n, None))]
        if not names or "_reactor" not in dir(cls):
            checked = cls
        else:
            namespace: dict[str, Any] = {
                name: _checked_transport_method(cls, name) for name in names
            }
            namespace["__slots__"] = ()
            namespace["__module__"] = cls.__module__
            namespace["__qualname__"] = cls.__qualname__
            checked = type(cls.__name__, (cls,), namespace)
        _checked_classes[cls] = checked
    return checked


class _DebugConnectionTable(ConnectionTable):
    """A connection table that switches each transport added to it to its checked
    class (debug mode only)."""

    __slots__ = ()

    def add(self, row: Row) -> None:
        cls = type(row)
        checked = _checked_class(cls)
        if checked is not cls:
            row.__class__ = checked
        super().add(row)


def _noop_signal_handler(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the real work happens through the wake-up fd."""


class Reactor:
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
    checks, and such a call is a race.
    """

    def __init__(
        self, selector: selectors.BaseSelector | None = None, clock: Clock | None = None,
        *, debug: bool | None = None,
    ) -> None:
        self._selector = selector if selector is not None else selectors.DefaultSelector()
        # the real clock is time.monotonic itself, not MonotonicClock(): one Python
        # frame less on every reading (twice per iteration)
        self._clock: Clock = clock if clock is not None else time.monotonic
        self._now = self._clock()
        self._ready: collections.deque[Handle] = collections.deque()
        self._timers = TimerHeap()
        self.connections = ConnectionTable()
        self.listeners: list[Listener] = []
        self._iterations = 0
        self._stopping = False
        self._closed = False
        self._in_iteration = False
        self._thread_id: int | None = None
        self._signal_handlers: dict[int, Handle] = {}
        self._old_signal_handlers: dict[int, Any] = {}
        self._old_wakeup_fd: int | None = None
        self._waker = _Waker(self)
        self._selector.register(self._waker.rsock, EVENT_READ, self._waker)
        self._epoll, self._fd_to_key = _epoll_fast_path(self._selector)
        _live_reactors.add(self)
        self._debug = bool(sys.flags.dev_mode) if debug is None else bool(debug)
        if self._debug:
            self.connections = _DebugConnectionTable()
            for name in LOOP_ONLY_METHODS:
                setattr(self, name, _checked_reactor_method(self, name))

    @property
    def debug(self) -> bool:
        """Whether loop-thread-only calls check the calling thread (fixed at creation)."""
        return self._debug

    # -- scheduling -------------------------------------------------------------------

    def time(self) -> float:
        """The reactor clock's current reading."""
        return self._clock()

    @property
    def now(self) -> float:
        """The clock's reading taken right after the last poll (or at creation).

        Cheap (no clock call): what transports stamp activity with. Within one
        iteration it does not advance; :meth:`time` reads the clock.
        """
        return self._now

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
            # _compute_timeout's common cases inline (a call less per iteration)
            wait: float | None
            if self._ready or self._stopping:
                wait = 0.0
            elif not self._timers.heap:
                wait = timeout if timeout is None else _clamp_wait(timeout)
            else:
                wait = self._compute_timeout(timeout)
            if self._epoll is not None:
                fd_events = self._poll_epoll(wait)
                self._now = self._clock()
                self._dispatch_epoll(fd_events)
            else:
                events = self._selector.select(wait)
                self._now = self._clock()
                self._dispatch(events)
            if self._ready or self._timers.heap:  # else there is nothing to run
                self._run_ready()
        finally:
            self._in_iteration = False
            self._iterations += 1

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
        current = self._selector.get_map()
        for key, reported in events:
            obj: ReadyTarget = key.data
            # a callback earlier in this batch may have closed this descriptor or
            # changed what it waits for: trust the registration as it is now
            now_key = current.get(key.fileobj)
            if now_key is None or now_key.data is not obj:
                continue
            mask = reported & now_key.events
            try:
                if mask & EVENT_READ:
                    obj._read_ready()
                if mask & EVENT_WRITE:
                    obj._write_ready()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._dispatch_failed(obj, exc)

    def _poll_epoll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Poll a plain :class:`selectors.EpollSelector`: the raw ``epoll.poll`` list.

        The one blocking call of the fast path; :meth:`_dispatch_epoll` processes what
        it returns. ``timeout`` is clamped by the caller (at most :data:`MAX_WAIT`).
        """
        epoll, fd_to_key = self._epoll, self._fd_to_key
        assert epoll is not None and fd_to_key is not None
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            timeout = math.ceil(timeout * 1e3) * 1e-3  # never wake a millisecond early
        events: list[tuple[int, int]] = epoll.poll(timeout, len(fd_to_key) or 1)
        return events

    def _dispatch_epoll(self, events: list[tuple[int, int]]) -> None:
        """Dispatch ``(fd, epoll mask)`` pairs, as :meth:`_dispatch` dispatches
        ``selector.select()``'s pairs, with the same stale-key rule.

        Events are mapped as ``selectors`` maps them: error and hang-up count as both
        readable and writable, masked by what the key is registered for now.

        Stale keys (the rule of both paths): a callback earlier in the batch may have
        unregistered a descriptor, or closed it and let a new object register the same
        number. An event is dropped when its descriptor is no longer registered, or is
        registered now to another object than at poll time (the event was for the old
        file: a new connecting socket must not take a hang-up for "connected"); when
        it is registered to the same object, its current interest mask applies. Here
        the selector's map (a :class:`_BatchKeyMap`) enforces the second half when a
        registration changes, so the loop below looks up each key once, as before.
        """
        fd_to_key = self._fd_to_key
        assert fd_to_key is not None
        get_key = fd_to_key.get
        fd_to_key.batch = events
        try:
            # keys are indexed, not read by name: SelectorKey is a named tuple and
            # key[2]/key[3] (events/data) are much cheaper than its attribute getters
            for fd, event in events:
                key = get_key(fd)
                if key is None:
                    continue
                obj = key[3]
                try:
                    wanted = key[2]
                    if event == _EPOLLIN and wanted == 1:  # the common case: readable
                        obj._read_ready()
                        continue
                    if event & _NOT_EPOLLOUT and wanted & 1:  # EVENT_READ
                        obj._read_ready()
                    if event & _NOT_EPOLLIN and wanted & 2:  # EVENT_WRITE
                        obj._write_ready()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._dispatch_failed(obj, exc)
        finally:
            fd_to_key.batch = None
            if fd_to_key.polled:  # registrations changed in this batch
                fd_to_key.end_batch()

    def _dispatch_failed(self, obj: ReadyTarget, exc: BaseException) -> None:
        describe = getattr(obj, "describe", None)
        where = describe() if describe is not None else repr(obj)
        logger.error("unexpected error while serving %s", where, exc_info=exc)
        force_close = getattr(obj, "_force_close", None)
        if force_close is not None:
            force_close(exc)

    def _run_ready(self) -> None:
        now = self._now = self._clock()
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
        where = describe_owner(handle)
        if where is None:
            logger.error("callback %r raised", handle, exc_info=exc)
        else:
            logger.error("%s: callback %r raised", where, handle, exc_info=exc)

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

    def is_closed(self) -> bool:
        return self._closed

    def statistics(self) -> ReactorStatistics:
        """An immutable snapshot: connections by state, totals, timers, iterations."""
        table = self.connections.statistics()
        return ReactorStatistics(
            # a forked child's selector before first use reports the class it will be
            backend=type(getattr(self._selector, "_inherited", self._selector)).__name__,
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
        if not self._signal_handlers:
            try:
                old = signal.set_wakeup_fd(self._waker.wsock.fileno(), warn_on_full_buffer=False)
            except (ValueError, OSError) as exc:
                raise LocalProtocolError(str(exc)) from exc
            self._old_wakeup_fd = old
        if sig not in self._old_signal_handlers:
            try:
                self._old_signal_handlers[sig] = signal.signal(sig, _noop_signal_handler)
            except (ValueError, OSError) as exc:
                if not self._signal_handlers:
                    self._restore_wakeup_fd()
                raise LocalProtocolError(f"cannot handle signal {sig}: {exc}") from exc
            if sig != signal.SIGALRM:
                signal.siginterrupt(sig, False)
        self._signal_handlers[sig] = Handle(callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        """Stop handling ``sig`` and restore its previous handler; False if not handled."""
        if self._signal_handlers.pop(sig, None) is None:
            return False
        previous = self._old_signal_handlers.pop(sig)
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        if not self._signal_handlers:
            self._restore_wakeup_fd()
        return True

    def _restore_wakeup_fd(self) -> None:
        old = self._old_wakeup_fd
        self._old_wakeup_fd = None
        try:
            signal.set_wakeup_fd(old if old is not None else -1)
        except ValueError:  # not the main thread any more (e.g. closed from a worker)
            logger.warning("could not restore the signal wake-up descriptor")

    def _deliver_signal(self, signum: int) -> None:
        handle = self._signal_handlers.get(signum)
        if handle is not None:
            self._ready.append(handle)

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
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._closed = True
        _live_reactors.discard(self)
        self._timers.clear()
        self._ready.clear()
        self._selector.close()
        self._waker.close()

    def close_after_fork(self) -> None:
        """In a forked child: drop this reactor without running anything.

        No callback runs and no protocol hears of it; the selector and the wake-up
        channel are closed and signal handlers restored. The parent is safe whichever
        way the child ends its copy: :func:`os.fork` already gave the child a selector
        and a wake-up channel of its own (see :meth:`_detach_from_parent`), so
        :meth:`close`, running the reactor, or this method all leave the parent's
        polling alone. Here, nothing is unregistered even so (a child's copy made by
        other means than :func:`os.fork` may still share its epoll object with the
        parent), and the child's copies of connection sockets are left to the caller.
        """
        if self._closed:
            return
        self._closed = True
        _live_reactors.discard(self)
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (ValueError, OSError):  # pragma: no cover - forked off the main thread
                pass
        self._timers.clear()
        self._ready.clear()
        self._drop_inherited_selector()
        self._waker.close()

    def _drop_inherited_selector(self) -> None:
        """Close the selector's own descriptor, if it has one, unregistering nothing."""
        inner = getattr(self._selector, "_selector", None)
        close = getattr(inner, "close", None)
        if close is not None:  # epoll, kqueue, devpoll objects
            close()

    def _detach_from_parent(self) -> None:
        """In a child just forked: stop sharing kernel state with the parent.

        An epoll (or kqueue, devpoll) descriptor is one interest list shared by parent
        and child: an ``unregister`` or ``modify`` in the child would change what the
        parent polls. So the inherited descriptor is closed here, unregistering
        nothing, and the selector is replaced by an :class:`_AfterForkSelector`, which
        builds a fresh one of the same class with the same registrations when the
        child first uses it (a child that only calls :meth:`close_after_fork`, as the
        forking facades' children do, never pays for that). The wake-up socketpair is
        shared too (the child would drain bytes meant for the parent): the child gets a
        new one, and the signal wake-up descriptor, when this reactor handles signals,
        points at it. A selector with no descriptor of its own (select, poll, a test's
        fake) has no shared state and is kept. The loop thread, if it was another
        thread, does not exist in the child: the reactor is no longer running there.
        """
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            self._thread_id = None
        selector = self._selector
        old_waker = self._waker
        self._waker = _Waker(self)
        if isinstance(selector, _AfterForkSelector):
            pass  # forked again before first use: still nothing shared
        elif getattr(selector, "_selector", None) is not None and hasattr(selector, "fileno"):
            self._drop_inherited_selector()
            self._selector = _AfterForkSelector(self, selector)
            self._epoll = self._fd_to_key = None
        else:
            selector.unregister(old_waker.rsock)  # no kernel state: a plain dict
            selector.register(self._waker.rsock, EVENT_READ, self._waker)
        old_waker.close()
        if self._signal_handlers:
            try:
                signal.set_wakeup_fd(self._waker.wsock.fileno(), warn_on_full_buffer=False)
            except (ValueError, OSError) as exc:  # pragma: no cover - not the main thread
                logger.warning("signals will not wake the forked reactor: %s", exc)

    def _selector_after_fork(self, inherited: selectors.BaseSelector) -> selectors.BaseSelector:
        """Make the forked child's own selector: ``inherited``'s registrations (its
        Python-side map survives the closing of its descriptor) and the new waker."""
        fresh = type(inherited)()
        for key in list(inherited.get_map().values()):
            if not isinstance(key.data, _Waker):
                fresh.register(key.fileobj, key.events, key.data)
        fresh.register(self._waker.rsock, EVENT_READ, self._waker)
        self._selector = fresh
        self._epoll, self._fd_to_key = _epoll_fast_path(fresh)
        return fresh

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
