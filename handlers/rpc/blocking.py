"""Procedures that block: marked with :func:`blocking`, run by a :class:`BlockingPool`.

A procedure that reads a disk, waits on a lock or calls another server would stop the
reactor, and every connection with it, for as long as it runs. Marked with
:func:`blocking` (or built as ``Procedure(..., blocking=True)``), it runs in a worker
thread instead; the reactor goes on serving, and the reply is sent from the reactor's
thread once the worker is done (the pool hands the result back through the reactor's
``call_soon_threadsafe``).

The pool is bounded twice: ``max_workers`` threads run calls, and at most
``max_queue`` more wait for a thread. When both are full (:attr:`BlockingPool.full`),
:meth:`BlockingPool.submit` refuses the call and the server decides:

* over TCP the connection holds that call and stops reading until a call of any
  connection finishes (back-pressure: the client's calls wait in its socket buffers,
  none is refused nor lost);
* over UDP the datagram is dropped (logged, counted in :attr:`BlockingPool.refused`):
  a UDP client retransmits, and the retransmission finds room once calls finish. This is
  how a busy RPC server over UDP sheds load; an error reply would end the client's call.

Bookkeeping (calls in flight, the connections waiting for room) is touched only from
the reactor's thread, so it needs no lock: :meth:`submit` is called there, and the
worker's completion comes back there before anything is counted.

Threads come from the standard library's :class:`concurrent.futures.ThreadPoolExecutor`
(made on first use), or from any executor handed in; this module starts none itself
and must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WORKERS",
    "BlockingPool",
    "Executor",
    "blocking",
    "is_blocking",
]

logger = logging.getLogger("handlers.rpc")

DEFAULT_MAX_WORKERS: Final = 8
DEFAULT_MAX_QUEUE: Final = 64
_MARK: Final = "rpc_blocking"

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def blocking(function: _F) -> _F:
    """Mark a procedure as one that blocks: servers on the reactor run it in their
    :class:`BlockingPool`, not in the reactor's thread."""
    setattr(function, _MARK, True)
    return function


def is_blocking(function: Callable[..., Any]) -> bool:
    """Whether ``function`` (or the function of a bound method) was marked by
    :func:`blocking`."""
    return bool(getattr(function, _MARK, False))


class Executor(Protocol):
    """What the pool needs of an executor (:class:`concurrent.futures.Executor` fits)."""

    def submit(self, fn: Callable[..., _T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[_T]: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


CallSoon = Callable[..., Any]


class BlockingPool:
    """Runs blocking work off the reactor's thread; hands each result back to it.

    Args:
        max_workers: threads that run calls at once (when the pool makes its executor).
        max_queue: calls that may wait for a thread beyond those running.
        executor: run the work here instead of a thread pool made on first use (its
            size should be ``max_workers``; the pool counts, the executor runs).

    Attributes:
        refused: calls :meth:`submit` refused because the pool was full.

    Raises:
        ValueError: ``max_workers`` below 1 or ``max_queue`` negative.
    """

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS,
                 max_queue: int = DEFAULT_MAX_QUEUE, *,
                 executor: Executor | None = None) -> None:
        if max_workers < 1 or max_queue < 0:
            raise ValueError(f"max_workers must be at least 1 and max_queue not negative, "
                             f"not {max_workers!r} and {max_queue!r}")
        self.max_workers = max_workers
        self.max_queue = max_queue
        self._executor = executor
        self._call_soon: CallSoon | None = None
        self._in_flight = 0
        self._waiters: deque[Callable[[], object]] = deque()
        self._closed = False
        self.refused = 0

    def bind(self, call_soon_threadsafe: CallSoon) -> None:
        """Hand results back through ``call_soon_threadsafe`` (the reactor's): the
        servers do it when they start listening."""
        self._call_soon = call_soon_threadsafe

    @property
    def capacity(self) -> int:
        """Calls the pool holds at most: running and waiting."""
        return self.max_workers + self.max_queue

    @property
    def in_flight(self) -> int:
        """Calls submitted whose result has not come back yet."""
        return self._in_flight

    @property
    def full(self) -> bool:
        return self._in_flight >= self.capacity

    def submit(self, work: Callable[[], _T], done: Callable[[_T | None], object]) -> bool:
        """Run ``work()`` in a worker; call ``done(result)`` in the reactor's thread.

        ``done`` gets None when ``work`` raised (logged here) or was cancelled by
        :meth:`close`.

        Returns:
            False, and nothing runs, when the pool is full (or closed).

        Raises:
            RuntimeError: :meth:`bind` was not called.
        """
        if self._call_soon is None:
            raise RuntimeError("BlockingPool.bind(call_soon_threadsafe) was not called")
        if self._closed or self.full:
            self.refused += 1
            return False
        executor = self._executor
        if executor is None:
            executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                self.max_workers, thread_name_prefix="rpc-blocking")
        self._in_flight += 1
        future = executor.submit(work)
        call_soon = self._call_soon
        future.add_done_callback(lambda f: self._hand_back(call_soon, f, done))
        return True

    def _hand_back(self, call_soon: CallSoon, future: concurrent.futures.Future[Any],
                   done: Callable[[Any], object]) -> None:
        """In the worker (or in :meth:`close`): back to the reactor's thread."""
        try:
            call_soon(self._finish, future, done)
        except RuntimeError:  # the reactor is closed: nobody is left to answer
            logger.debug("a blocking RPC call finished after its reactor closed")

    def _finish(self, future: concurrent.futures.Future[Any],
                done: Callable[[Any], object]) -> None:
        self._in_flight -= 1
        result = None
        if future.cancelled():
            logger.debug("a blocking RPC call was cancelled before it ran")
        elif (exc := future.exception()) is not None:
            logger.error("a blocking RPC call failed", exc_info=exc)
        else:
            result = future.result()
        try:
            done(result)
        finally:
            self._wake_waiters()

    def wait_for_room(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (once, in the reactor's thread) when a call finishes and
        the pool has room; waiters are woken in the order they came."""
        self._waiters.append(callback)

    def _wake_waiters(self) -> None:
        while self._waiters and not self.full and not self._closed:
            self._waiters.popleft()()

    def close(self) -> None:
        """Refuse new work, cancel the calls still waiting for a thread; running calls
        finish in their threads (their results are dropped if the reactor is gone)."""
        self._closed = True
        self._waiters.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
