"""A drop-in replacement for the standard library's :mod:`socketserver`.

Every name the standard library's module exports, with the same attributes, defaults,
hooks and call order, built on the reactor (see :mod:`reactor.facades.servers` and
:mod:`reactor.facades.mixins`), plus what its docstring left as future work: the multiplexing
servers, request buffering, the PROXY protocol, TLS with the handshake in the reactor
(:class:`TLSMixIn`) and Sun RPC (:class:`RPCTCPServer`, :class:`RPCUDPServer`, to
which the mix-ins apply as to any server). The classic request handlers come from
:mod:`handlers.classic`. Nothing of the standard library's module is imported.

Use it in place of ``socketserver``::

    from reactor import socketserver

or make programs that ``import socketserver`` (``http.server``, ``xmlrpc.server``, your
own) use it without editing them: call :func:`install` before they import it, or run
them with ``python -m reactor run-module MODULE [ARGS...]``.

This is the one module of ``reactor`` that imports ``handlers``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from types import ModuleType

from handlers.classic import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from handlers.rpc.classic import RPCDatagramRequestHandler, RPCStreamRequestHandler
from handlers.rpc.server import RPCServer

from .facades import rpcservers
from .facades.access import peer_credentials
from .facades.control import serve_control
from .facades.mixins import (
    AccessControlMixIn,
    ForkingMixIn,
    MultiplexingMixIn,
    ProxyProtocolMixIn,
    ThreadingMixIn,
    TLSMixIn,
)
from .facades.observe import serve_observe
from .facades.servers import BaseServer, ServerStatistics, TCPServer, UDPServer
from .sansio.request_buffer import (
    FirstBytesRequestBuffer,
    HTTPRequestBuffer,
    LineRequestBuffer,
    RequestBuffer,
)

__all__ = [
    "AccessControlMixIn",
    "BaseRequestHandler",
    "BaseServer",
    "DatagramRequestHandler",
    "FirstBytesRequestBuffer",
    "HTTPRequestBuffer",
    "LineRequestBuffer",
    "MultiplexingMixIn",
    "MultiplexingTCPServer",
    "MultiplexingUDPServer",
    "ProxyProtocolMixIn",
    "RPCDatagramRequestHandler",
    "RPCStreamRequestHandler",
    "RPCTCPServer",
    "RPCUDPServer",
    "RequestBuffer",
    "ServerStatistics",
    "StreamRequestHandler",
    "TCPServer",
    "TLSMixIn",
    "ThreadingMixIn",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "UDPServer",
    "peer_credentials",
    "serve_control",
    "serve_observe",
]

logger = logging.getLogger(__name__)

__version__ = "0.4"  # the standard library module's own version string


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """A TCP server with a thread per request."""


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    """A UDP server with a thread per datagram."""


class MultiplexingTCPServer(MultiplexingMixIn, TCPServer):
    """A TCP server running a non-blocking handler per connection inside the reactor."""


class MultiplexingUDPServer(MultiplexingMixIn, UDPServer):
    """A UDP server running one non-blocking datagram handler inside the reactor."""


class RPCTCPServer(rpcservers.RPCTCPServer):
    """Sun RPC over TCP: ``RPCTCPServer(address, programs)``, a connection per request
    (see :mod:`reactor.facades.rpcservers`)."""

    rpc_factory = RPCServer
    default_handler_class = RPCStreamRequestHandler


class RPCUDPServer(rpcservers.RPCUDPServer):
    """Sun RPC over UDP: ``RPCUDPServer(address, programs)``, a datagram per request."""

    rpc_factory = RPCServer
    default_handler_class = RPCDatagramRequestHandler


if hasattr(os, "fork"):
    __all__ += ["ForkingMixIn", "ForkingTCPServer", "ForkingUDPServer"]

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        """A TCP server with a child process per request."""

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        """A UDP server with a child process per datagram."""


if hasattr(socket, "AF_UNIX"):
    from .facades.servers import UnixDatagramServer, UnixStreamServer

    __all__ += [
        "MultiplexingUnixDatagramServer",
        "MultiplexingUnixStreamServer",
        "ThreadingUnixDatagramServer",
        "ThreadingUnixStreamServer",
        "UnixDatagramServer",
        "UnixStreamServer",
    ]

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        """A Unix stream server with a thread per request."""

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        """A Unix datagram server with a thread per datagram."""

    class MultiplexingUnixStreamServer(MultiplexingMixIn, UnixStreamServer):
        """A Unix stream server running non-blocking handlers inside the reactor."""

    class MultiplexingUnixDatagramServer(MultiplexingMixIn, UnixDatagramServer):
        """A Unix datagram server running one non-blocking handler inside the reactor."""

    if hasattr(os, "fork"):
        __all__ += ["ForkingUnixDatagramServer", "ForkingUnixStreamServer"]

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            """A Unix stream server with a child process per request (as in 3.12)."""

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            """A Unix datagram server with a child process per datagram (as in 3.12)."""


_NAME = "socketserver"
_previous: ModuleType | None = None
_installed = False
_home: dict[str, str] = {}  # __module__ of each exported name before install()


def install() -> ModuleType:
    """Make ``import socketserver`` return this module, from now on.

    Call it before the programs that use ``socketserver`` import it: a module that
    imported the standard library's ``socketserver`` earlier keeps its classes (a
    warning names such modules). While installed, the exported classes report
    ``socketserver`` as their ``__module__``, as the names of the module they now are.
    Calling it twice is harmless.

    Returns:
        This module.
    """
    global _previous, _installed
    me = sys.modules[__name__]
    if _installed:
        return me
    current = sys.modules.get(_NAME)
    if current is not None and current is not me:
        holders = sorted(
            name for name, mod in list(sys.modules.items())
            if mod is not None and name != _NAME and getattr(mod, _NAME, None) is current
        )
        if holders:
            logger.warning("the standard library's socketserver was imported before "
                           "install(); these modules keep it: %s", ", ".join(holders))
    _previous = current
    for name in __all__:
        obj = globals()[name]
        _home[name] = obj.__module__
        obj.__module__ = _NAME
    sys.modules[_NAME] = me
    _installed = True
    logger.info("socketserver is now reactor.socketserver (servers on the reactor)")
    return me


def uninstall() -> None:
    """Undo :func:`install`: ``socketserver`` is what it was before."""
    global _previous, _installed
    if not _installed:
        return
    for name, home in _home.items():
        globals()[name].__module__ = home
    _home.clear()
    if _previous is None:
        sys.modules.pop(_NAME, None)
    else:
        sys.modules[_NAME] = _previous
    _previous = None
    _installed = False


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _installed
