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
import logging
import math
import select
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from . import listeners as _listeners
from .clock import Clock
from .errors import ClosedError, LocalProtocolError
from .table import ConnectionTable, _empty_counts
from .timers import Handle, TimerHandle, TimerHeap

if TYPE_CHECKING:
    from .listeners import Listener
    from .transports import DatagramTransport, StreamTransport

__all__ = ["Reactor", "ReactorStatistics"]

logger = logging.getLogger("reactor")

_T = TypeVar("_T")
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


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


def _epoll_fast_path(
    selector: selectors.BaseSelector,
) -> tuple[Any, dict[int, selectors.SelectorKey] | None]:
    """The epoll object and fd map of a plain EpollSelector, or (None, None).

    Only the standard library's own class qualifies (a subclass may override
    ``select``), and only when it has the internals this shortcut reads.
    """
    if type(selector) is not getattr(selectors, "EpollSelector", None):
        return None, None
    epoll = getattr(selector, "_selector", None)
    fd_to_key = getattr(selector, "_fd_to_key", None)
    if not isinstance(fd_to_key, dict) or not hasattr(epoll, "poll"):
        return None, None
    return epoll, fd_to_key


def _noop_signal_handler(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the real work happens through the wake-up fd."""


class Reactor:
    """A selector-driven event loop with an explicit connection table.

    Args:
        selector: a :class:`selectors.BaseSelector`; :class:`selectors.DefaultSelector`
            when None.
        clock: a callable returning monotonic seconds; :func:`time.monotonic` when None.

    Thread safety: only :meth:`call_soon_threadsafe` and :meth:`stop` may be called from
    other threads; everything else belongs to the thread running the reactor.
    """

    def __init__(
        self, selector: selectors.BaseSelector | None = None, clock: Clock | None = None
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

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle."""
        return self.call_at(self._clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` when the reactor clock reads ``when``."""
        handle = self._timers.push(TimerHandle(when, callback, args))
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
            elif not self._timers._entries:
                wait = timeout
            else:
                wait = self._compute_timeout(timeout)
            if self._epoll is not None:
                self._poll_epoll(wait)
            else:
                events = self._selector.select(wait)
                self._now = self._clock()
                self._dispatch(events)
            if self._ready or self._timers._entries:  # else there is nothing to run
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
        if not self._timers._entries:  # no timer at all: skip the heap's method call
            return limit
        deadline = self._timers.next_deadline()
        if deadline is None:
            return limit
        wait = max(0.0, deadline - self._clock())
        return wait if limit is None else min(wait, limit)

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        current = self._selector.get_map()
        for key, reported in events:
            obj = key.data
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

    def _poll_epoll(self, timeout: float | None) -> None:
        """Poll and dispatch for a plain :class:`selectors.EpollSelector`.

        The same work as ``selector.select()`` followed by :meth:`_dispatch`, without
        building a list of (key, events) pairs: each event goes from the epoll result
        straight to the registered object, found in the selector's own fd map at
        dispatch time (so an event for a descriptor closed earlier in the batch is
        dropped). The events are mapped as ``selectors`` maps them: error and hang-up
        count as both readable and writable, masked by what the key is registered for.
        """
        epoll, fd_to_key = self._epoll, self._fd_to_key
        assert epoll is not None and fd_to_key is not None
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            timeout = math.ceil(timeout * 1e3) * 1e-3  # never wake a millisecond early
        events = epoll.poll(timeout, len(fd_to_key) or 1)
        self._now = self._clock()
        get_key = fd_to_key.get
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

    def _dispatch_failed(self, obj: Any, exc: BaseException) -> None:
        describe = getattr(obj, "describe", None)
        where = describe() if describe is not None else repr(obj)
        logger.error("unexpected error while serving %s", where, exc_info=exc)
        force_close = getattr(obj, "_force_close", None)
        if force_close is not None:
            force_close(exc)

    def _run_ready(self) -> None:
        now = self._now = self._clock()
        ready = self._ready
        entries = self._timers._entries  # peek: most iterations have no timer due
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
                logger.error("callback %r raised", handle, exc_info=exc)

    # -- listening and connecting -----------------------------------------------------

    def listen_tcp(
        self, host: str | None, port: int, protocol_factory: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Listener:
        """Listen on TCP; see :func:`reactor.listeners.listen_tcp` for the options."""
        self._check_closed()
        return _listeners.listen_tcp(self, host, port, protocol_factory, **kwargs)

    def listen_unix(
        self, path: str, protocol_factory: Callable[[], Any] | None = None, **kwargs: Any
    ) -> Listener:
        """Listen on a Unix stream socket; see :func:`reactor.listeners.listen_unix`."""
        self._check_closed()
        return _listeners.listen_unix(self, path, protocol_factory, **kwargs)

    def listen_udp(
        self, host: str | None, port: int, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> DatagramTransport:
        """Open a UDP endpoint; see :func:`reactor.listeners.listen_udp`."""
        self._check_closed()
        return _listeners.listen_udp(self, host, port, protocol_factory, **kwargs)

    def listen_unix_datagram(
        self, path: str | None, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> DatagramTransport:
        """Open a Unix datagram endpoint; see :func:`reactor.listeners.listen_unix_datagram`."""
        self._check_closed()
        return _listeners.listen_unix_datagram(self, path, protocol_factory, **kwargs)

    def connect_tcp(
        self, host: str, port: int, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> Future[tuple[StreamTransport, Any]]:
        """Connect out over TCP; see :func:`reactor.listeners.connect_tcp`."""
        self._check_closed()
        return _listeners.connect_tcp(self, host, port, protocol_factory, **kwargs)

    def connect_unix(
        self, path: str, protocol_factory: Callable[[], Any], **kwargs: Any
    ) -> Future[tuple[StreamTransport, Any]]:
        """Connect out to a Unix stream socket; see :func:`reactor.listeners.connect_unix`."""
        self._check_closed()
        return _listeners.connect_unix(self, path, protocol_factory, **kwargs)

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
            backend=type(self._selector).__name__,
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
        self._timers.clear()
        self._ready.clear()
        self._selector.close()
        self._waker.close()

    def close_after_fork(self) -> None:
        """In a forked child: drop this reactor without touching the parent's state.

        The selector's descriptor and the wake-up channel are closed without
        unregistering anything (an epoll interest list is shared with the parent), and
        no callback runs. The child's copies of connection sockets are left to the
        caller.
        """
        self._closed = True
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (ValueError, OSError):  # pragma: no cover - forked off the main thread
                pass
        self._timers.clear()
        self._ready.clear()
        inner = getattr(self._selector, "_selector", None)
        close = getattr(inner, "close", None)
        if close is not None:  # epoll, kqueue, devpoll objects
            close()
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
