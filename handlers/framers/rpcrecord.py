"""ONC RPC record marking over TCP (RFC 5531, section 11): framer, encoder, handler.

On a stream, ONC RPC sends each message as a *record* made of one or more
*fragments*. Each fragment starts with a 4-byte big-endian header: the top bit is set
on the record's last fragment, the low 31 bits give the fragment's length. A record is
the concatenation of its fragments' payloads.

:class:`RecordMarkingFramer` reassembles records (socket-free state machine, ``feed``
bytes, pull records with ``next_record``), refusing any record whose fragments add up
to more than ``max_record_size`` as soon as a fragment header says so, before its
payload is buffered. :func:`encode_record` builds the wire form. :class:`RPCRecordHandler`
is the :class:`~handlers.base.StreamHandler` that speaks it.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Final

from handlers.base import FramingError

from .records import RecordStreamHandler

__all__ = [
    "DEFAULT_MAX_RPC_RECORD_SIZE",
    "LAST_FRAGMENT",
    "MAX_FRAGMENT_SIZE",
    "RPCRecordHandler",
    "RPCRecordTooLarge",
    "RecordMarkingFramer",
    "encode_record",
]

LAST_FRAGMENT: Final = 0x8000_0000
"""The last-fragment bit of a fragment header."""
MAX_FRAGMENT_SIZE: Final = 0x7FFF_FFFF
"""The largest fragment length a header can express (31 bits)."""
DEFAULT_MAX_RPC_RECORD_SIZE: Final = 1024 * 1024
_HEADER: Final = 4

# Theory of operation
# -------------------
# The framer alternates between reading a fragment header and reading that fragment's
# payload; ``_need`` is None in the first state and the payload length in the second:
#
#   HEADER --4 bytes; total so far + length <= max--> PAYLOAD (need = length)
#   PAYLOAD --payload buffered--> appended to ``_record``;
#       last bit set: the record is returned and ``_record`` emptied; back to HEADER
#   HEADER --total so far + length > max--> FAILED (every later call raises again)
#
# The maximum applies to the whole record (all fragments), and it is checked when a
# header is read, so a peer cannot make the framer buffer more than ``max_record_size``
# plus one piece of input. Empty fragments are legal, including an empty last fragment
# (which may end an empty record). Splitting the input differently never changes the
# records nor where an error happens.


class RPCRecordTooLarge(FramingError):
    """A record's fragments add up to more than the maximum record size.

    Attributes:
        size: the size the record would reach with the offending fragment.
        limit: the maximum.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"RPC record too large: fragments add up to at least {size} "
                         f"bytes (max_record_size={limit})")
        self.size = size
        self.limit = limit


def encode_record(
    payload: bytes | bytearray | memoryview, max_fragment_size: int = MAX_FRAGMENT_SIZE
) -> bytes:
    """Return ``payload`` as one record: fragments of at most ``max_fragment_size``.

    An empty payload becomes a single empty last fragment.

    Raises:
        ValueError: ``max_fragment_size`` is not between 1 and 2**31 - 1.
    """
    if not 1 <= max_fragment_size <= MAX_FRAGMENT_SIZE:
        raise ValueError(f"max_fragment_size must be in 1..{MAX_FRAGMENT_SIZE}, "
                         f"not {max_fragment_size!r}")
    view = memoryview(payload).cast("B")
    parts: list[bytes] = []
    start = 0
    total = len(view)
    while True:
        end = min(start + max_fragment_size, total)
        header = end - start
        if end == total:
            header |= LAST_FRAGMENT
        parts.append(header.to_bytes(_HEADER, "big"))
        parts.append(bytes(view[start:end]))
        if end == total:
            return b"".join(parts)
        start = end


class RecordMarkingFramer:
    """Reassemble RFC 5531 records from a byte stream.

    Args:
        max_record_size: the largest record (sum of its fragments) accepted.

    Raises:
        ValueError: a negative maximum.
    """

    __slots__ = ("_buf", "_error", "_last", "_need", "_record", "fragments", "max_record_size")

    def __init__(self, max_record_size: int = DEFAULT_MAX_RPC_RECORD_SIZE) -> None:
        if max_record_size < 0:
            raise ValueError(f"max_record_size must not be negative, not {max_record_size!r}")
        self.max_record_size: Final = max_record_size
        self._buf = bytearray()
        self._record = bytearray()
        self._need: int | None = None
        self._last = False
        self._error: RPCRecordTooLarge | None = None
        self.fragments = 0
        """Fragments read so far in the record being assembled."""

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus the record assembled so far."""
        return len(self._buf) + len(self._record)

    @property
    def failed(self) -> bool:
        """True once the framer raised its error (it raises it again from then on)."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream.

        Raises:
            RPCRecordTooLarge: the framer failed earlier.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_record(self) -> bytes | None:
        """Return the next whole record, or None when more input is needed.

        Raises:
            RPCRecordTooLarge: the record being assembled is over the maximum (raised
                again on every later call: the stream cannot be resynchronised).
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        while True:
            need = self._need
            if need is None:
                if len(buf) < _HEADER:
                    return None
                header = int.from_bytes(buf[:_HEADER], "big")
                need = header & MAX_FRAGMENT_SIZE
                if len(self._record) + need > self.max_record_size:
                    self._error = RPCRecordTooLarge(len(self._record) + need,
                                                    self.max_record_size)
                    buf.clear()
                    self._record.clear()
                    raise self._error
                del buf[:_HEADER]
                self._need = need
                self._last = bool(header & LAST_FRAGMENT)
            if len(buf) < need:
                return None
            self._record += buf[:need]
            del buf[:need]
            self._need = None
            self.fragments += 1
            if self._last:
                record = bytes(self._record)
                self._record.clear()
                self.fragments = 0
                return record


class RPCRecordHandler(RecordStreamHandler):
    """A stream handler that receives ONC RPC records (RFC 5531 record marking).

    Override :meth:`record_received`; reply with :meth:`send_record`. Configure with
    the class attributes ``max_record_size`` and ``max_fragment_size`` (for sending).
    A record over the maximum goes to
    :meth:`~handlers.base.StreamHandler.framing_error` (log and close by default).

    Callback order::

        connection_made [record_received*] [eof_received] connection_lost
    """

    __slots__ = ()

    _framer: RecordMarkingFramer

    max_record_size: ClassVar[int] = DEFAULT_MAX_RPC_RECORD_SIZE
    max_fragment_size: ClassVar[int] = MAX_FRAGMENT_SIZE
    # the logger keeps its name from before the move to framers/ (log settings use it)
    logger: ClassVar[logging.Logger] = logging.getLogger("handlers.rpcrecord")

    def __init__(self) -> None:
        super().__init__()
        self._framer = RecordMarkingFramer(type(self).max_record_size)

    @property
    def framer(self) -> RecordMarkingFramer:
        """The connection's :class:`RecordMarkingFramer`."""
        return self._framer

    def send_record(self, payload: bytes | bytearray | memoryview) -> bool:
        """Send ``payload`` as one record; see :meth:`StreamHandler.send`."""
        return self.send(encode_record(payload, type(self).max_fragment_size))
