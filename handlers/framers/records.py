"""Length-prefixed records: :class:`RecordFramer` (socket-free) and :class:`RecordHandler`.

Each record on the wire is an unsigned length (1, 2, 4 or 8 bytes, big- or
little-endian) followed by that many bytes of payload. The framer refuses a length over
its ``max_record_size`` as soon as it reads the prefix, so an oversized record is never
buffered.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Final, Literal, Protocol

from handlers.base import FramingError, StreamHandler
from reactor.sansio.words import counted

__all__ = [
    "DEFAULT_MAX_RECORD_SIZE",
    "PREFIX_SIZES",
    "RecordFramer",
    "RecordHandler",
    "RecordSource",
    "RecordStreamHandler",
    "RecordTooLarge",
]

DEFAULT_MAX_RECORD_SIZE: Final = 1024 * 1024
PREFIX_SIZES: Final = (1, 2, 4, 8)

ByteOrder = Literal["big", "little"]

# Theory of operation
# -------------------
# Two states, kept in ``_need``:
#
#   HEADER (need is None) --prefix complete, length <= max--> BODY (need = length)
#   BODY --``need`` bytes buffered--> record returned, back to HEADER
#   HEADER --length > max--> FAILED (feed and next_record raise the error again)
#
# ``feed`` only appends to one bytearray; ``next_record`` does the parsing, so the
# caller decides when to stop (e.g. after it closed the connection). Because the length
# is checked before any payload is awaited, the buffer never holds more than
# ``max_record_size`` plus one piece of input. How the input is split into pieces does
# not change the records or where an error happens.


class RecordTooLarge(FramingError):
    """A record's length prefix announces more than the maximum record size.

    Attributes:
        size: the announced size.
        limit: the maximum.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record too large: {size} bytes announced "
                         f"(max_record_size={limit})")
        self.size = size
        self.limit = limit


class RecordFramer:
    """Split a byte stream into length-prefixed records, and build such records.

    Args:
        prefix_size: the length prefix's size in bytes: 1, 2, 4 or 8.
        byteorder: "big" (network order) or "little".
        max_record_size: the largest payload accepted (and produced); capped at what
            the prefix can express.

    Raises:
        ValueError: an unsupported prefix size or byte order, or a maximum below 0.
    """

    __slots__ = ("_buf", "_error", "_need", "byteorder", "max_record_size", "prefix_size")

    def __init__(
        self,
        prefix_size: int = 4,
        byteorder: ByteOrder = "big",
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        if prefix_size not in PREFIX_SIZES:
            raise ValueError(f"prefix_size must be one of {PREFIX_SIZES}, not {prefix_size!r}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        if max_record_size < 0:
            raise ValueError(f"max_record_size must not be negative, not {max_record_size!r}")
        self.prefix_size: Final = prefix_size
        self.byteorder: Final[ByteOrder] = byteorder
        self.max_record_size: Final = min(max_record_size, (1 << (8 * prefix_size)) - 1)
        self._buf = bytearray()
        self._need: int | None = None
        self._error: RecordTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet returned in a record (prefix included)."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once the framer raised its error (it raises it again from then on)."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream.

        Raises:
            RecordTooLarge: the framer failed earlier; the data is not kept.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_record(self) -> bytes | None:
        """Return the next whole record's payload, or None when more input is needed.

        Raises:
            RecordTooLarge: the next record is over the maximum (raised again on every
                later call: the stream cannot be resynchronised).
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        need = self._need
        if need is None:
            size = self.prefix_size
            if len(buf) < size:
                return None
            need = int.from_bytes(buf[:size], self.byteorder)
            if need > self.max_record_size:
                self._error = RecordTooLarge(need, self.max_record_size)
                buf.clear()
                raise self._error
            del buf[:size]
            self._need = need
        if len(buf) < need:
            return None
        record = bytes(buf[:need])
        del buf[:need]
        self._need = None
        return record

    def encode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Return ``payload`` with its length prefix.

        Raises:
            ValueError: the payload is larger than ``max_record_size``.
        """
        size = len(payload)
        if size > self.max_record_size:
            raise ValueError(f"payload of {size} bytes is over max_record_size="
                             f"{self.max_record_size}")
        return size.to_bytes(self.prefix_size, self.byteorder) + bytes(payload)


class RecordSource(Protocol):
    """What :class:`RecordStreamHandler` needs of a framer."""

    @property
    def failed(self) -> bool: ...

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> None: ...

    def next_record(self) -> bytes | None: ...


class RecordStreamHandler(StreamHandler):
    """The receive side shared by record-oriented handlers.

    A subclass sets ``self._framer`` (any :class:`RecordSource`) in ``__init__`` and
    overrides :meth:`record_received`. A framing error goes to
    :meth:`~handlers.base.StreamHandler.framing_error` (log and close by default).

    Callback order::

        connection_made [record_received*] [eof_received] connection_lost
    """

    __slots__ = ("_framer",)

    _framer: RecordSource

    def data_received(self, data: bytes) -> None:
        framer = self._framer
        if framer.failed:  # already reported; the connection is closing
            return
        framer.feed(data)
        while self.connected:
            try:
                record = framer.next_record()
            except FramingError as exc:
                self.framing_error(exc)
                return
            if record is None:
                return
            self.record_received(record)

    def eof_received(self) -> bool | None:
        if self._framer.buffered:
            self.logger.debug("%s: the stream ended inside a record (%s dropped)",
                              self.describe(), counted(self._framer.buffered, "byte"))
        return super().eof_received()

    def record_received(self, record: bytes) -> None:
        """One whole record arrived. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement record_received()")


class RecordHandler(RecordStreamHandler):
    """A stream handler that receives length-prefixed records.

    Override :meth:`record_received`; send with :meth:`send_record`. Configure with the
    class attributes ``prefix_size``, ``byteorder`` and ``max_record_size``. An
    oversized record goes to :meth:`~handlers.base.StreamHandler.framing_error` (log
    and close by default).
    """

    __slots__ = ()

    _framer: RecordFramer

    prefix_size: ClassVar[int] = 4
    byteorder: ClassVar[ByteOrder] = "big"
    max_record_size: ClassVar[int] = DEFAULT_MAX_RECORD_SIZE
    # the logger keeps its name from before the move to framers/ (log settings use it)
    logger: ClassVar[logging.Logger] = logging.getLogger("handlers.records")

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        self._framer = RecordFramer(cls.prefix_size, cls.byteorder, cls.max_record_size)

    @property
    def framer(self) -> RecordFramer:
        """The connection's :class:`RecordFramer`."""
        return self._framer

    def send_record(self, payload: bytes | bytearray | memoryview) -> bool:
        """Send ``payload`` as one record; see :meth:`StreamHandler.send`.

        Raises:
            ValueError: the payload is over ``max_record_size``.
        """
        return self.send(self._framer.encode(payload))
