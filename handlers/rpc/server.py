"""An RPC server on the reactor: one :class:`~.dispatch.Dispatcher` over TCP and UDP.

* :class:`RPCStreamHandler` -- a TCP connection: records (RFC 5531 record marking,
  :class:`~handlers.framers.rpcrecord.RPCRecordHandler`, at most ``max_record_size``
  bytes each) in, one reply record out per call, in the order the calls came. Many
  calls may be in flight on one connection (a blocking procedure's reply goes out when
  it is done, maybe after later calls' replies); while the peer does not read its replies,
  reading stops (back-pressure) instead of queueing without end. A record that gets no
  reply (not a call, a header that does not decode) closes the connection, as does a
  record over the maximum.
* :class:`RPCDatagramProtocol` -- UDP: one call per datagram, one reply datagram. A
  reply larger than ``max_udp_reply`` is not cut: the caller gets SYSTEM_ERR instead.
  Datagrams that get no reply are dropped. A retransmitted call (same client, xid and
  bytes) gets the reply already sent, from a :class:`~.replycache.ReplyCache`, and
  the procedure does not run twice (nor while it still runs in a worker thread).
* Procedures marked :func:`~.blocking.blocking` run in the server's
  :class:`~.blocking.BlockingPool` (see there for what happens when it is full); the
  others run in the reactor's thread.
* :class:`RPCServer` -- makes both, and :meth:`RPCServer.listen` serves them from one
  reactor on one port number (TCP and UDP alike, as ``rpcinfo -n PORT`` expects).

The default ``max_udp_reply`` is 8800 bytes: the receive buffer of the UDP clients the
C library makes (``UDPMSGSIZE``); a larger reply would reach them cut short.

Socket-free: the reactor is handed in (any object with the reactor's ``listen_tcp``
and ``listen_udp``); must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Final, Protocol

from handlers.framers.rpcrecord import (
    DEFAULT_MAX_RPC_RECORD_SIZE,
    RecordMarkingFramer,
    RPCRecordHandler,
)

from .blocking import BlockingPool
from .dispatch import Dispatcher, PreparedCall, Program
from .message import AcceptStat, accepted_reply
from .replycache import ReplyCache

__all__ = [
    "DEFAULT_MAX_UDP_REPLY",
    "RPCDatagramProtocol",
    "RPCEndpoints",
    "RPCServer",
    "RPCStreamHandler",
    "fit_datagram",
]

logger = logging.getLogger("handlers.rpc")

DEFAULT_MAX_UDP_REPLY: Final = 8800
_PORT_TRIES: Final = 20  # when port 0 picks a TCP port whose UDP twin is taken


class RPCStreamHandler(RPCRecordHandler):
    """One TCP connection of an RPC server.

    A blocking procedure's call goes to the pool and the next records are served
    meanwhile; its reply is sent when it comes back (RPC matches replies by xid, so
    they may leave in another order than the calls came). When the pool is full the
    call is held, later records wait behind it and reading stops until the pool has
    room. At the peer's EOF, or when a graceful stop begins (:meth:`begin_shutdown`),
    the connection stays open until the calls in flight have answered.
    """

    __slots__ = ("_backlog", "_dispatcher", "_held", "_in_flight", "_pool", "_stopping",
                 "_waiting")

    logger: ClassVar[logging.Logger] = logger

    def __init__(self, dispatcher: Dispatcher,
                 max_record_size: int = DEFAULT_MAX_RPC_RECORD_SIZE,
                 pool: BlockingPool | None = None) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self._framer = RecordMarkingFramer(max_record_size)
        self._pool = pool
        self._held: PreparedCall | None = None  # refused by a full pool
        self._backlog: deque[bytes] = deque()  # records that came after it
        self._in_flight = 0  # calls of this connection in the pool
        self._waiting = False  # registered with the pool for room
        self._stopping = False  # begin_shutdown: close once the calls have answered

    def record_received(self, record: bytes) -> None:
        if self._held is not None:
            self._backlog.append(record)
            return
        self._serve(record)

    def _serve(self, record: bytes) -> None:
        prepared = self._dispatcher.prepare(record, self.peername)
        if prepared is None:
            self.disconnect("a record that is not an RPC call", level=logging.DEBUG)
        elif isinstance(prepared, bytes):
            self.send_record(prepared)
        elif not prepared.blocking or self._pool is None:
            self.send_record(prepared.run())
        else:
            self._submit(prepared)

    def _submit(self, prepared: PreparedCall) -> None:
        assert self._pool is not None
        if self._pool.submit(prepared.run, partial(self._answered, prepared)):
            self._in_flight += 1
            return
        self._held = prepared
        self._update_reading()
        if not self._waiting:
            self._waiting = True
            self._pool.wait_for_room(self._room)

    def _room(self) -> None:
        """The pool has room: submit the held call, then the records behind it."""
        self._waiting = False
        held, self._held = self._held, None
        if held is None or not self.connected:
            self._backlog.clear()
            return
        self._submit(held)
        while self._held is None and self._backlog and self.connected:
            self._serve(self._backlog.popleft())
        self._update_reading()

    def _answered(self, prepared: PreparedCall, reply: bytes | None) -> None:
        self._in_flight -= 1
        self.send_record(prepared.system_error() if reply is None else reply)
        if (self.peer_closed or self._stopping) and not self._busy:
            self.close_when_done()

    def begin_shutdown(self) -> bool:
        """A graceful stop began (``reactor serve``): a connection with calls in the
        pool closes itself once they have answered (True); an idle one is left to the
        server's drain."""
        self._stopping = self._busy
        return self._stopping

    @property
    def _busy(self) -> bool:
        return self._in_flight > 0 or self._held is not None

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or not self.connected:
            return
        if self._held is not None or self.writing_paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        super().eof_received()
        return True if self._busy else None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._held = None
        self._backlog.clear()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_reading()


