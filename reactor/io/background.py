"""A reactor in a daemon thread, for a synchronous program.

A script, a notebook or a WSGI application that wants a server beside it runs the
reactor in a thread of its own and talks to it from its own thread::

    with Reactor() as reactor, reactor.background() as loop:
        listener = loop.call(reactor.listen_tcp, "127.0.0.1", 0, Echo)
        ...  # the program's own, blocking work; the reactor serves meanwhile

:meth:`Background.call` runs a function in the reactor's thread and returns its
result (or raises its exception) in the caller's; :meth:`Background.submit` returns a
:class:`concurrent.futures.Future` at once. Leaving the ``with`` block stops the
reactor and joins its thread; the reactor keeps its listeners and connections, and may
run again (in the background or in :meth:`~reactor.io.loop.Reactor.run`) or be closed.

**Misuse is found at once.** While the reactor runs in the background, the reactor
methods a synchronous program would reach for (:data:`CHECKED_METHODS`:
``call_soon``, ``call_later``, ``call_at``, the ``listen_*`` and ``connect_*``
methods, ``run_once``, ``run_until``, ``run_until_complete``) raise
:exc:`RuntimeError` naming the method when called from any other thread, even without
debug mode: :meth:`start` shadows them on this one reactor instance with checked
versions (:func:`reactor.io.debug.check_methods`), and :meth:`stop` removes them. A
reactor that never runs in the background has the plain methods; none of them is on
the per-request path (a read, a write, a dispatch), and while checked each costs
about 0.3 microseconds more per call (``call_soon``: once per closed connection).
Not checked: ``stop`` and
``call_soon_threadsafe`` (safe from any thread), ``close`` (refuses a running
reactor by itself), the signal methods (which belong to the main thread), and the
transports' methods (``write``, ``close``...: per request, so checked only in debug
mode, ``Reactor(debug=True)``).

Part of the I/O layer. Must not import the loop (but for type checking), the facades
or the command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..sansio.errors import LocalProtocolError
from . import debug

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["CHECKED_METHODS", "Background"]

logger = logging.getLogger("reactor")  # the loop's logger: these lines came from it

_T = TypeVar("_T")

#: The reactor methods that refuse other threads while the reactor runs in the
#: background.
CHECKED_METHODS: Final = (
    "call_soon", "call_later", "call_at", "run_once", "run_until", "run_until_complete",
    "listen_tcp", "listen_unix", "listen_udp", "listen_unix_datagram",
    "connect_tcp", "connect_unix",
)
_ADVICE: Final = ("from another thread, hand it to the reactor's thread with call(fn, ...) "
                  "or submit(fn, ...) of its reactor.background()")


class Background:
    """One run of a reactor in a daemon thread; made by :meth:`Reactor.background`.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. It runs once:
    ask the reactor for a new one to run it in the background again.

    Attributes:
        reactor: the reactor it runs.
        thread: the daemon thread, once started.
    """

    def __init__(self, reactor: Reactor, *, name: str | None = None) -> None:
        self.reactor = reactor
        self.thread: threading.Thread | None = None
        self._name = name or "reactor"
        self._lock = threading.Lock()
        self._accepting = False  # submit() may queue calls (under the lock)
        self._pending: set[Future[Any]] = set()  # queued, not run yet (under the lock)
        self._settled = threading.Event()  # the loop turned once, or the thread ended
        self._started = False
        self._failure: BaseException | None = None  # what ended run() with an error
        self._checked: list[str] = []

    # -- start and stop ---------------------------------------------------------------

    def start(self) -> Background:
        """Run the reactor in a new daemon thread; return once its loop turns.

        Raises:
            LocalProtocolError: this object was started before, or the reactor is
                running already.
            ClosedError: the reactor is closed.
        """
        if self.thread is not None:
            raise LocalProtocolError("this background run was started already")
        reactor = self.reactor
        if reactor.is_running():
            raise LocalProtocolError("the reactor is already running")
        reactor.call_soon_threadsafe(self._turned)  # raises ClosedError if closed
        self._checked = debug.check_methods(reactor, CHECKED_METHODS, _ADVICE)
        self._accepting = True
        self.thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self.thread.start()
        self._settled.wait()
        if not self._started:  # run() returned or raised before its first turn
            self.thread.join()
            self._cleanup()
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            raise LocalProtocolError("the reactor stopped before its first turn "
                                     "(a stop() was pending)")
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the reactor and join its thread; harmless when not running.

        Calls submitted but not run yet are cancelled. Other threads' calls to the
        checked methods are allowed again.

        Args:
            timeout: seconds to wait for the thread (None: as long as it takes, the
                time the callback running now needs to return).

        Raises:
            TimeoutError: the thread is still running after ``timeout`` seconds.
            LocalProtocolError: called from the reactor's own thread (it would wait
                for itself; call ``reactor.stop()`` there).
            BaseException: whatever ended the reactor's run with an error (a
                callback's ``SystemExit`` or ``KeyboardInterrupt``), raised once.
        """
        thread = self.thread
        if thread is None:
            return
        if thread.ident == threading.get_ident():
            raise LocalProtocolError(
                "stop() called from the reactor's own thread would wait for itself; "
                "call reactor.stop() there")
        if thread.is_alive():
            try:
                self.reactor.call_soon_threadsafe(self._stop_if_running)
            except LocalProtocolError:  # closed, so already stopped
                pass
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the reactor thread is still running after {timeout} s")
        self._cleanup()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except Exception:
            if exc is None:
                raise
            logger.exception("stopping the background reactor failed")

    @property
    def running(self) -> bool:
        """Whether the reactor runs in this object's thread now."""
        thread = self.thread
        return thread is not None and self.reactor.running_thread_id == thread.ident

    # -- calls from other threads -----------------------------------------------------

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run ``fn(*args)`` in the reactor's thread; its future, at once.

        The future holds what ``fn`` returned or raised; it is cancelled if the
        reactor stops first.

        Raises:
            LocalProtocolError: the reactor does not run in the background.
        """
        future: Future[_T] = Future()
        with self._lock:
            if not self._accepting:
                raise LocalProtocolError("the reactor does not run in the background")
            self._pending.add(future)
        self.reactor.call_soon_threadsafe(self._run_call, future, fn, args)
        return future

    def call(self, fn: Callable[..., _T], *args: Any, timeout: float | None = None) -> _T:
        """Run ``fn(*args)`` in the reactor's thread; return its result or raise its
        exception. From the reactor's own thread, ``fn`` runs at once.

        A ``fn`` that returns a :class:`concurrent.futures.Future` (``connect_tcp``)
        gives that future: wait on it in the calling thread.

        Raises:
            TimeoutError: no result within ``timeout`` seconds (``fn`` may still run).
            concurrent.futures.CancelledError: the reactor stopped before running it.
            LocalProtocolError: the reactor does not run in the background.
        """
        thread = self.thread
        if thread is not None and thread.ident == threading.get_ident():
            return fn(*args)
        return self.submit(fn, *args).result(timeout)

    # -- in the reactor's thread ------------------------------------------------------

    def _main(self) -> None:
        try:
            self.reactor.run()
        except BaseException as exc:  # handed to stop(), raised in the caller's thread
            self._failure = exc
            logger.error("the background reactor stopped on an error", exc_info=exc)
        finally:
            with self._lock:
                self._accepting = False
                pending, self._pending = self._pending, set()
            for future in pending:
                future.cancel()
            self._settled.set()

    def _turned(self) -> None:
        if threading.get_ident() == getattr(self.thread, "ident", None):
            self._started = True
            self._settled.set()

    def _stop_if_running(self) -> None:
        # queued by stop(); if it outlives this run, a later run of the same reactor
        # (another thread) must not be stopped by it
        if self.running:
            self.reactor.stop()

    def _run_call(self, future: Future[_T], fn: Callable[..., _T], args: tuple[Any, ...]) -> None:
        with self._lock:
            self._pending.discard(future)
        if future.done() or not future.set_running_or_notify_cancel():
            return  # cancelled by its caller, or when the run it was meant for ended
        try:
            result = fn(*args)
        except BaseException as exc:  # the caller's to handle, in the caller's thread
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _cleanup(self) -> None:
        debug.uncheck_methods(self.reactor, self._checked)
        self._checked = []

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self.thread else "new")
        return f"<Background {state} {self.reactor!r}>"
