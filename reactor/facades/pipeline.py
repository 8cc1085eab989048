"""The request path of the socketserver facades: take, verify, buffer, dispatch, end,
release -- one server's requests, from a readable source to a released row.

Theory of operation
-------------------
A facade (:class:`~reactor.facades.servers.BaseServer` and its subclasses) keeps the
standard library's shape -- attributes, hooks, call order -- and nothing else: every
step of the request path is a method of the engine it holds in one attribute
(``_reactor_engine``; :class:`RequestPath` here, with the server's running and closing
in :class:`~reactor.facades.engine.RequestEngine`), so a subclass of ``TCPServer``
sees only the standard library's hooks. The engine calls those hooks on the server,
in the standard library's order, and keeps the rest. Each request is a row of the
reactor's connection table and walks the facade column of
:data:`~reactor.sansio.connection.LIFECYCLE`::

    ACCEPTED -> VERIFIED [-> BUFFERING] -> DISPATCHED_{INLINE,THREAD,CHILD}
             [-> FINISHED] -> CLOSED

* **take**: a readable source (a listener's accepted connection, a readable datagram
  socket; see :mod:`~reactor.facades.sources`) becomes a row, and ``get_request`` says
  what the request is;
* **verify**: ``verify_request``; a refused request is shut down;
* **buffer** (with a ``request_buffer``): the reactor reads the first request without
  blocking (BUFFERING) and dispatches it once complete;
* **dispatch**: ``process_request``; where it runs is the mix-in's
  :class:`InlineWork` (here, on the reactor thread) or its subclass for threads,
  children or multiplexing;
* **end and release**: ``close_request`` ends the request; the row leaves the table on
  the reactor thread (FINISHED: the handler returned in a worker thread or the child
  exited, and the reactor has not released the row yet). Rows that workers end are
  released in batches, by a sweep every :data:`SWEEP_INTERVAL` while workers run, so
  the reactor is not woken once per request.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..io.loop import Reactor
from ..io.stream import StreamTransport
from ..io.validate import address_text
from ..sansio.connection import ConnEvent, ConnState, Row
from ..sansio.errors import ClosedError, IllegalTransition
from ..sansio.request_buffer import RequestBuffer
from ..sansio.serverlife import SERVER_LIFECYCLE, ServerEvent, ServerPhase
from ..sansio.timers import TimerHandle
from .requests import (
    WAITING,
    BufferedRequestSocket,
    DatagramRequest,
    ReadyReader,
    RequestReader,
    log_refused,
)

if TYPE_CHECKING:
    from ..io.datagram import DatagramTransport
    from ..io.listeners import Listener
    from .requests import RequestRow
    from .servers import BaseServer

__all__ = ["SWEEP_INTERVAL", "InlineWork", "RequestPath"]

logger = logging.getLogger("reactor.servers")  # the name it had before the layers became folders

EVENT_READ: Final = 1
SWEEP_INTERVAL: Final = 0.05  # seconds between releases of rows ended by workers
_ACCEPTED: Final = ConnState.ACCEPTED
_INLINE: Final = ConnState.DISPATCHED_INLINE
_THREAD: Final = ConnState.DISPATCHED_THREAD
_CHILD: Final = ConnState.DISPATCHED_CHILD
_CLOSED: Final = ConnState.CLOSED
_VERIFIED: Final = ConnState.VERIFIED
_FINISHED: Final = ConnState.FINISHED
_BUFFERING: Final = ConnState.BUFFERING
# a facade row in these states is still the reactor's (being read for a request buffer
# or its PROXY header, or closing after it was refused): its transport ends it
TRANSPORT_ENDS: Final = frozenset({ConnState.BUFFERING, ConnState.CLOSING, ConnState.ENDING,
                                   ConnState.PROXY_HEADER})
_FINISH: Final = ConnEvent.FINISH
_LOST: Final = ConnEvent.LOST
_VERIFY: Final = ConnEvent.VERIFY
_DISPATCH_THREAD: Final = ConnEvent.DISPATCH_THREAD
_DISPATCH_INLINE: Final = ConnEvent.DISPATCH_INLINE
_P: Final = ServerPhase
_get_ident: Final = threading.get_ident

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


class InlineWork:
    """Where a server's ready requests run: here, inline on the reactor thread.

    The mix-ins subclass it (threads, children, multiplexing) and name their kind in
    the class attribute ``_reactor_work``; the engine makes one per server.

    Attributes:
        accept_batch: connections taken per wake-up of the listener.
        nonblocking: accepted connections stay non-blocking (handled in the reactor).
    """

    accept_batch: ClassVar[int] = 1  # inline handlers: one accept per wake-up
    nonblocking: ClassVar[bool] = False

    def __init__(self, engine: RequestPath) -> None:
        self.engine = engine
        self.server = engine.server

    def register(self, reactor: Reactor) -> bool:
        """Register the server's source in a way of its own (True), or leave it to the
        engine (False)."""
        return False

    def process(self, request: Any, client_address: Any) -> None:
        """Run a ready request where this kind of work runs it: what a mix-in's
        ``process_request`` does. (An inline request runs in
        ``BaseServer.process_request`` itself, which never comes here.)"""
        raise NotImplementedError(f"{type(self).__name__} runs requests inline")

    def workers(self) -> tuple[int, int]:
        """Live worker threads and children."""
        return 0, 0

    def waiting(self) -> int:
        """Requests waiting for a worker that the engine's ``waiting`` does not hold."""
        return 0

    def drain(self) -> None:
        """The server is closing: close the requests still waiting for a worker (a
        kind of work may hand them on first)."""
        self.engine.close_waiting()

    def wind_down(self, reactor: Reactor) -> None:
        """The server is closing the reactor it made (not running): let connections
        served inside the reactor finish first (multiplexing)."""


