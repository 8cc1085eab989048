"""Outgoing connections: ``connect_tcp`` and ``connect_unix``.

A :class:`_Connector` drives one non-blocking connect: it tries the resolved addresses
in turn, registered for writing until the socket connects (or fails, or its timeout
passes), then hands the socket to a :class:`~reactor.io.stream.StreamTransport` and
resolves the future with ``(transport, protocol)``. A selector that refuses the socket
fails the future with the error.

Uses the reactor through its public names (``selector``, ``call_later``). Must not
import the facades or the command line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from concurrent.futures import Future
from ssl import SSLContext
from typing import TYPE_CHECKING, Any

from ..sansio.connection import ConnState
from .stream import StreamTransport
from .tlsendpoints import connect as tls_connect
from .transports import EVENT_READ, ProtocolFactory, TransportOptions, options_from
from .validate import address_text, check_path, check_port, check_timeout

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["connect_tcp", "connect_unix"]

_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)

logger = logging.getLogger("reactor.listeners")  # the name it had in listeners.py


class _Connector(asyncio.BaseProtocol):
    """Drives one non-blocking connect; registered for writing until it completes."""

    def __init__(
        self,
        reactor: Reactor,
        candidates: list[tuple[Any, Any]],
        protocol_factory: ProtocolFactory,
        timeout: float | None,
        options: TransportOptions,
    ) -> None:
        self.reactor = reactor
        self.candidates = candidates
        self.protocol_factory = protocol_factory
        self.options = options
        self.future: Future[tuple[StreamTransport, Any]] = Future()
        self.future.set_running_or_notify_cancel()
        self.errors: list[OSError] = []
        self.sock: socket.socket | None = None
        self.transport: StreamTransport | None = None
        self.timer = (reactor.call_later(timeout, self._timed_out, timeout)
                      if timeout is not None else None)
        self._next()

    def describe(self) -> str:
        return f"connect {self.candidates!r}"

    def _next(self) -> None:
        while self.candidates:
            family, address = self.candidates.pop(0)
            try:
                # non-blocking from socket() itself: no ioctl(FIONBIO) after it
                sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
            except OSError as exc:  # out of descriptors, say: fail the future, not hang
                self.errors.append(exc)
                continue
            if not _SOCK_NONBLOCK:
                sock.setblocking(False)
            try:
                err = sock.connect_ex(address)
            except OSError as exc:  # e.g. an AF_UNIX path too long: fail the future
                sock.close()
                self.errors.append(exc)
                continue
            if err in (0, errno.EINPROGRESS):
                try:
                    self.reactor.selector.register(sock, 2, self)
                except OSError as exc:  # epoll's ENOSPC or ENOMEM: fail, never hang
                    sock.close()
                    logger.error("connect to %r: the selector refused the socket: %s", address,
                                 exc)
                    self.errors.append(OSError(
                        exc.errno, f"connect to {address!r}: cannot register the socket "
                                   f"with the selector: {exc.strerror}"))
                    continue
                self.sock = sock
                # flags 0: a socket of the reactor's own, held nowhere else
                self.transport = StreamTransport(self.reactor, sock, address,
                                                 ConnState.CONNECTING, None, self.options, 0)
                # until a protocol is attached the connector stands in for it, so an
                # abort of the row (the reactor closing, say) ends the connect
                self.transport.set_protocol(self)
                return
            sock.close()
            self.errors.append(OSError(err, f"connect to {address!r}: {os.strerror(err)}"))
        self._fail(self.errors[-1] if self.errors else OSError("no address to connect to"))

    def connection_lost(self, exc: BaseException | None) -> None:
        """The row was aborted before the connect completed: unregister, fail."""
        if self.sock is not None:
            try:
                self.reactor.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock = self.transport = None
        self._fail(exc if exc is not None else ConnectionAbortedError(
            errno.ECONNABORTED, "the connect was aborted before it completed"))

    def _read_ready(self) -> None:
        pass

    def _write_ready(self) -> None:
        sock, transport = self.sock, self.transport
        assert sock is not None and transport is not None
        selector = self.reactor.selector
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            selector.unregister(sock)
            where = address_text(transport.peername)
            self.errors.append(OSError(err, f"connect to {where}: {os.strerror(err)}"))
            transport.release()
            self.sock = self.transport = None
            self._next()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.sock = self.transport = None
        if self.options.nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            protocol = self.protocol_factory()
        except BaseException as exc:
            selector.unregister(sock)
            transport.release()
            self.future.set_exception(exc)
            return
        # hand the registration to the transport, for reading: one epoll_ctl(MOD)
        # rather than a DEL and an ADD; attach() then finds it registered
        try:
            selector.modify(sock, EVENT_READ, transport)
        except OSError as exc:
            # a failed modify leaves the socket unregistered (selectors forget the key)
            logger.error("%s: the selector refused the connection: %s; closed",
                         transport.describe(), exc)
            transport.release()
            where = address_text(transport.peername)
            self._fail(OSError(exc.errno, f"connect to {where}: cannot register the socket "
                                          f"with the selector: {exc.strerror}"))
            return
        transport.take_registration(EVENT_READ)
        transport.attach(protocol)
        if not self.future.done():
            self.future.set_result((transport, protocol))

    def _timed_out(self, timeout: float) -> None:
        if self.future.done():
            return
        if self.sock is not None and self.transport is not None:
            self.reactor.selector.unregister(self.sock)
            self.transport.release()
        self._fail(TimeoutError(f"connect timed out after {timeout} s"))

    def _fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.future.done():
            self.future.set_exception(exc)


def connect_tcp(
    reactor: Reactor,
    host: str,
    port: int,
    protocol_factory: ProtocolFactory,
    *,
    timeout: float | None = None,
    options: TransportOptions | None = None,
    ssl: SSLContext | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    **option_overrides: Any,
) -> Future[tuple[Any, asyncio.BaseProtocol]]:
    """Connect to ``host:port`` without blocking the reactor.

    Name resolution uses :func:`socket.getaddrinfo` (numeric addresses never block).
    Every resolved address is tried in order.

    Args:
        ssl: speak TLS with this client context; the future resolves once the
            handshake is done, the transport is then a :class:`~reactor.io.tls.TLSLayer`.
        server_hostname: the name the server's certificate is checked against
            (default: ``host``).
        ssl_handshake_timeout: seconds the handshake may take (default 10).

    Returns:
        A future resolved on the reactor thread with ``(transport, protocol)``, or with
        the connect error (the last address's), the TLS handshake's, or
        :class:`TimeoutError`.

    Raises:
        ValueError, TypeError: a port out of range or a timeout that is not positive
            (checked at the call, before anything is resolved).
    """
    opts = options_from(options, option_overrides)
    check_port(port)
    check_timeout(timeout)
    if ssl is not None or ssl_handshake_timeout is not None:
        return tls_connect(reactor, lambda factory: connect_tcp(
            reactor, host, port, factory, timeout=timeout, options=opts),
            protocol_factory, ssl, server_hostname=server_hostname or host,
            timeout=ssl_handshake_timeout)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        failed: Future[tuple[StreamTransport, Any]] = Future()
        failed.set_exception(exc)
        return failed
    candidates: list[tuple[Any, Any]] = [(info[0], info[4]) for info in infos]
    return _Connector(reactor, candidates, protocol_factory, timeout, opts).future


def connect_unix(
    reactor: Reactor,
    path: str,
    protocol_factory: ProtocolFactory,
    *,
    timeout: float | None = None,
    options: TransportOptions | None = None,
    ssl: SSLContext | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    **option_overrides: Any,
) -> Future[tuple[Any, asyncio.BaseProtocol]]:
    """Connect to the Unix stream socket at ``path`` without blocking the reactor
    (``ssl``, ``server_hostname`` and ``ssl_handshake_timeout`` as for
    :func:`connect_tcp`, but no default server name).

    Raises:
        ValueError, TypeError: an empty path or a timeout that is not positive.
    """
    opts = options_from(options, option_overrides)
    check_path(path)
    check_timeout(timeout)
    if ssl is not None or ssl_handshake_timeout is not None:
        return tls_connect(reactor, lambda factory: connect_unix(
            reactor, path, factory, timeout=timeout, options=opts),
            protocol_factory, ssl, server_hostname=server_hostname,
            timeout=ssl_handshake_timeout)
    return _Connector(reactor, [(socket.AF_UNIX, path)], protocol_factory, timeout,
                      opts).future
