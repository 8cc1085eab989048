"""An RPC server on the reactor: one :class:`~.dispatch.Dispatcher` over TCP and UDP.

* :class:`RPCStreamHandler` -- a TCP connection: records (RFC 5531 record marking,
  :class:`~handlers.framers.rpcrecord.RPCRecordHandler`, at most ``max_record_size``
  bytes each) in, one reply record out per call, in the order the calls came. Many
  calls may be in flight on one connection; while the peer does not read its replies,
  reading stops (back-pressure) instead of queueing without end. A record that gets no
  reply (not a call, a header that does not decode) closes the connection, as does a
  record over the maximum.
* :class:`RPCDatagramProtocol` -- UDP: one call per datagram, one reply datagram. A
  reply larger than ``max_udp_reply`` is not cut: the caller gets SYSTEM_ERR instead.
  Datagrams that get no reply are dropped. A retransmitted call (same client, xid and
  bytes) gets the reply already sent, from a :class:`~.replycache.ReplyCache`, and
  the procedure does not run twice.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

from handlers.framers.rpcrecord import (
    DEFAULT_MAX_RPC_RECORD_SIZE,
    RecordMarkingFramer,
    RPCRecordHandler,
)

from .dispatch import Dispatcher, Program
from .message import AcceptStat, accepted_reply
from .replycache import ReplyCache

__all__ = [
    "DEFAULT_MAX_UDP_REPLY",
    "RPCDatagramProtocol",
    "RPCEndpoints",
    "RPCServer",
    "RPCStreamHandler",
]

logger = logging.getLogger("handlers.rpc")

DEFAULT_MAX_UDP_REPLY: Final = 8800
_PORT_TRIES: Final = 20  # when port 0 picks a TCP port whose UDP twin is taken


class RPCStreamHandler(RPCRecordHandler):
    """One TCP connection of an RPC server."""

    __slots__ = ("_dispatcher",)

    logger: ClassVar[logging.Logger] = logger

    def __init__(self, dispatcher: Dispatcher,
                 max_record_size: int = DEFAULT_MAX_RPC_RECORD_SIZE) -> None:
        super().__init__()
        self._dispatcher = dispatcher
        self._framer = RecordMarkingFramer(max_record_size)

    def record_received(self, record: bytes) -> None:
        reply = self._dispatcher.dispatch(record, self.peername)
        if reply is None:
            self.disconnect("a record that is not an RPC call", level=logging.DEBUG)
            return
        self.send_record(reply)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.transport is not None and self.connected:
            self.transport.resume_reading()


class RPCDatagramProtocol(asyncio.DatagramProtocol):
    """The UDP side of an RPC server: a reply datagram for each call datagram."""

    def __init__(self, dispatcher: Dispatcher,
                 max_udp_reply: int = DEFAULT_MAX_UDP_REPLY,
                 cache: ReplyCache | None = None) -> None:
        self._dispatcher = dispatcher
        self.max_udp_reply = max_udp_reply
        self.cache = ReplyCache() if cache is None else cache
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is None:
            return
        reply = self.cache.lookup(addr, data)
        if reply is not None:
            logger.debug("RPC call %#x from %s retransmitted: the cached reply sent",
                         int.from_bytes(data[:4], "big"), addr)
            self.transport.sendto(reply, addr)
            return
        reply = self._dispatcher.dispatch(data, addr)
        if reply is None:
            return
        if len(reply) > self.max_udp_reply:
            logger.warning("RPC reply of %d bytes to %s is over max_udp_reply=%d: "
                           "SYSTEM_ERR sent instead", len(reply), addr, self.max_udp_reply)
            reply = accepted_reply(int.from_bytes(reply[:4], "big"), AcceptStat.SYSTEM_ERR)
        self.cache.store(addr, data, reply)
        self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("RPC over UDP: %r", exc)


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

    Raises:
        ValueError: a negative or zero limit.
    """

    def __init__(self, programs: Iterable[Program] | Dispatcher, *,
                 max_record_size: int = DEFAULT_MAX_RPC_RECORD_SIZE,
                 max_udp_reply: int = DEFAULT_MAX_UDP_REPLY,
                 cache: ReplyCache | None = None) -> None:
        if max_record_size <= 0 or max_udp_reply <= 0:
            raise ValueError(f"limits must be positive, not max_record_size="
                             f"{max_record_size!r}, max_udp_reply={max_udp_reply!r}")
        self.dispatcher = (programs if isinstance(programs, Dispatcher)
                           else Dispatcher(programs))
        self.max_record_size = max_record_size
        self.max_udp_reply = max_udp_reply
        self.cache = ReplyCache() if cache is None else cache

    def stream_handler(self) -> RPCStreamHandler:
        """A protocol for one TCP connection (a ``protocol_factory``)."""
        return RPCStreamHandler(self.dispatcher, self.max_record_size)

    def datagram_protocol(self) -> RPCDatagramProtocol:
        """The protocol of a UDP endpoint (a ``protocol_factory``)."""
        return RPCDatagramProtocol(self.dispatcher, self.max_udp_reply, self.cache)

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
