"""asynchat-style framing: :class:`TerminatorFramer` and :class:`TerminatorHandler`.

The stream is cut by a *terminator* that the code may change between pieces, as the
standard library's old ``asynchat`` did:

* ``bytes``: data up to the next occurrence of those bytes, then the terminator event;
* ``int`` n: the next n bytes, then the terminator event (the terminator becomes 0);
* ``None`` (or 0): every byte is data, there is no terminator event.

:class:`TerminatorFramer` is the socket-free state machine (``feed`` bytes, pull events
with ``next_event``). :class:`TerminatorHandler` is a
:class:`~handlers.base.StreamHandler` with asynchat's methods: ``set_terminator``,
``get_terminator``, ``collect_incoming_data`` and ``found_terminator``; by default it
collects the data in a buffer with a maximum size, read with :meth:`TerminatorHandler.take_data`.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Final

from handlers.base import FramingError, StreamHandler

__all__ = [
    "DEFAULT_MAX_BUFFER_SIZE",
    "TERMINATOR",
    "TerminatorFramer",
    "TerminatorHandler",
    "TerminatorOverflow",
]

DEFAULT_MAX_BUFFER_SIZE: Final = 64 * 1024

# Theory of operation
# -------------------
# ``feed`` appends to one bytearray of unparsed input; ``next_event`` consumes from its
# front and returns one event: a ``bytes`` chunk of data, the TERMINATOR marker, or
# None (more input needed). It looks at the terminator current *at that call*, so code
# that changes the terminator after an event (a header line, then a body of n bytes)
# has the rest of the input parsed with the new one.
#
# With a bytes terminator, data is handed out as soon as it is known not to be part of
# the terminator: only the longest tail of the buffer that could start the terminator
# is held back. The framer therefore never holds more than ``len(terminator) - 1``
# bytes of parsed input, and it counts the data handed out since the last terminator;
# more than ``max_size`` is a :class:`TerminatorOverflow` (the peer never sent the
# terminator). After an error the framer is FAILED and raises it again.
#
# When the terminator is found right after a data chunk, the chunk is returned first
# and ``_found`` remembers that the next call returns TERMINATOR. A count terminator
# works the same way: the chunk that completes the count sets ``_found``.
#
#   (data chunk)* TERMINATOR   repeated; chunks of one record concatenate to its data
#
# How the input was split into pieces changes only where data chunks are cut, never
# the concatenated data between two terminators nor the terminators.


class _Terminator:
    """The type of :data:`TERMINATOR`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TERMINATOR"


TERMINATOR: Final = _Terminator()
"""The event :meth:`TerminatorFramer.next_event` returns when the terminator is reached."""


