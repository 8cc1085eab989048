"""The classic servers of :mod:`socketserver` as facades over the reactor.

Theory of operation
-------------------
A server keeps the standard library's shape -- the same attributes, hooks and call
order -- but its loop is a :class:`~reactor.io.loop.Reactor`:

* ``serve_forever`` and ``handle_request`` run the reactor; the listening socket is a
  reactor :class:`~reactor.io.listeners.Listener` (batched accepts, a pause instead of a
  busy loop when ``accept`` runs out of descriptors) and a datagram socket is
  registered for reading;
* every request is a row of the reactor's connection table: a
  :class:`~reactor.io.stream.StreamTransport` for a stream connection, a
  :class:`DatagramRequest` for a datagram. The row walks the facade column of
  :data:`~reactor.sansio.connection.LIFECYCLE`::

      ACCEPTED -> VERIFIED [-> BUFFERING] -> DISPATCHED_{INLINE,THREAD,CHILD}
               [-> FINISHED] -> CLOSED

  (FINISHED: the handler returned in a worker thread or the child exited, and the
  reactor has not released the row yet; a request handled inline closes at once);

* the hooks run in the standard library's order: ``get_request``, ``verify_request``,
  ``process_request`` (the mix-ins decide where the request runs), ``finish_request``
  (the handler), ``shutdown_request`` and ``close_request``. A connection reaches the
  hooks blocking and unregistered from the selector, as a blocking handler expects;
* with a ``request_buffer`` the reactor first reads the request without blocking (state
  BUFFERING) and dispatches it only once complete; the handler's socket replays those
  bytes before it reads the network again.
* a server whose ``get_request`` is overridden accepts for itself, as in the standard
  library: its listener (:class:`_OwnAcceptListener`) only reports that the listening
  socket is readable, leaves that socket's blocking mode or timeout as the program set
  it, and ``get_request`` -- the override, or ours through ``super()``, which then
  finds nothing staged -- calls ``accept()``. A ``get_request`` that raises OSError is
  silent; any other exception propagates from ``serve_forever``/``handle_request``.

Every step of that path is a method of the server's
:class:`~reactor.facades.engine.RequestEngine` (one attribute, ``_reactor_engine``):
the classes here hold only the standard library's methods, which call the engine.

The wake-up channel makes ``shutdown()`` immediate and lets an idle server sleep in the
selector with no timeout: there is no polling interval unless ``service_actions`` is
overridden.

Forbidden imports: ``handlers`` (only :mod:`reactor.socketserver` assembles them).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Iterable
from ssl import SSLContext
from typing import Any, ClassVar, Final, TypeVar

from ..io.loop import Reactor
from ..io.tls import DEFAULT_HANDSHAKE_TIMEOUT
from ..io.validate import address_text
from ..sansio.connection import ConnEvent
from ..sansio.proxy_policy import DEFAULT_PROXY_TIMEOUT
from ..sansio.request_buffer import RequestBuffer
from ..sansio.table import ConnectionTable
from .engine import InlineWork, RequestEngine
from .requests import DatagramRequest, ServerStatistics
from .sources import DatagramEngine, StreamEngine

__all__ = [
    "BaseServer",
    "DatagramRequest",
    "ServerStatistics",
    "TCPServer",
    "UDPServer",
    "UnixDatagramServer",
    "UnixStreamServer",
    "needs_no_period",
]

logger = logging.getLogger("reactor.servers")  # the name it had before the layers became folders

_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_TRUNC: Final = getattr(socket, "MSG_TRUNC", 0)
_DISPATCH_INLINE: Final = ConnEvent.DISPATCH_INLINE


_F = TypeVar("_F", bound=Callable[..., Any])


def needs_no_period(method: _F) -> _F:
    """Mark a ``service_actions`` that needs no periodic call (its work is event-driven),
    so an idle ``serve_forever`` can sleep until the next event."""
    method._needs_no_period = True  # type: ignore[attr-defined]
    return method


class BaseServer:
    """The base of every server: the request loop and its hooks, on a reactor.

    Methods for the caller:

    - ``__init__(server_address, RequestHandlerClass, *, reactor=None)`` -- ``reactor``:
      run on this :class:`~reactor.io.loop.Reactor` (a selector or clock of your choice)
      instead of one the server makes on first use
    - ``serve_forever(poll_interval=0.5)`` -- run the reactor until :meth:`shutdown`
    - ``shutdown()`` -- stop ``serve_forever`` (from any thread, also from a handler)
    - ``handle_request()`` -- serve one request, when not using ``serve_forever``
    - ``server_close()`` -- release the socket, the workers and the reactor
    - ``statistics()``, ``connections``, ``reactor`` -- what the server is doing
    - the context manager (``with Server(...) as server:`` closes it at the end)

    Methods that may be overridden:

    - ``server_bind()``, ``server_activate()`` -- set the socket up
    - ``get_request()`` -- take the next request: ``(request, client_address)``
    - ``verify_request(request, client_address)`` -- False refuses the request
    - ``process_request(request, client_address)`` -- where it runs (the mix-ins)
    - ``handle_timeout()`` -- ``handle_request`` waited ``timeout`` seconds in vain
    - ``service_actions()`` -- periodic work; overriding it makes ``serve_forever``
      call it at least every ``poll_interval`` seconds (otherwise the idle loop sleeps)
    - ``shutdown_request(request)``, ``close_request(request)`` -- end a request
    - ``handle_error(request, client_address)`` -- a handler raised (default: log it
      with the client's address)
    - ``server_close()`` -- extend it to release your own resources

    Methods for derived classes:

    - ``finish_request(request, client_address)`` -- run the handler

    Class attributes (also settable on instances): ``timeout`` (for
    ``handle_request``), ``request_buffer`` (read the first request in the reactor
    before dispatching it; None by default), ``max_connections`` (stop accepting while
    that many requests are in flight; None by default), and for stream servers behind a
    load balancer ``proxy_protocol`` (``"v1"``, ``"v2"`` or ``"any"``: read a PROXY
    header first and take its client as ``client_address``; None by default),
    ``proxy_allow_from`` and ``proxy_timeout`` (see :mod:`reactor.facades.proxied`),
    and for stream servers over TLS ``ssl_context`` and ``ssl_handshake_timeout`` (the
    handshake runs in the reactor; see :mod:`reactor.facades.tls`).

    Instance attributes: ``server_address``, ``RequestHandlerClass``.

    A plain server runs every request inline, on the reactor thread: while one
    handler runs nothing else is served, as with the standard library's synchronous
    servers. Use a mix-in to serve requests concurrently.
    """

    timeout: float | None = None
    request_buffer: RequestBuffer | None = None
    max_connections: int | None = None
    proxy_protocol: str | None = None
    proxy_allow_from: Iterable[str] | str | None = None  # None: the loopback addresses
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT
    ssl_context: SSLContext | None = None  # TLS, the handshake in the reactor
    ssl_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    # the engine's kind for this server, and where its requests run (the mix-ins'
    # own kind of work): class attributes, so no method is added to the class
    _reactor_engine_type: ClassVar[type[RequestEngine]] = RequestEngine
    _reactor_work: ClassVar[type[InlineWork]] = InlineWork
    server_address: Any

    def __init__(
        self, server_address: Any, RequestHandlerClass: Callable[..., Any], *,
        reactor: Reactor | None = None,
    ) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._reactor_engine = self._reactor_engine_type(self, reactor)

    # -- the reactor ------------------------------------------------------------------

    @property
    def reactor(self) -> Reactor:
        """The reactor serving this server (made on first use unless one was given)."""
        return self._reactor_engine.get_reactor()

    @property
    def connections(self) -> ConnectionTable:
        """The reactor's connection table: every request is a row with its state."""
        return self.reactor.connections

    def fileno(self) -> int:
        """The descriptor that becomes readable when a request is pending."""
        raise NotImplementedError("a BaseServer subclass must provide fileno()")

    # -- methods for the caller -------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until :meth:`shutdown` is called.

        The reactor sleeps in the selector until there is work; ``poll_interval`` is
        only the period of ``service_actions`` when a subclass overrides it.
        """
        self._reactor_engine.serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait until it has returned.

        The reactor wakes at once (no polling interval). Called from a handler running
        on the serving thread, it returns at once and takes effect when the handler
        returns, instead of deadlocking.
        """
        self._reactor_engine.shutdown()

    def handle_request(self) -> None:
        """Serve one request, waiting for it at most ``timeout`` seconds (the smaller of
        ``self.timeout`` and the listening socket's own timeout); call
        :meth:`handle_timeout` when none came."""
        engine = self._reactor_engine
        engine.serve_one(engine.timeout(), on_timeout=self.handle_timeout)

    def _handle_request_noblock(self) -> None:
        """Serve one request if one is ready, without waiting."""
        self._reactor_engine.serve_one(0.0, on_timeout=None)

    def statistics(self) -> ServerStatistics:
        """An immutable snapshot: requests by state, totals, workers, the reactor's."""
        return self._reactor_engine.statistics()

    def get_request(self) -> tuple[Any, Any]:
        """Return the next ``(request, client_address)``; a BaseServer subclass provides it."""
        raise NotImplementedError("a BaseServer subclass must provide get_request()")

    # -- hooks ------------------------------------------------------------------------

    def server_activate(self) -> None:
        """Prepare the socket to receive requests (called by the constructor)."""

    @needs_no_period
    def service_actions(self) -> None:
        """Periodic work for ``serve_forever``; override it to be called at least every
        ``poll_interval`` seconds."""

    def handle_timeout(self) -> None:
        """``handle_request`` found no request within ``timeout`` seconds."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Whether to serve this request (True by default)."""
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Run the request here, on the reactor thread, then end it."""
        self._reactor_engine.mark(request, _DISPATCH_INLINE)
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Run the handler: ``RequestHandlerClass(request, client_address, self)``."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """End a request (shut the connection down, then close it)."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Release a request's resources."""
        self._reactor_engine.end_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log the exception being handled, with the client's address.

        Called from an ``except`` block when a handler (or ``process_request``) raised
        an :class:`Exception`; ``SystemExit`` and ``KeyboardInterrupt`` are not passed
        here, they propagate.
        """
        engine = self._reactor_engine
        engine.count("errors")
        row = engine.rows.get(id(request))
        note = getattr(row, "note_close_cause", None)  # a stream's row: counted as its error
        failure = sys.exc_info()[1]
        if note is not None and failure is not None:
            note(failure)
        where = f" [{row.state.name}]" if row is not None else ""
        logger.error("%s: exception while handling the request from %s%s",
                     type(self).__name__, client_address, where, exc_info=True)

    # -- closing ----------------------------------------------------------------------

    def server_close(self) -> None:
        """Stop taking requests and release the reactor side of the server.

        Requests still waiting for a worker are handed on or closed (see the mix-ins),
        requests being buffered are closed, requests running in workers keep their
        sockets, and a reactor the server made is closed (called from a handler, once
        the handler returns: ``serve_forever`` then returns).
        """
        self._reactor_engine.close()

    def __enter__(self) -> BaseServer:
        return self

    def __exit__(self, *args: object) -> None:
        self.server_close()


class TCPServer(BaseServer):
    """A stream server (TCP by default): a listening socket served by a reactor listener.

    Methods for the caller, methods that may be overridden and methods for derived
    classes are those of :class:`BaseServer`, plus:

    - ``__init__(server_address, RequestHandlerClass, bind_and_activate=True, *,
      reactor=None)`` -- with ``bind_and_activate=False`` call ``server_bind()`` and
      ``server_activate()`` yourself (after setting socket options, say)
    - ``fileno()`` -- the listening socket's descriptor
    - ``server_bind()`` -- apply ``allow_reuse_address``/``allow_reuse_port``, bind,
      and record the bound ``server_address``
    - ``server_activate()`` -- ``listen(request_queue_size)``
    - ``get_request()`` -- the accepted ``(socket, address)``; an override does the
      accepting itself, on the listening socket as the program set it up (its blocking
      mode or timeout), one connection each time the socket is readable, as in the
      standard library (``super().get_request()`` then calls ``accept()``)

    Class attributes: ``address_family``, ``socket_type``, ``request_queue_size`` (the
    listen backlog, 5), ``allow_reuse_address``, ``allow_reuse_port``, and those of
    :class:`BaseServer`. Instance attributes: ``socket`` (the listening socket), and
    those of :class:`BaseServer`.

    A listening socket wrapped with :meth:`ssl.SSLContext.wrap_socket` hands out
    wrapped connections, as its own ``accept`` would (the handshake then blocks the
    serving thread, as on the standard library); with ``ssl_context`` instead the
    handshake runs in the reactor (:mod:`reactor.facades.tls`).
    """

    address_family: int = socket.AF_INET
    socket_type: int = socket.SOCK_STREAM
    request_queue_size: int = 5
    allow_reuse_address: bool = False
    allow_reuse_port: bool = False
    _reactor_engine_type: ClassVar[type[RequestEngine]] = StreamEngine
    _reactor_engine: StreamEngine

    def __init__(
        self, server_address: Any, RequestHandlerClass: Callable[..., Any],
        bind_and_activate: bool = True, *, reactor: Reactor | None = None,
    ) -> None:
        super().__init__(server_address, RequestHandlerClass, reactor=reactor)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self) -> None:
        """Set the reuse options, bind, and record the address actually bound."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Start listening with a backlog of ``request_queue_size``."""
        self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        """Close the listening socket and the reactor side."""
        super().server_close()
        self.socket.close()

    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """The next connection: ``(socket, client_address)``.

        On the reactor's path, the connection its listener accepted. Called with nothing
        staged -- through ``super()`` from an override (an overriding server's listener
        leaves the accepting to ``get_request``), or from outside the loop -- it
        accepts from the listening socket itself, as the standard library does. A
        listening socket wrapped with ``ssl`` wraps the connection, as its ``accept``
        would.
        """
        engine = self._reactor_engine
        staged = engine.staged
        listening = self.socket
        if staged is None:
            return listening.accept()
        engine.staged = None
        if listening is not engine.plain_listening:
            ssl = sys.modules.get("ssl")
            if ssl is not None and isinstance(listening, ssl.SSLSocket):
                sock = listening.context.wrap_socket(
                    staged[0], server_side=True,
                    do_handshake_on_connect=listening.do_handshake_on_connect,
                    suppress_ragged_eofs=listening.suppress_ragged_eofs,
                )
                return sock, staged[1]
            engine.plain_listening = listening
        return staged

    def shutdown_request(self, request: Any) -> None:
        """Shut the connection's sending side down (a clean FIN), then close it."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already disconnected (ENOTCONN on some platforms)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Close the connection's socket."""
        request.close()
        self._reactor_engine.end_request(request)


class UDPServer(TCPServer):
    """A datagram server (UDP by default): each datagram is one request.

    The request is ``(data, socket)``; the handler replies through that socket. Hooks
    are those of :class:`TCPServer`; ``server_activate`` does nothing (no ``listen``).
    ``max_packet_size`` bounds a datagram: a longer one arrives cut to that size, as in
    the standard library, and the cut is logged.
    """

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size: int = 8192
    _reactor_engine_type: ClassVar[type[RequestEngine]] = DatagramEngine

    def server_activate(self) -> None:
        """Datagram sockets do not listen."""

    def get_request(self) -> tuple[Any, Any]:
        """Receive one datagram: ``((data, socket), client_address)``."""
        data, _ancillary, flags, client_address = self.socket.recvmsg(
            self.max_packet_size, 0, _DONTWAIT)
        if flags & _TRUNC:
            logger.warning("%s: datagram from %s cut to max_packet_size=%d bytes",
                           type(self).__name__, address_text(client_address),
                           self.max_packet_size)
        return (data, self.socket), client_address

    def shutdown_request(self, request: Any) -> None:
        """Nothing to shut down for a datagram."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Nothing to close for a datagram (the socket is the server's)."""
        self._reactor_engine.end_request(request)


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        """A stream server on a Unix socket path."""

        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        """A datagram server on a Unix socket path."""

        address_family = socket.AF_UNIX
