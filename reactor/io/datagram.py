"""The datagram transport: a UDP or Unix datagram endpoint as a row of the connection
table, speaking :class:`asyncio.DatagramTransport` (see :class:`DatagramTransport`).

Only this module and :mod:`.stream` call ``recv``/``send`` on a connection's socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ROW_SLOTS, ConnState, Row
from ..sansio.words import counted
from .transports import (
    _ATTACH,
    _CLOSE,
    _CLOSED,
    _CLOSING,
    _EXIT_EXC,
    _F_CONNECTED,
    _FLUSHED,
    _GONE,
    _OPEN,
    _SHUT,
    DEFAULT_OPTIONS,
    EVENT_READ,
    EVENT_WRITE,
    SelectorRegistration,
    TransportOptions,
    _registration_hint,
)
from .validate import address_text

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["DatagramTransport"]

logger = logging.getLogger("reactor.transports")

_BYTES_LIKE: Final = (bytes, bytearray, memoryview)


class DatagramTransport(Row, SelectorRegistration, asyncio.DatagramTransport):
    """A UDP or Unix datagram endpoint, speaking :class:`asyncio.DatagramTransport`.

    A datagram larger than ``max_datagram_size`` is not delivered cut short: it is
    dropped, logged, and reported to ``error_received`` as an ``EMSGSIZE`` error. A
    send the kernel refuses (``EMSGSIZE`` for a datagram over 65 507 bytes on IPv4, an
    ICMP error on a connected socket ...) goes to ``error_received`` too; the endpoint
    stays open. Nothing is delivered after :meth:`close` or :meth:`abort`, not even the
    rest of the batch being read when the protocol closed it.

    Attributes:
        dropped: datagrams dropped (too large to receive, or a full Unix receiver).
        discarded: bytes of queued datagrams dropped unsent by an abort or forced close.
    """

    __slots__ = (
        *ROW_SLOTS,
        "_buffer",
        "_buffer_size",
        "_cleanup",
        "_flags",
        "_mask",
        "_opts",
        "_protocol",
        "_reactor",
        "_discarded",
        "_sock",
        "dropped",
    )
    _reactor: Reactor

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        *,
        options: TransportOptions = DEFAULT_OPTIONS,
        connected: bool = False,
    ) -> None:
        peer = None
        if connected:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
        self._init_row(ConnState.ACCEPTED, peer, reactor.now)
        self._extra = None  # asyncio's slot; get_extra_info is ours
        self._reactor = reactor
        self._sock: socket.socket | None = sock
        self._opts = options
        self._protocol: Any = None
        self._buffer: deque[tuple[bytes, Any]] = deque()
        self._buffer_size = 0
        self._mask = 0
        self._flags = _F_CONNECTED if connected else 0  # the flags' scheme: transports.py
        self._cleanup: Callable[[], None] | None = None
        self.dropped = 0
        self._discarded = 0
        reactor.connections.add(self)

    @property
    def kind(self) -> str:
        sock = self._sock
        if sock is None:
            return "dgram"
        return "unixdg" if sock.family == getattr(socket, "AF_UNIX", None) else "udp"

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
        return self._buffer_size

    @property
    def discarded(self) -> int:
        """Bytes of queued datagrams dropped unsent by an abort or a forced close."""
        return self._discarded

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Register the socket for reading, then call the protocol's ``connection_made``.

        Raises:
            OSError: the selector refused the socket (epoll's ENOSPC or ENOMEM). The
                socket is then closed and the row removed from the table, and the
                protocol was never called (no ``connection_made``, so no
                ``connection_lost``).
        """
        sock = self._sock
        if sock is not None and not self._mask and self.state not in _SHUT:
            try:
                self._reactor.selector.register(sock, EVENT_READ, self)
            except OSError as exc:
                where = self.sockname
                logger.error("%s %s: the selector refused the endpoint: %s%s; closed",
                             self.kind, address_text(where), exc, _registration_hint(exc))
                self._sock = None
                sock.close()
                self.lose()
                self._reactor.connections.remove(self)
                raise OSError(exc.errno, f"cannot register the {self.kind} endpoint {where!r} "
                                         f"with the selector: {exc.strerror}") from exc
            self._mask = EVENT_READ
        self._protocol = protocol
        self.advance(_ATTACH)
        try:
            protocol.connection_made(self)
        except _EXIT_EXC:
            raise
        except BaseException as exc:
            logger.error("%s: connection_made raised", self.describe(), exc_info=exc)
            self._force_close(exc)

    def _registration_failed(self, exc: OSError) -> None:
        logger.error("%s: the selector refused the endpoint: %s%s; closing it",
                     self.describe(), exc, _registration_hint(exc))
        self._force_close(exc)

    def _read_ready(self) -> None:
        sock = self._sock
        if sock is None or self.state is not _OPEN:  # closing: deliver nothing more
            return
        limit = self._opts.max_datagram_size
        for _ in range(64):  # a bounded batch per wake-up
            try:
                data, _anc, flags, addr = sock.recvmsg(limit)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._report_error(exc)
                if self.state is not _OPEN:  # closed from error_received
                    return
                continue
            self.last_activity = self._reactor.now
            if flags & socket.MSG_TRUNC:
                self.dropped += 1
                peer = address_text(addr)
                logger.warning("%s: datagram from %s larger than %d bytes dropped",
                               self.describe(), peer, limit)
                self._report_error(OSError(
                    errno.EMSGSIZE,
                    f"datagram from {peer} larger than max_datagram_size={limit}; dropped",
                ))
                if self.state is not _OPEN:
                    return
                continue
            self.bytes_in += len(data)
            try:
                self._protocol.datagram_received(data, addr)
            except _EXIT_EXC:
                raise
            except BaseException as exc:
                logger.error("%s: datagram_received raised", self.describe(), exc_info=exc)
            if self.state is not _OPEN:
                return

    def _report_error(self, exc: OSError) -> None:
        try:
            self._protocol.error_received(exc)
        except _EXIT_EXC:
            raise
        except BaseException as cb_exc:
            logger.error("%s: error_received raised", self.describe(), exc_info=cb_exc)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Send one datagram (queued if the kernel buffer is full; to an unconnected Unix
        peer whose queue is full, dropped and reported to ``error_received``)."""
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._sock is None or self.state in _GONE:  # lost: dropped
            return
        if not self._buffer:
            try:
                if addr is None or self._flags & _F_CONNECTED:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                if addr is not None and not self._flags & _F_CONNECTED and (
                    self._sock.family == getattr(socket, "AF_UNIX", None)
                ):
                    # that receiver's queue is full, yet this socket stays writable:
                    # queuing would make the selector report it ready in a busy loop
                    self.dropped += 1
                    self._report_error(BlockingIOError(
                        errno.EAGAIN,
                        f"datagram to {address_text(addr)} dropped: its queue is full"))
                    return
            except OSError as exc:
                self._report_error(exc)
                return
            else:
                self.bytes_out += len(data)
                self.last_activity = self._reactor.now
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        self._set_mask(self._mask | EVENT_WRITE)

    def _write_ready(self) -> None:
        sock = self._sock
        while self._buffer and sock is not None:
            data, addr = self._buffer[0]
            try:
                if addr is None or self._flags & _F_CONNECTED:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._report_error(exc)
            else:
                self.bytes_out += len(data)
            self._buffer.popleft()
            self._buffer_size -= len(data)
        self._set_mask(self._mask & ~EVENT_WRITE)
        if self.state is _CLOSING:
            self._end()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peername if self.peername is not None else default
        if name == "sockname":
            return self.sockname if self._sock is not None else default
        if name == "socket":
            return self._sock if self._sock is not None else default
        if name == "connection":
            return self
        return default

    def after_close(self, cleanup: Callable[[], None]) -> None:
        """Call ``cleanup`` once, after the socket is closed and the row gone (the
        listener removes the Unix path it bound this way)."""
        self._cleanup = cleanup

    def is_closing(self) -> bool:
        """Whether the endpoint is closing or closed (states CLOSING, ENDING, CLOSED)."""
        return self.state in _SHUT

    def close(self) -> None:
        """Send the queued datagrams, then close. ``connection_lost(None)`` follows."""
        if self.state in _SHUT:
            return
        self.advance(_CLOSE)
        if self._buffer:
            self._set_mask(EVENT_WRITE)
        else:
            self._end()

    def _end(self) -> None:
        """The orderly close sent all it had: schedule the teardown."""
        self.advance(_FLUSHED)  # to ENDING
        self._set_mask(0)
        self._reactor.call_soon(self._finish, None)

    def abort(self) -> None:
        """Close at once, dropping queued datagrams. ``connection_lost(None)`` follows."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self.state in _GONE:
            return
        self.on_abort()  # to ENDING
        if self._buffer:
            size = self._buffer_size
            self._discarded += size
            self._reactor.connections.note_discarded(size)
            logger.debug("%s: %s (%s) discarded, never sent (%s)", self.describe(),
                         counted(len(self._buffer), "queued datagram"), counted(size, "byte"),
                         "aborted" if exc is None else f"{type(exc).__name__}: {exc}")
            self._buffer.clear()
            self._buffer_size = 0
        self._set_mask(0)
        self._reactor.call_soon(self._finish, exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.state is _CLOSED:
            return
        self.lose()
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
            if sock is not None:
                sock.close()
            self._reactor.connections.remove(self)
            cleanup, self._cleanup = self._cleanup, None
            if cleanup is not None:
                cleanup()