class RequestPath:
    """One server's request path, and its reactor-side state.

    Slotted: the per-request path reads and writes these attributes many times, and a
    slot is the cheapest attribute there is.

    Args:
        server: the facade whose hooks this engine calls.
        reactor: the reactor to serve on; None makes one on first use (and the server
            closes it).
    """

    __slots__ = (
        "accepted", "attached", "buffer_refused", "buffer_timeouts", "buffered",
        "deferred", "dispatched_child", "dispatched_inline", "dispatched_thread", "ended",
        "endpoint", "errors", "finished", "get_request_errors", "handled", "is_shut_down",
        "listener", "lock", "loop_thread", "one_request", "own_accept", "owns_reactor",
        "phase", "plain_listening", "poll_interval", "reactor", "reader", "rejected",
        "release_scheduled", "rows", "run_inline", "server", "serving_thread",
        "socket_timeout", "staged", "sweeping", "tick", "waiting", "warned_buffer", "work",
    )

    def __init__(self, server: BaseServer, reactor: Reactor | None) -> None:
        self.server = server
        self.reactor = reactor
        self.owns_reactor = reactor is None
        self.phase = _P.IDLE
        self.listener: Listener | None = None
        self.reader: ReadyReader | None = None
        self.endpoint: DatagramTransport | None = None
        # id(request) -> its row, while in flight: the request is alive as long as its
        # row is here (the handler, its thread or the waiting queue holds it), so the
        # id is not reused meanwhile; id() is a C call, where a key function would
        # cost a Python frame on every lookup
        self.rows: dict[int, RequestRow] = {}
        self.waiting: deque[tuple[Any, Any, RequestRow]] = deque()
        self.staged: tuple[Any, Any] | None = None  # what get_request() returns next
        # get_request is overridden: it accepts for itself, the listener only says that
        # the listening socket is readable (and keeps its mode as the program set it)
        self.own_accept = False
        # the server's process_request is BaseServer's: serve_request runs it inline
        # itself (see there); decided each time the server starts running
        self.run_inline = False
        # the last listening socket get_request() saw that is not an SSLSocket
        self.plain_listening: Any = None
        self.lock = threading.Lock()
        # the counters of ServerStatistics: plain attributes (cheaper than a Counter's
        # items on the per-request path); the reactor thread adds to them directly,
        # other threads through count() (dispatched_thread is a count of its own)
        self.accepted = 0
        self.rejected = 0
        self.buffered = 0
        self.buffer_timeouts = 0
        self.buffer_refused = 0
        self.dispatched_inline = 0
        self.dispatched_child = 0
        self.attached = 0
        self.finished = 0
        self.errors = 0
        self.get_request_errors = 0
        # requests handed to threads (pool workers take waiting requests themselves):
        # next() on a count is atomic
        self.dispatched_thread = itertools.count()
        self.is_shut_down = threading.Event()
        self.serving_thread: int | None = None
        self.loop_thread: int | None = None
        self.deferred: BaseException | None = None
        self.handled = 0
        self.one_request = False  # handle_request runs: stop after the next request
        self.socket_timeout: float | None = None
        self.tick: TimerHandle | None = None
        self.poll_interval = 0.5  # serve_forever's, for periodic work that needs one
        self.warned_buffer = False
        # rows that workers ended, for the reactor thread to release in one batch
        self.ended: deque[RequestRow] = deque()
        self.release_scheduled = False  # a wake-up to release them is on its way
        self.sweeping = False  # a sweep timer is armed (workers need not wake the loop)
        self.work: InlineWork = server._reactor_work(self)

    def move(self, event: ServerEvent) -> ServerPhase:
        """Apply ``event`` to the server's lifecycle (under ``lock`` where another
        thread may move it too)."""
        self.phase = phase = SERVER_LIFECYCLE.next(self.phase, event)
        return phase

    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter that several threads update."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def bump(self, name: str) -> None:
        """Add one to a counter only the reactor thread updates (no lock)."""
        setattr(self, name, getattr(self, name) + 1)

    def get_reactor(self) -> Reactor:
        """The reactor, made once on first use (by whichever thread) unless given."""
        if self.reactor is None:
            with self.lock:
                if self.reactor is None:
                    self.reactor = Reactor()
        return self.reactor

    def defer(self, exc: BaseException) -> None:
        """Raise ``exc`` from the caller's serve_forever / handle_request."""
        if self.deferred is None:
            self.deferred = exc
        self.get_reactor().stop()

    def own_rows(self) -> list[Row]:
        """This server's rows in the reactor's table."""
        reactor = self.reactor
        if reactor is None:
            return []
        listener = self.listener
        return [
            row for row in reactor.connections
            if (listener is not None and getattr(row, "listener", None) is listener)
            or getattr(row, "owner", None) is self.server
        ]

    # -- taking a request -------------------------------------------------------------

    def take(self) -> bool:
        """Take one request from a readable descriptor; False when there is none."""
        try:
            request, client_address = self.server.get_request()
        except BlockingIOError:
            return False
        except OSError as exc:
            self.get_request_failed(exc, None)
            self.done()
            return False
        except Exception as exc:  # raised from serve_forever / handle_request, as before
            self.defer(exc)
            return False
        size = len(request[0]) if isinstance(request, tuple) and request else 0
        reactor = self.get_reactor()
        row = DatagramRequest(self.kind(), client_address, size, reactor.time(), self.server,
                              table=reactor.connections)
        self.serve_request(request, client_address, row)
        return True

    def kind(self) -> str:
        """The kind of the rows made by :meth:`take`."""
        return "request"

    def get_request_failed(self, exc: OSError, client_address: Any) -> None:
        """get_request raised an OSError: silent, as in the standard library (the request
        is dropped and the loop goes on). Counted; logged at debug level only when no
        handler on the way of the record sends it over the network (see
        :func:`_logging_cannot_block`)."""
        self.get_request_errors += 1
        if logger.isEnabledFor(logging.DEBUG) and _logging_cannot_block(logger):
            where = "" if client_address is None else f" for {address_text(client_address)}"
            logger.debug("%s: get_request() failed%s: %s", type(self.server).__name__, where,
                         exc)

    def serve_request(
        self, request: Any, client_address: Any, row: RequestRow,
        run: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Take a request through the hooks: a new one (ACCEPTED) is verified, then
        buffered or dispatched; one that was buffered, or waited for a worker slot, is
        dispatched. Dispatching calls process_request (or ``run``, for a request that
        waited for a slot) with the standard library's error handling.

        The inline path: when the server's ``process_request`` is ``BaseServer``'s
        (``run_inline``, decided each time the server starts running) and the request
        is not buffered, this runs what that method would -- the row to
        DISPATCHED_INLINE, ``finish_request``, ``shutdown_request`` -- without the
        calls to it and to :meth:`mark`: the one specialisation of the request path,
        worth about 3 % of a connection's instructions in the facade's churn
        (``tests/test_facade_paths.py`` holds the two paths to the same results).
        """
        server = self.server
        inline = False
        if row.state is _ACCEPTED:
            self.rows[id(request)] = row
            self.accepted += 1
            try:
                allowed = server.verify_request(request, client_address)
            except Exception:
                server.handle_error(request, client_address)
                allowed = False
            if not allowed:
                self.reject(request, client_address)
                return
            if server.request_buffer is not None:
                row.verify()
                if self.buffer_first(request, client_address, row):
                    return
            elif self.run_inline:
                row.verify_inline()  # to VERIFIED and on to DISPATCHED_INLINE
                self.dispatched_inline += 1
                inline = True
            else:
                row.verify()
        try:
            if inline:
                server.finish_request(request, client_address)
                server.shutdown_request(request)
            else:
                (run or server.process_request)(request, client_address)
        except BaseException:
            self.dispatch_failed(request, client_address)
        finally:
            if row.state is not _CLOSED:  # an inline request is closed by now
                self.after_dispatch(request, row)
            if run is None and self.one_request:  # handle_request waits for it
                self.done()

    def reject(self, request: Any, client_address: Any) -> None:
        """verify_request said no (or raised): shut the request down."""
        self.rejected += 1
        self.shutdown_quietly(request, client_address)
        self.done()

    def dispatch_failed(self, request: Any, client_address: Any) -> None:
        """process_request raised (called from the ``except`` block): an Exception goes
        to handle_error; SystemExit and KeyboardInterrupt propagate, as in the standard
        library; any other BaseException is raised from serve_forever/handle_request.
        The request is shut down in every case."""
        exc = sys.exc_info()[1]
        if isinstance(exc, Exception):
            self.server.handle_error(request, client_address)
            self.shutdown_quietly(request, client_address)
            return
        self.shutdown_quietly(request, client_address)
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) or exc is None:
            raise  # noqa: PLE0704 -- re-raises the exception being handled by the caller
        self.defer(exc)

    def after_dispatch(self, request: Any, row: RequestRow) -> None:
        """process_request returned: end a row that nobody else will end."""
        # WAITING is read before the state: a pool worker that takes a waiting request
        # moves its row on from VERIFIED first and drops WAITING after, so the other
        # order could see VERIFIED and no WAITING and end a row being handled
        meta = row.meta
        waiting = meta is not None and meta.get(WAITING)
        state = row.state
        if state is _INLINE or state is _FINISHED or (state is _VERIFIED and not waiting):
            # process_request returned without ending the request itself (an override
            # that did not call the base class): keep the table honest
            self.rows.pop(id(request), None)
            self.end_row(row)

    def done(self) -> None:
        """One request was handled (or dropped): handle_request may return.

        ``handled`` counts what handle_request waits for; the request path calls this
        only while it waits (``one_request``), the rare paths (a refusal, a failed
        get_request) always."""
        self.handled += 1
        if self.one_request and self.reactor is not None:
            self.reactor.stop()

    def shutdown_quietly(self, request: Any, client_address: Any) -> None:
        """``shutdown_request``, its errors to ``handle_error``."""
        try:
            self.server.shutdown_request(request)
        except Exception:
            self.server.handle_error(request, client_address)

    # -- request buffering ------------------------------------------------------------

    def buffer_first(self, request: Any, client_address: Any, row: RequestRow) -> bool:
        """With a request_buffer: start reading the request in the reactor (True), or
        say why it cannot be (False: dispatch it now)."""
        buffer = self.server.request_buffer
        if buffer is None or not isinstance(row, StreamTransport) or self.work.nonblocking:
            return False
        if isinstance(request, BufferedRequestSocket) and (
            request is row.get_extra_info("socket")
        ):
            self.start_reading(request, client_address, row, buffer)
            return True
        if not self.warned_buffer:
            self.warned_buffer = True
            why = ("get_request() is overridden (it accepts for itself)" if self.own_accept
                   else "get_request() returned a different socket")
            logger.warning("%s: %s; request_buffer is ignored", type(self.server).__name__,
                           why)
        return False

    def start_reading(
        self, request: BufferedRequestSocket, client_address: Any, row: StreamTransport,
        buffer: RequestBuffer,
    ) -> None:
        """Read the request in the reactor (state BUFFERING)."""
        row.advance(ConnEvent.BUFFER)
        self.buffered += 1
        reader = RequestReader(self, request, client_address, row, buffer)
        request.setblocking(False)
        row.start_reading(reader)  # type: ignore[arg-type]
        if buffer.timeout is not None and not reader.done:
            reader.timer = self.get_reactor().call_later(buffer.timeout, reader.expired)

    def request_read(self, reader: RequestReader) -> None:
        """The request is complete: hand the connection to the handler."""
        reader.stop()
        reader.handed = True
        row = reader.row
        request = reader.request
        row.detach_socket()
        request.set_prefix(b"".join(reader.chunks))
        reader.chunks = []
        self.serve_request(request, reader.client_address, row)

    def refuse_read(
        self, reader: RequestReader, reason: str, response: bytes, timed_out: bool = False
    ) -> None:
        """The request is too large, malformed or late: answer and close."""
        reader.stop()
        row = reader.row
        self.bump("buffer_timeouts" if timed_out else "buffer_refused")
        log_refused(self.get_reactor(), row.describe(), reason, timed_out)
        if response:
            row.write(response)
        row.close()
        if row.write_buffer_size:  # the peer does not read: do not wait for it forever
            self.get_reactor().call_later(5.0, row.abort)

    def lost_while_reading(self, reader: RequestReader, exc: BaseException | None) -> None:
        """The connection went away while its request was being read."""
        if reader.handed:
            return
        reader.stop()
        if exc is not None:
            logger.debug("%s: lost while buffering: %s", reader.row.describe(), exc)
        self.rows.pop(id(reader.request), None)
        self.shutdown_quietly(reader.request, reader.client_address)
        self.done()

    # -- ending a request -------------------------------------------------------------

    def mark(self, request: Any, event: ConnEvent) -> RequestRow | None:
        """Move the request's row to a DISPATCHED state (when it is still undecided)."""
        row = self.rows.get(id(request))
        if row is None:
            return None
        try:
            row.advance(event)
        except IllegalTransition:
            return row  # already dispatched (an override called two dispatchers)
        if row.meta:
            row.meta.pop(WAITING, None)
        if event is _DISPATCH_INLINE:
            self.dispatched_inline += 1
        elif event is _DISPATCH_THREAD:
            next(self.dispatched_thread)  # atomic: pool workers take waiting requests
        else:
            self.dispatched_child += 1
        return row

    def end_request(self, request: Any) -> None:
        """The request was closed: finish its row (a forked one waits for its child)."""
        row = self.rows.pop(id(request), None)
        if row is None:
            return
        state = row.state
        if state is _INLINE and self.loop_thread == _get_ident():
            row.release(False)  # release_row's work inline: a call less per request
            self.finished += 1
            return
        if state in TRANSPORT_ENDS:  # the transport ends it (connection_lost)
            self.rows[id(request)] = row
            return
        if state is _CHILD or self.phase is _P.CHILD:
            return  # the parent ends it when the child is reaped
        self.end_row(row)

    def end_row(self, row: RequestRow) -> None:
        """The request ended: the row leaves the table (on the reactor thread).

        Ended on another thread (a worker), the row is FINISHED at once and closed
        when the reactor gets to it; on the reactor thread it closes right away.
        """
        if self.loop_thread != threading.get_ident():
            reactor = self.reactor
            if reactor is not None and not reactor.is_closed():
                state = row.state
                if state is _THREAD or state is _CHILD or state is _INLINE:
                    row.advance(_FINISH)
                self.ended.append(row)
                listener = self.listener
                if self.sweeping and (listener is None or listener.max_connections is None):
                    return  # the sweep (or the next accept) releases it: no wake-up
                if not self.release_scheduled:  # one wake-up for a batch of ended rows
                    self.release_scheduled = True
                    try:
                        reactor.call_soon_threadsafe(self.release_ended)
                    except ClosedError:
                        self.release_ended()
                return
        self.release_row(row)

    def release_ended(self) -> None:
        """Release the rows that workers ended."""
        self.release_scheduled = False  # first: a row ended after this gets a new wake-up
        ended = self.ended
        while ended:
            self.release_row(ended.popleft())

    def sweep_soon(self) -> None:
        """Workers are running requests: release the rows they end every
        SWEEP_INTERVAL seconds, instead of waking the reactor once per request. The
        sweep stops when nothing is in flight, so an idle server sleeps."""
        if not self.sweeping and self.reactor is not None:
            self.sweeping = True
            self.reactor.call_later(SWEEP_INTERVAL, self.sweep)

    def sweep(self) -> None:
        """One sweep: release what workers ended; again later while requests run."""
        self.sweeping = False  # first: a row ended from now on wakes the reactor itself
        self.release_ended()
        if self.rows or self.ended:
            self.sweep_soon()

    def release_row(self, row: RequestRow) -> None:
        """The row leaves the table (its socket is the handler's: not closed here)."""
        state = row.state  # a CLOSED row: release() does nothing, and it is not counted
        row.release(False)  # close_socket=False, by position (cheaper)
        if state is _FINISHED or state is _INLINE or state is _THREAD or (
            state is _CHILD
        ):
            self.finished += 1

    def close_waiting(self) -> None:
        """Close the requests still waiting for a worker."""
        waiting = self.waiting
        while waiting:
            request, client_address, _row = waiting.popleft()
            self.shutdown_quietly(request, client_address)
