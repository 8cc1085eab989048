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

The wake-up channel makes ``shutdown()`` immediate and lets an idle server sleep in the
selector with no timeout: there is no polling interval unless ``service_actions`` is
overridden.

Forbidden imports: ``handlers`` (only :mod:`reactor.socketserver` assembles them).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar

from ..io.listeners import Listener
from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..sansio.connection import LIFECYCLE, ConnEvent, ConnState, Row
from ..sansio.errors import ClosedError, IllegalTransition
from ..sansio.request_buffer import RequestBuffer
from ..sansio.table import ConnectionTable
from .requests import (
    WAITING,
    BufferedRequestSocket,
    DatagramRequest,
    ReadyReader,
    RequestReader,
    ServerState,
    ServerStatistics,
    peek_count,
    request_key,
)

__all__ = [
    "BaseServer",
    "DatagramRequest",
    "ServerStatistics",
    "TCPServer",
    "UDPServer",
    "UnixDatagramServer",
    "UnixStreamServer",
]

logger = logging.getLogger("reactor.servers")  # the name it had before the layers became folders

EVENT_READ: Final = 1
DATAGRAM_BATCH: Final = 32
SWEEP_INTERVAL: Final = 0.05  # seconds between releases of rows ended by workers
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_TRUNC: Final = getattr(socket, "MSG_TRUNC", 0)
_INLINE: Final = ConnState.DISPATCHED_INLINE
_THREAD: Final = ConnState.DISPATCHED_THREAD
_CHILD: Final = ConnState.DISPATCHED_CHILD
_CLOSED: Final = ConnState.CLOSED
_VERIFIED: Final = ConnState.VERIFIED
_FINISHED: Final = ConnState.FINISHED
_BUFFERING: Final = ConnState.BUFFERING
_FINISH: Final = ConnEvent.FINISH
_LOST: Final = ConnEvent.LOST
_VERIFY: Final = ConnEvent.VERIFY
_DISPATCH_THREAD: Final = ConnEvent.DISPATCH_THREAD
# The moves every request makes, looked up in LIFECYCLE once: a row known to be in the
# move's source state is moved by assignment, exactly as Row.advance would move it,
# without a call per move
_ACCEPTED: Final = ConnState.ACCEPTED
VERIFIED_FROM_ACCEPTED: Final = LIFECYCLE.next(ConnState.ACCEPTED, ConnEvent.VERIFY)
INLINE_FROM_VERIFIED: Final = LIFECYCLE.next(ConnState.VERIFIED, ConnEvent.DISPATCH_INLINE)
THREAD_FROM_VERIFIED: Final = LIFECYCLE.next(ConnState.VERIFIED, ConnEvent.DISPATCH_THREAD)
_DISPATCH_COUNTER: Final = {
    ConnEvent.DISPATCH_INLINE: "dispatched_inline",
    ConnEvent.DISPATCH_CHILD: "dispatched_child",
}
_get_ident: Final = threading.get_ident
_SOCKET: Final = socket.socket  # request_key()'s test, inlined on the hot paths


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


# logging.handlers classes whose emit() talks to a server, which may be one this very
# thread serves: a record sent from the serving thread would wait for itself (an
# HTTPHandler's POST), or make a new request that fails and logs again (a SocketHandler)
_NETWORK_LOG_HANDLERS: Final = ("SocketHandler", "HTTPHandler", "SysLogHandler",
                                "SMTPHandler")


