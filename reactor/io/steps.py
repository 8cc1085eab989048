"""The loop's iteration cut in its steps, for a driver that waits in another thread.

:meth:`Reactor.run_once <reactor.io.loop.Reactor.run_once>` is one iteration made of
four steps (timeout, poll, dispatch, timers) in one thread. A host that cannot watch a
descriptor (a GUI toolkit that only offers "call this soon, from any thread", a game
loop) needs them apart: the poll, the one blocking call, in a helper thread; every
other step, and so every callback, protocol method and change to the connection
table, in the host's thread. :class:`ReactorSteps` gives the reactor that cut:

1. :meth:`~ReactorSteps.prepare_wait` (the driving thread): how long the wait may
   last, from the ready queue and the timer heap;
2. :meth:`~ReactorSteps.wait_for_events` (any one thread): the poll alone; it reads
   nothing of the reactor but its selector;
3. :meth:`~ReactorSteps.process_events` (the driving thread): dispatch the events,
   then the due timers and the ready callbacks, exactly as ``run_once`` does.

``run_once`` keeps its own copy of the poll and dispatch lines: built on these three
calls, an iteration costs more by a few Python calls, measured under callgrind
(``python -m bench.instructions --seeds 3``, echo) at 19 934 instructions per request
instead of 14 100 with one connection (+41 %), 8 432 instead of 8 391 with 100. So
run_once pays nothing for the cut, and tests/test_loop_steps.py holds the two copies
to the same behaviour. :mod:`reactor.embed.guest` is the driver built on these steps.

**Between the wait and the processing** the driving thread runs the host's own code,
which may call the reactor (a button that closes a connection, a timer that connects
out): the events a wait returns may then be stale. Each event is checked against the
registrations as they were when the wait began, the rule :mod:`.dispatch` keeps within
one batch, extended over the whole wait: an event whose descriptor now belongs to
another object than when the wait began, or is no longer registered, is dropped (the
poll is level-triggered: if it is still due, the next wait reports it again). On the
epoll fast path the selector's :class:`~reactor.io.dispatch.BatchKeyMap` records the
changes from :meth:`~ReactorSteps.prepare_wait` on; on the generic path each event
carries the key it was polled with.

A registration the host's code makes while the wait is in progress must reach that
wait: true of epoll, kqueue and devpoll (an interest list in the kernel), not of
select and poll (the lists are copied into the call). So the steps require a selector
with a descriptor of its own, as :meth:`Reactor.fileno` does.

A mix-in of :class:`~reactor.io.loop.Reactor` with no storage of its own (as
:class:`~reactor.io.fork.ReactorForking` is). Part of the I/O layer. Must not import
the loop (but for type checking), the facades or the command line.
"""

from __future__ import annotations

import collections
import selectors
import threading
from collections.abc import Callable
from math import ceil as _ceil
from typing import TYPE_CHECKING, Any, NamedTuple

from ..sansio.errors import ClosedError, LocalProtocolError
from .dispatch import EpollPath, dispatch_selected

if TYPE_CHECKING:
    from ..sansio.clock import Clock
    from ..sansio.timers import Handle, TimerHeap

__all__ = ["Polled", "ReactorSteps"]

_KEY = selectors.SelectorKey


class Polled(NamedTuple):
    """What one wait returned, as :meth:`ReactorSteps.process_events` takes it.

    Attributes:
        path: the epoll fast path the wait polled through, or None (the selector's
            ``select``).
        events: the fast path's ``(fd, epoll mask)`` pairs, or ``select()``'s
            ``(key, events)`` pairs.
    """

    path: EpollPath | None
    events: list[Any]


def _target(value: Any) -> Any:
    """The object a raw value of a BatchKeyMap dispatches to."""
    return value[3] if type(value) is _KEY else value


