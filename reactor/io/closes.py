"""What ends a stream connection, and what its end leaves behind: a socket error, the
close counted by reason, the queued bytes a forced close drops (:class:`CloseCounting`,
a mix-in of :class:`~reactor.io.stream.StreamTransport`).

Theory of operation
-------------------
Every stream connection ends in one of two places: the transport's teardown
(``_finish``: ``connection_lost`` was called) or, for a socket a facade handed to a
blocking handler, :meth:`~reactor.io.handover.SocketHandover.release`. Both count the
close in the connection table as the row leaves it, under
:func:`~reactor.sansio.closes.close_reason`'s name, so the reasons are counted for every
reactor, embedded or not, with the access log's wrapper or not, TLS or plain, TCP or
Unix, protocol or facade. Datagram endpoints are not connections: not counted.

What the reason is read from:

* an exception, counted by its reason as soon as it is known to close the connection
  (:meth:`note_close_cause`): the one ``_force_close`` gets (a reset, a socket error,
  a deadline's :class:`~reactor.sansio.errors.DeadlineExceeded`, a callback's
  exception), or one the teardown will not carry, noted by the rare path that knows
  it (a TLS layer's failure before it closes the raw connection, a facade's request
  deadline, a handler's exception); the first one counts;
* else, as the row leaves the table, whether the peer's end of stream was read
  (``client-eof``; a TLS layer tells the close_notify with :meth:`note_peer_eof`),
  then whether the table is stopping (``shutdown``), else ``server-close``.

*Cost.* Per connection, one bit set in the transport's flags as the peer's end of
stream is read, and one shift as the row leaves: the one call that takes it out of the
table, ``table.leave(row, flags >> _MARK_SHIFT)``, counts it by that mark
(:meth:`~reactor.sansio.table.ConnectionTable.leave`: 0, 1 once the peer's end of
stream was read, 2 or 3 once the close was counted by its cause, a count not reported
again), and the table no longer counts rows as they are added (opened = closed +
open), which pays for it. The mark takes no slot of its own: an idle connection's
bytes are counted (reactor.io.compactrow). Whether the server is stopping costs nothing
per close: the table swaps the list it counts in
(:meth:`~reactor.sansio.table.ConnectionTable.begin_stopping`). The rare causes are
counted where they are handled.

*Discarded bytes.* What an abort (or a close forced by an error, a reset or a deadline)
drops from the write queue is accounted for by :meth:`CloseCounting._discard`: in the
row, in the table's total, and in a debug line.

Must not import the stream transport, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from ..sansio.closes import close_reason
from .transports import _F_CLOSE_COUNTED, _F_PEER_EOF

if TYPE_CHECKING:
    from .deadlines import _Aux
    from .loop import Reactor

__all__ = ["CloseCounting", "note_close"]

logger = logging.getLogger("reactor.transports")  # the stream transport's logger
_DEBUG: Final = logging.DEBUG
_RESETS: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class CloseCounting:
    """Drop a connection on a socket error; count its close by reason as it leaves
    the table; account for the bytes a forced close drops.

    A mix-in with no storage of its own; :class:`~reactor.io.stream.StreamTransport`
    inherits it and declares the slots.
    """

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    # the host's contract: what the transport stores and provides
    _aux: _Aux | None
    _flags: int
    _reactor: Reactor

    if TYPE_CHECKING:

        def _get_aux(self) -> _Aux: ...

        def _force_close(self, exc: BaseException | None) -> None: ...

        def describe(self) -> str: ...

    def note_close_cause(self, cause: BaseException) -> None:
        """Count this connection's close under ``cause``'s reason, now: the exception
        that closes it (its teardown's, or one the teardown will not carry: a TLS
        layer's failure, a facade's request deadline, a handler's error). The first
        cause counts; later ones, and the close itself, add nothing."""
        if not self._flags & _F_CLOSE_COUNTED:
            self._flags |= _F_CLOSE_COUNTED
            self._reactor.connections.closes[close_reason(cause, False, False)] += 1

    def note_peer_eof(self) -> None:
        """The peer's end of stream reached the application another way than the
        transport's read (a TLS layer's close_notify): an orderly close is then
        ``client-eof``."""
        self._flags |= _F_PEER_EOF  # no matter once counted: 3 is "counted" too

    def _connection_error(self, exc: OSError) -> None:
        """The peer reset, the pipe broke, or another socket error: drop the connection."""
        if isinstance(exc, _RESETS):
            if logger.isEnabledFor(_DEBUG):  # describe() is not free: a reset is common
                logger.debug("%s: %s", self.describe(), exc)
        else:
            logger.info("%s: socket error: %s", self.describe(), exc)
        self._force_close(exc)

    def _discard(self, size: int, exc: BaseException | None) -> None:
        """Account for ``size`` queued bytes dropped unsent: the row, the table, a log."""
        self._get_aux().discarded += size
        self._reactor.connections.note_discarded(size)
        logger.debug("%s: %d queued bytes discarded, never sent (%s)", self.describe(), size,
                     "aborted" if exc is None else f"{type(exc).__name__}: {exc}")


def note_close(transport: Any, cause: BaseException | None) -> None:
    """For a layer over a transport (TLS): tell the row under it why it is about to
    close, ``cause`` (:meth:`CloseCounting.note_close_cause`), or with None that the
    peer's end of stream reached the application (:meth:`CloseCounting.note_peer_eof`).
    Any other transport is left alone."""
    if isinstance(transport, CloseCounting):
        if cause is None:
            transport.note_peer_eof()
        else:
            transport.note_close_cause(cause)
