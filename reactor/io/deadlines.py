"""A stream connection's deadlines (:class:`StreamDeadlines`, a mix-in of
:class:`~reactor.io.stream.StreamTransport`) and the on-demand side state they live in
(:class:`_Aux`).

Theory of operation
-------------------
One timer per connection, and only when the listener configures a timeout (or the
protocol sets a request deadline), checks when it fires the idle, first-byte, request
and stalled-write deadlines against the row's timestamps, and either closes the
connection with the reason (:class:`~reactor.sansio.errors.DeadlineExceeded`) or
re-arms itself for the next one. Reading and writing never touch the timer heap: they
only move the row's timestamps, which the timer reads when it fires.

*Side state.* What most connections never need (this timer, the request deadline, the
write progress, the write-buffer water marks once set, the count of discarded bytes) is
one :class:`_Aux` object, made on first use by :meth:`StreamDeadlines._get_aux`, so an
idle connection with no timeouts pays one empty slot for all of it.

The mix-in stores nothing itself: its ``__slots__`` is empty and the attributes it
reads (the host's contract, declared below for the type checker) are slots of
:class:`~reactor.io.stream.StreamTransport`.

Must not import the stream transport, the listeners or anything above the I/O layer
(the loop only for type checking).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..sansio.errors import DeadlineExceeded
from ..sansio.timers import TimerHandle
from .episodes import deadline_closed
from .transports import _GONE, TransportOptions, _water_marks

if TYPE_CHECKING:
    from ..sansio.connection import ConnState
    from .loop import Reactor

__all__ = ["StreamDeadlines"]

logger = logging.getLogger("reactor.transports")


class _Aux:
    """Per-connection state most connections never need, allocated on first use."""

    __slots__ = ("deadline", "discarded", "high", "low", "timer", "write_progress")

    def __init__(self, opts: TransportOptions) -> None:
        self.high, self.low = _water_marks(opts.high_water, opts.low_water)
        self.timer: TimerHandle | None = None
        self.deadline: float | None = None
        self.write_progress = 0.0
        self.discarded = 0  # queued bytes dropped by an abort or a forced close


class StreamDeadlines:
    """The deadlines of a stream connection: one timer, armed only when needed.

    A mix-in with no storage of its own; :class:`~reactor.io.stream.StreamTransport`
    inherits it and declares the slots.
    """

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    # the host's contract: what the transport stores and provides
    _aux: _Aux | None
    _opts: TransportOptions
    _buffer: bytearray | None
    _reactor: Reactor
    state: ConnState
    created: float
    last_activity: float
    bytes_in: int

    if TYPE_CHECKING:

        def describe(self) -> str: ...

        def _force_close(self, exc: BaseException | None) -> None: ...

    def _get_aux(self) -> _Aux:
        aux = self._aux
        if aux is None:
            aux = self._aux = _Aux(self._opts)
        return aux

    def set_deadline(self, seconds: float | None) -> None:
        """Close the connection if it is still open ``seconds`` from now (an absolute
        request deadline, e.g. for a request head); None removes it."""
        aux = self._get_aux()
        aux.deadline = None if seconds is None else self._reactor.time() + seconds
        self._arm_deadline()

    def _next_deadline(self) -> tuple[float, str] | None:
        opts = self._opts
        aux = self._aux
        candidates: list[tuple[float, str]] = []
        if opts.idle_timeout:
            candidates.append((self.last_activity + opts.idle_timeout, "idle timeout"))
        if opts.first_byte_timeout and not self.bytes_in:
            candidates.append((self.created + opts.first_byte_timeout, "no data received"))
        if aux is not None and aux.deadline is not None:
            candidates.append((aux.deadline, "request deadline"))
        if opts.write_timeout and self._buffer and aux is not None:
            candidates.append((aux.write_progress + opts.write_timeout, "write stalled"))
        return min(candidates) if candidates else None

    def _arm_deadline(self) -> None:
        if self.state in _GONE:
            return
        aux = self._get_aux()
        nearest = self._next_deadline()
        timer = aux.timer
        if nearest is None:
            if timer is not None:
                timer.cancel()
                aux.timer = None
            return
        if timer is not None:
            if timer.when() <= nearest[0]:
                return  # it fires first and re-arms
            timer.cancel()
        aux.timer = self._reactor.call_at(nearest[0], self._check_deadline)

    def _cancel_deadline(self) -> None:
        aux = self._aux
        if aux is not None and aux.timer is not None:
            aux.timer.cancel()
            aux.timer = None

    def _check_deadline(self) -> None:
        aux = self._get_aux()
        aux.timer = None
        if self.state in _GONE:
            return
        nearest = self._next_deadline()
        if nearest is None:
            return
        when, reason = nearest
        if when <= self._reactor.time():
            # once per run of such closes at INFO, each at DEBUG (not a line per
            # connection in a flood)
            deadline_closed(self._reactor, logger, self.describe(), reason)
            self._force_close(DeadlineExceeded(reason))
        else:
            aux.timer = self._reactor.call_at(when, self._check_deadline)
