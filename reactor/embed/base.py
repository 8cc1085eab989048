"""What every embedding shares: attach, detach, and one non-blocking turn at a time.

An embedding drives a :class:`~reactor.Reactor` from a host loop that can watch a
descriptor and run a callback after a delay. The host watches
:meth:`Reactor.fileno <reactor.Reactor.fileno>` (readable whenever the reactor has I/O or
queued work, including work scheduled from the host's own code or from another thread)
and keeps one timer for :meth:`Reactor.next_timeout <reactor.Reactor.next_timeout>` (the
reactor's next deadline). Either calls :meth:`Embedding._turn`: ``run_once(0)``, which
never blocks, then the timer is set again from the new deadline.

A host module (:mod:`reactor.embed.asyncio`, :mod:`reactor.embed.tk`, ...) subclasses
:class:`Embedding` with four small methods: start and stop watching the descriptor, set
and cancel the one timer. Exceptions in protocols and callbacks are the reactor's to
handle (logged with the connection, as when it runs alone); only ``SystemExit`` and
``KeyboardInterrupt`` leave a turn and reach the host, as they would leave ``run()``.

This module imports no host library.
"""

from __future__ import annotations

import abc
import logging
from types import TracebackType

from ..io.loop import Reactor
from ..sansio.errors import ClosedError

__all__ = ["Embedding"]

logger = logging.getLogger(__name__)


class Embedding(abc.ABC):
    """A reactor driven by a host loop until :meth:`detach`.

    Attributes:
        reactor: the reactor driven.
        turns: how many turns (``run_once(0)`` calls) the host has given it.
    """

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.turns = 0
        self._fd = -1
        self._attached = False

    @property
    def attached(self) -> bool:
        """Whether the host drives the reactor now."""
        return self._attached

    def attach(self) -> None:
        """Start driving the reactor from the host (again, after :meth:`detach`).

        Raises:
            RuntimeError: already attached, or the reactor runs its own loop.
            LocalProtocolError: the reactor's selector has no descriptor to watch.
            ClosedError: the reactor is closed.
        """
        if self._attached:
            raise RuntimeError("already attached")
        if self.reactor.is_running():
            raise RuntimeError("the reactor is running its own loop")
        if self.reactor.is_closed():
            raise ClosedError("the reactor is closed")
        self._fd = self.reactor.fileno()
        self._watch(self._fd)
        self._attached = True
        self._schedule()

    def detach(self) -> None:
        """Stop driving the reactor; it keeps its listeners, connections and timers, and
        can be attached again or :meth:`~reactor.Reactor.run` by itself. Detaching twice
        is harmless."""
        if not self._attached:
            return
        self._attached = False
        self._cancel_timer()
        self._unwatch(self._fd)

    def __enter__(self) -> Embedding:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def _turn(self) -> None:
        """One non-blocking turn of the reactor, then the timer for its next deadline."""
        if not self._attached:
            return
        self.turns += 1
        try:
            self.reactor.run_once(0)
        finally:
            if self._attached:  # a callback may have detached
                self._schedule()

    def _schedule(self) -> None:
        self._cancel_timer()
        timeout = self.reactor.next_timeout()
        if timeout is not None:
            self._set_timer(timeout)

    def _lost(self, reason: object) -> None:
        """The host dropped the descriptor by itself (it was closed under it)."""
        if self._attached:
            logger.warning("the host stopped watching the reactor (%s); detached", reason)
            self._attached = False
            self._cancel_timer()

    # -- what a host supplies ---------------------------------------------------------

    @abc.abstractmethod
    def _watch(self, fd: int) -> None:
        """Call :meth:`_turn` whenever ``fd`` is readable."""

    @abc.abstractmethod
    def _unwatch(self, fd: int) -> None:
        """Stop watching ``fd``."""

    @abc.abstractmethod
    def _set_timer(self, delay: float) -> None:
        """Call :meth:`_turn` once, ``delay`` seconds from now (never earlier)."""

    @abc.abstractmethod
    def _cancel_timer(self) -> None:
        """Cancel the timer :meth:`_set_timer` set, if it is pending."""