class TerminatorOverflow(FramingError):
    """More data than the maximum arrived without the terminator.

    Attributes:
        limit: the maximum in bytes.
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def _check_terminator(terminator: bytes | int | None) -> None:
    if terminator is None:
        return
    if isinstance(terminator, bool) or not isinstance(terminator, (bytes, int)):
        raise TypeError(f"the terminator must be bytes, int or None, not {terminator!r}")
    if isinstance(terminator, bytes) and not terminator:
        raise ValueError("a bytes terminator must not be empty")
    if isinstance(terminator, int) and terminator < 0:
        raise ValueError(f"a count terminator must not be negative, not {terminator!r}")


class TerminatorFramer:
    """Cut a byte stream at a changeable terminator (bytes, a byte count, or none).

    Args:
        terminator: the initial terminator (see :meth:`set_terminator`).
        max_size: the most data accepted between two bytes terminators.

    Raises:
        TypeError, ValueError: a bad terminator or maximum.
    """

    __slots__ = ("_buf", "_collected", "_error", "_found", "_terminator", "max_size")

    def __init__(
        self, terminator: bytes | int | None = b"\r\n", max_size: int = DEFAULT_MAX_BUFFER_SIZE
    ) -> None:
        _check_terminator(terminator)
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, not {max_size!r}")
        self.max_size: Final = max_size
        self._terminator = terminator
        self._buf = bytearray()
        self._collected = 0
        self._found = False
        self._error: TerminatorOverflow | None = None

    def set_terminator(self, terminator: bytes | int | None) -> None:
        """Set what ends the next piece of data.

        Args:
            terminator: bytes (data up to them), an int n (the next n bytes; 0 acts
                like None), or None (all data, no terminator event).

        Raises:
            TypeError, ValueError: the terminator is not one of those.
        """
        _check_terminator(terminator)
        self._terminator = terminator
        self._collected = 0

    def get_terminator(self) -> bytes | int | None:
        """The current terminator; for a count, the bytes still to come."""
        return self._terminator

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet returned in an event."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once the framer raised its error (it raises it again from then on)."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream.

        Raises:
            TerminatorOverflow: the framer failed earlier.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_event(self) -> bytes | _Terminator | None:
        """Return the next event: a data chunk, :data:`TERMINATOR`, or None.

        Raises:
            TerminatorOverflow: more than ``max_size`` bytes of data arrived without
                the (bytes) terminator. The framer keeps raising it.
        """
        if self._error is not None:
            raise self._error
        if self._found:
            self._found = False
            self._collected = 0
            return TERMINATOR
        buf = self._buf
        if not buf:
            return None
        terminator = self._terminator
        if not terminator:  # None or 0: everything is data
            data = bytes(buf)
            buf.clear()
            return data
        if isinstance(terminator, int):
            count = min(terminator, len(buf))
            data = bytes(buf[:count])
            del buf[:count]
            self._terminator = terminator - count
            self._found = self._terminator == 0
            return data
        return self._next_delimited(buf, terminator)

    def _next_delimited(self, buf: bytearray, terminator: bytes) -> bytes | _Terminator | None:
        end = buf.find(terminator)
        if end == 0:
            del buf[:len(terminator)]
            self._collected = 0
            return TERMINATOR
        if end > 0:
            size = end
        else:
            size = len(buf) - _held_back(buf, terminator)
            if not size:
                return None
        if self._collected + size > self.max_size:
            self._error = TerminatorOverflow(
                f"more than max_size={self.max_size} bytes without the terminator "
                f"{terminator!r}", self.max_size)
            raise self._error
        self._collected += size
        data = bytes(buf[:size])
        if end > 0:
            del buf[:end + len(terminator)]
            self._found = True
        else:
            del buf[:size]
        return data


def _held_back(buf: bytearray, terminator: bytes) -> int:
    """The length of the longest tail of ``buf`` that is a proper prefix of ``terminator``."""
    for size in range(min(len(terminator) - 1, len(buf)), 0, -1):
        if buf.endswith(terminator[:size]):
            return size
    return 0


class TerminatorHandler(StreamHandler):
    """asynchat's ``async_chat`` interface on a :class:`~handlers.base.StreamHandler`.

    Override :meth:`found_terminator`; read the collected data there with
    :meth:`take_data`, and change the terminator with :meth:`set_terminator`. Data
    collected by the default :meth:`collect_incoming_data` is capped at
    ``max_buffer_size``; more is a :class:`TerminatorOverflow`, which goes to
    :meth:`~handlers.base.StreamHandler.framing_error` (log and close by default).

    Callback order::

        connection_made [collect_incoming_data* found_terminator]* [eof_received]
        connection_lost
    """

    __slots__ = ("_incoming", "_tframer")

    terminator: ClassVar[bytes | int | None] = b"\r\n"
    max_buffer_size: ClassVar[int] = DEFAULT_MAX_BUFFER_SIZE
    # the logger keeps its name from before the move to framers/ (log settings use it)
    logger: ClassVar[logging.Logger] = logging.getLogger("handlers.terminator")

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        self._tframer = TerminatorFramer(cls.terminator, cls.max_buffer_size)
        self._incoming = bytearray()

    def set_terminator(self, terminator: bytes | int | None) -> None:
        """Set the terminator for what follows; see :meth:`TerminatorFramer.set_terminator`."""
        self._tframer.set_terminator(terminator)

    def get_terminator(self) -> bytes | int | None:
        """The current terminator (for a count: the bytes still to come)."""
        return self._tframer.get_terminator()

    def data_received(self, data: bytes) -> None:
        framer = self._tframer
        if framer.failed:  # already reported; the connection is closing
            return
        framer.feed(data)
        while self.connected:
            try:
                event = framer.next_event()
            except TerminatorOverflow as exc:
                self.framing_error(exc)
                return
            if event is None:
                return
            if event is TERMINATOR:
                self.found_terminator()
            else:
                assert isinstance(event, bytes)
                self.collect_incoming_data(event)

    def collect_incoming_data(self, data: bytes) -> None:
        """Data before the terminator arrived. The default keeps it (up to the maximum)."""
        if len(self._incoming) + len(data) > self.max_buffer_size:
            self.framing_error(TerminatorOverflow(
                f"more than max_buffer_size={self.max_buffer_size} bytes collected",
                self.max_buffer_size))
            return
        self._incoming += data

    def take_data(self) -> bytes:
        """Return the data collected so far and start collecting afresh."""
        data = bytes(self._incoming)
        self._incoming.clear()
        return data

    def found_terminator(self) -> None:
        """The terminator was reached. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement found_terminator()")
