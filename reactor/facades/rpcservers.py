"""Sun RPC servers in the socketserver style: the facades' half.

:class:`RPCTCPServer` and :class:`RPCUDPServer` are a :class:`~.servers.TCPServer` and
a :class:`~.servers.UDPServer` whose requests are RPC calls, so the mix-ins apply as
to any classic server::

    class Server(ThreadingMixIn, RPCTCPServer): ...   # a thread per connection
    class Server(ForkingMixIn, RPCUDPServer): ...     # a child per datagram

Each server holds ``rpc`` (the object that dispatches calls and keeps the limits and
the UDP duplicate-request cache) and ``rpc_lock`` (under which the request handlers,
maybe in several threads, use that cache).

This module must not import ``handlers`` (the layering rule of the facades): the
classes here take the RPC side from two class attributes, ``rpc_factory`` (called
with the programs and the options) and ``default_handler_class``, which
:mod:`reactor.socketserver` -- the module that assembles handlers and facades -- fills
with :class:`handlers.rpc.RPCServer` and the handlers of :mod:`handlers.rpc.classic`.
Import the servers from there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..io.loop import Reactor
from .servers import TCPServer, UDPServer

__all__ = ["RPCFacade", "RPCTCPServer", "RPCUDPServer"]


class RPCFacade:
    """What both RPC servers add to their classic base (put before it in the bases).

    Args:
        server_address: where to bind, as for any classic server.
        programs: the programs to serve, or a ready dispatcher.
        bind_and_activate: as for :class:`~.servers.TCPServer`.
        RequestHandlerClass: a handler of your own (default: the class's
            ``default_handler_class``).
        reactor: run on this reactor.
        options: passed to ``rpc_factory`` (``max_record_size``, ``max_udp_reply``,
            ``cache``).

    Raises:
        TypeError: the class was not completed by :mod:`reactor.socketserver`.
    """

    rpc_factory: ClassVar[Callable[..., Any] | None] = None
    default_handler_class: ClassVar[Callable[..., Any] | None] = None
    rpc: Any
    rpc_lock: threading.Lock
    server_address: Any

    def __init__(self, server_address: Any, programs: Any, bind_and_activate: bool = True,
                 *, RequestHandlerClass: Callable[..., Any] | None = None,
                 reactor: Reactor | None = None, **options: Any) -> None:
        factory = type(self).rpc_factory
        handler = RequestHandlerClass or type(self).default_handler_class
        if factory is None or handler is None:
            raise TypeError(f"{type(self).__name__} has no rpc_factory or handler: use "
                            f"the servers of reactor.socketserver")
        self.rpc = factory(programs, **options)
        self.rpc_lock = threading.Lock()
        super().__init__(server_address, handler, bind_and_activate,  # type: ignore[call-arg]
                         reactor=reactor)

    @property
    def port(self) -> int:
        """The port bound (the one port 0 picked)."""
        return int(self.server_address[1])

    @property
    def registrations(self) -> Mapping[int, tuple[int, ...]]:
        """Program number -> version numbers served (for a portmapper)."""
        return self.rpc.dispatcher.registrations  # type: ignore[no-any-return]


class RPCTCPServer(RPCFacade, TCPServer):
    """RPC over TCP: each connection is a request; its calls are answered in order."""


class RPCUDPServer(RPCFacade, UDPServer):
    """RPC over UDP: each datagram is a call.

    ``max_packet_size`` is 65535 (the largest UDP payload), not 8192: RPC calls may be
    larger than the standard library's default, and a cut call would not decode.
    """

    max_packet_size = 65535
