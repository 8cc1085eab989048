"""Line framing: :class:`LineFramer` (a socket-free state machine) and :class:`LineHandler`.

:class:`LineFramer` turns a byte stream into lines split on a configurable delimiter,
with a maximum line length. Use it on its own (``feed`` bytes, pull lines with
``next_line``) or through :class:`LineHandler`, a :class:`~handlers.base.StreamHandler`
that calls ``line_received(line)`` for each line.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Final

from handlers.base import (
    FramingError,
    StreamHandler,
    start_request_deadline,
    stop_request_deadline,
)
from reactor.sansio.words import counted

__all__ = ["DEFAULT_MAX_LINE_LENGTH", "LineFramer", "LineHandler", "LineTooLong"]

DEFAULT_MAX_LINE_LENGTH: Final = 64 * 1024

# Theory of operation
# -------------------
# The framer owns one bytearray of unparsed input and an offset, ``_scanned``: every
# byte before it is known not to start a delimiter. ``next_line`` searches only from
# there, so a long line arriving in small pieces is scanned once in total, not once per
# piece (no quadratic rescanning). Taking a line deletes it from the front of the
# bytearray, which CPython does in constant time, and resets the offset to 0.
#
# States:
#
#   READING --line longer than the maximum--> FAILED --skip_line()--> DISCARDING
#      ^                                         | (feed / next_line raise again)
#      +------------- delimiter found ----------------------------------+
#
# A line is too long when its length (delimiter excluded) exceeds ``max_line_length``.
# That is known either when its delimiter is found past the limit, or when the buffer
# holds more than ``max_line_length + len(delimiter) - 1`` bytes with no delimiter (any
# delimiter still to come would end a line past the limit). Both tests give the same
# answer for the same stream however it is split into pieces.
#
# While DISCARDING, buffered bytes are dropped as they arrive (only the last
# ``len(delimiter) - 1`` are kept, in case they start a delimiter) until the delimiter
# ends the long line; then the framer is READING again. Memory stays bounded by the
# maximum plus one piece of input.


class LineTooLong(FramingError):
    """A line is longer than the framer's ``max_line_length``.

    Attributes:
        limit: the maximum line length in bytes.
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class LineFramer:
    """Split a byte stream into lines.

    Args:
        delimiter: the bytes ending a line (not included in the lines returned).
        max_line_length: the longest line accepted, delimiter excluded.

    Raises:
        ValueError: the delimiter is empty or the maximum is not positive.

    Example::

        framer = LineFramer(b"\\r\\n")
        framer.feed(b"one\\r\\ntw")
        framer.next_line()   # b"one"
        framer.next_line()   # None: "tw" is not a whole line yet
    """

    __slots__ = ("_buf", "_discarding", "_error", "_scanned", "delimiter", "max_line_length")

    def __init__(
        self, delimiter: bytes = b"\n", max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    ) -> None:
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"the delimiter must be non-empty bytes, not {delimiter!r}")
        if max_line_length <= 0:
            raise ValueError(f"max_line_length must be positive, not {max_line_length!r}")
        self.delimiter: Final = delimiter
        self.max_line_length: Final = max_line_length
        self._buf = bytearray()
        self._scanned = 0
        self._discarding = False
        self._error: LineTooLong | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned line."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True after :class:`LineTooLong` until :meth:`skip_line`."""
        return self._error is not None

    @property
    def discarding(self) -> bool:
        """True after :meth:`skip_line` until the delimiter ending the long line."""
        return self._discarding

    @property
    def partial(self) -> bool:
        """True while a line is partly received: bytes of it are buffered, or a long
        line is being discarded."""
        return bool(self._buf) or self._discarding

    def pending(self) -> bytes:
        """The incomplete line held so far (e.g. to report it when the stream ends)."""
        return b"" if self._discarding else bytes(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream.

        Raises:
            LineTooLong: the framer failed earlier and :meth:`skip_line` was not called.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_line(self) -> bytes | None:
        """Return the next whole line, or None when more input is needed.

        Raises:
            LineTooLong: the next line is longer than ``max_line_length``. The framer
                keeps raising until :meth:`skip_line` is called.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        delimiter = self.delimiter
        if self._discarding and not self._discard(buf, delimiter):
            return None
        end = buf.find(delimiter, self._scanned)
        if end < 0:
            if len(buf) > self.max_line_length + len(delimiter) - 1:
                raise self._fail(len(buf) - len(delimiter) + 1)
            self._scanned = max(0, len(buf) - len(delimiter) + 1)
            return None
        if end > self.max_line_length:
            raise self._fail(end)
        line = bytes(buf[:end])
        del buf[:end + len(delimiter)]
        self._scanned = 0
        return line

    def skip_line(self) -> None:
        """After :class:`LineTooLong`: drop the long line and go on with the next one.

        Raises:
            RuntimeError: the framer had not failed.
        """
        if self._error is None:
            raise RuntimeError("skip_line() is only valid after LineTooLong")
        self._error = None
        self._discarding = True
        self._scanned = 0

    def _discard(self, buf: bytearray, delimiter: bytes) -> bool:
        end = buf.find(delimiter, self._scanned)
        if end < 0:
            keep = len(delimiter) - 1
            if len(buf) > keep:
                del buf[:len(buf) - keep]
            self._scanned = 0
            return False
        del buf[:end + len(delimiter)]
        self._discarding = False
        self._scanned = 0
        return True

    def _fail(self, at_least: int) -> LineTooLong:
        self._error = LineTooLong(
            f"line too long: {at_least} bytes or more without {self.delimiter!r} "
            f"(max_line_length={self.max_line_length})",
            self.max_line_length,
        )
        return self._error


class LineHandler(StreamHandler):
    """A stream handler that receives lines: override :meth:`line_received`.

    Configure with class attributes (``delimiter``, ``max_line_length``,
    ``request_timeout``) or with the constructor's arguments. Lines are delivered until
    the handler starts closing the connection: lines after a ``close_when_done`` are not
    delivered. Pausing the transport's reading stops new input, not the lines already
    received in the same piece of input.

    ``request_timeout`` (seconds, None: no limit) is an absolute deadline per line
    against slowloris clients: from the moment the first bytes of a line are buffered,
    the whole line must arrive within that time, however steadily its bytes trickle in;
    otherwise the connection is closed with a logged reason. The deadline is armed when
    a partial line is left after a piece of input, moved when a later piece completes
    that line and leaves the start of another, and removed when no partial line is left;
    a piece that only extends the partial line costs one test. On the reactor it is the
    transport's deadline (:meth:`~reactor.io.stream.StreamTransport.set_deadline`); on
    asyncio a ``loop.call_later`` timer. The deadline keeps running while reading is
    paused.

    Callback order::

        connection_made [line_received | line_too_long]* [eof_received] connection_lost
    """

    __slots__ = ("_deadline", "_lines", "_request_timeout")

    delimiter: ClassVar[bytes] = b"\n"
    max_line_length: ClassVar[int] = DEFAULT_MAX_LINE_LENGTH
    request_timeout: ClassVar[float | None] = None
    # the logger keeps its name from before the move to framers/ (log settings use it)
    logger: ClassVar[logging.Logger] = logging.getLogger("handlers.lines")

    def __init__(
        self,
        delimiter: bytes | None = None,
        max_line_length: int | None = None,
        *,
        request_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self._lines = LineFramer(
            type(self).delimiter if delimiter is None else delimiter,
            type(self).max_line_length if max_line_length is None else max_line_length,
        )
        timeout = type(self).request_timeout if request_timeout is None else request_timeout
        if timeout is not None and not timeout > 0:
            raise ValueError(f"request_timeout must be positive or None, not {timeout!r}")
        self._request_timeout = timeout
        self._deadline: object | None = None  # see handlers.base.start_request_deadline

    @property
    def framer(self) -> LineFramer:
        """The connection's :class:`LineFramer`."""
        return self._lines

    def data_received(self, data: bytes) -> None:
        framer = self._lines
        if framer.failed:  # already reported; the connection is closing
            return
        framer.feed(data)
        completed = False  # a line ended in this piece: a partial one left is a new one
        discarding = framer._discarding
        while self.connected:
            try:
                line = framer.next_line()
            except LineTooLong as exc:
                if not self.line_too_long(exc):
                    return
                framer.skip_line()
                discarding = True
                continue
            if line is None:
                break
            completed = True
            self.line_received(line)
        if self._request_timeout is not None:
            self._track_request(completed or (discarding and not framer._discarding))

    def _track_request(self, completed: bool) -> None:
        """Arm, move or remove the request deadline after a piece of input."""
        if self._lines.partial and self.connected:
            if self._deadline is None or completed:
                assert self.transport is not None and self._request_timeout is not None
                self._deadline = start_request_deadline(
                    self._deadline, self.transport, self._request_timeout,
                    self._request_expired)
        elif self._deadline is not None:
            stop_request_deadline(self._deadline)
            self._deadline = None

    def _request_expired(self) -> None:
        """The request deadline passed (asyncio; on the reactor the transport closes)."""
        self._deadline = None
        self.disconnect(f"request deadline: no complete line within "
                        f"{self._request_timeout} s", abort=True)

    def eof_received(self) -> bool | None:
        left = len(self._lines.pending())
        if left:
            self.logger.debug("%s: the stream ended inside a line (%s dropped)",
                              self.describe(), counted(left, "byte"))
        if self._deadline is not None:  # nothing more can arrive: no request to wait for
            stop_request_deadline(self._deadline)
            self._deadline = None
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            stop_request_deadline(self._deadline)
            self._deadline = None
        super().connection_lost(exc)

    def line_received(self, line: bytes) -> None:
        """One line arrived (without its delimiter). Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement line_received()")

    def line_too_long(self, exc: LineTooLong) -> bool:
        """A line broke ``max_line_length``.

        The default logs the reason and closes the connection (via
        :meth:`~handlers.base.StreamHandler.framing_error`).

        Returns:
            True to skip the long line and carry on with the next one; False to stop
            reading lines (the handler is expected to have closed the connection).
        """
        self.framing_error(exc)
        return False

    def send_line(self, line: bytes) -> bool:
        """Send ``line`` followed by the delimiter; see :meth:`StreamHandler.send`."""
        return self.send(line + self._lines.delimiter)
