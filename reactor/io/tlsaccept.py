"""The TLS handshake of a connection a facade accepted, run in the reactor without
blocking, before a blocking handler gets the connection as an :class:`ssl.SSLSocket`.

Theory of operation
-------------------
A blocking handler (``socketserver``'s ``StreamRequestHandler``, ``http.server``) wants
an :class:`ssl.SSLSocket`: ``makefile``, ``getpeercert``, ``sendall`` on a socket. The
reactor's own TLS layer (:mod:`.tls`) is an :class:`ssl.SSLObject` over memory buffers,
and a session made there cannot be moved into an ``SSLSocket`` afterwards. So here the
handshake runs on the very ``SSLSocket`` the handler will get: wrapped with
``do_handshake_on_connect=False`` and non-blocking, its ``do_handshake()`` is called
each time the reactor reports the descriptor ready, and asks, through
:class:`ssl.SSLWantReadError` or :class:`ssl.SSLWantWriteError`, what to wait for next.

:class:`TLSRequestRow` is that connection's row (a
:class:`~reactor.io.stream.StreamTransport`): while the handshake runs its readiness
goes to the handshake (:class:`ServerHandshake`, also the row's protocol, so any end of
the row reaches it once), under one timer from the reactor's heap. The row stays
ACCEPTED (no hook has seen it) and its ``meta["tls"]`` is a
:class:`~reactor.sansio.tls.TLSSession`: handshaking, then established with the
version, cipher and client certificate's subject, or failed with the reason. A failed,
stalled (past the deadline) or abandoned handshake is one INFO line on ``reactor.tls``
naming the peer and the reason, then the connection is closed.

After the handshake, the row's reads (a facade's request buffering) are the stream
transport's own, of decrypted bytes: the socket is a :class:`ReactorTLSReads`, whose
non-blocking ``recv`` and ``send`` report "no whole record yet" (or "the engine must
write first") with exceptions that are both the ``ssl`` module's
:class:`~ssl.SSLWantReadError` (or ``...WriteError``) and :class:`BlockingIOError`,
which the transport takes as "try again at the next readiness". A read returns at most
one record's plaintext (16 KiB), less than the transport asks for, so no decrypted
bytes wait inside the engine where the selector cannot see them.

With the PROXY protocol the header comes first, in clear: :class:`ExactHeaderSocket`
reads it without taking a byte past its end, so the ClientHello that follows stays in
the kernel for the ``SSLSocket``.

Must not import the loop, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.tls import TLSSession, subject_text
from .stream import StreamTransport
from .tls import _reason
from .transports import EVENT_READ, EVENT_WRITE

if TYPE_CHECKING:
    from ..sansio.timers import TimerHandle

__all__ = ["ExactHeaderSocket", "ReactorTLSReads", "ServerHandshake", "TLSRequestRow",
           "WouldBlockRead", "WouldBlockWrite", "proxy_header_bytes"]

logger = logging.getLogger("reactor.tls")

_V2_FIXED: Final = 16  # a PROXY v2 header's signature, version, family and length



def proxy_header_bytes(head: bytes, taken: int, peeked: bytes) -> int:
    """How many of the ``peeked`` bytes may be read without going past the PROXY
    header: ``head`` is the first (at most 16) bytes read so far, ``taken`` how many
    were read. Bytes that cannot be a header's are all taken: the parser refuses them.
    """
    known = (head + peeked[:_V2_FIXED])[:_V2_FIXED]
    if known[:1] == b"\r":  # v2: 16 bytes, then the length they give
        if len(known) < _V2_FIXED:
            return len(peeked)
        total = _V2_FIXED + int.from_bytes(known[14:16], "big")
        return max(1, min(len(peeked), total - taken))
    end = peeked.find(b"\n")  # v1: one line
    return end + 1 if end >= 0 else len(peeked)


class ExactHeaderSocket(socket.socket):
    """A non-blocking accepted connection whose ``recv`` never returns a byte past the
    PROXY header (it peeks, then reads what belongs to the header): what follows is
    TLS, for the ``SSLSocket`` made over the same descriptor."""

    __slots__ = ("_head", "_taken")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setblocking(False)
        self._head = b""
        self._taken = 0

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        peeked = super().recv(bufsize, flags | socket.MSG_PEEK)
        if not peeked:
            return peeked
        data = super().recv(proxy_header_bytes(self._head, self._taken, peeked), flags)
        if len(self._head) < _V2_FIXED:
            self._head += data[:_V2_FIXED - len(self._head)]
        self._taken += len(data)
        return data


class WouldBlockRead(ssl.SSLWantReadError, BlockingIOError):
    """A non-blocking TLS read or write needs more bytes from the peer first: an
    :class:`ssl.SSLWantReadError` that is also a :class:`BlockingIOError`."""


class WouldBlockWrite(ssl.SSLWantWriteError, BlockingIOError):
    """A non-blocking TLS read or write must send first: an
    :class:`ssl.SSLWantWriteError` that is also a :class:`BlockingIOError`."""


_WANT: Final = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _again(exc: ssl.SSLError) -> ssl.SSLError:
    """The same "try again", as an exception that is a BlockingIOError too."""
    kind = WouldBlockRead if isinstance(exc, ssl.SSLWantReadError) else WouldBlockWrite
    return kind(*exc.args)


class ReactorTLSReads(ssl.SSLSocket):
    """An ``SSLSocket`` that a stream transport can read and write while it is
    non-blocking: "try again" comes as :class:`WouldBlockRead` or
    :class:`WouldBlockWrite`, still what a program that catches the ``ssl`` module's
    exceptions expects. Blocking, nothing changes (those are never raised then)."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except _WANT as exc:
            raise _again(exc) from None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except _WANT as exc:
            raise _again(exc) from None

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except _WANT as exc:
            raise _again(exc) from None


