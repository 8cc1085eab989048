"""The threading mix-in: each request in a thread of its own, or in a bounded pool.

:class:`ThreadingMixIn` -- a new thread per request (the default, as always), or a
bounded pool of worker threads (``max_threads``) with the requests beyond it waiting in
the reactor's table, not in threads. Threads receive the connection already handed
over: unregistered from the selector and in blocking mode. :class:`ThreadWork` is the
engine's side of it.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from ..sansio.connection import ConnEvent
from .engine import close_deadline, remaining
from .pipeline import InlineWork, RequestPath
from .requests import WAITING, peek_count
from .servers import BaseServer

if TYPE_CHECKING:
    _Base = BaseServer
else:
    _Base = object

__all__ = ["ThreadWork", "ThreadingMixIn"]

logger = logging.getLogger("reactor.mixins")  # the name it had before the layers became folders

_WORK_DONE: Final = None  # the queue item that tells an idle pool worker to exit
_DISPATCH_THREAD: Final = ConnEvent.DISPATCH_THREAD


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
            thread.join(remaining(deadline))
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

    def __init__(self, engine: RequestPath, size: int, daemon: bool) -> None:
        if size < 1:
            raise ValueError("max_threads must be at least 1")
        self.engine = engine
        self.server = cast("ThreadingMixIn", engine.server)
        self.size = size
        self.daemon = daemon
        self.lock = threading.Lock()
        self.queue: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self.idle = 0
        self.threads: list[threading.Thread] = []
        self.waiting: deque[tuple[Any, Any]] = deque()
        self.closing = False

    def submit(self, request: Any, client_address: Any) -> None:
        engine = self.engine
        engine.sweep_soon()
        with self.lock:
            if self.idle:
                self.idle -= 1
                engine.mark(request, _DISPATCH_THREAD)
                self.queue.put((request, client_address))
                return
            if len(self.threads) < self.size:
                engine.mark(request, _DISPATCH_THREAD)
                self._spawn((request, client_address))
                return
            row = engine.rows.get(id(request))
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
                self.engine.mark(item[0], _DISPATCH_THREAD)
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
                        self.engine.mark(nxt[0], _DISPATCH_THREAD)
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
                thread.join(remaining(deadline))
            if deadline is not None and time.monotonic() >= deadline:
                break
        with self.lock:
            return len(self.threads)


class ThreadWork(InlineWork):
    """Where a threading server's requests run: a thread each, or a pool."""

    accept_batch: ClassVar[int] = 32

    def __init__(self, engine: RequestPath) -> None:
        super().__init__(engine)
        self.threading = cast("ThreadingMixIn", engine.server)
        self.pool: _WorkerPool | None = None
        # request threads started and ended: next() on a count is atomic
        self.started = itertools.count()
        self.ended = itertools.count()

    def process(self, request: Any, client_address: Any) -> None:
        """Start a thread for the request (or give it to the pool)."""
        server = self.threading
        if server.max_threads is not None:
            self.get_pool(server.max_threads).submit(request, client_address)
            return
        if server.block_on_close and type(server._threads) is _NoThreadList:
            server._threads = _ThreadList()  # not vars(server): see get_pool
        engine = self.engine
        engine.mark(request, _DISPATCH_THREAD)
        thread = threading.Thread(target=self.thread_main, args=(request, client_address),
                                  daemon=server.daemon_threads)
        next(self.started)
        if not engine.sweeping:
            engine.sweep_soon()
        try:
            thread.start()
        except BaseException:
            next(self.ended)
            raise
        server._threads.append(thread)

    def thread_main(self, request: Any, client_address: Any) -> None:
        """What a request's thread runs."""
        try:
            self.threading.process_request_thread(request, client_address)
        finally:
            next(self.ended)

    def get_pool(self, size: int) -> _WorkerPool:
        """The pool of worker threads, made on first use."""
        pool = self.pool
        if pool is None:
            pool = self.pool = _WorkerPool(self.engine, size,
                                           self.threading.daemon_threads)
        return pool

    def workers(self) -> tuple[int, int]:
        pool = self.pool
        if pool is not None:
            return pool.counts()[0], 0
        return peek_count(self.started) - peek_count(self.ended), 0

    def waiting(self) -> int:
        pool = self.pool
        return pool.counts()[1] if pool is not None else 0

    def join(self, deadline: float | None) -> None:
        """After the server closed: wait for the request threads (``block_on_close``),
        until ``deadline``; warn about those still running then."""
        server = self.threading
        left = len(server._threads.join(deadline))
        pool = self.pool
        if pool is not None:
            left += pool.close(wait=server.block_on_close, deadline=deadline)
        if left and server.block_on_close:
            logger.warning(
                "%s: server_close() stopped waiting after block_on_close_timeout=%s s: "
                "%d request thread(s) still running; they run on to their end",
                type(server).__name__, server.block_on_close_timeout, left)


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
    _reactor_work: ClassVar[type[InlineWork]] = ThreadWork

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
        self._reactor_engine.work.process(request, client_address)

    def server_close(self) -> None:
        """Close the server, then wait for the request threads (``block_on_close``),
        for at most ``block_on_close_timeout`` seconds when that is set."""
        deadline = close_deadline(self.block_on_close_timeout) if self.block_on_close \
            else None
        super().server_close()
        cast(ThreadWork, self._reactor_engine.work).join(deadline)
