"""What a stream connection's close leaves behind: its reason, counted as it leaves the
table, and the queued bytes a forced close drops (:class:`CloseCounting`, a mix-in of
:class:`~reactor.io.stream.StreamTransport`).

Theory of operation
-------------------
Every stream connection ends in one of two places: the transport's teardown
(``_finish``: ``connection_lost`` was called) or, for a socket a facade handed to a
blocking handler, :meth:`~reactor.io.handover.SocketHandover.release`. Both leave the
table through :meth:`CloseCounting._leave_table`, which adds one to the table's
``closes`` under :func:`~reactor.sansio.closes.close_reason`'s name for it, so the
reasons are counted for every reactor, embedded or not, wrapped or not, TLS or plain,
TCP or Unix, protocol or facade; datagram endpoints are not connections and are not
counted.

What the reason is read from:

* the exception the teardown carries (a reset, a socket error, a deadline's
  :class:`~reactor.sansio.errors.DeadlineExceeded`, a callback's exception);
* else a cause noted earlier on the rare path that knew it (:meth:`note_close_cause`):
  a TLS layer's failure (which it closes the raw connection after), a facade's request
  deadline or a handler's exception, a shutdown of a facade on a shared reactor;
* else the flag the read path sets as it hands the peer's end of stream to the
  protocol (``client-eof``; a TLS layer sets it for the peer's close_notify:
  :meth:`note_peer_eof`), then whether the table is stopping (``shutdown``), else
  ``server-close``.

Cost: one call and one list item's increment per connection, at its close (the
table's ``orderly`` list, indexed by that flag); one flag set per end of stream read;
nothing on the paths that move data. The rare causes live in the transport's on-demand
side state, and are counted by name.

*Discarded bytes.* What an abort (or a close forced by an error, a reset or a deadline)
drops from the write queue is accounted for by :meth:`CloseCounting._discard`: in the
row, in the table's total, and in a debug line.

Must not import the stream transport, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..sansio.closes import close_reason
from .transports import _F_PEER_EOF

if TYPE_CHECKING:
    from .deadlines import _Aux
    from .listeners import Listener
    from .loop import Reactor

__all__ = ["CloseCounting", "note_close"]

logger = logging.getLogger("reactor.transports")  # the stream transport's logger


class CloseCounting:
    """Count a stream connection's close by reason as it leaves the table; account for
    the bytes a forced close drops.

    A mix-in with no storage of its own; :class:`~reactor.io.stream.StreamTransport`
    inherits it and declares the slots.
    """

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    # the host's contract: what the transport stores and provides
    _aux: _Aux | None
    _flags: int
    _listener: Listener | None
    _reactor: Reactor

    if TYPE_CHECKING:

        def _get_aux(self) -> _Aux: ...

        def describe(self) -> str: ...

    def note_close_cause(self, cause: BaseException) -> None:
        """Record the exception that is about to close this connection, for its reason,
        when its teardown will not carry it (a TLS layer's failure, a facade's request
        deadline, a handler's error). An exception the teardown itself carries still
        wins; the last note wins over earlier ones."""
        self._get_aux().cause = cause

    def note_peer_eof(self) -> None:
        """The peer's end of stream reached the application another way than the
        transport's read (a TLS layer's close_notify): an orderly close is then
        ``client-eof``."""
        self._flags |= _F_PEER_EOF

    def _leave_table(self, exc: BaseException | None) -> None:
        """Leave the table, the close counted by reason; free the listener's slot."""
        table = self._reactor.connections
        table.remove(self)  # type: ignore[arg-type]  # the host is a Row
        aux = self._aux
        if exc is None and (aux is None or aux.cause is None):
            # orderly: ORDERLY (or ORDERLY_STOPPING)[0 or 1], as close_reason names it
            table.orderly[self._flags & _F_PEER_EOF] += 1
        else:
            cause = exc if exc is not None or aux is None else aux.cause
            table.closes[close_reason(cause, False, False)] += 1
        listener = self._listener
        if listener is not None:
            listener.release_slot()

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
