"""The request side of the socketserver facades: the rows, sockets and readers a server
uses for its requests, and its statistics snapshot.

* :class:`DatagramRequest` -- a datagram request as a row of the connection table (a
  stream request's row is its :class:`~reactor.io.stream.StreamTransport`);
* :class:`BufferedRequestSocket` -- the connected socket a blocking handler receives
  after request buffering: it returns the bytes the reactor already read first;
* :class:`RequestReader` -- reads a request without blocking in state BUFFERING (an
  asyncio-style protocol on the row), feeding a :mod:`~reactor.sansio.request_buffer` scanner;
* :class:`ReadyReader` -- registered for a datagram (or custom) server's descriptor;
* :class:`ServerState` -- a server's reactor-side state, kept in one attribute;
* :class:`ServerStatistics` -- what ``server.statistics()`` returns.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..io.loop import Reactor, ReactorStatistics
from ..sansio.connection import Connection, ConnState, Row
from ..sansio.request_buffer import Progress, RequestBuffer, RequestRejected
from ..sansio.table import _empty_counts
from ..sansio.timers import TimerHandle

if TYPE_CHECKING:
    from ..io.datagram import DatagramTransport
    from ..io.listeners import Listener
    from ..io.stream import StreamTransport
    from .servers import BaseServer

__all__ = [
    "WAITING",
    "BufferedRequestSocket",
    "DatagramRequest",
    "ReadyReader",
    "RequestReader",
    "ServerState",
    "ServerStatistics",
    "peek_count",
    "request_key",
]

logger = logging.getLogger("reactor.servers")

_ACCEPTED: Final = ConnState.ACCEPTED  # Enum class attributes are slow to read (3.11)
WAITING: Final = "facade.waiting"  # row meta key: ready, waiting for a worker slot


_SOCKET: Final = socket.socket


def request_key(request: Any) -> Any:
    """A request's key in :attr:`ServerState.rows`: a plain ``socket.socket`` is its own
    key (hashed by identity, and much cheaper than ``id()``, which makes an int and
    raises an audit event); anything else -- a datagram's ``(data, socket)`` tuple
    hashes by value, a user's request type may too -- is keyed by ``id()``. The hot
    paths inline this expression: keep them the same."""
    return request if type(request) is _SOCKET else id(request)


def peek_count(counter: itertools.count[int]) -> int:
    """The next value of an :func:`itertools.count`, without advancing it (its repr
    shows it): how many times ``next()`` was called on a count that started at 0."""
    return int(repr(counter)[6:-1])


@dataclass(frozen=True)
class ServerStatistics:
    """An immutable snapshot of a server (see :meth:`BaseServer.statistics`).

    Attributes:
        server: the server's class name.
        address: ``server_address``.
        serving: whether ``serve_forever`` is running.
        accepted: requests taken (connections accepted, datagrams received).
        rejected: requests ``verify_request`` refused.
        buffered: requests that went through request buffering.
        buffer_timeouts: buffered requests closed because their deadline passed.
        buffer_refused: buffered requests closed for size or bad input.
        dispatched_inline: requests handled on the reactor thread.
        dispatched_thread: requests handed to a worker thread.
        dispatched_child: requests handed to a child process.
        attached: connections given to a non-blocking handler (multiplexing).
        finished: dispatched requests whose handler returned and whose row closed.
        errors: calls of ``handle_error``.
        get_request_errors: calls of ``get_request`` that raised an :class:`OSError`
            (silent, as in the standard library; logged at debug level where safe).
        waiting: requests ready and waiting for a worker thread or child slot.
        in_flight: this server's requests in the table now.
        by_state: this server's rows per lifecycle state name.
        threads: worker threads alive now.
        children: child processes not reaped yet.
        reactor: the reactor's own snapshot (None before the server first ran).
    """

    server: str
    address: Any
    serving: bool = False
    accepted: int = 0
    rejected: int = 0
    buffered: int = 0
    buffer_timeouts: int = 0
    buffer_refused: int = 0
    dispatched_inline: int = 0
    dispatched_thread: int = 0
    dispatched_child: int = 0
    attached: int = 0
    finished: int = 0
    errors: int = 0
    get_request_errors: int = 0
    waiting: int = 0
    in_flight: int = 0
    by_state: Mapping[str, int] = field(default_factory=_empty_counts)
    threads: int = 0
    children: int = 0
    reactor: ReactorStatistics | None = None


class DatagramRequest(Connection):
    """One datagram request as a row of the connection table."""

    __slots__ = ("_kind", "owner")

    def __init__(self, kind: str, peername: Any, size: int, now: float, owner: object) -> None:
        super().__init__(_ACCEPTED, peername, now)
        self.bytes_in = size
        self._kind = kind
        self.owner = owner

    @property
    def kind(self) -> str:
        return self._kind


class BufferedRequestSocket(socket.socket):
    """A connected socket that first returns bytes the reactor read for it.

    ``recv``, ``recv_into``, ``recvfrom`` and ``recvfrom_into`` (and so ``makefile``)
    serve the replayed bytes first. ``recvmsg`` and readiness checks (``select``) do
    not know about them.
    """

    __slots__ = ("_prefix", "_prefix_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefix = b""
        self._prefix_at = 0

    def set_prefix(self, data: bytes) -> None:
        """Replay ``data`` before reading the network."""
        self._prefix = data
        self._prefix_at = 0

    def _take(self, size: int, flags: int) -> bytes:
        at = self._prefix_at
        end = at + size if size > 0 else len(self._prefix)
        chunk = self._prefix[at:end]
        if not flags & socket.MSG_PEEK:
            self._prefix_at = at + len(chunk)
            if self._prefix_at >= len(self._prefix):
                self._prefix, self._prefix_at = b"", 0
        return chunk

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self._prefix:
            return self._take(bufsize, flags)
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        if self._prefix:
            view = memoryview(buffer).cast("B")
            chunk = self._take(nbytes or len(view), flags)
            view[: len(chunk)] = chunk
            return len(chunk)
        return super().recv_into(buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        if self._prefix:
            return self._take(bufsize, flags), None
        return super().recvfrom(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> tuple[int, Any]:
        if self._prefix:
            return self.recv_into(buffer, nbytes, flags), None
        return super().recvfrom_into(buffer, nbytes, flags)


class ReadyReader:
    """Registered for a server's descriptor: takes requests when it is readable."""

    __slots__ = ("batch", "fd", "server")

    def __init__(self, server: BaseServer, fd: int, batch: int) -> None:
        self.server = server
        self.fd = fd
        self.batch = batch

    def _read_ready(self) -> None:
        take = self.server._reactor_take
        for _ in range(self.batch):
            if not take():
                return

    def _write_ready(self) -> None:  # never registered for writing
        pass

    def describe(self) -> str:
        return f"{type(self.server).__name__} {self.server.server_address!r}"


