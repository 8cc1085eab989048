"""Where a facade's requests come from: a listening socket, or a datagram socket.

* :class:`StreamEngine` -- a stream server's engine: a reactor
  :class:`~reactor.io.listeners.Listener` accepts (batched accepts, a pause instead of a
  busy loop when ``accept`` runs out of descriptors) and each connection becomes a
  :class:`~reactor.io.stream.StreamTransport` row before ``get_request`` sees it;
* :class:`OwnAcceptListener` -- the listener of a server whose ``get_request`` is
  overridden, which accepts for itself, as in the standard library: the listener only
  reports that the listening socket is readable and leaves that socket's blocking mode
  or timeout as the program set it;
* :class:`DatagramEngine` -- a datagram server's engine: the socket is registered for
  reading and each datagram is one request (a
  :class:`~reactor.facades.requests.DatagramRequest` row), taken in batches.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..io.listeners import Listener
from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..io.tlsaccept import ExactHeaderSocket
from ..sansio.connection import ConnState
from ..sansio.proxy_policy import ProxyPolicy
from .engine import RequestEngine
from .pipeline import EVENT_READ
from .proxied import proxy_policy, read_header_first
from .requests import BufferedRequestSocket, ReadyReader
from .tls import TLSSettings, accept_tls, tls_settings
from .urgent import UrgentRequestSocket, wants_urgent

if TYPE_CHECKING:
    from .servers import TCPServer, UDPServer

__all__ = ["DatagramEngine", "OwnAcceptListener", "StreamEngine"]

DATAGRAM_BATCH: Final = 32
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_ACCEPTED: Final = ConnState.ACCEPTED


def _blocking_socket(family: int, type_: int, proto: int, fd: int) -> socket.socket:
    """An accepted connection for a blocking handler, where ``accept`` may pass the
    listening socket's O_NONBLOCK on (the BSDs): blocking unless a default timeout is set,
    as the standard library's ``socket.accept`` leaves it."""
    sock = socket.socket(family, type_, proto, fd)
    if socket.getdefaulttimeout() is None:
        sock.setblocking(True)
    return sock


def _nonblocking_socket(family: int, type_: int, proto: int, fd: int) -> socket.socket:
    """An accepted connection for a handler running in the reactor (multiplexing)."""
    sock = socket.socket(family, type_, proto, fd)
    sock.setblocking(False)
    return sock


# Linux's accept4() never passes the listening socket's O_NONBLOCK on, so a plain
# socket.socket over the accepted descriptor is already what a blocking handler needs:
# no setblocking() system call per connection
_HANDLER_SOCKET: Final = socket.socket if sys.platform.startswith("linux") else _blocking_socket


def _no_accept(listener: Listener, raw: Any, addr: Any) -> None:  # pragma: no cover
    raise AssertionError("an OwnAcceptListener never accepts")


class OwnAcceptListener(Listener):
    """The listener of a server whose ``get_request`` is overridden.

    It only says that the listening socket is readable: the server's ``get_request``
    (the program's override, or ours through ``super()``) then accepts, one connection
    per wake-up, as the standard library's loop does. The listening socket keeps the
    blocking mode or timeout the program gave it, so the override's ``accept()``
    behaves as it does on the standard library. The rest is a listener's: the rows
    count against ``max_connections`` (the socket is unregistered at the cap) and
    ``close``.
    """

    def __init__(self, engine: StreamEngine, reactor: Reactor, sock: socket.socket,
                 max_connections: int | None) -> None:
        self.engine = engine
        timeout = sock.gettimeout()
        super().__init__(reactor, sock, _no_accept, max_connections=max_connections,
                         accept_batch=1)
        sock.settimeout(timeout)  # Listener made it non-blocking: as the program set it

    def _read_ready(self) -> None:
        if self._registered:
            self.engine.take_own(self)


