"""The request side of the socketserver facades: the rows, sockets and readers a server
uses for its requests, and its statistics snapshot.

* :class:`DatagramRequest` -- a datagram request as a row of the connection table (a
  stream request's row is its :class:`~reactor.io.stream.StreamTransport`);
* :class:`BufferedRequestSocket` -- the connected socket a blocking handler receives
  after request buffering: it returns the bytes the reactor already read first;
* :class:`RequestReader` -- reads a request without blocking in state BUFFERING (an
  asyncio-style protocol on the row), feeding a :mod:`~reactor.sansio.request_buffer` scanner;
* :class:`ReadyReader` -- registered for a datagram (or custom) server's descriptor;
* :class:`ServerStatistics` -- what ``server.statistics()`` returns;
* :func:`log_refused` -- a buffered request refused or late (a 408), logged once per
  run of them (:mod:`reactor.io.episodes`), each at DEBUG.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..io.episodes import episode
from ..io.loop import Reactor, ReactorStatistics
from ..io.validate import address_text
from ..sansio.connection import Connection, ConnEvent, ConnState
from ..sansio.errors import DeadlineExceeded
from ..sansio.request_buffer import Progress, RequestBuffer, RequestRejected
from ..sansio.table import ConnectionTable, _empty_counts
from ..sansio.timers import TimerHandle
from ..sansio.words import counted

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..io.stream import StreamTransport
    from .pipeline import RequestPath

if TYPE_CHECKING:
    RequestRow: TypeAlias = "StreamTransport | DatagramRequest"
    """A request's row: its stream transport, or a datagram's own row."""

__all__ = [
    "WAITING",
    "BufferedRequestSocket",
    "DatagramRequest",
    "ReadyReader",
    "RequestReader",
    "ServerStatistics",
    "log_refused",
    "peek_count",
]

logger = logging.getLogger("reactor.servers")

_ACCEPTED: Final = ConnState.ACCEPTED  # Enum class attributes are slow to read (3.11)
_CLOSED: Final = ConnState.CLOSED
_LOST: Final = ConnEvent.LOST
WAITING: Final = "facade.waiting"  # row meta key: ready, waiting for a worker slot



def log_refused(reactor: Reactor, where: str, reason: str, timed_out: bool) -> None:
    """A request being buffered was refused (too large, malformed) or timed out, and
    its connection (``where``) is closed: one INFO line per run of them."""
    what = "late" if timed_out else "refused"

    def summary(count: int, seconds: float) -> str:
        return (f"request buffering: closed {counted(count, 'connection')} with a "
                f"{what} first request in {seconds:.1f} s")

    episode(reactor, "buffer:" + what, reactor, logger, summary).event(
        "%s: %s; closing", where, reason)


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
        refused_by_address / refused_by_credentials: of those, the ones
            :class:`~reactor.facades.access.AccessControlMixIn` refused for its
            address lists, or for its uid/gid lists.
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
        tls_failed: TLS handshakes that failed or timed out (the connection was
            closed before any hook saw it; see :mod:`reactor.facades.tls`).
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
    refused_by_address: int = 0
    refused_by_credentials: int = 0
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
    tls_failed: int = 0
    waiting: int = 0
    in_flight: int = 0
    by_state: Mapping[str, int] = field(default_factory=_empty_counts)
    threads: int = 0
    children: int = 0
    reactor: ReactorStatistics | None = None


class DatagramRequest(Connection):
    """One datagram request as a row of the connection table (which it joins)."""

    __slots__ = ("_kind", "_table", "owner")

    def __init__(self, kind: str, peername: Any, size: int, now: float, owner: object, *,
                 table: ConnectionTable) -> None:
        super().__init__(_ACCEPTED, peername, now)
        self.bytes_in = size
        self._kind = kind
        self.owner = owner
        self._table = table
        table.add(self)

    def release(self, close_socket: bool = True) -> None:
        """The request ended: leave the table (there is no socket of its own to close,
        whatever ``close_socket`` says: the socket is the server's)."""
        if self.state is not _CLOSED:
            self.lose()
            self._table.remove(self)

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

    __slots__ = ("batch", "engine", "fd")

    def __init__(self, engine: RequestPath, fd: int, batch: int) -> None:
        self.engine = engine
        self.fd = fd
        self.batch = batch

    def _read_ready(self) -> None:
        take = self.engine.take
        for _ in range(self.batch):
            if not take():
                return

    def _write_ready(self) -> None:  # never registered for writing
        pass

    def describe(self) -> str:
        server = self.engine.server
        return f"{type(server).__name__} {address_text(server.server_address)}"


class RequestReader:
    """Reads one request without blocking (state BUFFERING); an asyncio-style protocol."""

    __slots__ = (
        "buffer", "chunks", "client_address", "done", "engine", "handed", "request", "row",
        "scanner", "size", "timer",
    )

    def __init__(
        self, engine: RequestPath, request: Any, client_address: Any, row: StreamTransport,
        buffer: RequestBuffer,
    ) -> None:
        self.engine = engine
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
            self.engine.refuse_read(self, exc.reason, exc.response)
            return
        if progress is Progress.READY:
            self.engine.request_read(self)
        elif self.size > self.buffer.max_size:
            self.engine.refuse_read(
                self, f"request larger than {self.buffer.max_size} bytes",
                self.buffer.too_large_response(),
            )

    def eof_received(self) -> bool:
        if self.done:
            return False
        if self.scanner.feed_eof() is Progress.READY:
            self.engine.request_read(self)
            return True
        logger.debug("%s: the peer closed before its request was complete", self.row.describe())
        self.stop()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.engine.lost_while_reading(self, exc)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def expired(self) -> None:
        self.timer = None
        if not self.done:  # the close is counted as a request-timeout
            self.row.note_close_cause(DeadlineExceeded("request deadline"))
            self.engine.refuse_read(
                self, f"no complete request within {self.buffer.timeout} s",
                self.buffer.timeout_response(), timed_out=True,
            )

    def stop(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
