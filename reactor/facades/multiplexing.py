"""The multiplexing mix-in: a non-blocking handler per connection, inside the reactor.

:class:`MultiplexingMixIn` is the "explicit table of partially finished requests" the
standard library's docstring wished for: a non-blocking handler (an
:class:`asyncio.Protocol`) runs inside the reactor, with no thread or process per
client. :class:`MultiplexWork` is the engine's side of it.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..sansio.connection import ConnState
from .engine import close_deadline
from .pipeline import InlineWork
from .servers import BaseServer

if TYPE_CHECKING:
    _Base = BaseServer
else:
    _Base = object

__all__ = ["MultiplexWork", "MultiplexingMixIn"]

logger = logging.getLogger("reactor.mixins")  # the name it had before the layers became folders

_CLOSED: Final = ConnState.CLOSED
_WIND_DOWN_CHECK: Final = 0.02  # seconds between checks of connections server_close awaits


class _CheckedDatagrams(asyncio.DatagramProtocol):
    """Puts ``verify_request`` in front of a datagram protocol."""

    def __init__(self, server: MultiplexingMixIn, inner: Any) -> None:
        self.server = server
        self.inner = inner
        self.sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport.get_extra_info("socket")
        self.inner.connection_made(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        server = self.server
        engine = server._reactor_engine
        engine.accepted += 1
        try:
            allowed = server.verify_request((data, self.sock), addr)
        except Exception:
            server.handle_error((data, self.sock), addr)
            allowed = False
        if allowed:
            self.inner.datagram_received(data, addr)
        else:
            engine.rejected += 1
        engine.done()

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


class MultiplexWork(InlineWork):
    """Where a multiplexing server's connections run: inside the reactor, each with
    its non-blocking handler; the engine's side of :class:`MultiplexingMixIn`."""

    accept_batch: ClassVar[int] = 64
    nonblocking: ClassVar[bool] = True

    def register(self, reactor: Reactor) -> bool:
        """A datagram socket gets one datagram endpoint with ``verify_request`` in
        front of the handler; a stream socket is the engine's (False)."""
        server = cast("MultiplexingMixIn", self.server)
        sock = getattr(server, "socket", None)
        if sock is None or sock.type != socket.SOCK_DGRAM:
            return False

        def factory() -> asyncio.DatagramProtocol:
            return _CheckedDatagrams(server, server.RequestHandlerClass())

        if sock.family == getattr(socket, "AF_UNIX", None):
            endpoint = reactor.listen_unix_datagram(None, factory, sock=sock)
        else:
            endpoint = reactor.listen_udp(None, 0, factory, sock=sock)
        self.engine.endpoint = endpoint
        return True

    def process(self, request: Any, client_address: Any) -> None:
        """Make the handler and attach it to the request's row: it runs in the reactor
        from now on."""
        engine = self.engine
        row = engine.rows.pop(id(request), None)
        if not isinstance(row, StreamTransport):
            raise TypeError("a multiplexed request must be a connection accepted by the server")
        protocol = self.server.RequestHandlerClass()
        engine.attached += 1
        row.attach(protocol)

    def open_connections(self) -> list[StreamTransport]:
        """The server's connections not closed yet."""
        return [row for row in self.engine.own_rows()
                if isinstance(row, StreamTransport) and row.state is not _CLOSED]

    def wind_down(self, reactor: Reactor) -> None:
        """Close idle connections at once, let active ones finish, abort the rest at
        the deadline (see :class:`MultiplexingMixIn`)."""
        server = cast("MultiplexingMixIn", self.server)
        if not server.block_on_close or reactor.is_closed():
            return
        deadline = close_deadline(server.block_on_close_timeout)
        if not self.open_connections():
            return

        def check() -> None:
            rows = self.open_connections()
            if not rows:
                reactor.stop()
                return
            for row in rows:
                # idle: nothing unread (a reset counts as nothing left to answer)
                if not row.is_closing() and row.unread_input() is not True:
                    row.close()  # sends what is queued, then closes
            reactor.call_later(_WIND_DOWN_CHECK, check)

        check()
        stopper = None
        if deadline is not None:
            stopper = reactor.call_later(max(0.0, deadline - time.monotonic()), reactor.stop)
        try:
            reactor.run()
        finally:
            if stopper is not None:
                stopper.cancel()
        left = self.open_connections()
        if left:
            logger.warning("%s: server_close() stopped waiting after block_on_close_timeout="
                           "%s s: aborting %d connection(s) still open",
                           type(server).__name__, server.block_on_close_timeout, len(left))
            for row in left:
                row.abort()


class MultiplexingMixIn(_Base):
    """Serve every connection inside the reactor with a non-blocking handler.

    ``RequestHandlerClass`` is called with no arguments and returns an
    :class:`asyncio.Protocol` for stream servers (for instance a
    :class:`handlers.base.StreamHandler`), or one :class:`asyncio.DatagramProtocol` for
    the whole socket on datagram servers. No thread or process is started per client:
    the connections are rows of the table in the protocol states (OPEN, READ_CLOSED,
    CLOSING ...), and the handler must never block.

    The server API is unchanged: ``verify_request`` (called with the connection's
    non-blocking socket, or ``(data, socket)`` per datagram) can refuse a client,
    ``serve_forever``/``shutdown``/``handle_request`` run the reactor, and
    ``server_close`` (or the end of a ``with`` block) closes every connection.

    ``server_close`` lets the connections finish (``block_on_close``, True): an idle
    one -- nothing queued for writing, nothing unread in the kernel -- is closed at
    once; one with a reply still queued is closed once it is sent; one with input the
    handler has not read yet is closed once the handler has answered it. After
    ``block_on_close_timeout`` seconds (5 by default; None waits for ever) the
    connections left are aborted and a warning says how many. The default is finite,
    unlike the threads' and children's: what keeps a multiplexed connection open at
    that point is its peer (a client that does not read its reply), not the program's
    code. This applies when the server made its reactor; on a reactor shared with
    other code (``reactor=``), ``server_close`` aborts the server's connections.
    """

    block_on_close: bool = True
    block_on_close_timeout: float | None = 5.0
    _reactor_work: ClassVar[type[InlineWork]] = MultiplexWork

    def process_request(self, request: Any, client_address: Any) -> None:
        """Attach a new handler to the connection; it runs in the reactor from now on."""
        self.finish_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Make the handler and attach it to the request's row."""
        self._reactor_engine.work.process(request, client_address)
