"""TLS on reactor transports: a layer between a stream transport and a protocol.

:class:`TLSLayer` is two things at once: the :class:`asyncio.Protocol` of a raw
:class:`~reactor.io.stream.StreamTransport` (it receives ciphertext), and the
:class:`asyncio.Transport` the application's protocol is given (it takes plaintext), so
any asyncio protocol runs over TLS unchanged. The raw transport stays the connection's
row; the layer's :class:`~reactor.sansio.tls.TLSSession` is in the row's ``meta`` under
``"tls"``. Listeners and connects build it through :mod:`.tlswire`.

Theory of operation
-------------------
The TLS engine is an :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO`: bytes
received go into the incoming one, the engine's output comes out of the outgoing one
and is written to the raw transport. Nothing ever blocks: an engine call that needs more
input raises :class:`ssl.SSLWantReadError` and is tried again when bytes arrive.

*Handshake.* It starts when the raw transport connects (a client sends its hello at
once) and steps on every chunk received. A timer (``handshake_timeout``) bounds it.
The application's protocol is made and given ``connection_made`` only once the
handshake is done, as in asyncio; a client's connect resolves then. A handshake that
fails (bad bytes, a refused certificate, no common version), times out, or whose peer
goes away, closes the connection with one INFO line naming the peer and the reason;
the application's protocol is never made.

*Application data.* ``write`` encrypts at once and hands the records to the raw
transport in one write; ``data_received`` decrypts every whole record and passes the
plaintext on. Plaintext the engine cannot take yet (it waits for the peer, e.g.
mid-handshake) waits in the layer, and counts in the write buffer.

*Per chunk received*, one engine read per record: the layer stops once the incoming
buffer is empty rather than read on until the engine raises "want read" (see
``_deliver``); the record tracker reads two bytes per record header.

*Flow control.* The write buffer is the ciphertext queued in the raw transport plus
the plaintext waiting in the layer. The raw transport gets the same water marks and
tells the layer when to pause and resume; the layer tells the application.
``pause_reading`` pauses the raw transport, and records already received wait in the
incoming buffer (at most one ``recv``'s worth) until ``resume_reading``.

*Closing.* ``close()`` sends close_notify and then closes the raw transport (which
flushes what is queued first); it does not wait for the peer's close_notify (a
unidirectional shutdown, which TLS 1.3 allows). ``abort()`` drops everything at once.
The peer's close_notify, or its end of stream between two records, is
``eof_received`` for the application, then the layer closes: TLS has no half-close, so
``write_eof`` is not supported and what ``eof_received`` returns does not matter. An
end of stream in the middle of a record (a truncated record) or any protocol error
after the handshake is logged at INFO and ends the connection with the error.
``connection_lost`` reaches the application once, from the raw transport's.

*Renegotiation* is refused: the layer sets ``OP_NO_RENEGOTIATION`` on the context
where the ``ssl`` module has it (TLS 1.3 has no renegotiation at all).

Must not import the loop, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

from ..sansio.tls import RecordTracker, TLSSession, TLSState, subject_text
from .closes import note_close
from .transports import WRITES_AFTER_LOSS_WARNING, ProtocolFactory, _water_marks

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "TLSLayer", "refuse_renegotiation"]

logger = logging.getLogger("reactor.tls")

DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
_READ_SIZE: Final = 64 * 1024  # at least a record's plaintext (16 KiB): see _deliver
_WRITE_SLICE: Final = 256 * 1024
_HANDSHAKING: Final = TLSState.HANDSHAKING
_ESTABLISHED: Final = TLSState.ESTABLISHED
_EXIT_EXC: Final = (SystemExit, KeyboardInterrupt)
_BYTES_LIKE: Final = (bytes, bytearray, memoryview)

#: set on the contexts the layer uses
_NO_RENEGOTIATION: Final = getattr(ssl, "OP_NO_RENEGOTIATION", 0)


def refuse_renegotiation(context: ssl.SSLContext) -> None:
    """Make ``context`` refuse TLS 1.2 renegotiation (where OpenSSL offers it)."""
    if _NO_RENEGOTIATION and not context.options & _NO_RENEGOTIATION:
        context.options |= _NO_RENEGOTIATION


def _reason(exc: BaseException) -> str:
    """A short reason for a log line: the certificate check's message, OpenSSL's
    reason code, or the exception's text."""
    message = getattr(exc, "verify_message", None)
    if message:
        return f"certificate verify failed: {message}"
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLError) and reason:
        return str(reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


#: ``(transport, protocol)`` once a client's handshake is done
Waiter = Future  # Future[tuple[TLSLayer, asyncio.BaseProtocol]]


class TLSLayer(asyncio.Protocol, asyncio.Transport):
    """TLS between a raw stream transport (below) and an application protocol (above).

    Args:
        reactor: the reactor the raw transport runs on (for the handshake timer).
        context: the :class:`ssl.SSLContext`; its options gain ``OP_NO_RENEGOTIATION``.
        protocol_factory: makes the application's protocol once the handshake is done.
        server_side: whether this end is the server.
        server_hostname: the name a client checks the server's certificate against
            (and sends as SNI).
        handshake_timeout: seconds the handshake may take.
        waiter: a client's future, resolved with ``(layer, protocol)`` once the
            handshake is done, or failed with the reason.
    """

    def __init__(
        self,
        reactor: Reactor,
        context: ssl.SSLContext,
        protocol_factory: ProtocolFactory,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        waiter: Waiter[Any] | None = None,
    ) -> None:
        super().__init__()
        refuse_renegotiation(context)
        self._reactor = reactor
        self._context = context
        self._factory = protocol_factory
        self._timeout = handshake_timeout
        self._waiter = waiter
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing,
                                        server_side=server_side,
                                        server_hostname=server_hostname)
        self.session = TLSSession(server_side)
        self._records = RecordTracker()
        self._feed = self._records.feed
        self._raw: Any = None
        self._app: Any = None  # the application's protocol, once the handshake is done
        self._timer: Any = None
        self._pending: list[bytes] = []  # plaintext the engine could not take yet
        self._pending_size = 0
        self._high, self._low = _water_marks(None, None)
        self._raw_paused = False  # the raw transport asked us to pause writing
        self._app_paused = False  # we asked the application to pause writing
        self._read_paused = False
        self._closing = False  # close() or abort() was called, or the peer ended
        self._writes_after_loss = 0
        self._error: BaseException | None = None  # why the session failed

    # -- what the layer shows -----------------------------------------------------------

    @property
    def state(self) -> TLSState:
        """The session's :class:`TLSState`."""
        return self.session.state

    @property
    def raw_transport(self) -> Any:
        """The stream transport under the layer (the connection's row)."""
        return self._raw

    def _describe(self) -> str:
        raw = self._raw
        if raw is None:
            return "tls (not connected)"
        describe = getattr(raw, "describe", None)  # a row says kind, peer and state
        return str(describe() if describe is not None else raw.get_extra_info("peername"))

    # -- the raw transport's protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The raw connection is up: start the handshake and its deadline."""
        raw: Any = transport
        self._raw = raw
        set_meta = getattr(raw, "set_meta", None)  # a row; any asyncio transport will do
        if set_meta is not None:
            set_meta("tls", self.session)
        high, low = raw.get_write_buffer_limits()[::-1]
        self._high, self._low = high, low
        self._timer = self._reactor.call_later(self._timeout, self._handshake_timed_out)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        state = self.session.state
        if state is _ESTABLISHED:
            self._feed(data)
            self._incoming.write(data)
            self._deliver()
        elif state is _HANDSHAKING:
            self._feed(data)
            self._incoming.write(data)
            self._handshake()
        # SHUTTING_DOWN, FAILED: nothing more is read, nor kept

    def eof_received(self) -> bool:
        """The peer ended its stream: an error during the handshake or mid-record,
        else the end of the application's input (TLS has no half-close)."""
        state = self.session.state
        if state is _HANDSHAKING:
            self._fail("the peer closed the connection during the handshake",
                       ConnectionResetError("the peer closed the connection during "
                                            "the TLS handshake"), abort=False)
            return False
        if state is not _ESTABLISHED:
            return False
        if not self._records.at_boundary:
            reason = (f"truncated record: the stream ended {self._records.missing} "
                      f"bytes short of the record's end")
            self._fail(reason, ssl.SSLEOFError(reason), abort=False)
            return False
        self._deliver()  # whole records still in the incoming buffer
        if self.session.state is _ESTABLISHED:
            logger.debug("%s: the peer closed the connection without close_notify",
                         self._describe())
            self._peer_ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The raw connection is gone: tell the application (if it was made), once."""
        self._cancel_timer()
        session = self.session
        if session.state is _HANDSHAKING:
            reason = (f"the connection was lost during the handshake"
                      f"{f': {exc}' if exc is not None else ''}")
            error = exc or ConnectionAbortedError(reason)
            if self._closing:  # we closed it (a server's graceful stop): no complaint
                session.fail("closed during the handshake")
                self._fail_waiter(error)
            else:
                self._fail(reason, error, abort=False)
        # a client whose connection_made raised: its connect fails, never hangs
        self._fail_waiter(exc or ConnectionAbortedError("the TLS connection was lost"))
        session.lost()
        self._closing = True
        self._pending.clear()
        self._pending_size = 0
        app, self._app = self._app, None
        if app is not None:
            # a session that failed ends the connection with its error
            app.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        """The raw transport's queue went over the high-water mark."""
        self._raw_paused = True
        self._update_app_pause()

    def resume_writing(self) -> None:
        """The raw transport's queue drained to the low-water mark."""
        self._raw_paused = False
        self._update_app_pause()

    # -- the handshake ------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError, ValueError) as exc:
            self._flush()  # the alert, if the engine made one
            self._fail(f"handshake failed: {_reason(exc)}", exc, abort=False)
            return
        self._cancel_timer()
        self._flush()
        sslobj = self._sslobj
        cipher = sslobj.cipher()
        self.session.established(sslobj.version(), cipher[0] if cipher else None,
                                 subject_text(sslobj.getpeercert()))
        logger.debug("%s: TLS %s", self._describe(), self.session.describe())
        try:
            app = self._factory()
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            logger.error("%s: the protocol factory raised; closing", self._describe(),
                         exc_info=exc)
            self._fail_waiter(exc)
            self._raw.abort()
            return
        self._app = app
        app.connection_made(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self, app))
        if self._pending:
            self._encrypt_pending()
        else:
            self._update_app_pause()  # the raw queue may be paused already
        if self.session.state is _ESTABLISHED:
            self._deliver()  # application data that came with the handshake's end

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.session.state is _HANDSHAKING:
            reason = f"handshake timed out after {self._timeout:g} s"
            self._fail(reason, TimeoutError(f"TLS {reason}"), abort=True)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _fail(self, reason: str, exc: BaseException, *, abort: bool) -> None:
        """The session failed: one INFO line, then close (or abort) the connection."""
        if not self.session.fail(reason):
            return
        self._error = exc
        self._cancel_timer()
        self._closing = True
        logger.info("%s: TLS %s; closed", self._describe(), reason)
        self._fail_waiter(exc)
        raw = self._raw
        if raw is None:
            return
        note_close(raw, exc)  # the row's close is counted by this reason
        if abort:
            raw.abort()
        else:
            raw.close()

    def _fail_waiter(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- reading --------------------------------------------------------------------------

    def _deliver(self) -> None:
        """Decrypt every whole record received and pass the plaintext on, unless
        reading is paused (or the application closed the connection meanwhile)."""
        sslobj, incoming, session = self._sslobj, self._incoming, self.session
        while not self._read_paused and session.state is _ESTABLISHED:
            try:
                data = sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._peer_ended()
                break
            except (ssl.SSLError, ValueError) as exc:
                self._fail(f"protocol error: {_reason(exc)}", exc, abort=True)
                break
            if not data:  # the ssl module's way of saying: close_notify received
                self._peer_ended()
                break
            app = self._app
            if app is None or self._closing:
                break
            app.data_received(data)
            # The engine decrypts one record per read and takes no byte past it, and
            # a read of _READ_SIZE uses the record up. So with the incoming buffer
            # empty another read could only raise "want read", an exception that
            # costs more than a small record's decryption: stop here.
            if not incoming.pending:
                break
        if self._outgoing.pending:  # e.g. a TLS 1.3 key update's answer
            self._flush()
        if self._pending and session.state is _ESTABLISHED:  # the engine may take it now
            self._encrypt_pending()

    def _peer_ended(self) -> None:
        """The peer's close_notify (or end of stream between records): the end of
        the application's input; then the layer closes."""
        app = self._app
        if app is not None and not self._closing:
            keep_open = app.eof_received()
            if keep_open:
                logger.debug("%s: eof_received() returned true: TLS has no half-close; "
                             "closing", self._describe())
            note_close(self._raw, None)  # counted as the client's close
        self.close()

    # -- asyncio.WriteTransport -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and queue it on the raw transport.

        Raises:
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}")
        if self._closing or self.session.state is not _ESTABLISHED:
            self._writes_after_loss += 1
            if self._writes_after_loss == WRITES_AFTER_LOSS_WARNING:
                logger.warning("%s: writes after the TLS connection closed are dropped",
                               self._describe())
            return
        if not data:
            return
        if self._pending:
            self._queue_plaintext(bytes(data))
            return
        self._encrypt(data)

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        # up to a slice (the usual case), one engine write and one raw write; more in
        # slices, each handed on at once: a large write never holds its whole
        # ciphertext in the engine's buffer besides the raw transport's queue
        sslobj, raw = self._sslobj, self._raw
        view: Any = data
        try:
            if len(data) <= _WRITE_SLICE:
                if not raw.is_closing():  # a send may have failed and ended it
                    sslobj.write(data)
                    raw.write(self._outgoing.read())
                return
            view = memoryview(data).cast("B")
            while view and not raw.is_closing():
                done = sslobj.write(view[:_WRITE_SLICE])
                view = view[done:]
                self._flush()
        except ssl.SSLWantReadError:
            self._queue_plaintext(bytes(view))
        except (ssl.SSLError, ValueError) as exc:
            self._fail(f"protocol error while writing: {_reason(exc)}", exc, abort=True)

    def _queue_plaintext(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self._update_app_pause()

    def _encrypt_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_size = 0
        for data in pending:
            if self._pending:  # the engine stalled again: keep the order
                self._queue_plaintext(data)
            else:
                self._encrypt(data)
        self._update_app_pause()

    def _flush(self) -> None:
        """Hand what the engine produced to the raw transport."""
        outgoing = self._outgoing
        if outgoing.pending and self._raw is not None:
            self._raw.write(outgoing.read())

    def writelines(self, list_of_data: Any) -> None:
        """Write every item of an iterable of bytes-like objects, in order."""
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """Not supported: TLS has no half-close (as asyncio's SSL transport)."""
        raise NotImplementedError("TLS does not support half-closes (write_eof)")

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        """Ciphertext queued in the raw transport plus plaintext waiting here."""
        raw = self._raw
        queued = raw.get_write_buffer_size() if raw is not None else 0
        return queued + self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks (defaults: 64 KiB high, a quarter of it low) here and on
        the raw transport."""
        self._high, self._low = _water_marks(high, low)
        if self._raw is not None:
            self._raw.set_write_buffer_limits(self._high, self._low)
        self._update_app_pause()

    def _update_app_pause(self) -> None:
        """Pause the application while the raw queue is paused or the waiting
        plaintext is over the high mark; resume it when neither holds (nothing to do
        before the application's protocol exists: it is checked once it does)."""
        app = self._app
        if app is None:
            return
        if self._app_paused:
            if self._raw_paused or self._pending_size > self._low:
                return
            self._app_paused = False
            app.resume_writing()
        elif self._raw_paused or self._pending_size > self._high:
            self._app_paused = True
            app.pause_writing()

    # -- asyncio.ReadTransport ------------------------------------------------------------

    def pause_reading(self) -> None:
        """No more ``data_received`` until :meth:`resume_reading`."""
        if self._read_paused:
            return
        self._read_paused = True
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading; records already received are delivered from the loop."""
        if not self._read_paused:
            return
        self._read_paused = False
        if self._raw is not None:
            self._raw.resume_reading()
        self._reactor.call_soon(self._deliver_if_open)

    def _deliver_if_open(self) -> None:
        if self.session.state is _ESTABLISHED and not self._closing:
            self._deliver()

    def is_reading(self) -> bool:
        return not self._read_paused and not self.is_closing()

    # -- closing ------------------------------------------------------------------------

    def is_closing(self) -> bool:
        raw = self._raw
        return self._closing or (raw is not None and raw.is_closing())

    def close(self) -> None:
        """Send close_notify after what is queued, then close the connection;
        ``connection_lost(None)`` follows once."""
        if self._closing:
            return
        self._closing = True
        self._cancel_timer()
        session = self.session
        if session.state is _ESTABLISHED:
            if self._pending:
                # the engine never took it: it cannot be sent in order before the alert
                logger.debug("%s: %d bytes of plaintext never encrypted, dropped",
                             self._describe(), self._pending_size)
                self._pending.clear()
                self._pending_size = 0
            session.begin_close()
            try:
                self._sslobj.unwrap()
            except ssl.SSLWantReadError:
                pass  # close_notify is written; the peer's is not awaited
            except (ssl.SSLError, ValueError) as exc:
                logger.debug("%s: close_notify not sent: %s", self._describe(), exc)
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        """Close at once, without close_notify, dropping what is queued;
        ``connection_lost(None)`` follows once."""
        self._closing = True
        self._cancel_timer()
        if self._raw is not None:
            self._raw.abort()

    # -- the rest -------------------------------------------------------------------------

    def begin_shutdown(self) -> Any:
        """The application protocol's ``begin_shutdown`` hook, if it has one (a graceful
        server asks the row's protocol, which is this layer)."""
        hook = getattr(self._app, "begin_shutdown", None)
        return hook() if callable(hook) else None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol

    def get_protocol(self) -> Any:
        return self._app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As asyncio's SSL transport: ``ssl_object``, ``peercert``, ``cipher``,
        ``compression``, ``sslcontext``; also ``tls`` (the :class:`TLSSession`);
        anything else from the raw transport (``peername``, ``sockname``, ``socket``,
        ``connection``: the row)."""
        established = self.session.version is not None  # the handshake completed
        if name == "ssl_object":
            return self._sslobj
        if name == "sslcontext":
            return self._context
        if name == "tls":
            return self.session
        if name == "peercert":
            return self._sslobj.getpeercert() if established else default
        if name == "cipher":
            return self._sslobj.cipher() if established else default
        if name == "compression":
            return self._sslobj.compression() if established else default
        raw = self._raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def __repr__(self) -> str:
        return f"<TLSLayer {self._describe()} {self.session.describe()}>"

