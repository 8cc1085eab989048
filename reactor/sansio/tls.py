"""A TLS session's lifecycle, and the record boundaries of a TLS byte stream.

Theory of operation
-------------------
The TLS layer (:mod:`reactor.io.tls`) sits between a stream transport and the
application's protocol. What it is doing is a :class:`TLSState`, moved only through
:data:`TLS_LIFECYCLE`, the one table of legal moves (an illegal one raises
:class:`~reactor.sansio.errors.IllegalTransition`)::

    HANDSHAKING --HANDSHAKE_DONE--> ESTABLISHED --CLOSE--> SHUTTING_DOWN
         |                              |                        |
         +--FAIL--> FAILED <----FAIL----+---------FAIL-----------+
                      |                 |                        |
                      +------LOST-------+-->  CLOSED  <---LOST---+
                                  (LOST from every state but CLOSED)

HANDSHAKING lasts from the connection to the end of the handshake, under a deadline.
ESTABLISHED carries the application's bytes. SHUTTING_DOWN: one side began an orderly
close (we sent close_notify, or the peer did); no more application bytes are read or
written, the connection closes once the alert is flushed. FAILED: the handshake failed,
timed out or the peer broke the protocol; the connection is being closed. CLOSED: the
connection under the session is gone.

A :class:`TLSSession` holds the state with what the handshake negotiated (protocol
version, cipher, the peer certificate's subject); the layer stores it in the row's
``meta`` under ``"tls"``, so the connection table shows it.

:class:`RecordTracker` follows the record framing of the bytes received (a 5-byte
header whose last two bytes give the body's length), so that an end of stream in the
middle of a record -- a truncated record -- is told apart from one between records.
The TLS engine cannot tell them apart (OpenSSL reports the same unexpected EOF for
both), and the tracker sees every chunk, so it does the least: no copy, two byte reads
per header.

Socket-free: no sockets, selectors, threads, ``os`` or ``ssl``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from .machine import TransitionTable

__all__ = [
    "TLS_LIFECYCLE",
    "RecordTracker",
    "TLSEvent",
    "TLSSession",
    "TLSState",
    "subject_text",
]


class TLSState(Enum):
    """Where a TLS session is in its life."""

    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    SHUTTING_DOWN = "shutting-down"
    FAILED = "failed"
    CLOSED = "closed"

    __hash__ = object.__hash__  # identity hash, as ConnState's


class TLSEvent(Enum):
    """What can happen to a TLS session."""

    HANDSHAKE_DONE = "handshake-done"
    CLOSE = "close"  # an orderly close began: ours or the peer's close_notify
    FAIL = "fail"  # handshake failure or timeout, a protocol error
    LOST = "lost"  # the connection under the session is gone

    __hash__ = object.__hash__


_S = TLSState
_E = TLSEvent

TLS_LIFECYCLE: Final[TransitionTable[TLSState, TLSEvent]] = TransitionTable(
    "tls session",
    {
        _S.HANDSHAKING: {_E.HANDSHAKE_DONE: _S.ESTABLISHED, _E.FAIL: _S.FAILED,
                         _E.LOST: _S.CLOSED},
        _S.ESTABLISHED: {_E.CLOSE: _S.SHUTTING_DOWN, _E.FAIL: _S.FAILED,
                         _E.LOST: _S.CLOSED},
        _S.SHUTTING_DOWN: {_E.FAIL: _S.FAILED, _E.LOST: _S.CLOSED},
        _S.FAILED: {_E.LOST: _S.CLOSED},
        _S.CLOSED: {},
    },
)


# the short names of RFC 4514 for the attributes getpeercert() spells out
_SHORT_NAMES: Final = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
}


def subject_text(cert: dict[str, Any] | None) -> str | None:
    """A certificate's subject (as :meth:`ssl.SSLObject.getpeercert` gives it) as one
    string, most specific name first as RFC 4514 writes it, e.g.
    ``"CN=client,O=Example"``; None without a certificate or subject."""
    if not cert:
        return None
    subject = cert.get("subject")
    if not subject:
        return None
    return ",".join(f"{_SHORT_NAMES.get(key, key)}={value}"
                    for rdn in reversed(subject) for key, value in rdn)


class TLSSession:
    """A TLS session's state and what its handshake negotiated.

    Attributes:
        state: the :class:`TLSState` (read-only; :meth:`advance` moves it).
        server_side: whether we are the server.
        version: the negotiated protocol version (e.g. ``"TLSv1.3"``), once established.
        cipher: the negotiated cipher suite's name, once established.
        peer_subject: the peer certificate's subject (mutual TLS on a server, the
            server's on a client), or None.
        reason: why the session failed, or None.
    """

    __slots__ = ("_state", "cipher", "peer_subject", "reason", "server_side", "version")

    def __init__(self, server_side: bool) -> None:
        self._state = _S.HANDSHAKING
        self.server_side = server_side
        self.version: str | None = None
        self.cipher: str | None = None
        self.peer_subject: str | None = None
        self.reason: str | None = None

    @property
    def state(self) -> TLSState:
        """The session's state (read-only: it moves through :meth:`advance`)."""
        return self._state

    def advance(self, event: TLSEvent) -> TLSState:
        """Apply ``event`` and return the new state.

        Raises:
            IllegalTransition: :data:`TLS_LIFECYCLE` forbids ``event`` in this state.
        """
        self._state = TLS_LIFECYCLE.next(self._state, event)
        return self._state

    def established(self, version: str | None, cipher: str | None,
                    peer_subject: str | None) -> None:
        """The handshake completed with these parameters (HANDSHAKE_DONE)."""
        self.advance(_E.HANDSHAKE_DONE)
        self.version, self.cipher, self.peer_subject = version, cipher, peer_subject

    def begin_close(self) -> None:
        """An orderly close began (CLOSE): close_notify is sent or received."""
        self.advance(_E.CLOSE)

    def fail(self, reason: str) -> bool:
        """The session failed for ``reason`` (FAIL); False when it had already ended
        (FAILED or CLOSED), so one failure is reported once."""
        if self.state is _S.FAILED or self.state is _S.CLOSED:
            return False
        self.advance(_E.FAIL)
        self.reason = reason
        return True

    def lost(self) -> None:
        """The connection is gone (LOST); nothing once CLOSED."""
        if self.state is not _S.CLOSED:
            self.advance(_E.LOST)

    def describe(self) -> str:
        """One line for the table and logs, e.g. ``"established TLSv1.3
        TLS_AES_256_GCM_SHA384 peer=CN=client"``."""
        parts = [self.state.value]
        if self.version:
            parts.append(self.version)
        if self.cipher:
            parts.append(self.cipher)
        if self.peer_subject:
            parts.append(f"peer={self.peer_subject}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"<TLSSession {self.describe()}>"


RECORD_HEADER: Final = 5


class RecordTracker:
    """Follows TLS record boundaries in a received byte stream.

    Feed it every chunk received; :attr:`at_boundary` tells whether the stream so far
    ends between records (``inside`` bytes of the current record are missing
    otherwise). It reads the length fields only, never the contents, and keeps at most
    four header bytes.
    """

    __slots__ = ("_header", "_left")

    def __init__(self) -> None:
        self._left = 0  # body bytes of the current record still to come
        self._header = b""  # a header's first bytes, when a chunk split it

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end exactly at the end of a record."""
        return self._left == 0 and not self._header

    @property
    def missing(self) -> int:
        """Bytes the current record still lacks (its header's, then its body's)."""
        if self._header:
            return RECORD_HEADER - len(self._header)
        return self._left

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``, the next bytes of the stream (bytes, or a byte-format
        buffer)."""
        # Called for every chunk received, so it does the least: a chunk that ends
        # inside the current record's body costs one subtraction; otherwise one pair
        # of byte reads per record header the chunk holds, nothing copied. Only a
        # header split between two chunks is kept (at most four bytes).
        size = len(data)
        left = self._left - size
        if left >= 0:  # the chunk ends inside the body (a split header has _left 0)
            self._left = left
            return
        pos = self._left  # where the next header starts in ``data``
        header = self._header
        if header:
            need = RECORD_HEADER - len(header)
            if size < need:
                self._header = header + bytes(data)
                return
            header += bytes(data[:need])
            self._header = b""
            pos = need + (header[3] << 8 | header[4])
        while pos + RECORD_HEADER <= size:
            pos += RECORD_HEADER + (data[pos + 3] << 8 | data[pos + 4])
        if pos >= size:
            self._left = pos - size
        else:
            self._header = bytes(data[pos:])
            self._left = 0
