"""Guest mode: a reactor driven by a host that can only "call this soon, from any thread".

Some hosts cannot watch a descriptor: Qt (``QMetaObject.invokeMethod``), a Windows
message loop, a game loop, Tk through ``after_idle``. All they offer is a way to have a
function called soon in their own thread, from any thread. :func:`start` drives a
reactor through that alone, as trio's guest mode drives trio:

- a helper thread makes the one blocking call, the poll, with the reactor's next
  timeout (:meth:`Reactor.wait_for_events <reactor.io.steps.ReactorSteps.wait_for_events>`),
  and hands what it got to the host with ``run_sync_soon_threadsafe``;
- in the host's thread, a turn processes those events: dispatch, timers, ready callbacks
  (:meth:`~reactor.io.steps.ReactorSteps.process_events`), so every callback, every
  state change and every protocol method runs there, and the connection table is
  touched there only; then it computes the next timeout and starts the next wait.

When work is ready at once (a busy server), the turn polls without blocking in the
host's thread and schedules the next turn itself (``run_sync_soon_not_threadsafe``, the
thread-safe one by default): no thread hop per turn under load, and the host's own
events still come between turns.

Between two turns the host's code may use the reactor as its own (it is the reactor's
thread): ``call_soon``, ``call_later``, a transport's ``write`` or ``close``,
``listen_tcp``. Queued work and timers wake the waiting helper through the reactor's
wake-up channel; a new registration reaches the wait in progress (the reactor's
selector must be epoll, kqueue or devpoll: see :mod:`reactor.io.steps`).

:meth:`GuestRun.detach` (or ``reactor.stop()`` from a callback) ends the run at the
next turn: the helper thread ends, ``done_callback`` is called in the host's thread,
and the reactor keeps its listeners, connections and timers, ready to be driven again
(another :func:`start`, an embedding, or :meth:`~reactor.Reactor.run`). Exceptions in
protocols and callbacks are the reactor's to handle, as when it runs alone;
``SystemExit`` and ``KeyboardInterrupt`` end the run and are handed to
``done_callback`` (raised into the host only when there is no ``done_callback``), as
is an error of the wait itself.

The host must keep running the functions it is handed until ``done_callback`` is
called; a host that quits first leaves the reactor claimed by its thread (release it
with :meth:`GuestRun.abandon`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from functools import partial

from ..io.loop import Reactor
from ..io.steps import Polled
from ..sansio.errors import LocalProtocolError

__all__ = ["GuestRun", "start"]

logger = logging.getLogger(__name__)


class GuestRun:
    """A reactor driven as a guest of a host loop; made by :func:`start`.

    Attributes:
        reactor: the reactor driven.
        turns: how many turns the host has run.
        thread: the helper thread that waits, None once the run ended.
    """

    def __init__(
        self, reactor: Reactor, run_sync_soon_threadsafe: Callable[[Callable[[], object]], object],
        done_callback: Callable[[BaseException | None], object] | None,
        run_sync_soon_not_threadsafe: Callable[[Callable[[], object]], object] | None,
    ) -> None:
        self.reactor = reactor
        self.turns = 0
        self._soon_threadsafe = run_sync_soon_threadsafe
        self._soon = run_sync_soon_not_threadsafe or run_sync_soon_threadsafe
        self._done_callback = done_callback
        # what the helper thread waits for: (timeout,) to wait, None to end
        self._timeouts: queue.SimpleQueue[tuple[float | None] | None] = queue.SimpleQueue()
        self._detaching = False
        self._attached = False
        self._host_thread = -1
        self.thread: threading.Thread | None = None

    @property
    def attached(self) -> bool:
        """Whether the run goes on (False once ``done_callback`` was called)."""
        return self._attached

    def detach(self) -> None:
        """End the run at the next turn (``done_callback`` is called then); harmless
        when it ended already. Any thread may call it."""
        if self._attached and not self._detaching:
            self._detaching = True
            try:
                self.reactor.call_soon_threadsafe(_nothing)  # end the helper's wait
            except Exception:  # closed: cannot happen while claimed, but never raise here
                logger.debug("could not wake the guest's wait", exc_info=True)

    def abandon(self) -> None:
        """In the host's thread, when the host stopped running the functions it is
        handed: end the run at once, without ``done_callback``. The helper thread ends
        when its wait does (the reactor's wake-up channel ends it at once)."""
        if not self._attached:
            return
        if threading.get_ident() != self._host_thread:
            raise RuntimeError("abandon() belongs to the host's thread")
        self._done_callback = None
        self._finish(None, join=False)
        self.reactor.call_soon_threadsafe(_nothing)  # end the helper's wait, if it waits

    # -- the run ------------------------------------------------------------------------

    def _start(self) -> None:
        self.reactor.claim_thread()  # raises if running, closed, or a select/poll selector
        self._host_thread = threading.get_ident()
        self._attached = True
        self.thread = threading.Thread(target=self._helper, name="reactor guest wait",
                                       daemon=True)
        try:
            self.thread.start()
            self._next_wait()
        except BaseException:
            self._timeouts.put(None)
            self._attached = False
            self.thread = None
            self.reactor.release_thread()
            raise

    def _helper(self) -> None:
        """The helper thread: wait when told, hand the events to the host's thread."""
        wait = self.reactor.wait_for_events
        while True:
            order = self._timeouts.get()
            if order is None:
                return
            try:
                polled: Polled | BaseException = wait(order[0])
            except BaseException as exc:  # the wait failed: the run ends in the host
                polled = exc
            try:
                self._soon_threadsafe(partial(self._turn, polled))
            except BaseException:
                logger.exception("the host refused the guest's next turn; the guest run "
                                 "is stuck until GuestRun.abandon() is called")
                return

    def _turn(self, polled: Polled | BaseException) -> None:
        """One turn, in the host's thread."""
        if not self._attached:
            return
        self.turns += 1
        try:
            if threading.get_ident() != self._host_thread:
                raise LocalProtocolError(
                    f"the host ran the guest's turn in thread {threading.get_ident()}, "
                    f"not in thread {self._host_thread}, which started the run")
            if isinstance(polled, BaseException):
                raise polled
            if self._detaching:
                self._finish(None)
                return
            if not self.reactor.process_events(polled) or self._detaching:
                self._finish(None)
                return
            self._next_wait()
        except BaseException as exc:
            self._finish(exc)
            if self._done_callback is None and not isinstance(exc, Exception):
                raise

    def _next_wait(self) -> None:
        timeout = self.reactor.prepare_wait()
        if timeout == 0:  # work is ready: poll without blocking, here
            self._soon(partial(self._turn, self.reactor.wait_for_events(0)))
        else:
            self._timeouts.put((timeout,))

    def _finish(self, error: BaseException | None, *, join: bool = True) -> None:
        """End the run: the helper thread, the reactor's claim, then ``done_callback``.

        From a turn the helper thread is idle (one wait or one turn is outstanding at a
        time, never both), so the join is at once.
        """
        self._attached = False
        self._timeouts.put(None)
        thread, self.thread = self.thread, None
        self.reactor.release_thread()
        if join and thread is not None and thread is not threading.current_thread():
            thread.join()
        if error is not None and not isinstance(error, (SystemExit, KeyboardInterrupt)):
            logger.error("the guest run ended on an error", exc_info=error)
        callback = self._done_callback
        if callback is not None:
            callback(error)

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return f"<GuestRun {state} turns={self.turns} {self.reactor!r}>"


def _nothing() -> None:
    """A callback that only wakes the reactor."""


def start(
    reactor: Reactor,
    run_sync_soon_threadsafe: Callable[[Callable[[], object]], object],
    *,
    done_callback: Callable[[BaseException | None], object] | None = None,
    run_sync_soon_not_threadsafe: Callable[[Callable[[], object]], object] | None = None,
) -> GuestRun:
    """Drive ``reactor`` as a guest of the host loop running in the calling thread.

    Args:
        reactor: an idle reactor whose selector is epoll, kqueue or devpoll.
        run_sync_soon_threadsafe: the host's "call this function soon, in your thread",
            callable from any thread (``root.after_idle`` for Tk, a queue the host
            drains, ``QMetaObject.invokeMethod``...).
        done_callback: called in the host's thread when the run ends, with None, or
            the exception that ended it.
        run_sync_soon_not_threadsafe: the same, called from the host's thread only, if
            the host has a cheaper one.

    Returns:
        The run; its :meth:`~GuestRun.detach` ends it.

    Raises:
        LocalProtocolError: the reactor runs already, or its selector is select or poll.
        ClosedError: the reactor is closed.
    """
    run = GuestRun(reactor, run_sync_soon_threadsafe, done_callback,
                   run_sync_soon_not_threadsafe)
    run._start()
    return run