class StreamEngine(RequestEngine):
    """The engine of a stream server (``TCPServer``, ``UnixStreamServer``)."""

    __slots__ = ("proxy", "tls", "tls_failed")
    server: TCPServer

    def __init__(self, server: TCPServer, reactor: Reactor | None) -> None:
        super().__init__(server, reactor)
        self.proxy: ProxyPolicy | None = None
        self.tls: TLSSettings | None = None  # the server's TLS (reactor.facades.tls)
        self.tls_failed = 0  # handshakes that failed or timed out

    def register(self, reactor: Reactor) -> None:
        """Serve the listening socket with a listener."""
        server = self.server
        self.socket_timeout = server.socket.gettimeout()
        self.proxy = proxy_policy(server)  # the PROXY protocol (reactor.facades.proxied)
        self.tls = tls_settings(server, self.work)
        # overridden in a subclass or on the instance (not through vars(server): making
        # the instance's __dict__ real would slow every attribute access after it)
        from .servers import TCPServer

        if getattr(server.get_request, "__func__", None) is not TCPServer.get_request:
            # the override accepts (also through super().get_request(), which then finds
            # nothing staged and calls accept itself)
            if self.proxy is not None or self.tls is not None:
                what = "proxy_protocol" if self.tls is None else "ssl_context"
                raise TypeError(f"{type(server).__name__}: {what} needs the server's own "
                                "get_request (it is overridden)")
            self.own_accept = True
            self.listener = OwnAcceptListener(self, reactor, server.socket,
                                              server.max_connections)
            return
        if self.tls is not None:
            # non-blocking for the handshake, stopping at the end of a PROXY header
            factory: Callable[[int, int, int, int], Any] = (
                ExactHeaderSocket if self.proxy is not None else _nonblocking_socket)
        elif self.work.nonblocking:
            factory = _nonblocking_socket
        elif wants_urgent(server.RequestHandlerClass):
            factory = UrgentRequestSocket  # handle_urgent, from the handler's reads
        elif server.request_buffer is not None or self.proxy is not None:
            factory = BufferedRequestSocket  # replays the bytes the reactor read first
        else:
            factory = _HANDLER_SOCKET
        self.listener = Listener(reactor, server.socket, self.accept,
                                 max_connections=server.max_connections,
                                 accept_batch=self.work.accept_batch,
                                 connection_factory=factory)

    def accept(self, listener: Listener, raw: Any, addr: Any) -> None:
        """The listener accepted a connection: make its row and run the hooks."""
        if self.ended:  # rows workers ended since the last sweep
            self.release_ended()
        if self.tls is not None:  # the handshake first, in the reactor
            accept_tls(self, self.tls, listener, raw, addr)
            return
        server = self.server
        # The listener made ``sock`` as the server wants it (see register): a blocking
        # socket.socket for a blocking handler (the row is never registered with the
        # selector: this is all StreamTransport.detach_socket would do), a non-blocking
        # one for a multiplexed handler, a BufferedRequestSocket when requests are
        # buffered first.
        sock = raw
        if (server.request_buffer is not None or self.proxy is not None) and not isinstance(
                sock, BufferedRequestSocket) and not self.work.nonblocking:
            # request_buffer was set after the listener began
            sock = BufferedRequestSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        row = StreamTransport(listener.reactor, sock, addr, _ACCEPTED, listener)
        self.staged = (sock, addr)
        try:
            request, client_address = server.get_request()
        except Exception as exc:
            self.staged = None
            row.release()
            self.get_request_raised(exc, addr)
            return
        self.staged = None  # an override of get_request may not have taken it
        if self.proxy is not None:
            read_header_first(self, self.proxy, request, client_address, row)
            return
        self.serve_request(request, client_address, row)

    def get_request_raised(self, exc: Exception, addr: Any) -> None:
        """``get_request`` raised for a connection the listener accepted."""
        if isinstance(exc, OSError):  # a TLS handshake that failed, say: silent
            self.get_request_failed(exc, addr)
            self.done()
        else:  # raised from serve_forever / handle_request, as in the standard library
            self.defer(exc)

    def take_staged(self, sock: Any, addr: Any, row: StreamTransport) -> None:
        """A connection made ready in the reactor (its TLS handshake done):
        ``get_request`` returns it, then the hooks run."""
        self.staged = (sock, addr)
        try:
            request, client_address = self.server.get_request()
        except Exception as exc:
            self.staged = None
            row.release()
            self.get_request_raised(exc, addr)
            return
        self.staged = None
        self.serve_request(request, client_address, row)

    def take_own(self, listener: OwnAcceptListener) -> None:
        """The listening socket is readable and ``get_request`` is overridden: let it
        accept, then make the request's row and run the hooks."""
        if self.ended:  # rows workers ended since the last sweep
            self.release_ended()
        try:
            request, client_address = self.server.get_request()
        except OSError as exc:  # silent, as in the standard library
            self.get_request_failed(exc, None)
            self.done()
            return
        except Exception as exc:  # raised from serve_forever / handle_request
            self.defer(exc)
            return
        sock = request if isinstance(request, socket.socket) else None
        if sock is not None and self.work.nonblocking:
            sock.setblocking(False)
        row = StreamTransport(listener.reactor, sock, client_address, _ACCEPTED, listener)
        listener.adopt()
        self.serve_request(request, client_address, row)


class DatagramEngine(RequestEngine):
    """The engine of a datagram server (``UDPServer``, ``UnixDatagramServer``)."""

    __slots__ = ()
    server: UDPServer

    def register(self, reactor: Reactor) -> None:
        """Register the socket for reading; take up to DATAGRAM_BATCH datagrams per
        wake-up (one when ``get_request`` is overridden, or without MSG_DONTWAIT)."""
        server = self.server
        fd = server.fileno()
        from .servers import UDPServer as base  # at run time: servers imports this module

        overridden = type(server).get_request is not base.get_request
        self.reader = reader = ReadyReader(self, fd, 1 if overridden or not _DONTWAIT
                                           else DATAGRAM_BATCH)
        reactor.selector.register(fd, EVENT_READ, reader)

    def kind(self) -> str:
        return "unixdg" if self.server.address_family == getattr(socket, "AF_UNIX", None) \
            else "udp"
