"""Blocking RPC request handlers, for the socketserver-style servers.

The servers :class:`reactor.socketserver.RPCTCPServer` and
:class:`~reactor.socketserver.RPCUDPServer` hand each request to one of these, as any
classic server does; the mix-ins decide where it runs (inline, a thread, a child):

* :class:`RPCStreamRequestHandler` -- one TCP connection: read records (record
  marking, at most the server's ``max_record_size``), answer each call in turn, until
  the client closes. A record over the maximum, or one that is not a call, ends the
  connection. Procedures run in the handler's own thread or process, so a procedure
  marked :func:`~.blocking.blocking` simply runs there too.
* :class:`RPCDatagramRequestHandler` -- one datagram: the reply datagram, through the
  server's duplicate-request cache (a retransmission gets the reply already sent, and
  one that comes while the call still runs in another thread is dropped). The cache
  lives in the server's process: under ForkingMixIn a child's replies are not seen by
  the parent, so there a retransmission runs again.

What a handler needs of its server (:class:`RPCServing`): ``rpc``, the
:class:`~.server.RPCServer` holding the dispatcher, limits and cache, and
``rpc_lock``, a lock the cache is used under (the server's threads share it).

Like :mod:`handlers.classic`, this module wraps a socket by nature; it must not import
``selectors``, ``threading`` or ``os``, nor anything from ``reactor``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any, Protocol

from handlers.base import FramingError
from handlers.classic import BaseRequestHandler
from handlers.framers.rpcrecord import RecordMarkingFramer, encode_record

from .server import RPCServer, fit_datagram

__all__ = ["RPCDatagramRequestHandler", "RPCServing", "RPCStreamRequestHandler"]

logger = logging.getLogger("handlers.rpc")

_READ_SIZE = 65536


class RPCServing(Protocol):
    """The server's side of the handlers."""

    rpc: RPCServer
    rpc_lock: AbstractContextManager[Any]


class RPCStreamRequestHandler(BaseRequestHandler):
    """Calls over one TCP connection, answered in order until the client closes.

    Attributes:
        timeout: the socket timeout while waiting for a call (None: wait for ever).
    """

    timeout: float | None = None

    def setup(self) -> None:
        if self.timeout is not None:
            self.request.settimeout(self.timeout)

    def handle(self) -> None:
        rpc: RPCServer = self.server.rpc
        framer = RecordMarkingFramer(rpc.max_record_size)
        sock = self.request
        while data := sock.recv(_READ_SIZE):
            framer.feed(data)
            while True:
                try:
                    record = framer.next_record()
                except FramingError as exc:
                    logger.info("RPC over TCP from %s: closing: %s", self.client_address, exc)
                    return
                if record is None:
                    break
                reply = rpc.dispatcher.dispatch(record, self.client_address)
                if reply is None:
                    logger.debug("RPC over TCP from %s: closing: a record that is not "
                                 "an RPC call", self.client_address)
                    return
                sock.sendall(encode_record(reply))


class RPCDatagramRequestHandler(BaseRequestHandler):
    """One call datagram, one reply datagram (none for what is not a call)."""

    def handle(self) -> None:
        data, sock = self.request
        server: RPCServing = self.server
        rpc, addr = server.rpc, self.client_address
        with server.rpc_lock:
            reply = rpc.cache.lookup(addr, data)
            if reply is None and rpc.cache.running(addr, data):
                logger.debug("RPC call from %s retransmitted while it runs: dropped", addr)
                return
            if reply is None:
                rpc.cache.begin(addr, data)
        if reply is None:
            try:
                reply = rpc.dispatcher.dispatch(data, addr)
            finally:
                if reply is None:
                    with server.rpc_lock:
                        rpc.cache.forget(addr, data)
            if reply is None:
                return
            reply = fit_datagram(reply, rpc.max_udp_reply, addr)
            with server.rpc_lock:
                rpc.cache.store(addr, data, reply)
        sock.sendto(reply, addr)