class ReactorSteps:
    """The iteration as separate steps, driven from outside (see the module's text).

    A driver claims the reactor for its thread (:meth:`claim_thread`), then repeats
    :meth:`prepare_wait`, :meth:`wait_for_events` (in whichever thread may block) and
    :meth:`process_events` until it is done, and gives the reactor back
    (:meth:`release_thread`): the reactor is then as after :meth:`run` returned,
    connections, timers and queued callbacks kept.
    """

    # the host's contract: what the reactor stores and provides
    now: float
    epoll_path: EpollPath | None
    _clock: Clock
    _closed: bool
    _stopping: bool
    _in_iteration: bool
    _iterations: int
    _thread_id: int | None
    _selector: selectors.BaseSelector
    _ready: collections.deque[Handle]
    _timers: TimerHeap

    if TYPE_CHECKING:

        def _compute_timeout(self, limit: float | None) -> float | None: ...

        def _run_ready(self) -> None: ...

    def claim_thread(self) -> None:
        """Make the calling thread the reactor's, as :meth:`run` does: ``is_running()``
        is true and debug mode checks other threads against this one.

        Raises:
            LocalProtocolError: the reactor is running already, or its selector has no
                descriptor of its own (select, poll: see the module's text).
            ClosedError: the reactor is closed.
        """
        if self._closed:
            raise ClosedError("the reactor is closed")
        if self._thread_id is not None:
            raise LocalProtocolError("the reactor is already running")
        if getattr(self._selector, "fileno", None) is None:
            raise LocalProtocolError(
                f"{type(self._selector).__name__} does not see a registration made "
                "while another thread waits; use an epoll, kqueue or devpoll selector"
            )
        self._thread_id = threading.get_ident()

    def release_thread(self) -> None:
        """Give the reactor back: not running, no stop pending, no wait open (the
        events of a wait not processed are dropped; the next poll reports them)."""
        self._end_wait()
        self._stopping = False
        self._thread_id = None

    def prepare_wait(self) -> float | None:
        """Seconds the next wait may block (0: work is ready; None: until an event).

        From here until :meth:`process_events`, registration changes are recorded so
        that events made stale by them are dropped.
        """
        path = self.epoll_path
        if path is not None and path.keys.batch is None:
            path.keys.batch = []  # record changes from now on (see the module's text)
        return self._compute_timeout(None)

    def wait_for_events(self, timeout: float | None) -> Polled:
        """The poll alone: block up to ``timeout`` seconds (None: until an event).

        May run in another thread than the one driving the reactor, but only one wait
        at a time, and never while :meth:`run` or ``run_once`` runs.
        """
        path = self.epoll_path
        if path is None:
            return Polled(None, self._selector.select(timeout))
        if timeout is None:
            wait = -1.0
        elif timeout > 0:  # as run_once: epoll's units, never a millisecond early
            wait = _ceil(timeout * 1e3) * 1e-3
        else:
            wait = 0.0
        return Polled(path, path.epoll.poll(wait, path.keys.size or 1))

    def process_events(self, polled: Polled) -> bool:
        """Dispatch a wait's events, then run due timers and ready callbacks.

        Returns:
            False when :meth:`stop` was called (the driver should stop driving),
            else True.
        """
        if self._closed:
            raise ClosedError("the reactor is closed")
        self._in_iteration = True
        try:
            self.now = self._clock()
            fast = polled.path
            if fast is not None:
                if fast is self.epoll_path:  # else the selector changed (a fork): drop
                    keys = fast.keys
                    if keys.polled:
                        _drop_moved(keys.polled, keys.raw_get, polled.events)
                    fast.dispatch(polled.events)  # ends the recording
            else:
                current = self._selector.get_map()
                dispatch_selected(current, _still_registered(current, polled.events))
            if self._ready or self._timers.heap:
                self._run_ready()
        finally:
            self._in_iteration = False
            self._iterations += 1
            self._end_wait()
        return not self._stopping

    def _end_wait(self) -> None:
        path = self.epoll_path
        if path is not None and path.keys.batch is not None:
            path.keys.end_batch()


def _drop_moved(
    polled: dict[int, Any], raw_get: Callable[[int], Any], events: list[tuple[int, int]]
) -> None:
    """Zero the mask of every event whose descriptor changed hands since the wait
    began (``polled``: fd -> its object then)."""
    for index, (fd, _mask) in enumerate(events):
        if fd in polled:
            value = raw_get(fd)
            if value is None or _target(value) is not polled[fd]:
                events[index] = (fd, 0)


def _still_registered(
    current: Any, events: list[tuple[selectors.SelectorKey, int]]
) -> list[tuple[selectors.SelectorKey, int]]:
    """The generic path's events whose key is still the registration of its descriptor
    (looked up by number: a file closed since the wait has no number to look up)."""
    kept = []
    for key, mask in events:
        now_key = current.get(key.fd)
        if now_key is not None and now_key.data is key.data:
            kept.append((key, mask))
    return kept
