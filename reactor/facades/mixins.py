"""The mix-ins: where a ready request runs.

A server handles a request inline, on the reactor thread. Put a mix-in first in the
bases to change that -- ``class Server(ThreadingMixIn, TCPServer)``:

* :class:`ThreadingMixIn` -- a new thread per request (the default, as always), or a
  bounded pool of worker threads (``max_threads``) with the requests beyond it waiting
  in the reactor's table, not in threads;
* :class:`ForkingMixIn` -- a child process per request, at most ``max_children`` at a
  time (the rest wait in the table); children are reaped as they exit, through the
  selector (a pidfd per child) or SIGCHLD on the wake-up channel, never by a polling
  loop unless neither is available;
* :class:`MultiplexingMixIn` -- the "explicit table of partially finished requests"
  the standard library's docstring wished for: a non-blocking handler (an
  :class:`asyncio.Protocol`) runs inside the reactor, with no thread or process per
  client.

Threads and children receive the connection already handed over: unregistered from the
selector and in blocking mode. A forked child drops the parent's reactor with
:meth:`~reactor.io.loop.Reactor.close_after_fork` and closes its copies of the other
requests' sockets.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import select
import signal
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..io.stream import StreamTransport
from ..sansio.connection import ConnEvent, ConnState, Row
from ..sansio.errors import LocalProtocolError
from ..sansio.timers import TimerHandle
from .requests import WAITING, peek_count, request_key
from .servers import THREAD_FROM_VERIFIED, BaseServer, needs_no_period

if TYPE_CHECKING:
    _Base = BaseServer
else:
    _Base = object

__all__ = ["ForkingMixIn", "MultiplexingMixIn", "ThreadingMixIn"]

logger = logging.getLogger("reactor.mixins")  # the name it had before the layers became folders

_WORK_DONE: Final = None  # the queue item that tells an idle pool worker to exit
_VERIFIED: Final = ConnState.VERIFIED
_CLOSED: Final = ConnState.CLOSED
_DISPATCHED_CHILD: Final = ConnState.DISPATCHED_CHILD
_DISPATCH_THREAD: Final = ConnEvent.DISPATCH_THREAD
_DISPATCH_CHILD: Final = ConnEvent.DISPATCH_CHILD
_FINISH: Final = ConnEvent.FINISH
_SOCKET: Final = socket.socket  # request_key()'s test, inlined on the hot path
_CHILD_CHECK: Final = 0.01  # seconds between checks for an exited child, without pidfds
_WIND_DOWN_CHECK: Final = 0.02  # seconds between checks of connections server_close awaits


def _close_deadline(timeout: float | None) -> float | None:
    """The :func:`time.monotonic` time at which ``server_close`` stops waiting, from
    ``block_on_close_timeout`` (None or infinite: never)."""
    if timeout is None:
        return None
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"block_on_close_timeout must be None or a number of seconds "
                         f">= 0, not {timeout!r}")
    if math.isinf(seconds):
        return None
    return time.monotonic() + seconds


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# -- threads ------------------------------------------------------------------------------


class _ThreadList(list[threading.Thread]):
    """The non-daemon request threads, joined by ``server_close``; threads that ended
    are dropped whenever a new one is added, so the list does not grow forever."""

    def append(self, thread: threading.Thread) -> None:
        self[:] = [t for t in self if t.is_alive()]
        if not thread.daemon:
            super().append(thread)

    def join(self, deadline: float | None = None) -> list[threading.Thread]:
        """Join the threads (until ``deadline``, a :func:`time.monotonic` time, if one
        is given); return those still running, which stay in the list."""
        threads, self[:] = self[:], []
        for thread in threads:
            thread.join(_remaining(deadline))
        left = [thread for thread in threads if thread.is_alive()]
        self.extend(left)
        return left


class _NoThreadList:
    """Stands in for :class:`_ThreadList` when nothing is to be joined."""

    def append(self, thread: threading.Thread) -> None:
        pass

    def join(self, deadline: float | None = None) -> list[threading.Thread]:
        return []

    def __len__(self) -> int:
        return 0


class _WorkerPool:
    """At most ``size`` worker threads; requests beyond them wait, unstarted.

    The reactor thread submits; a worker that finishes a request takes the next waiting
    one itself, or goes idle on its queue. Idle workers are counted, so a request is
    put on the queue only when a worker is there to take it at once.
    """

    def __init__(self, server: ThreadingMixIn, size: int, daemon: bool) -> None:
        if size < 1:
            raise ValueError("max_threads must be at least 1")
        self.server = server
        self.size = size
        self.daemon = daemon
        self.lock = threading.Lock()
        self.queue: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self.idle = 0
        self.threads: list[threading.Thread] = []
        self.waiting: deque[tuple[Any, Any]] = deque()
        self.closing = False

    def submit(self, request: Any, client_address: Any) -> None:
        server = self.server
        server._reactor_sweep_soon()
        with self.lock:
            if self.idle:
                self.idle -= 1
                server._reactor_mark(request, _DISPATCH_THREAD)
                self.queue.put((request, client_address))
                return
            if len(self.threads) < self.size:
                server._reactor_mark(request, _DISPATCH_THREAD)
                self._spawn((request, client_address))
                return
            row = server._reactor_facade.rows.get(request_key(request))
            if row is not None:
                row.set_meta(WAITING, True)
            self.waiting.append((request, client_address))

    def _spawn(self, first: tuple[Any, Any]) -> None:
        thread = threading.Thread(target=self._work, args=(first,), daemon=self.daemon,
                                  name=f"{type(self.server).__name__} worker")
        self.threads.append(thread)
        try:
            thread.start()
        except BaseException:
            self.threads.remove(thread)
            raise

    def _next(self) -> tuple[Any, Any] | None:
        with self.lock:
            if self.waiting:
                item = self.waiting.popleft()
                self.server._reactor_mark(item[0], _DISPATCH_THREAD)
                return item
            if self.closing:
                return None
            self.idle += 1
        return self.queue.get()

    def _work(self, item: tuple[Any, Any] | None) -> None:
        me = threading.current_thread()
        try:
            while item is not None:
                self.server.process_request_thread(*item)
                item = self._next()
        finally:
            with self.lock:
                self.threads.remove(me)
                orphans = bool(self.waiting) and not self.threads
            if orphans:  # this worker died (SystemExit ...) and nobody else is left
                with self.lock:
                    nxt = self.waiting.popleft() if self.waiting else None
                    if nxt is not None:
                        self.server._reactor_mark(nxt[0], _DISPATCH_THREAD)
                        self._spawn(nxt)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.threads), len(self.waiting)

    def close(self, wait: bool, deadline: float | None = None) -> int:
        """Let the workers finish what is started or waiting, then exit; with ``wait``,
        wait for them (until ``deadline``, a :func:`time.monotonic` time, if one is
        given). Return how many workers are still running."""
        with self.lock:
            self.closing = True
            idle, self.idle = self.idle, 0
        for _ in range(idle):
            self.queue.put(_WORK_DONE)
        while wait:
            with self.lock:
                threads = list(self.threads)
            if not threads:
                break
            for thread in threads:
                thread.join(_remaining(deadline))
            if deadline is not None and time.monotonic() >= deadline:
                break
        with self.lock:
            return len(self.threads)


class ThreadingMixIn(_Base):
    """Handle each request in a thread.

    Class attributes (also settable on instances):

    - ``daemon_threads`` -- make request threads daemonic (False)
    - ``block_on_close`` -- ``server_close`` waits for the request threads (True)
    - ``block_on_close_timeout`` -- how long ``server_close`` waits for them, in
      seconds; None (the default) waits for ever, as the standard library. When it
      passes, ``server_close`` returns and logs a warning with the number of threads
      still running; they run on to their end (a thread cannot be stopped from
      outside), and non-daemon ones still hold the interpreter's exit
    - ``max_threads`` -- None (the default): a new thread per request, exactly as the
      standard library; a number: a pool of at most that many reusable workers, the
      requests beyond them waiting in the reactor (rows in state VERIFIED, counted by
      ``statistics().waiting``) until a worker is free

    Methods that may be overridden: ``process_request_thread(request,
    client_address)`` -- what a thread runs (finish, handle errors, shut down).
    """

    daemon_threads: bool = False
    block_on_close: bool = True
    block_on_close_timeout: float | None = None
    max_threads: int | None = None
    _threads: Any = _NoThreadList()
    _reactor_thread_pool: _WorkerPool | None = None
    _reactor_accept_batch: ClassVar[int] = 32

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Run the request in this thread, log its errors, then end it."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the request (or give it to the pool)."""
        if self.max_threads is not None:
            self._reactor_pool().submit(request, client_address)
            return
        if self.block_on_close and type(self._threads) is _NoThreadList:
            self._threads = _ThreadList()  # not vars(self): see _reactor_pool
        f = self._reactor_facade
        row = f.rows.get(request if type(request) is _SOCKET else id(request))
        if row is not None and row.state is _VERIFIED and row.meta is None:
            row.state = THREAD_FROM_VERIFIED  # _reactor_mark's usual case, without calls
            next(f.dispatched_thread)
        else:
            self._reactor_mark(request, _DISPATCH_THREAD)
        thread = threading.Thread(target=self._reactor_thread_main,
                                  args=(request, client_address), daemon=self.daemon_threads)
        next(f.threads_started)
        if not f.sweeping:
            self._reactor_sweep_soon()
        try:
            thread.start()
        except BaseException:
            next(f.threads_ended)
            raise
        self._threads.append(thread)

    def _reactor_thread_main(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            next(self._reactor_facade.threads_ended)

    def _reactor_pool(self) -> _WorkerPool:
        # per-instance state as plain attributes over class defaults, never through
        # vars(self): that makes the instance's __dict__ real, and every attribute
        # access on the server is slower from then on (CPython 3.11+)
        pool = self._reactor_thread_pool
        if pool is None:
            assert self.max_threads is not None
            pool = self._reactor_thread_pool = _WorkerPool(self, self.max_threads,
                                                           self.daemon_threads)
        return pool

    def _reactor_workers(self) -> tuple[int, int]:
        threads, children = super()._reactor_workers()
        pool = self._reactor_thread_pool
        if pool is not None:
            return threads + pool.counts()[0], children
        f = self._reactor_facade
        # the repr of a count shows its next value without consuming it
        live = peek_count(f.threads_started) - peek_count(f.threads_ended)
        return threads + live, children

    def _reactor_waiting(self) -> int:
        pool = self._reactor_thread_pool
        return super()._reactor_waiting() + (pool.counts()[1] if pool is not None else 0)

    def server_close(self) -> None:
        """Close the server, then wait for the request threads (``block_on_close``),
        for at most ``block_on_close_timeout`` seconds when that is set."""
        deadline = _close_deadline(self.block_on_close_timeout) if self.block_on_close \
            else None
        super().server_close()
        left = len(self._threads.join(deadline))
        pool = self._reactor_thread_pool
        if pool is not None:
            left += pool.close(wait=self.block_on_close, deadline=deadline)
        if left and self.block_on_close:
            logger.warning(
                "%s: server_close() stopped waiting after block_on_close_timeout=%s s: "
                "%d request thread(s) still running; they run on to their end",
                type(self).__name__, self.block_on_close_timeout, left)


# -- child processes ----------------------------------------------------------------------


def _pidfd_works() -> bool:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return False
    try:
        os.close(opener(os.getpid()))
    except OSError:  # an old kernel, or a sandbox that forbids it
        return False
    return True


class _ChildWatch:
    """A child's pidfd, registered with the selector: readable when the child exits."""

    __slots__ = ("fd", "pid", "server")

    def __init__(self, server: ForkingMixIn, pid: int, fd: int) -> None:
        self.server = server
        self.pid = pid
        self.fd = fd

    def _read_ready(self) -> None:
        self.server._reactor_reap(self.pid)

    def _write_ready(self) -> None:
        pass

    def describe(self) -> str:
        return f"child {self.pid}"


def _wait_for_an_exit(pids: list[int], timeout: float) -> None:
    """Return when one of ``pids`` (children not reaped yet) has exited, or after
    ``timeout`` seconds: poll their pidfds where the kernel has them, otherwise check
    again after a short while."""
    opener = getattr(os, "pidfd_open", None)
    fds: list[int] = []
    try:
        if opener is not None:
            try:
                for pid in pids:
                    fds.append(opener(pid))
            except OSError:  # reaped meanwhile (ESRCH), no pidfds here, out of fds
                pass
            else:
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                poller.poll(math.ceil(timeout * 1000))
                return
        time.sleep(min(timeout, _CHILD_CHECK))
    finally:
        for fd in fds:
            os.close(fd)


class _Children:
    """A forking server's bookkeeping of its children."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.rows: dict[int, Row] = {}
        self.watches: dict[int, _ChildWatch] = {}
        self.poll_timer: TimerHandle | None = None
        # server_close's deadline (time.monotonic()), for _reactor_drain
        self.close_deadline: float | None = None
        self.closed_waiting = 0  # requests still waiting for a slot at the deadline


class ForkingMixIn(_Base):
    """Handle each request in a child process.

    Class attributes (also settable on instances):

    - ``max_children`` -- at most this many children at a time (40); further requests
      wait in the reactor's table (state VERIFIED) until a child exits, while the
      server keeps accepting and answering ``shutdown()``
    - ``block_on_close`` -- ``server_close`` waits for the children (True); otherwise a
      background thread reaps them, so none is left a zombie
    - ``block_on_close_timeout`` -- how long ``server_close`` waits for the children
      (and for slots for the requests still waiting for one), in seconds; None (the
      default) waits for ever, as the standard library. When it passes,
      ``server_close`` closes the requests still waiting for a slot, returns, and logs
      a warning naming the children still running. They are not killed: a child may
      be half-way through a reply or a transaction that a signal would cut short, and
      the program can signal them itself (``active_children``); a background thread
      reaps them as they exit, so none is left a zombie
    - ``timeout`` -- 300: ``handle_request`` reaps after that long without a request
    - ``child_watcher`` -- how exits are noticed: ``"auto"`` (a pidfd per child when
      the kernel has them, else SIGCHLD through the reactor's wake-up channel when
      serving on the main thread, else a check every ``poll_interval``), or one of
      ``"pidfd"``, ``"signal"``, ``"poll"``

    Instance attributes: ``active_children`` -- the pids of running children (None
    before the first fork).

    Methods for the caller: ``collect_children(*, blocking=False)`` -- reap the
    children that exited (wait for all of them when ``blocking``).
    """

    timeout: float | None = 300
    active_children: set[int] | None = None
    max_children: int = 40
    block_on_close: bool = True
    block_on_close_timeout: float | None = None
    child_watcher: str = "auto"
    _reactor_child_state: _Children | None = None
    _reactor_accept_batch: ClassVar[int] = 8

    def _reactor_children(self) -> _Children:
        state = self._reactor_child_state  # not vars(self): see ThreadingMixIn._reactor_pool
        if state is None:
            state = self._reactor_child_state = _Children()
        return state

    def _reactor_full(self) -> bool:
        return len(self.active_children or ()) >= self.max_children

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap the children that exited; with ``blocking``, wait for every child."""
        for pid in list(self.active_children or ()):
            self._reactor_reap(pid, blocking=blocking)

    def handle_timeout(self) -> None:
        """``handle_request`` timed out: reap the children that exited."""
        self.collect_children()

    @needs_no_period
    def service_actions(self) -> None:
        """Reap the children that exited. Children are reaped as they exit anyway, so
        this adds no periodic wake-up to ``serve_forever``."""
        self.collect_children()
        super().service_actions()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Fork a child for the request, or let it wait for a free slot."""
        if self._reactor_full():
            self.collect_children()
        if self._reactor_full():
            row = self._reactor_facade.rows.get(request_key(request))
            if row is not None:
                row.set_meta(WAITING, True)
                self._reactor_facade.waiting.append((request, client_address, row))
            return
        self._reactor_fork(request, client_address)

    def _reactor_fork(self, request: Any, client_address: Any) -> None:
        children = self._reactor_children()
        mode = self._reactor_watch_mode()
        row = self._reactor_mark(request, _DISPATCH_CHILD)
        try:
            pid = os.fork()
        except BaseException:
            if row is not None and row.state is _DISPATCHED_CHILD:
                row.advance(_FINISH)
            raise
        if pid:
            if self.active_children is None:
                self.active_children = set()
            self.active_children.add(pid)
            if row is not None and row.state is _DISPATCHED_CHILD:
                children.rows[pid] = row
            self._reactor_watch(pid, mode)
            self.close_request(request)
            return
        self._reactor_become_child(request, row)
        status = 1
        try:
            self.finish_request(request, client_address)
            status = 0
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                os._exit(status)

    def _reactor_become_child(self, request: Any, row: Row | None) -> None:
        """In the child: drop the parent's reactor and its other sockets."""
        f = self._reactor_facade
        f.in_child = True
        children = self._reactor_children()
        for watch in children.watches.values():
            try:
                os.close(watch.fd)
            except OSError:
                pass
        children.watches.clear()
        children.rows.clear()
        self.active_children = set()
        reactor = f.reactor
        if reactor is None:
            return
        keep = (request, getattr(self, "socket", None))
        for other in reactor.connections:
            sock = getattr(other, "get_extra_info", lambda _n: None)("socket")
            if other is not row and sock is not None and all(sock is not k for k in keep):
                try:
                    sock.close()
                except OSError:
                    pass
        reactor.close_after_fork()

    # -- noticing exits ---------------------------------------------------------------

    def _reactor_watch_mode(self) -> str:
        children = self._reactor_children()
        if children.mode is not None:
            return children.mode
        mode = self.child_watcher
        if mode not in ("auto", "pidfd", "signal", "poll"):
            raise ValueError(f"child_watcher must be auto, pidfd, signal or poll, not {mode!r}")
        on_main = threading.current_thread() is threading.main_thread()
        if mode == "auto":
            mode = "pidfd" if _pidfd_works() else ("signal" if on_main else "poll")
        if mode == "signal":
            try:
                self.reactor.add_signal_handler(signal.SIGCHLD, self.collect_children)
            except LocalProtocolError as exc:
                logger.warning("%s: cannot watch SIGCHLD (%s); checking for exited "
                               "children every poll_interval", type(self).__name__, exc)
                mode = "poll"
        children.mode = mode
        return mode

    def _reactor_watch(self, pid: int, mode: str) -> None:
        if mode == "pidfd":
            try:
                fd = os.pidfd_open(pid)
            except OSError as exc:
                logger.warning("pidfd_open(%d) failed: %s; polling for it", pid, exc)
                mode = "poll"
            else:
                watch = _ChildWatch(self, pid, fd)
                self._reactor_children().watches[pid] = watch
                self.reactor.selector.register(fd, 1, watch)
                return
        if mode == "poll":
            self._reactor_schedule_poll()

    def _reactor_schedule_poll(self) -> None:
        children = self._reactor_children()
        f = self._reactor_facade
        reactor = f.reactor
        if children.poll_timer is None and reactor is not None and not reactor.is_closed():
            children.poll_timer = reactor.call_later(f.poll_interval, self._reactor_poll)

    def _reactor_poll(self) -> None:
        self._reactor_children().poll_timer = None
        self.collect_children()
        if self.active_children:
            self._reactor_schedule_poll()

    def _reactor_reap(self, pid: int, blocking: bool = False) -> bool:
        """Wait for ``pid`` (without blocking unless asked); True once it is reaped."""
        try:
            done, _status = os.waitpid(pid, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped by someone else
        if not done:
            return False
        self._reactor_child_exited(pid)
        return True

    def _reactor_child_exited(self, pid: int) -> None:
        if self.active_children is not None:
            self.active_children.discard(pid)
        children = self._reactor_children()
        watch = children.watches.pop(pid, None)
        if watch is not None:
            reactor = self._reactor_facade.reactor
            if reactor is not None and not reactor.is_closed():
                try:
                    reactor.selector.unregister(watch.fd)
                except (KeyError, ValueError):
                    pass
            os.close(watch.fd)
        row = children.rows.pop(pid, None)
        if row is not None:
            self._reactor_end_row(row)
        self._reactor_start_waiting()

    def _reactor_start_waiting(self) -> None:
        waiting = self._reactor_facade.waiting
        while waiting and not self._reactor_full() and not self._reactor_facade.in_child:
            request, client_address, row = waiting.popleft()
            self._reactor_dispatch(request, client_address, row, run=self._reactor_fork)

    def _reactor_drain(self) -> None:
        if not self.block_on_close:
            super()._reactor_drain()
            return
        children = self._reactor_children()
        deadline = children.close_deadline
        waiting = self._reactor_facade.waiting
        while waiting:
            if self._reactor_full() and self.active_children:
                if deadline is None:
                    self._reactor_reap(next(iter(self.active_children)), blocking=True)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                _wait_for_an_exit(list(self.active_children), remaining)
                self.collect_children()
                continue
            request, client_address, row = waiting.popleft()
            self._reactor_dispatch(request, client_address, row, run=self._reactor_fork)
        children.closed_waiting = len(waiting)
        super()._reactor_drain()  # the deadline passed: close those still waiting

    def _reactor_wait_children(self, deadline: float | None) -> None:
        """Reap the children as they exit, until none is left or ``deadline`` (a
        :func:`time.monotonic` time; None: wait for all of them)."""
        if deadline is None:
            self.collect_children(blocking=True)
            return
        while True:
            self.collect_children()
            pids = list(self.active_children or ())
            remaining = deadline - time.monotonic()
            if not pids or remaining <= 0:
                return
            _wait_for_an_exit(pids, remaining)

    def _reactor_workers(self) -> tuple[int, int]:
        threads, children = super()._reactor_workers()
        return threads, children + len(self.active_children or ())

    def server_close(self) -> None:
        """Close the server, then reap the children (waiting for them with
        ``block_on_close``, for at most ``block_on_close_timeout`` seconds when that is
        set; a background thread reaps the rest)."""
        children = self._reactor_children()
        deadline = None
        if self.block_on_close:
            deadline = children.close_deadline = _close_deadline(self.block_on_close_timeout)
        super().server_close()
        if self.block_on_close:
            self._reactor_wait_children(deadline)
        else:
            self.collect_children()
        left = set(self.active_children or ())
        if self.block_on_close and (left or children.closed_waiting):
            logger.warning(
                "%s: server_close() stopped waiting after block_on_close_timeout=%s s: "
                "%d child process(es) still running (pids %s), not killed, reaped when "
                "they exit; %d request(s) waiting for a child slot closed",
                type(self).__name__, self.block_on_close_timeout, len(left),
                " ".join(map(str, sorted(left))) or "-", children.closed_waiting)
        for pid in left:
            watch = self._reactor_children().watches.pop(pid, None)
            if watch is not None:
                os.close(watch.fd)
        if left:
            threading.Thread(target=self._reactor_reap_later, args=(left,), daemon=True,
                             name=f"{type(self).__name__} reaper").start()

    def _reactor_reap_later(self, pids: set[int]) -> None:
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            if self.active_children is not None:
                self.active_children.discard(pid)


# -- multiplexing -------------------------------------------------------------------------


class _CheckedDatagrams(asyncio.DatagramProtocol):
    """Puts ``verify_request`` in front of a datagram protocol."""

    def __init__(self, server: MultiplexingMixIn, inner: Any) -> None:
        self.server = server
        self.inner = inner
        self.sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport.get_extra_info("socket")
        self.inner.connection_made(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        server = self.server
        f = server._reactor_facade
        f.bump("accepted")
        try:
            allowed = server.verify_request((data, self.sock), addr)
        except Exception:
            server.handle_error((data, self.sock), addr)
            allowed = False
        if allowed:
            self.inner.datagram_received(data, addr)
        else:
            f.bump("rejected")
        server._reactor_done()

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


class MultiplexingMixIn(_Base):
    """Serve every connection inside the reactor with a non-blocking handler.

    ``RequestHandlerClass`` is called with no arguments and returns an
    :class:`asyncio.Protocol` for stream servers (for instance a
    :class:`handlers.base.StreamHandler`), or one :class:`asyncio.DatagramProtocol` for
    the whole socket on datagram servers. No thread or process is started per client:
    the connections are rows of the table in the protocol states (OPEN, READ_CLOSED,
    CLOSING ...), and the handler must never block.

    The server API is unchanged: ``verify_request`` (called with the connection's
    non-blocking socket, or ``(data, socket)`` per datagram) can refuse a client,
    ``serve_forever``/``shutdown``/``handle_request`` run the reactor, and
    ``server_close`` (or the end of a ``with`` block) closes every connection.

    ``server_close`` lets the connections finish (``block_on_close``, True): an idle
    one -- nothing queued for writing, nothing unread in the kernel -- is closed at
    once; one with a reply still queued is closed once it is sent; one with input the
    handler has not read yet is closed once the handler has answered it. After
    ``block_on_close_timeout`` seconds (5 by default; None waits for ever) the
    connections left are aborted and a warning says how many. The default is finite,
    unlike the threads' and children's: what keeps a multiplexed connection open at
    that point is its peer (a client that does not read its reply), not the program's
    code. This applies when the server made its reactor; on a reactor shared with
    other code (``reactor=``), ``server_close`` aborts the server's connections.
    """

    block_on_close: bool = True
    block_on_close_timeout: float | None = 5.0
    _reactor_accept_batch: ClassVar[int] = 64
    _reactor_nonblocking: ClassVar[bool] = True

    def _reactor_wind_down(self, reactor: Any) -> None:
        """Close idle connections at once, let active ones finish, abort the rest at
        the deadline (see the class docstring)."""
        super()._reactor_wind_down(reactor)
        if not self.block_on_close or reactor.is_closed():
            return
        deadline = _close_deadline(self.block_on_close_timeout)
        live = self._reactor_open_connections()
        if not live:
            return

        def check() -> None:
            rows = self._reactor_open_connections()
            if not rows:
                reactor.stop()
                return
            for row in rows:
                # idle: nothing unread (a reset counts as nothing left to answer)
                if not row.is_closing() and row.unread_input() is not True:
                    row.close()  # sends what is queued, then closes
            reactor.call_later(_WIND_DOWN_CHECK, check)

        check()
        stopper = None
        if deadline is not None:
            stopper = reactor.call_later(max(0.0, deadline - time.monotonic()), reactor.stop)
        try:
            reactor.run()
        finally:
            if stopper is not None:
                stopper.cancel()
        left = self._reactor_open_connections()
        if left:
            logger.warning("%s: server_close() stopped waiting after block_on_close_timeout="
                           "%s s: aborting %d connection(s) still open",
                           type(self).__name__, self.block_on_close_timeout, len(left))
            for row in left:
                row.abort()

    def _reactor_open_connections(self) -> list[StreamTransport]:
        return [row for row in self._reactor_rows()
                if isinstance(row, StreamTransport) and row.state is not _CLOSED]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Attach a new handler to the connection; it runs in the reactor from now on."""
        self.finish_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Make the handler and attach it to the request's row."""
        f = self._reactor_facade
        row = f.rows.pop(request_key(request), None)
        if not isinstance(row, StreamTransport):
            raise TypeError("a multiplexed request must be a connection accepted by the server")
        protocol = self.RequestHandlerClass()
        f.bump("attached")
        row.attach(protocol)

    def _reactor_register(self, reactor: Any) -> None:
        sock = getattr(self, "socket", None)
        if sock is None or sock.type != socket.SOCK_DGRAM:
            super()._reactor_register(reactor)
            return

        def factory() -> asyncio.DatagramProtocol:
            return _CheckedDatagrams(self, self.RequestHandlerClass())

        if sock.family == getattr(socket, "AF_UNIX", None):
            endpoint = reactor.listen_unix_datagram(None, factory, sock=sock)
        else:
            endpoint = reactor.listen_udp(None, 0, factory, sock=sock)
        self._reactor_facade.endpoint = endpoint