def _logging_cannot_block(log: logging.Logger) -> bool:
    """Whether a record of ``log`` reaches no handler that sends it over the network
    (SocketHandler and its DatagramHandler, HTTPHandler, SysLogHandler, SMTPHandler):
    only then may the serving thread log about a request it could not take."""
    module = sys.modules.get("logging.handlers")
    if module is None:  # never imported: no such handler exists
        return True
    kinds = tuple(getattr(module, name) for name in _NETWORK_LOG_HANDLERS)
    current: logging.Logger | None = log
    while current is not None:
        if any(isinstance(handler, kinds) for handler in current.handlers):
            return False
        if not current.propagate:
            break
        current = current.parent
    return True


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
    that many requests are in flight; None by default).

    Instance attributes: ``server_address``, ``RequestHandlerClass``.

    A plain server runs every request inline, on the reactor thread: while one
    handler runs nothing else is served, as with the standard library's synchronous
    servers. Use a mix-in to serve requests concurrently.
    """

    timeout: float | None = None
    request_buffer: RequestBuffer | None = None
    max_connections: int | None = None

    _reactor_accept_batch: ClassVar[int] = 1  # inline handlers: one accept per wake-up
    _reactor_nonblocking: ClassVar[bool] = False  # multiplexing keeps sockets in the loop
    server_address: Any

    def __init__(
        self, server_address: Any, RequestHandlerClass: Callable[..., Any], *,
        reactor: Reactor | None = None,
    ) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._reactor_facade = ServerState(reactor)

    # -- the reactor ------------------------------------------------------------------

    @property
    def reactor(self) -> Reactor:
        """The reactor serving this server (made on first use unless one was given)."""
        f = self._reactor_facade
        if f.reactor is None:
            f.reactor = Reactor()
        return f.reactor

    @property
    def connections(self) -> ConnectionTable:
        """The reactor's connection table: every request is a row with its state."""
        return self.reactor.connections

    def _reactor_start(self) -> Reactor:
        f = self._reactor_facade
        if f.closed:
            raise ValueError("the server is closed")
        reactor = self.reactor
        if not f.activated:
            self._reactor_register(reactor)
            f.activated = True
        return reactor

    def _reactor_register(self, reactor: Reactor) -> None:
        """Register the request source; a BaseServer subclass provides fileno()."""
        fd = self.fileno()
        self._reactor_facade.reader = reader = ReadyReader(self, fd, 1)
        reactor.selector.register(fd, EVENT_READ, reader)

    def fileno(self) -> int:
        """The descriptor that becomes readable when a request is pending."""
        raise NotImplementedError("a BaseServer subclass must provide fileno()")

    def _reactor_run(self, reactor: Reactor, limit: float | None) -> None:
        """Run the reactor until stopped (or ``limit`` seconds); re-raise what a
        request raised past the handler."""
        f = self._reactor_facade
        stopper = reactor.call_later(limit, reactor.stop) if limit is not None else None
        f.loop_thread = threading.get_ident()
        try:
            reactor.run()
        finally:
            f.loop_thread = None
            if stopper is not None:
                stopper.cancel()
        exc, f.deferred = f.deferred, None
        if exc is not None:
            raise exc

    def _reactor_defer(self, exc: BaseException) -> None:
        """Raise ``exc`` from the caller's serve_forever / handle_request."""
        f = self._reactor_facade
        if f.deferred is None:
            f.deferred = exc
        self.reactor.stop()

    # -- methods for the caller -------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until :meth:`shutdown` is called.

        The reactor sleeps in the selector until there is work; ``poll_interval`` is
        only the period of ``service_actions`` when a subclass overrides it.
        """
        f = self._reactor_facade
        f.is_shut_down.clear()
        try:
            reactor = self._reactor_start()
            with f.lock:
                if f.shutdown_request:
                    return
                f.serving_thread = threading.get_ident()
            f.poll_interval = poll_interval
            batch = self._reactor_accept_batch
            if f.listener is not None:
                f.listener.accept_batch = batch
            if not getattr(type(self).service_actions, "_needs_no_period", False):
                f.tick = reactor.call_later(poll_interval, self._reactor_tick, poll_interval)
            try:
                while not f.shutdown_request:
                    self._reactor_run(reactor, None)
            finally:
                with f.lock:
                    f.serving_thread = None
                if f.tick is not None:
                    f.tick.cancel()
                    f.tick = None
                if f.close_pending and not reactor.is_closed():
                    f.close_pending = False
                    reactor.close()
        finally:
            f.shutdown_request = False
            f.is_shut_down.set()

    def _reactor_tick(self, interval: float) -> None:
        f = self._reactor_facade
        f.tick = None
        try:
            self.service_actions()
        except BaseException as exc:  # propagates from serve_forever, as before
            self._reactor_defer(exc)
            return
        if f.serving_thread is not None:
            f.tick = self.reactor.call_later(interval, self._reactor_tick, interval)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait until it has returned.

        The reactor wakes at once (no polling interval). Called from a handler running
        on the serving thread, it returns at once and takes effect when the handler
        returns, instead of deadlocking.
        """
        f = self._reactor_facade
        me = threading.get_ident()
        with f.lock:
            f.shutdown_request = True
            serving = f.serving_thread
            if serving is not None and f.reactor is not None:
                f.reactor.stop()
        if me in (serving, f.loop_thread):
            return
        f.is_shut_down.wait()

    def handle_request(self) -> None:
        """Serve one request, waiting for it at most ``timeout`` seconds (the smaller of
        ``self.timeout`` and the listening socket's own timeout); call
        :meth:`handle_timeout` when none came."""
        timeout = self._reactor_timeout()
        reactor = self._reactor_start()
        self._reactor_serve_one(reactor, timeout, on_timeout=self.handle_timeout)

    def _handle_request_noblock(self) -> None:
        """Serve one request if one is ready, without waiting."""
        self._reactor_serve_one(self._reactor_start(), 0.0, on_timeout=None)

    def _reactor_serve_one(
        self, reactor: Reactor, timeout: float | None, on_timeout: Callable[[], None] | None
    ) -> None:
        f = self._reactor_facade
        deadline = None if timeout is None else reactor.time() + timeout
        target = f.handled + 1
        f.stop_after_handled = True
        if f.listener is not None:
            f.listener.accept_batch = 1
        first = True
        try:
            while f.handled < target:
                remaining = None if deadline is None else deadline - reactor.time()
                if remaining is not None and remaining <= 0 and not first:
                    if on_timeout is not None:
                        on_timeout()
                    return
                first = False
                self._reactor_run(reactor, None if remaining is None else max(remaining, 0.0))
        finally:
            f.stop_after_handled = False

    def _reactor_timeout(self) -> float | None:
        f = self._reactor_facade
        sock: socket.socket | None = getattr(self, "socket", None)
        sock_timeout: float | None = None
        if sock is not None:
            current = sock.gettimeout()
            if f.listener is None or f.own_accept:  # the socket's mode is the program's
                sock_timeout = current
            else:
                if current != 0.0:  # the caller set a timeout since the listener began
                    f.socket_timeout = current
                    sock.setblocking(False)
                sock_timeout = f.socket_timeout
        if sock_timeout is None:
            return self.timeout
        if self.timeout is None:
            return sock_timeout
        return min(sock_timeout, self.timeout)

    def statistics(self) -> ServerStatistics:
        """An immutable snapshot: requests by state, totals, workers, the reactor's."""
        f = self._reactor_facade
        with f.lock:
            errors = f.errors
        rows = self._reactor_rows()
        threads, children = self._reactor_workers()
        reactor = f.reactor
        return ServerStatistics(
            server=type(self).__name__,
            address=self.server_address,
            serving=f.serving_thread is not None,
            in_flight=len(rows),
            by_state=MappingProxyType(dict(Counter(r.state.name for r in rows))),
            waiting=self._reactor_waiting(),
            threads=threads,
            children=children,
            reactor=reactor.statistics() if reactor is not None and not reactor.is_closed()
            else None,
            accepted=f.accepted,
            rejected=f.rejected,
            buffered=f.buffered,
            buffer_timeouts=f.buffer_timeouts,
            buffer_refused=f.buffer_refused,
            dispatched_inline=f.dispatched_inline,
            dispatched_thread=peek_count(f.dispatched_thread),
            dispatched_child=f.dispatched_child,
            attached=f.attached,
            finished=f.finished,
            errors=errors,
            get_request_errors=f.get_request_errors,
        )

    def _reactor_rows(self) -> list[Row]:
        f = self._reactor_facade
        reactor = f.reactor
        if reactor is None:
            return []
        listener = f.listener
        return [
            row for row in reactor.connections
            if (listener is not None and getattr(row, "listener", None) is listener)
            or getattr(row, "owner", None) is self
        ]

    def _reactor_workers(self) -> tuple[int, int]:
        """Live worker threads and children (the mix-ins override it)."""
        return 0, 0

    def _reactor_waiting(self) -> int:
        return len(self._reactor_facade.waiting)

    # -- taking a request -------------------------------------------------------------

    def _reactor_take(self) -> bool:
        """Take one request from a readable descriptor; False when there is none."""
        try:
            request, client_address = self.get_request()
        except BlockingIOError:
            return False
        except OSError as exc:
            self._reactor_get_request_failed(exc, None)
            self._reactor_done()
            return False
        except Exception as exc:  # raised from serve_forever / handle_request, as before
            self._reactor_defer(exc)
            return False
        size = len(request[0]) if isinstance(request, tuple) and request else 0
        row = DatagramRequest(self._reactor_kind(), client_address, size, self.reactor.time(),
                              self)
        self.reactor.connections.add(row)
        self._reactor_start_request(request, client_address, row)
        return True

    def _reactor_kind(self) -> str:
        return "request"

    def _reactor_get_request_failed(self, exc: OSError, client_address: Any) -> None:
        """get_request raised an OSError: silent, as in the standard library (the request
        is dropped and the loop goes on). Counted; logged at debug level only when no
        handler on the way of the record sends it over the network (see
        :func:`_logging_cannot_block`)."""
        f = self._reactor_facade
        f.get_request_errors += 1
        if logger.isEnabledFor(logging.DEBUG) and _logging_cannot_block(logger):
            where = "" if client_address is None else f" for {client_address!r}"
            logger.debug("%s: get_request() failed%s: %s", type(self).__name__, where, exc)

    def get_request(self) -> tuple[Any, Any]:
        """Return the next ``(request, client_address)``; a BaseServer subclass provides it."""
        raise NotImplementedError("a BaseServer subclass must provide get_request()")

    def _reactor_start_request(self, request: Any, client_address: Any, row: Row) -> None:
        """Verify the request, then buffer it or dispatch it."""
        f = self._reactor_facade
        f.rows[request if type(request) is _SOCKET else id(request)] = row
        f.accepted += 1
        try:
            allowed = self.verify_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            allowed = False
        if not allowed:
            self._reactor_reject(request, client_address)
            return
        if row.state is _ACCEPTED:
            row.state = VERIFIED_FROM_ACCEPTED
        else:
            row.advance(_VERIFY)
        if self.request_buffer is not None and self._reactor_buffer_first(
                request, client_address, row):
            return
        # _reactor_dispatch(request, client_address, row), inlined
        try:
            self.process_request(request, client_address)
        except BaseException:
            self._reactor_dispatch_failed(request, client_address)
        finally:
            if row.state is not _CLOSED:  # an inline request is closed by now
                self._reactor_after_dispatch(request, row)
            f.handled += 1
            if f.stop_after_handled and f.reactor is not None:
                f.reactor.stop()

    def _reactor_reject(self, request: Any, client_address: Any) -> None:
        """verify_request said no (or raised): shut the request down."""
        self._reactor_facade.bump("rejected")
        self._reactor_shutdown_quietly(request, client_address)
        self._reactor_done()

    def _reactor_buffer_first(self, request: Any, client_address: Any, row: Row) -> bool:
        """With a request_buffer: start reading the request in the reactor (True), or
        say why it cannot be (False: dispatch it now)."""
        buffer = self.request_buffer
        if buffer is None or not isinstance(row, StreamTransport) or self._reactor_nonblocking:
            return False
        if isinstance(request, BufferedRequestSocket) and (
            request is row.get_extra_info("socket")
        ):
            self._reactor_buffer(request, client_address, row, buffer)
            return True
        f = self._reactor_facade
        if not f.warned_buffer:
            f.warned_buffer = True
            why = ("get_request() is overridden (it accepts for itself)" if f.own_accept
                   else "get_request() returned a different socket")
            logger.warning("%s: %s; request_buffer is ignored", type(self).__name__, why)
        return False

    def _reactor_dispatch(
        self, request: Any, client_address: Any, row: Row,
        run: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Call process_request (or ``run``, for a request that waited for a worker
        slot) with the standard library's error handling."""
        try:
            (run or self.process_request)(request, client_address)
        except BaseException:
            self._reactor_dispatch_failed(request, client_address)
        finally:
            self._reactor_after_dispatch(request, row)
            if run is None:
                self._reactor_done()

    def _reactor_dispatch_failed(self, request: Any, client_address: Any) -> None:
        """process_request raised (called from the ``except`` block): an Exception goes
        to handle_error; SystemExit and KeyboardInterrupt propagate, as in the standard
        library; any other BaseException is raised from serve_forever/handle_request.
        The request is shut down in every case."""
        exc = sys.exc_info()[1]
        if isinstance(exc, Exception):
            self.handle_error(request, client_address)
            self._reactor_shutdown_quietly(request, client_address)
            return
        self._reactor_shutdown_quietly(request, client_address)
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) or exc is None:
            raise  # noqa: PLE0704 -- re-raises the exception being handled by the caller
        self._reactor_defer(exc)

    def _reactor_after_dispatch(self, request: Any, row: Row) -> None:
        # WAITING is read before the state: a pool worker that takes a waiting request
        # moves its row on from VERIFIED first and drops WAITING after, so the other
        # order could see VERIFIED and no WAITING and end a row being handled
        meta = row.meta
        waiting = meta is not None and meta.get(WAITING)
        state = row.state
        if state is _INLINE or state is _FINISHED or (state is _VERIFIED and not waiting):
            # process_request returned without ending the request itself (an override
            # that did not call the base class): keep the table honest
            self._reactor_facade.rows.pop(request_key(request), None)
            self._reactor_end_row(row)

    def _reactor_done(self) -> None:
        f = self._reactor_facade
        f.handled += 1
        if f.stop_after_handled and f.reactor is not None:
            f.reactor.stop()

    def _reactor_shutdown_quietly(self, request: Any, client_address: Any) -> None:
        try:
            self.shutdown_request(request)
        except Exception:
            self.handle_error(request, client_address)

    # -- request buffering ------------------------------------------------------------

    def _reactor_buffer(
        self, request: BufferedRequestSocket, client_address: Any, row: StreamTransport,
        buffer: RequestBuffer,
    ) -> None:
        row.advance(ConnEvent.BUFFER)
        self._reactor_facade.bump("buffered")
        reader = RequestReader(self, request, client_address, row, buffer)
        request.setblocking(False)
        row.start_reading(reader)  # type: ignore[arg-type]
        if buffer.timeout is not None and not reader.done:
            reader.timer = self.reactor.call_later(buffer.timeout, reader.expired)

    def _reactor_buffer_ready(self, reader: RequestReader) -> None:
        reader.stop()
        reader.handed = True
        row = reader.row
        request = reader.request
        row.detach_socket()
        request.set_prefix(b"".join(reader.chunks))
        reader.chunks = []
        self._reactor_dispatch(request, reader.client_address, row)

    def _reactor_buffer_refused(
        self, reader: RequestReader, reason: str, response: bytes, timed_out: bool = False
    ) -> None:
        reader.stop()
        row = reader.row
        self._reactor_facade.bump("buffer_timeouts" if timed_out else "buffer_refused")
        logger.info("%s: %s; closing", row.describe(), reason)
        if response:
            row.write(response)
        row.close()
        if row.write_buffer_size:  # the peer does not read: do not wait for it forever
            self.reactor.call_later(5.0, row.abort)

    def _reactor_buffer_lost(self, reader: RequestReader, exc: BaseException | None) -> None:
        if reader.handed:
            return
        reader.stop()
        if exc is not None:
            logger.debug("%s: lost while buffering: %s", reader.row.describe(), exc)
        self._reactor_facade.rows.pop(request_key(reader.request), None)
        self._reactor_shutdown_quietly(reader.request, reader.client_address)
        self._reactor_done()

    # -- ending a request -------------------------------------------------------------

    def _reactor_mark(self, request: Any, event: ConnEvent) -> Row | None:
        """Move the request's row to a DISPATCHED state (when it is still undecided)."""
        f = self._reactor_facade
        row = f.rows.get(request_key(request))
        if row is None:
            return None
        try:
            row.advance(event)
        except IllegalTransition:
            return row  # already dispatched (an override called two dispatchers)
        if row.meta:
            row.meta.pop(WAITING, None)
        if event is _DISPATCH_THREAD:
            next(f.dispatched_thread)  # atomic: pool workers take waiting requests
        else:
            f.bump(_DISPATCH_COUNTER[event])
        return row

    def _reactor_end_request(self, request: Any) -> None:
        """The request was closed: finish its row (a forked one waits for its child)."""
        row = self._reactor_facade.rows.pop(request_key(request), None)
        if row is not None:
            self._reactor_end_popped(request, row)

    def _reactor_end_popped(self, request: Any, row: Row) -> None:
        """_reactor_end_request once the row is out of ``rows``."""
        f = self._reactor_facade
        state = row.state
        if state is _INLINE and f.loop_thread == _get_ident():
            # _reactor_end_row -> _reactor_release_row for a request handled inline,
            # without their calls
            if isinstance(row, StreamTransport):
                row.release(False)  # close_socket=False, by position (cheaper)
                f.finished += 1
            else:
                self._reactor_release_row(row)
            return
        if state is _BUFFERING:  # the transport ends it (connection_lost)
            f.rows[request_key(request)] = row
            return
        if state is _CHILD or f.in_child:
            return  # the parent ends it when the child is reaped
        self._reactor_end_row(row)

    def _reactor_end_row(self, row: Row) -> None:
        """The request ended: the row leaves the table (on the reactor thread).

        Ended on another thread (a worker), the row is FINISHED at once and closed
        when the reactor gets to it; on the reactor thread it closes right away.
        """
        f = self._reactor_facade
        if f.loop_thread != threading.get_ident():
            reactor = f.reactor
            if reactor is not None and not reactor.is_closed():
                state = row.state
                if state is _THREAD or state is _CHILD or state is _INLINE:
                    row.advance(_FINISH)
                f.ended.append(row)
                listener = f.listener
                if f.sweeping and (listener is None or listener.max_connections is None):
                    return  # the sweep (or the next accept) releases it: no wake-up
                if not f.release_scheduled:  # one wake-up for a batch of ended rows
                    f.release_scheduled = True
                    try:
                        reactor.call_soon_threadsafe(self._reactor_release_ended)
                    except ClosedError:
                        self._reactor_release_ended()
                return
        self._reactor_release_row(row)

    def _reactor_release_ended(self) -> None:
        f = self._reactor_facade
        f.release_scheduled = False  # first: a row ended after this gets a new wake-up
        ended = f.ended
        while ended:
            self._reactor_release_row(ended.popleft())

    def _reactor_sweep_soon(self) -> None:
        """Workers are running requests: release the rows they end every
        SWEEP_INTERVAL seconds, instead of waking the reactor once per request. The
        sweep stops when nothing is in flight, so an idle server sleeps."""
        f = self._reactor_facade
        if not f.sweeping and f.reactor is not None:
            f.sweeping = True
            f.reactor.call_later(SWEEP_INTERVAL, self._reactor_sweep)

    def _reactor_sweep(self) -> None:
        f = self._reactor_facade
        f.sweeping = False  # first: a row ended from now on wakes the reactor itself
        self._reactor_release_ended()
        if f.rows or f.ended:
            self._reactor_sweep_soon()

    def _reactor_release_row(self, row: Row) -> None:
        state = row.state
        if state is _CLOSED:
            return
        if isinstance(row, StreamTransport):
            row.release(False)  # close_socket=False, by position (cheaper)
        else:
            row.advance(_LOST)
            if self._reactor_facade.reactor is not None:
                self._reactor_facade.reactor.connections.remove(row)
        if state is _FINISHED or state is _INLINE or state is _THREAD or (
            state is _CHILD
        ):
            self._reactor_facade.finished += 1

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
        f = self._reactor_facade
        row = f.rows.get(request if type(request) is _SOCKET else id(request))
        if row is not None and row.state is _VERIFIED and row.meta is None:
            row.state = INLINE_FROM_VERIFIED  # _reactor_mark's usual case, without calls
            f.dispatched_inline += 1
        else:
            self._reactor_mark(request, ConnEvent.DISPATCH_INLINE)
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
        self._reactor_end_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log the exception being handled, with the client's address.

        Called from an ``except`` block when a handler (or ``process_request``) raised
        an :class:`Exception`; ``SystemExit`` and ``KeyboardInterrupt`` are not passed
        here, they propagate.
        """
        self._reactor_facade.count("errors")
        row = self._reactor_facade.rows.get(request_key(request))
        where = f" [{row.state.name}]" if row is not None else ""
        logger.error("%s: exception while handling the request from %s%s",
                     type(self).__name__, client_address, where, exc_info=True)

    # -- closing ----------------------------------------------------------------------

    def server_close(self) -> None:
        """Stop taking requests and release the reactor side of the server.

        Requests still waiting for a worker are handed on or closed (see the mix-ins),
        requests being buffered are closed, requests running in workers keep their
        sockets, and a reactor the server made is closed.
        """
        f = self._reactor_facade
        if f.closed:
            return
        me = threading.get_ident()
        if f.serving_thread is not None and f.serving_thread != me:
            self.shutdown()  # serve_forever runs elsewhere: stop it first
        f.closed = True
        reactor = f.reactor
        if reactor is None:
            return
        self._reactor_stop_taking(reactor)
        self._reactor_drain()
        self._reactor_release_ended()
        for row in list(f.rows.values()):
            if row.state is _BUFFERING and isinstance(row, StreamTransport):
                row.abort()
            elif row.state is not _CLOSED:
                self._reactor_release_row(row)  # its worker still owns the socket
        f.rows.clear()
        if f.owns_reactor:
            if reactor.is_running():
                f.close_pending = True  # closed when serve_forever returns
            else:
                self._reactor_wind_down(reactor)
                reactor.close()
        else:
            for row in self._reactor_rows():  # multiplexed connections on a shared reactor
                abort = getattr(row, "abort", None)
                if abort is not None and row.state is not _CLOSED:
                    abort()

    def _reactor_wind_down(self, reactor: Reactor) -> None:
        """server_close, before it closes the reactor the server made (not running):
        let connections served inside the reactor finish (the multiplexing mix-in)."""

    def _reactor_stop_taking(self, reactor: Reactor) -> None:
        f = self._reactor_facade
        if f.listener is not None:
            f.listener.close()
        if f.reader is not None and not reactor.is_closed():
            try:
                reactor.selector.unregister(f.reader.fd)
            except (KeyError, ValueError):
                pass
            f.reader = None
        if f.endpoint is not None:
            f.endpoint.abort()

    def _reactor_drain(self) -> None:
        """Requests still waiting for a worker when the server closes: closed here; the
        mix-ins may hand them on instead."""
        f = self._reactor_facade
        while f.waiting:
            request, client_address, _row = f.waiting.popleft()
            self._reactor_shutdown_quietly(request, client_address)

    def __enter__(self) -> BaseServer:
        return self

    def __exit__(self, *args: object) -> None:
        self.server_close()


def _no_accept(listener: Listener, raw: Any, addr: Any) -> None:  # pragma: no cover
    raise AssertionError("an _OwnAcceptListener never accepts")


class _OwnAcceptListener(Listener):
    """The listener of a server whose ``get_request`` is overridden.

    It only says that the listening socket is readable: the server's ``get_request``
    (the program's override, or ours through ``super()``) then accepts, one connection
    per wake-up, as the standard library's loop does. The listening socket keeps the
    blocking mode or timeout the program gave it, so the override's ``accept()``
    behaves as it does on the standard library. The rest is a listener's: the rows
    count against ``max_connections`` (the socket is unregistered at the cap) and
    ``close``.
    """

    def __init__(self, server: TCPServer, reactor: Reactor, sock: socket.socket,
                 max_connections: int | None) -> None:
        self.server = server
        timeout = sock.gettimeout()
        super().__init__(reactor, sock, _no_accept, max_connections=max_connections,
                         accept_batch=1)
        sock.settimeout(timeout)  # Listener made it non-blocking: as the program set it

    def _read_ready(self) -> None:
        if self._registered:
            self.server._reactor_take_own(self)


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
    wrapped connections, as its own ``accept`` would.
    """

    address_family: int = socket.AF_INET
    socket_type: int = socket.SOCK_STREAM
    request_queue_size: int = 5
    allow_reuse_address: bool = False
    allow_reuse_port: bool = False

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

    def _reactor_register(self, reactor: Reactor) -> None:
        f = self._reactor_facade
        f.socket_timeout = self.socket.gettimeout()
        # overridden in a subclass or on the instance (not through vars(self): making
        # the instance's __dict__ real would slow every attribute access after it)
        if getattr(self.get_request, "__func__", None) is not TCPServer.get_request:
            # the override accepts (also through super().get_request(), which then finds
            # nothing staged and calls accept itself)
            f.own_accept = True
            f.listener = _OwnAcceptListener(self, reactor, self.socket, self.max_connections)
            return
        if self._reactor_nonblocking:
            factory: Callable[[int, int, int, int], Any] = _nonblocking_socket
        elif self.request_buffer is not None:
            factory = BufferedRequestSocket
        else:
            factory = _HANDLER_SOCKET
        f.listener = Listener(reactor, self.socket, self._reactor_accept,
                              max_connections=self.max_connections,
                              accept_batch=self._reactor_accept_batch,
                              connection_factory=factory)

    def _reactor_accept(self, listener: Listener, raw: Any, addr: Any) -> None:
        """The listener accepted a connection: make its row and run the hooks."""
        f = self._reactor_facade
        if f.ended:  # rows workers ended since the last sweep
            self._reactor_release_ended()
        # The listener made ``sock`` as the server wants it (see _reactor_register): a
        # blocking socket.socket for a blocking handler (the row is never registered
        # with the selector: this is all StreamTransport.detach_socket would do), a
        # non-blocking one for a multiplexed handler, a BufferedRequestSocket when
        # requests are buffered first.
        sock = raw
        buffer = self.request_buffer  # a class attribute: one lookup, not two
        if buffer is not None and type(sock) is not BufferedRequestSocket and (
            not self._reactor_nonblocking
        ):  # request_buffer was set after the listener began
            sock = BufferedRequestSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        row = StreamTransport(listener.reactor, sock, addr, _ACCEPTED, listener)
        f.staged = (sock, addr)
        try:
            request, client_address = self.get_request()
        except Exception as exc:
            f.staged = None
            row.release()
            if isinstance(exc, OSError):  # a TLS handshake that failed, say: silent
                self._reactor_get_request_failed(exc, addr)
                self._reactor_done()
            else:  # raised from serve_forever / handle_request, as in the standard library
                self._reactor_defer(exc)
            return
        f.staged = None  # an override of get_request may not have taken it
        self._reactor_start_request(request, client_address, row)

    def _reactor_take_own(self, listener: _OwnAcceptListener) -> None:
        """The listening socket is readable and ``get_request`` is overridden: let it
        accept, then make the request's row and run the hooks."""
        f = self._reactor_facade
        if f.ended:  # rows workers ended since the last sweep
            self._reactor_release_ended()
        try:
            request, client_address = self.get_request()
        except OSError as exc:  # silent, as in the standard library
            self._reactor_get_request_failed(exc, None)
            self._reactor_done()
            return
        except Exception as exc:  # raised from serve_forever / handle_request
            self._reactor_defer(exc)
            return
        listener.accepted += 1
        listener.active += 1
        sock = request if isinstance(request, socket.socket) else None
        if sock is not None and self._reactor_nonblocking:
            sock.setblocking(False)
        row = StreamTransport(listener.reactor, sock, client_address, _ACCEPTED, listener)
        cap = listener.max_connections
        if cap is not None and listener.active >= cap:
            listener._update_registration()
        self._reactor_start_request(request, client_address, row)

    def get_request(self) -> tuple[Any, Any]:
        """The next connection: ``(socket, client_address)``.

        On the reactor's path, the connection its listener accepted. Called with nothing
        staged -- through ``super()`` from an override (an overriding server's listener
        leaves the accepting to ``get_request``), or from outside the loop -- it
        accepts from the listening socket itself, as the standard library does.
        """
        f = self._reactor_facade
        staged = f.staged
        if staged is None:
            return self.socket.accept()
        f.staged = None
        listening = self.socket
        if listening is not f.plain_listening:
            ssl = sys.modules.get("ssl")
            if ssl is not None and isinstance(listening, ssl.SSLSocket):
                sock = listening.context.wrap_socket(
                    staged[0], server_side=True,
                    do_handshake_on_connect=listening.do_handshake_on_connect,
                    suppress_ragged_eofs=listening.suppress_ragged_eofs,
                )
                return sock, staged[1]
            f.plain_listening = listening
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
        # _reactor_end_request, inlined with its case for a request handled inline
        f = self._reactor_facade
        row = f.rows.pop(request if type(request) is _SOCKET else id(request), None)
        if row is None:
            return
        if row.state is _INLINE and f.loop_thread == _get_ident() and (
            isinstance(row, StreamTransport)
        ):
            row.release(False)  # close_socket=False, by position (cheaper)
            f.finished += 1
        else:
            self._reactor_end_popped(request, row)


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

    def server_activate(self) -> None:
        """Datagram sockets do not listen."""

    def _reactor_register(self, reactor: Reactor) -> None:
        f = self._reactor_facade
        fd = self.socket.fileno()
        overridden = type(self).get_request is not UDPServer.get_request
        f.reader = reader = ReadyReader(self, fd, 1 if overridden or not _DONTWAIT
                                         else DATAGRAM_BATCH)
        reactor.selector.register(fd, EVENT_READ, reader)

    def _reactor_kind(self) -> str:
        return "unixdg" if self.address_family == getattr(socket, "AF_UNIX", None) else "udp"

    def get_request(self) -> tuple[Any, Any]:
        """Receive one datagram: ``((data, socket), client_address)``."""
        data, _ancillary, flags, client_address = self.socket.recvmsg(
            self.max_packet_size, 0, _DONTWAIT)
        if flags & _TRUNC:
            logger.warning("%s: datagram from %r cut to max_packet_size=%d bytes",
                           type(self).__name__, client_address, self.max_packet_size)
        return (data, self.socket), client_address

    def shutdown_request(self, request: Any) -> None:
        """Nothing to shut down for a datagram."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Nothing to close for a datagram (the socket is the server's)."""
        self._reactor_end_request(request)


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        """A stream server on a Unix socket path."""

        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        """A datagram server on a Unix socket path."""

        address_family = socket.AF_UNIX