class RPCDatagramProtocol(asyncio.DatagramProtocol):
    """The UDP side of an RPC server: a reply datagram for each call datagram.

    A blocking procedure's call goes to the pool and is marked running in the cache:
    its retransmissions are dropped until the reply is sent. A call the full pool
    refuses is dropped (the client retransmits).
    """

    def __init__(self, dispatcher: Dispatcher,
                 max_udp_reply: int = DEFAULT_MAX_UDP_REPLY,
                 cache: ReplyCache | None = None,
                 pool: BlockingPool | None = None) -> None:
        self._dispatcher = dispatcher
        self.max_udp_reply = max_udp_reply
        self.cache = ReplyCache() if cache is None else cache
        self._pool = pool
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is None:
            return
        reply = self.cache.lookup(addr, data)
        if reply is not None:
            logger.debug("RPC call %#x from %s retransmitted: the cached reply sent",
                         _xid(data), addr)
            self.transport.sendto(reply, addr)
            return
        if self.cache.running(addr, data):
            logger.debug("RPC call %#x from %s retransmitted while it runs: dropped",
                         _xid(data), addr)
            return
        prepared = self._dispatcher.prepare(data, addr)
        if prepared is None:
            return
        if isinstance(prepared, bytes):
            self._reply(data, addr, prepared)
        elif not prepared.blocking or self._pool is None:
            self._reply(data, addr, prepared.run())
        elif self._pool.submit(prepared.run, partial(self._answered, prepared, data, addr)):
            self.cache.begin(addr, data)
        else:
            logger.warning("RPC call %#x from %s dropped: the blocking pool is full "
                           "(%d calls); the client will retransmit", _xid(data), addr,
                           self._pool.capacity)

    def _answered(self, prepared: PreparedCall, data: bytes, addr: Any,
                  reply: bytes | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():  # the server stopped meanwhile
            self.cache.forget(addr, data)
            return
        self._reply(data, addr, prepared.system_error() if reply is None else reply)

    def _reply(self, data: bytes, addr: Any, reply: bytes) -> None:
        reply = fit_datagram(reply, self.max_udp_reply, addr)
        self.cache.store(addr, data, reply)
        assert self.transport is not None
        self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("RPC over UDP: %r", exc)


def fit_datagram(reply: bytes, max_udp_reply: int, addr: Any) -> bytes:
    """``reply``, or SYSTEM_ERR when it is over ``max_udp_reply`` (logged)."""
    if len(reply) <= max_udp_reply:
        return reply
    logger.warning("RPC reply of %d bytes to %s is over max_udp_reply=%d: "
                   "SYSTEM_ERR sent instead", len(reply), addr, max_udp_reply)
    return accepted_reply(_xid(reply), AcceptStat.SYSTEM_ERR)


def _xid(message: bytes) -> int:
    return int.from_bytes(message[:4], "big")


class _Listening(Protocol):
    """What :meth:`RPCServer.listen` needs of a TCP listener: its port, closing."""

    @property
    def port(self) -> int: ...

    def close(self) -> None: ...


class ReactorLike(Protocol):
    """The part of :class:`reactor.Reactor` an RPC server uses."""

    def listen_tcp(self, host: str | None, port: int,
                   protocol_factory: Callable[[], Any] | None = None, **kwargs: Any
                   ) -> Any: ...

    def listen_udp(self, host: str | None, port: int, protocol_factory: Callable[[], Any],
                   **kwargs: Any) -> Any: ...

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...


@dataclass
class RPCEndpoints:
    """Where a server listens: the TCP listener, the UDP transport, the port number."""

    port: int
    tcp: Any | None
    udp: asyncio.DatagramTransport | None

    def close(self) -> None:
        """Stop listening (connections already open stay)."""
        if self.tcp is not None:
            self.tcp.close()
        if self.udp is not None:
            self.udp.close()


class RPCServer:
    """RPC programs served over TCP and UDP.

    Args:
        programs: the programs, or a ready :class:`Dispatcher`.
        max_record_size: the largest call record accepted over TCP.
        max_udp_reply: the largest reply sent over UDP (SYSTEM_ERR instead above it).
        cache: the duplicate-request cache of the UDP side (one with the default
            limits unless given).
        pool: where blocking procedures run (a :class:`~.blocking.BlockingPool` with
            the default bounds unless given; it makes no thread before the first
            blocking call). :meth:`listen` binds it to the reactor.

    Raises:
        ValueError: a negative or zero limit.
    """

    def __init__(self, programs: Iterable[Program] | Dispatcher, *,
                 max_record_size: int = DEFAULT_MAX_RPC_RECORD_SIZE,
                 max_udp_reply: int = DEFAULT_MAX_UDP_REPLY,
                 cache: ReplyCache | None = None,
                 pool: BlockingPool | None = None) -> None:
        if max_record_size <= 0 or max_udp_reply <= 0:
            raise ValueError(f"limits must be positive, not max_record_size="
                             f"{max_record_size!r}, max_udp_reply={max_udp_reply!r}")
        self.dispatcher = (programs if isinstance(programs, Dispatcher)
                           else Dispatcher(programs))
        self.max_record_size = max_record_size
        self.max_udp_reply = max_udp_reply
        self.cache = ReplyCache() if cache is None else cache
        self.pool = BlockingPool() if pool is None else pool

    def stream_handler(self) -> RPCStreamHandler:
        """A protocol for one TCP connection (a ``protocol_factory``)."""
        return RPCStreamHandler(self.dispatcher, self.max_record_size, self.pool)

    def datagram_protocol(self) -> RPCDatagramProtocol:
        """The protocol of a UDP endpoint (a ``protocol_factory``)."""
        return RPCDatagramProtocol(self.dispatcher, self.max_udp_reply, self.cache,
                                   self.pool)

    def close(self) -> None:
        """Stop the blocking pool: calls waiting for a thread are cancelled, running
        ones finish (close the reactor's endpoints separately)."""
        self.pool.close()

    def listen(self, reactor: ReactorLike, host: str = "127.0.0.1", port: int = 0, *,
               tcp: bool = True, udp: bool = True) -> RPCEndpoints:
        """Serve on ``reactor`` over TCP and UDP on the same port number.

        With port 0 the TCP listener picks a free port and UDP binds the same number
        (another is tried, a few times, when that UDP port is taken).

        Raises:
            ValueError: neither TCP nor UDP.
            OSError: the port cannot be bound.
        """
        if not (tcp or udp):
            raise ValueError("serve over TCP, UDP or both")
        self.pool.bind(reactor.call_soon_threadsafe)
        tries = _PORT_TRIES if port == 0 and tcp and udp else 1
        for attempt in range(tries):
            listener: _Listening | None = None
            if tcp:
                listener = reactor.listen_tcp(host, port, self.stream_handler)
            chosen = port if listener is None else listener.port
            if not udp:
                return RPCEndpoints(chosen, listener, None)
            try:
                endpoint = reactor.listen_udp(host, chosen, self.datagram_protocol)
            except OSError:
                if listener is not None:
                    listener.close()
                if attempt + 1 == tries:
                    raise
                continue
            sockname = endpoint.get_extra_info("sockname")
            return RPCEndpoints(chosen if listener else sockname[1], listener, endpoint)
        raise AssertionError("unreachable")
