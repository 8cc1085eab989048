"""The stream transport: with :mod:`.datagram`, the only code that calls ``recv`` and
``send`` on a connection's socket.

A transport is a row of the connection table (a :class:`~reactor.sansio.connection.Row`)
speaking :class:`asyncio.Transport` to an :class:`asyncio.Protocol`, so any asyncio
protocol runs on it unchanged. The protocol's callbacks arrive in asyncio's order::

    connection_made [data_received*] [eof_received] connection_lost

Theory of operation
-------------------
*Reading.* The transport is registered for reading while it wants data; each readiness
event is one ``recv`` handed straight to ``data_received``. ``pause_reading`` drops the
read interest from the selector; nothing is read or buffered while paused. An
:class:`asyncio.BufferedProtocol` is read into its own buffer: the mix-in
:class:`~.buffered.BufferedReads`.

*Writing.* ``write`` tries ``send`` at once. Only what the kernel did not take is
queued (one ``bytearray``), and only then is write interest registered; it is dropped
again when the queue drains. The queue's size is checked against high and low water
marks, calling the protocol's ``pause_writing``/``resume_writing``.

*Closing.* There is one teardown path, :meth:`StreamTransport._finish`, guarded by the
lifecycle state, so ``connection_lost`` runs exactly once, also when callbacks raise or
close the transport from inside a callback. ``close`` (state CLOSING) flushes the queue,
then ends (FLUSHED, state ENDING); ``abort`` drops the queue and ends at once (ABORT).
The state is the only record of how far a close got: ``is_closing()``, the refusal of
writes and the end of reading are read from it. ``connection_lost`` is never called
from inside another protocol callback: a close that starts in a callback finishes in a
later one (ENDING lasts until then). Bytes an abort (or a close forced by an error, a
reset or a deadline) drops from the queue are never dropped silently: they are logged
at debug level with the peer's address, kept in the dying transport
(:attr:`StreamTransport.discarded`, in its on-demand auxiliary state, so an idle
connection pays nothing for it) and totalled in the table's ``statistics().discarded``.
The close is counted by reason as the row leaves the table (:mod:`.closes`).

*Registration.* A descriptor the reactor made and never handed out is closed without
an ``epoll_ctl(DEL)`` (:meth:`~.transports.SelectorRegistration._unwatch`). The
selector may refuse a socket (epoll's ENOSPC when ``fs.epoll.max_user_watches`` is
reached, or ENOMEM). :meth:`StreamTransport.attach` registers the socket *before*
calling ``connection_made``: when that fails, the connection is closed and leaves the
table at once, with an error logged, and the protocol is never called (asyncio's rule:
no ``connection_lost`` without ``connection_made``). A registration that fails later
(write interest for a queue, ``resume_reading``) closes the connection with the error,
and ``connection_lost(exc)`` follows once, as for any other fatal socket error.

*Deadlines.* One timer per connection, armed only when needed, closes it when a
deadline passes; reading and writing never touch the timer heap. That part, and the
on-demand side state it lives in, is the mix-in :class:`~.deadlines.StreamDeadlines`.

*Handing over.* A facade that runs a connection in a blocking handler detaches the
socket from the reactor and later releases the row; that part, with the peek for unread
input that draining callers use, is the mix-in :class:`~.handover.SocketHandover`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ConnState, Row
from .buffered import BufferedReads
from .closes import CloseCounting
from .compactrow import COMPACT_ROW_SLOTS, CompactRow, ListenerOptions, bound_options, listener_of
from .deadlines import StreamDeadlines, _Aux
from .handover import SocketHandover
from .tallies import count as _tally
from .transports import (
    _CLOSED,
    _CLOSING,
    _EOF,
    _EXIT_EXC,
    _F_EOF,
    _F_LOSS_WRITE_MAX,
    _F_LOSS_WRITE_ONE,
    _F_LOSS_WRITE_SHIFT,
    _F_PEER_EOF,
    _F_READ_PAUSED,
    _F_SHARED,
    _F_WRITE_PAUSED,
    _GONE,
    _MARK_SHIFT,
    _OPEN,
    _READ_CLOSED,
    _SHUT,
    _WRITE_CLOSED,
    _WRITE_EOF,
    DEFAULT_OPTIONS,
    EVENT_READ,
    EVENT_WRITE,
    WRITES_AFTER_LOSS_WARNING,
    SelectorRegistration,
    TransportOptions,
    _registration_hint,
    _water_marks,
)

if TYPE_CHECKING:
    from .listeners import Listener
    from .loop import Reactor

__all__ = ["StreamTransport"]

logger = logging.getLogger("reactor.transports")

_BUFFERED_PROTOCOL: Final = asyncio.BufferedProtocol


class StreamTransport(
    CompactRow, Row, SelectorRegistration, StreamDeadlines, SocketHandover, BufferedReads,
    CloseCounting, asyncio.Transport,
):
    """A TCP or Unix stream connection: a table row and an :class:`asyncio.Transport`.

    Made by listeners and connectors; users get it in ``connection_made``.
    """

    __slots__ = (
        *COMPACT_ROW_SLOTS,
        "_aux",
        "_buffer",
        "_flags",
        "_mask",
        "_opts",
        "_protocol",
        "_reactor",
        "_sock",
    )
    _reactor: Reactor

    def __init__(  # noqa: PLR0917 -- see below
        self,
        reactor: Reactor,
        sock: Any,
        peername: Any,
        state: ConnState = ConnState.ACCEPTED,
        listener: Listener | None = None,
        options: TransportOptions = DEFAULT_OPTIONS,
        flags: int = _F_SHARED,
    ) -> None:
        # state, listener and options may be passed by position: making an object with
        # keyword arguments builds a dict for them, a cost on every accepted connection.
        # flags: _F_SHARED (the default) for a socket that may be held elsewhere too,
        # 0 for one the reactor made itself (see the module's Descriptors)
        self._init_row(state, peername, reactor.now)  # meta: asyncio's _extra slot
        self._reactor = reactor
        self._sock: Any = sock
        bound = getattr(options, "listener", None) is listener  # given as bound_options made it
        self._opts = options if bound else bound_options(listener, options)
        self._protocol: Any = None
        self._buffer: bytearray | None = None
        self._mask = 0
        self._flags = flags
        self._aux: _Aux | None = None
        if flags or sock is None:
            reactor.connections.add(self)
        else:  # a descriptor the reactor alone holds: the table's row at its number
            reactor.connections.add(self, sock.fileno())

    # -- the row ----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        sock = self._sock
        if sock is None:
            return "stream"
        return "unix" if sock.family == getattr(socket, "AF_UNIX", None) else "tcp"

    @property
    def sockname(self) -> Any:
        if self._sock is None:
            return None
        try:
            return self._sock.getsockname()
        except OSError:
            return None

    @property
    def write_buffer_size(self) -> int:
        return len(self._buffer) if self._buffer else 0

    @property
    def discarded(self) -> int:
        """Queued bytes dropped, never sent, by an abort or a forced close."""
        return self._aux.discarded if self._aux is not None else 0

    @property
    def protocol(self) -> Any:
        return self._protocol

    @property
    def listener(self) -> Listener | None:
        """The listener that accepted this connection (None for outgoing ones)."""
        return listener_of(self._opts)  # type: ignore[no-any-return]

    @property
    def reactor(self) -> Reactor:
        return self._reactor

    # -- attaching a protocol ---------------------------------------------------------

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Attach ``protocol``: register the socket for reading, call ``connection_made``.

        The socket is registered first. If the selector refuses it (epoll's ENOSPC or
        ENOMEM), the reason is logged, the socket closed and the row removed from the
        table at once (its listener's slot freed), and the protocol is never called:
        no ``connection_made``, hence no ``connection_lost``, as in asyncio. The row's
        ``state`` is then :attr:`ConnState.CLOSED`.
        """
        flags = self._flags  # 0 for most: no bitwise test
        if (not self._mask and not (flags and flags & _F_READ_PAUSED) and self.state not in _SHUT
                and self._sock is not None):
            try:
                self._apply_mask(EVENT_READ)
            except OSError as exc:
                logger.error("%s: the selector refused the connection: %s%s; closed",
                             self.describe(), exc, _registration_hint(exc))
                self.note_close_cause(exc)
                self.release()
                return
        self._protocol = protocol  # a plain protocol on a plain transport: no switch
        if (self._plain_class is not None or isinstance(protocol, _BUFFERED_PROTOCOL)
                or hasattr(protocol, "urgent_data_received")):
            self._use_protocol(protocol)
        self.on_attach()
        if self._opts.has_deadlines:
            self._arm_deadline()
        try:
            protocol.connection_made(self)
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            self._callback_failed(exc, "connection_made")
            return
        if not self._mask & EVENT_READ and self.is_reading():  # registered: no call
            self._set_mask(self._mask | EVENT_READ)

    def start_reading(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver incoming bytes to ``protocol`` without attaching it.

        No ``connection_made`` and no lifecycle move: this is for a facade reading a
        request in state BUFFERING before it hands the socket to a blocking handler
        (:meth:`detach_socket` stops the reading). ``data_received``, ``eof_received``
        (a false result closes the connection) and ``connection_lost`` are called as
        for an attached protocol.
        """
        self._use_protocol(protocol)
        if self.is_reading():
            self._set_mask(self._mask | EVENT_READ)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._use_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._protocol

    # -- the selector -----------------------------------------------------------------

    def _registration_failed(self, exc: OSError) -> None:
        logger.error("%s: the selector refused the connection: %s%s; closing it",
                     self.describe(), exc, _registration_hint(exc))
        self._force_close(exc)

    def _read_ready(self) -> None:
        # the reactor calls this only while the registration includes reading (it
        # checks the selector's current key), so there is no stale-event test here
        try:
            data = self._sock.recv(self._opts.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._connection_error(exc)
            return
        if data:
            self.bytes_in += len(data)
            self.last_activity = self._reactor.now
            try:
                self._protocol.data_received(data)
            except _EXIT_EXC:
                raise
            except BaseException as exc:
                self._callback_failed(exc, "data_received")
        else:
            self._read_eof()

    def _read_eof(self) -> None:
        state = self.state
        if state in _SHUT:
            self._set_mask(self._mask & ~EVENT_READ)
            return
        # the read interest goes after eof_received: a close there ends the
        # registration with the connection (often without an epoll_ctl at all)
        half_closed = state is _WRITE_CLOSED
        self._flags |= _F_PEER_EOF  # for the close's reason (see .closes)
        if not half_closed:
            self.on_eof()
        try:
            keep_open = self._protocol.eof_received()
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            self._callback_failed(exc, "eof_received")
            return
        if half_closed:
            # the EOF that ends a half-closed connection moves it on once
            # eof_received returns: until then nobody closed it (is_closing() is
            # false, as in asyncio), and a close from inside the callback wins
            if self.state is _WRITE_CLOSED:
                self.advance(_EOF)  # to CLOSING
                self._flush_then_end()
        elif not keep_open:
            self.close()
        mask = self._mask  # 0 once a close here ended the registration: no bitwise test
        if mask and mask & EVENT_READ:  # kept open, or closing with output to flush
            self._set_mask(mask & ~EVENT_READ)

    def _write_ready(self) -> None:
        buffer = self._buffer
        if not buffer:
            self._set_mask(self._mask & ~EVENT_WRITE)
            return
        try:
            sent = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._connection_error(exc)
            return
        if sent:
            self.bytes_out += sent
            self.last_activity = now = self._reactor.now
            if self._aux is not None:
                self._aux.write_progress = now
            del buffer[:sent]
        if self._flags & _F_WRITE_PAUSED and len(buffer) <= self._get_aux().low:
            self._resume_protocol()
        if not buffer:
            self._set_mask(self._mask & ~EVENT_WRITE)
            self._flushed()

    def _flushed(self) -> None:
        """The queue drained: send a pending EOF, finish a pending close."""
        flags = self._flags
        if flags & _F_EOF and self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._connection_error(exc)
                return
        if self.state is _CLOSING:
            self._end()

    def _flush_then_end(self) -> None:
        """An orderly close began (state CLOSING): end once the queue is sent."""
        if self._buffer:
            self._set_mask(EVENT_WRITE)
        else:
            self._end()

    def _end(self) -> None:
        """The orderly close sent all it had: schedule the teardown."""
        self.on_flushed()  # to ENDING
        self._unwatch()
        # close() or write_eof() may have been called from inside a protocol
        # callback: connection_lost must not run inside it
        self._reactor.call_soon(self._finish, None)

    # -- asyncio.WriteTransport -------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending; it is sent at once when nothing is queued.

        Raises:
            TypeError: ``data`` is not bytes-like.
            RuntimeError: :meth:`write_eof` was called.
        """
        if self.state is not _OPEN and self._write_refused():  # OPEN: the hot path
            return
        # No isinstance() here: send() refuses what is not bytes-like, and so does the
        # memoryview() every queued write goes through (bytearray.extend alone would
        # take a list of ints).
        buffer = self._buffer
        if not buffer:
            if not data:
                return
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._connection_error(exc)
                return
            if sent:
                self.bytes_out += sent
                self.last_activity = self._reactor.now
                if sent == len(data):
                    return
            data = memoryview(data).cast("B")[sent:]  # also sizes any buffer in bytes
            if not data:
                return
            if buffer is None:
                buffer = self._buffer = bytearray()
            buffer.extend(data)
            if self._aux is not None:
                self._aux.write_progress = self._reactor.now
                if self._opts.write_timeout:
                    # after the extend: the queue is what brings in the write deadline,
                    # which may come before a timer already armed for another one
                    self._arm_deadline()
            self._set_mask(self._mask | EVENT_WRITE)
        else:
            buffer.extend(memoryview(data))
        if not self._flags & _F_WRITE_PAUSED and len(buffer) > self._get_aux().high:
            self._pause_protocol()

    def _write_refused(self) -> bool:
        """Whether a write in a state other than OPEN is refused: dropped once the
        connection is lost (with one warning after a few), an error after
        :meth:`write_eof`.

        Raises:
            RuntimeError: :meth:`write_eof` was called and the connection is not lost.
        """
        flags = self._flags
        if self.state not in _GONE:
            if flags & _F_EOF:
                raise RuntimeError("cannot write() after write_eof()")
            return False
        count = (flags >> _F_LOSS_WRITE_SHIFT) & _F_LOSS_WRITE_MAX
        if count < _F_LOSS_WRITE_MAX:
            self._flags = flags + _F_LOSS_WRITE_ONE
        if count + 1 == WRITES_AFTER_LOSS_WARNING:
            logger.warning("%s: writes after the connection was lost are dropped",
                           self.describe())
        return True

    def writelines(self, list_of_data: Any) -> None:
        """Write every item of an iterable of bytes-like objects, in order."""
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """Close the write side after the queued data (a half-close)."""
        if self._flags & _F_EOF or self.state in _SHUT:
            return
        self._flags |= _F_EOF
        self.advance(_WRITE_EOF)  # to WRITE_CLOSED, or CLOSING after the peer's EOF
        if not self._buffer:
            self._flushed()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._buffer) if self._buffer else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        if self._aux is None:
            high, low = _water_marks(self._opts.high_water, self._opts.low_water)
            return (low, high)
        return (self._aux.low, self._aux.high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks (defaults: 64 KiB high, a quarter of it low)."""
        aux = self._get_aux()
        aux.high, aux.low = _water_marks(high, low)
        size = self.get_write_buffer_size()
        if not self._flags & _F_WRITE_PAUSED and size > aux.high:
            self._pause_protocol()
        elif self._flags & _F_WRITE_PAUSED and size <= aux.low:
            self._resume_protocol()

    def _pause_protocol(self) -> None:
        self._flags |= _F_WRITE_PAUSED
        try:
            self._protocol.pause_writing()
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            logger.error("%s: pause_writing raised", self.describe(), exc_info=exc)

    def _resume_protocol(self) -> None:
        self._flags &= ~_F_WRITE_PAUSED
        if self._protocol is None:
            return
        try:
            self._protocol.resume_writing()
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            logger.error("%s: resume_writing raised", self.describe(), exc_info=exc)

    # -- asyncio.ReadTransport --------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading: no ``data_received`` until :meth:`resume_reading`."""
        if not self.is_reading():
            return
        self._flags |= _F_READ_PAUSED
        self._set_mask(self._mask & ~EVENT_READ)

    def resume_reading(self) -> None:
        flags = self._flags
        if not flags & _F_READ_PAUSED or self.state in _SHUT:
            return
        self._flags = flags & ~_F_READ_PAUSED
        if self.state is not _READ_CLOSED and self._protocol is not None:
            self._set_mask(self._mask | EVENT_READ)

    def is_reading(self) -> bool:
        return not self._flags & _F_READ_PAUSED and self.state not in _SHUT

    # -- closing ----------------------------------------------------------------------

    def is_closing(self) -> bool:
        """Whether the transport is closing or closed (states CLOSING, ENDING, CLOSED)."""
        return self.state in _SHUT

    def close(self) -> None:
        """Send what is queued, then close. ``connection_lost(None)`` follows once."""
        if self.state in _SHUT:
            return
        self.on_close()
        self._flush_then_end()

    def abort(self) -> None:
        """Close at once, dropping queued data. ``connection_lost(None)`` follows once."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self.state in _GONE:
            return
        self.on_abort()  # to ENDING
        if exc is not None:
            self.note_close_cause(exc)  # counted by its reason now (see .closes)
        buffer = self._buffer
        if buffer:
            self._discard(len(buffer), exc)
            buffer.clear()
        self._unwatch()
        self._reactor.call_soon(self._finish, exc)

    def _callback_failed(self, exc: BaseException, where: str) -> None:
        logger.error("%s: %s raised; closing the connection", self.describe(), where, exc_info=exc)
        _tally(self._reactor, "errors", "protocol")  # the metrics' errors_total{kind}
        self._force_close(exc)

    def _finish(self, exc: BaseException | None) -> None:
        """The one teardown path: runs ``connection_lost`` exactly once, frees the socket."""
        if self.state is _CLOSED:
            return
        if self._mask:  # _end and _force_close unwatched already
            self._unwatch()
        self.lose()
        if self._aux is not None:  # where a deadline timer can be
            self._cancel_deadline()
        protocol, self._protocol = self._protocol, None
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        except _EXIT_EXC:
            raise
        except BaseException as cb_exc:
            logger.error("%s: connection_lost raised", self.describe(), exc_info=cb_exc)
        finally:
            sock, self._sock = self._sock, None
            fd = -1
            if sock is not None:
                fd = sock.fileno()  # where the table may hold the row
                sock.close()
            self._buffer = None
            # counted by reason as it leaves (see .closes): the mark is in _flags
            self._reactor.connections.leave(self, self._flags >> _MARK_SHIFT, fd)
            if type(self._opts) is ListenerOptions:  # where the listener is (.compactrow)
                self._opts.listener.release_slot()

    # -- extra info -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``socket``, ``connection`` (the row), or ``default``."""
        if name == "peername":
            return self.peername if self.peername is not None else default
        if name == "sockname":
            value = self.sockname
            return value if value is not None else default
        if name == "socket":
            sock = self._sock
            if sock is None:
                return default
            self._share()  # the caller may dup() or close it now
            return sock
        if name == "connection":
            return self
        if self.meta is not None and name in self.meta:
            return self.meta[name]
        return default
