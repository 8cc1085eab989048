"""The base class of non-blocking stream services: :class:`StreamHandler`.

A :class:`StreamHandler` *is* an :class:`asyncio.Protocol`: the transport (a reactor
:class:`~reactor.io.stream.StreamTransport`, an asyncio transport, or
:class:`reactor.testing.FakeTransport`) calls it in asyncio's order::

    connection_made [data_received*] [eof_received] connection_lost
    (pause_writing resume_writing)* may interleave anywhere between the first and last

so the same handler class runs unchanged on the reactor and on any asyncio loop.
On top of the callbacks it keeps a few conveniences every service needs: :meth:`send`,
:meth:`close_when_done`, :meth:`disconnect` (log a reason, then close), the peer
address, the connection's row in the reactor's table, and a class-level ``logger``.

It also defines :class:`FramingError`, the error every framer in this package raises
when the peer's bytes break the framing rules, and the hook :meth:`StreamHandler.framing_error`
that turns one into a logged reason and a closed connection.

Request deadlines (slowloris): :func:`start_request_deadline` and
:func:`stop_request_deadline` give a protocol an *absolute* deadline for the request it
is receiving, which an idle timer cannot give (a client sending one byte every few
seconds is never idle). On the reactor the deadline is the transport's own
(:meth:`~reactor.io.stream.StreamTransport.set_deadline`: one timer per connection,
from the reactor's timer heap; when it passes, the transport logs "closing: request
deadline" and closes); on an asyncio loop it is a ``loop.call_later`` timer. The line
handlers and the kv service use them through their ``request_timeout`` setting.

Memory: a handler holds two slots (the transport and one int of flags), so an idle
connection costs a few dozen bytes here; subclasses should use ``__slots__`` too.

Socket-free: must not import socket, selectors, threading or os (asyncio is imported
for the protocol and transport interfaces only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final, cast

from reactor.sansio.connection import Row
from reactor.sansio.errors import RemoteProtocolError

__all__ = ["FramingError", "StreamHandler", "start_request_deadline", "stop_request_deadline"]

# What start_request_deadline returns when the transport offers no deadline and no
# asyncio loop runs (an in-memory test transport): nothing is armed, nothing to stop.
NO_DEADLINE: Final = object()


def start_request_deadline(
    token: object | None,
    transport: asyncio.BaseTransport,
    seconds: float,
    expired: Callable[[], object],
) -> object:
    """Arm (or move) the deadline of the request now being received.

    Call it when a request starts (its first bytes are buffered but it is not complete),
    not for every piece of input: a deadline already armed for the same request stays.

    Args:
        token: what the previous call returned for this connection, or None.
        transport: the connection's transport.
        seconds: the request must be complete this many seconds from now.
        expired: called (asyncio only) when the deadline passes; it should log the
            reason and close the connection. On the reactor the transport does both.

    Returns:
        A token for :func:`stop_request_deadline` and the next call: the reactor's row,
        an :class:`asyncio.TimerHandle`, or :data:`NO_DEADLINE`.
    """
    if token is NO_DEADLINE:
        return token
    if token is not None and not isinstance(token, asyncio.TimerHandle):
        token.set_deadline(seconds)  # type: ignore[attr-defined]  # the same row
        return token
    if isinstance(token, asyncio.TimerHandle):
        token.cancel()
    else:
        row = transport.get_extra_info("connection")
        set_deadline = getattr(row, "set_deadline", None)
        if set_deadline is not None:
            set_deadline(seconds)
            return cast(object, row)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return NO_DEADLINE
    return loop.call_later(seconds, expired)


def stop_request_deadline(token: object | None) -> None:
    """Remove the deadline :func:`start_request_deadline` armed (None: nothing armed)."""
    if token is None or token is NO_DEADLINE:
        return
    if isinstance(token, asyncio.TimerHandle):
        token.cancel()
    else:
        token.set_deadline(None)  # type: ignore[attr-defined]

# StreamHandler._flags bits: one int instead of several booleans keeps a handler small.
_F_WRITE_PAUSED: Final = 1  # the transport called pause_writing()
_F_EOF: Final = 2  # the peer finished sending (eof_received was called)
_F_LOST: Final = 4  # connection_lost was called
_F_CLOSE_REQUESTED: Final = 8  # close_when_done() / disconnect() was called


class FramingError(RemoteProtocolError):
    """The peer's bytes broke a framer's rules (too long, too large, malformed).

    Every framer in :mod:`handlers` raises a subclass of this; the message says what was
    wrong and which limit was crossed, so it can be logged as the reason for closing.
    """


class StreamHandler(asyncio.Protocol):
    """Base class for a non-blocking stream service; one instance per connection.

    Override the asyncio callbacks you need and call the base implementation from
    ``connection_made``, ``eof_received``, ``connection_lost``, ``pause_writing`` and
    ``resume_writing`` (it keeps the state the conveniences rely on).

    Callback order (asyncio's grammar)::

        connection_made [data_received*] [eof_received] connection_lost

    Attributes:
        transport: the transport given to :meth:`connection_made` (None before it);
            kept after the connection is lost, so ``peername`` still works in logs.
        logger: the class-level logger used for this handler's messages; subclasses
            set their own (``logger = logging.getLogger(__name__)``).
    """

    __slots__ = ("_flags", "transport")

    logger: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._flags = 0

    # -- asyncio.Protocol callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The connection is up; keep the transport."""
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        """Bytes arrived. The base class ignores them; subclasses override this."""

    def eof_received(self) -> bool | None:
        """The peer finished sending. Return a true value to keep the write side open.

        The base class returns None: the transport then closes the connection once the
        queued output is sent.
        """
        self._flags |= _F_EOF
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone (called exactly once); ``exc`` is None on a clean close."""
        self._flags |= _F_LOST
        if exc is not None:
            self.logger.debug("%s: connection lost: %r", self.describe(), exc)

    def pause_writing(self) -> None:
        """The transport's write buffer went over its high-water mark."""
        self._flags |= _F_WRITE_PAUSED

    def resume_writing(self) -> None:
        """The transport's write buffer drained to its low-water mark."""
        self._flags &= ~_F_WRITE_PAUSED

    # -- conveniences -----------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        """Queue ``data`` for the peer.

        Returns:
            True when the data was handed to the transport; False when the connection
            is closing or gone (the data is dropped, as a closed socket would).
        """
        if not self.connected:
            return False
        assert self.transport is not None
        self.transport.write(data)
        return True

    def close_when_done(self) -> None:
        """Close the connection once everything queued so far has been sent.

        Later :meth:`send` calls are dropped. ``connection_lost`` follows, once.
        """
        self._flags |= _F_CLOSE_REQUESTED
        transport = self.transport
        if transport is not None and not self._flags & _F_LOST:
            transport.close()

    def disconnect(self, reason: str, *, abort: bool = False, level: int = logging.INFO) -> None:
        """Log ``reason`` with the peer's address, then close the connection.

        Args:
            reason: why, in a few words; it goes to :attr:`logger`.
            abort: drop queued output and close at once (e.g. for a reader too slow to
                be worth flushing to) instead of flushing first.
            level: the logging level of the message.
        """
        if self._flags & _F_LOST:
            return
        self.logger.log(level, "%s: closing: %s", self.describe(), reason)
        self._flags |= _F_CLOSE_REQUESTED
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def framing_error(self, exc: FramingError) -> None:
        """A framer rejected the peer's input: log the reason and close.

        Override to reply with an error first (then call this), or to do something else.
        """
        self.disconnect(str(exc))

    @property
    def connected(self) -> bool:
        """True between ``connection_made`` and the start of a close (either side's)."""
        transport = self.transport
        return (transport is not None
                and not self._flags & (_F_LOST | _F_CLOSE_REQUESTED)
                and not transport.is_closing())

    @property
    def peer_closed(self) -> bool:
        """True once the peer has finished sending (``eof_received`` was called)."""
        return bool(self._flags & _F_EOF)

    @property
    def lost(self) -> bool:
        """True once ``connection_lost`` was called."""
        return bool(self._flags & _F_LOST)

    @property
    def writing_paused(self) -> bool:
        """True between ``pause_writing`` and ``resume_writing``."""
        return bool(self._flags & _F_WRITE_PAUSED)

    @property
    def peername(self) -> Any:
        """The peer's address as the transport reports it (None when unknown)."""
        transport = self.transport
        return None if transport is None else transport.get_extra_info("peername")

    @property
    def row(self) -> Row | None:
        """The connection's row in the reactor's table (None off the reactor).

        On the reactor the row is the :class:`~reactor.io.stream.StreamTransport`
        itself, with its lifecycle state, counters and metadata.
        """
        transport = self.transport
        if transport is None:
            return None
        row = transport.get_extra_info("connection")
        return row if isinstance(row, Row) else None

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued in the transport and not yet sent (0 when not connected)."""
        transport = self.transport
        if transport is None or self._flags & _F_LOST:
            return 0
        return transport.get_write_buffer_size()

    def describe(self) -> str:
        """A short description for log messages: the class and the peer's address."""
        return f"{type(self).__name__} {self.peername!r}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
