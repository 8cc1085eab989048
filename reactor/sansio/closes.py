"""Why a connection closed: the one classification the access log and the metrics share.

:func:`close_reason` names the reason from what ended a connection: the exception its
teardown carried (or one noted earlier: a TLS failure, a facade's request deadline, a
handler's error), whether the peer's end of stream was read, and whether the server
was stopping. The reasons:

* ``client-eof`` -- the client closed first (its end of stream was read);
* ``server-close`` -- the service closed it (a QUIT, a protocol error, a size limit,
  a blocking handler that returned);
* ``shutdown`` -- the server was stopping (drained, or aborted at its timeout);
* ``reset`` -- the client reset the connection, or the pipe broke;
* ``timeout`` or ``<kind>-timeout`` -- a deadline passed (``idle``, ``first-byte``,
  ``request``, ``write``: :data:`~reactor.sansio.errors.DEADLINE_KINDS`);
* ``error`` -- a socket error, or a callback raised;
* ``cap`` -- refused at a listener's ``max_connections`` (closed at once, never a row).

The transports count every stream connection's close by these reasons in the
connection table (:attr:`~reactor.sansio.table.ConnectionTable.closes`); the access log
of ``reactor serve`` writes them on its lines.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CAP", "CLIENT_EOF", "ORDERLY", "ORDERLY_STOPPING", "SERVER_CLOSE", "SHUTDOWN",
           "close_reason"]

CLIENT_EOF: Final = "client-eof"
SERVER_CLOSE: Final = "server-close"
SHUTDOWN: Final = "shutdown"
CAP: Final = "cap"

#: an orderly close's reason (no exception ended it), by whether the peer's end of
#: stream was read (index 0: no, 1: yes): while the server runs, and while it stops.
#: The connection table counts orderly closes in two lists indexed the same way
#: (:attr:`~reactor.sansio.table.ConnectionTable.ends`).
ORDERLY: Final = (SERVER_CLOSE, CLIENT_EOF)
ORDERLY_STOPPING: Final = (SHUTDOWN, CLIENT_EOF)

_RESETS: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def close_reason(exc: BaseException | None, eof: object, stopping: object) -> str:
    """Why a connection closed (see the module docstring).

    Args:
        exc: the exception that ended it, or None for an orderly close.
        eof: true when the peer's end of stream was read.
        stopping: true when the server was stopping.
    """
    if exc is None:  # the common case first: every orderly close comes here
        return (ORDERLY_STOPPING if stopping else ORDERLY)[1 if eof else 0]
    if isinstance(exc, TimeoutError):  # a DeadlineExceeded is one, and names its kind
        kind = getattr(exc, "kind", None)
        return "timeout" if kind is None else f"{kind}-timeout"
    if isinstance(exc, _RESETS):
        return "reset"
    return "error"