#: makes the server-side socket over an accepted one (handshake not done)
WrapSocket = Callable[[socket.socket], ReactorTLSReads]


class ServerHandshake:
    """One accepted connection's server-side handshake, driven by readiness.

    The row's protocol while it runs (only ``connection_lost`` is ever called on it).
    ``on_done(row)`` runs once the handshake completed (the row is unregistered, its
    socket still non-blocking); ``on_end(failed)`` once if it did not: ``failed`` is
    true when the handshake failed or timed out (it was logged), false when the
    connection was closed under it (a server closing).
    """

    __slots__ = ("ended", "on_done", "on_end", "row", "session", "timeout", "timer")

    def __init__(self, row: TLSRequestRow, timeout: float,
                 on_done: Callable[[TLSRequestRow], None],
                 on_end: Callable[[bool], None]) -> None:
        self.row = row
        self.timeout = timeout
        self.on_done = on_done
        self.on_end = on_end
        self.session = TLSSession(server_side=True)
        self.timer: TimerHandle | None = None
        self.ended = False

    def step(self) -> None:
        """Take the handshake as far as the bytes at hand allow."""
        row = self.row
        sock = row._sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            row._set_mask(EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            row._set_mask(EVENT_WRITE)
            return
        except (OSError, ValueError) as exc:  # SSLError, a reset, a socket gone
            self.fail(f"handshake failed: {_reason(exc)}")
            return
        self.cancel()
        cipher = sock.cipher()
        self.session.established(sock.version(), cipher[0] if cipher else None,
                                 subject_text(sock.getpeercert()))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: TLS %s", row.describe(), self.session.describe())
        self.ended = True
        row._handshake = None
        row._set_mask(0)
        row._use_protocol(None)
        self.on_done(row)

    def expired(self) -> None:
        self.timer = None
        self.fail(f"handshake timed out after {self.timeout:g} s", timed_out=True)

    def fail(self, reason: str, timed_out: bool = False) -> None:
        """One INFO line naming the peer and the reason, then close the connection
        (counted as a ``timeout`` or an ``error``: :mod:`.closes`)."""
        if self.session.fail(reason):
            logger.info("%s: TLS %s; closed", self.row.describe(), reason)
        self.cancel()
        self.row.note_close_cause(TimeoutError(reason) if timed_out else OSError(reason))
        self.row.abort()

    def cancel(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cancel()
        self.session.lost()
        if not self.ended:
            self.ended = True
            self.on_end(self.session.reason is not None)


class TLSRequestRow(StreamTransport):
    """The row of a facade's TLS connection: its handshake runs in the reactor
    (:meth:`start_tls`), then its reads are decrypted reads."""

    __slots__ = ("_handshake",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._handshake: ServerHandshake | None = None

    @property
    def session(self) -> TLSSession | None:
        """The TLS session (None before :meth:`start_tls`)."""
        meta = self.meta
        return meta.get("tls") if meta is not None else None

    def start_tls(self, wrap: WrapSocket, timeout: float,
                  on_done: Callable[[TLSRequestRow], None],
                  on_end: Callable[[bool], None]) -> None:
        """Wrap the connection's socket with ``wrap`` and run the handshake in the
        reactor, within ``timeout`` seconds (see :class:`ServerHandshake`)."""
        handshake = ServerHandshake(self, timeout, on_done, on_end)
        self.set_meta("tls", handshake.session)
        self._handshake = handshake
        self._set_mask(0)  # the descriptor gets a new socket object: registered anew
        self._use_protocol(handshake)
        try:
            sock = wrap(self._sock)
            sock.setblocking(False)
        except (OSError, ValueError) as exc:
            handshake.fail(f"handshake failed: {_reason(exc)}")
            return
        self._sock = sock
        handshake.timer = self._reactor.call_later(timeout, handshake.expired)
        handshake.step()

    def _read_ready(self) -> None:
        handshake = self._handshake
        if handshake is not None:
            handshake.step()
        else:  # a PROXY header in clear, or decrypted reads (a ReactorTLSReads)
            super()._read_ready()

    def _write_ready(self) -> None:
        handshake = self._handshake
        if handshake is not None:
            handshake.step()
        else:
            super()._write_ready()

    def release(self, close_socket: bool = True) -> None:
        """End the row; one still in its handshake closes its socket too (nobody else
        holds it)."""
        handshake = self._handshake
        if handshake is not None:
            self._handshake = None
            handshake.ended = True  # closed under it: no callback
            handshake.cancel()
            close_socket = True
        super().release(close_socket)
        self._session_lost()

    def _finish(self, exc: BaseException | None) -> None:
        super()._finish(exc)
        self._session_lost()

    def _session_lost(self) -> None:
        session = self.session
        if session is not None:
            session.lost()