class RequestReader:
    """Reads one request without blocking (state BUFFERING); an asyncio-style protocol."""

    __slots__ = (
        "buffer", "chunks", "client_address", "done", "handed", "request", "row",
        "scanner", "server", "size", "timer",
    )

    def __init__(
        self, server: BaseServer, request: Any, client_address: Any, row: StreamTransport,
        buffer: RequestBuffer,
    ) -> None:
        self.server = server
        self.request = request
        self.client_address = client_address
        self.row = row
        self.buffer = buffer
        self.scanner = buffer.scanner()
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.handed = False  # dispatched: the row belongs to the handler now
        self.timer: TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # not called: never attached
        pass

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.chunks.append(data)
        self.size += len(data)
        try:
            progress = self.scanner.feed(data)
        except RequestRejected as exc:
            self.server._reactor_buffer_refused(self, exc.reason, exc.response)
            return
        if progress is Progress.READY:
            self.server._reactor_buffer_ready(self)
        elif self.size > self.buffer.max_size:
            self.server._reactor_buffer_refused(
                self, f"request larger than {self.buffer.max_size} bytes",
                self.buffer.too_large_response(),
            )

    def eof_received(self) -> bool:
        if self.done:
            return False
        if self.scanner.feed_eof() is Progress.READY:
            self.server._reactor_buffer_ready(self)
            return True
        logger.debug("%s: the peer closed before its request was complete", self.row.describe())
        self.stop()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server._reactor_buffer_lost(self, exc)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def expired(self) -> None:
        self.timer = None
        if not self.done:
            self.server._reactor_buffer_refused(
                self, f"no complete request within {self.buffer.timeout} s",
                self.buffer.timeout_response(), timed_out=True,
            )

    def stop(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class ServerState:
    """The reactor side of one server, kept in one attribute (``_reactor_facade``) so
    that it stays out of the way of subclasses' own attributes.

    Slotted: the per-request path reads and writes these attributes many times, and a
    slot is the cheapest attribute there is (the instance dict of this many attributes
    would no longer share its keys)."""

    __slots__ = (
        "accepted", "activated", "attached", "buffer_refused", "buffer_timeouts",
        "buffered", "close_pending", "closed", "deferred", "dispatched_child",
        "dispatched_inline", "dispatched_thread", "ended", "endpoint", "errors",
        "finished", "get_request_errors", "handled", "in_child", "is_shut_down",
        "listener", "lock", "loop_thread", "own_accept", "owns_reactor", "plain_listening",
        "poll_interval", "reactor", "reader", "rejected", "release_scheduled", "rows",
        "serving_thread", "shutdown_request", "socket_timeout", "staged",
        "stop_after_handled", "sweeping", "threads_ended", "threads_started", "tick",
        "waiting", "warned_buffer",
    )

    def __init__(self, reactor: Reactor | None) -> None:
        self.reactor = reactor
        self.owns_reactor = reactor is None
        self.listener: Listener | None = None
        self.reader: ReadyReader | None = None
        self.endpoint: DatagramTransport | None = None
        self.activated = False
        self.closed = False
        self.close_pending = False
        self.rows: dict[Any, Row] = {}  # request_key(request) -> row, while in flight
        self.waiting: deque[tuple[Any, Any, Row]] = deque()
        self.staged: tuple[Any, Any] | None = None  # what get_request() returns next
        # get_request is overridden: it accepts for itself, the listener only says that
        # the listening socket is readable (and keeps its mode as the program set it)
        self.own_accept = False
        # the listening socket last seen by get_request() that is not an SSLSocket
        # (whose accepted connections it would wrap)
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
        self.is_shut_down = threading.Event()
        self.shutdown_request = False
        self.serving_thread: int | None = None
        self.loop_thread: int | None = None
        self.deferred: BaseException | None = None
        self.handled = 0
        self.stop_after_handled = False
        self.socket_timeout: float | None = None
        self.in_child = False
        self.tick: TimerHandle | None = None
        self.poll_interval = 0.5  # serve_forever's, for periodic work that needs one
        self.warned_buffer = False
        # rows that workers ended, for the reactor thread to release in one batch
        self.ended: deque[Row] = deque()
        self.release_scheduled = False
        self.sweeping = False  # a sweep timer is armed (workers need not wake the loop)
        # request threads started and ended, and requests handed to threads (pool
        # workers take waiting requests themselves): next() on a count is atomic
        self.threads_started = itertools.count()
        self.threads_ended = itertools.count()
        self.dispatched_thread = itertools.count()

    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter that several threads update."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def bump(self, name: str) -> None:
        """Add one to a counter only the reactor thread updates (no lock)."""
        setattr(self, name, getattr(self, name) + 1)
