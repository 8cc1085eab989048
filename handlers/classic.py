"""The classic blocking request handlers of :mod:`socketserver`, for the facades.

:class:`BaseRequestHandler`, :class:`StreamRequestHandler` and
:class:`DatagramRequestHandler` behave as the standard library documents them: one
instance per request, and the constructor runs the whole request (``setup``, then
``handle``, then ``finish`` even when ``handle`` raised). A blocking handler owns its
socket while it runs; the facades hand it over unregistered from the reactor and in
blocking mode, and, when the server buffered the request first, the socket returns
the buffered bytes before it reads the network again, so ``rfile`` and
``request.recv`` see the request from its first byte.

Call order: ``__init__ -> setup -> handle -> finish``.

This module wraps a socket by nature, so it may import ``socket`` and ``io``; it must
not import ``selectors``, ``threading`` or ``os``, nor anything from ``reactor``.
"""

from __future__ import annotations

import io
import socket
from typing import Any

__all__ = [
    "BaseRequestHandler",
    "DatagramRequestHandler",
    "SocketWriter",
    "StreamRequestHandler",
]


class BaseRequestHandler:
    """One request, handled start to finish by the constructor.

    Subclasses override :meth:`handle` (and optionally :meth:`setup` and
    :meth:`finish`). While they run, three attributes describe the request.

    Attributes:
        request: a connected socket for stream servers; ``(data, socket)`` for datagram
            servers.
        client_address: the peer's address.
        server: the server that accepted the request (for per-server state).
    """

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Prepare for :meth:`handle`; does nothing by default."""

    def handle(self) -> None:
        """Serve the request; does nothing by default."""

    def finish(self) -> None:
        """Clean up after :meth:`handle` (called even when it raised); nothing by default."""


class SocketWriter(io.BufferedIOBase):
    """A write-only file over a socket that sends every write at once (``sendall``).

    It holds no buffer, so nothing waits for :meth:`flush`; it is ``wfile`` when a
    :class:`StreamRequestHandler` has ``wbufsize == 0`` (the default).
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # the io signature takes any buffer
        """Send all of ``b``; returns its length in bytes."""
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class StreamRequestHandler(BaseRequestHandler):
    """A handler for stream servers with file objects: ``rfile`` reads, ``wfile`` writes.

    Class attributes a subclass may change:

    * ``rbufsize`` -- buffer size of ``rfile`` (-1: the default buffer; 0: unbuffered);
    * ``wbufsize`` -- buffer size of ``wfile``; 0 (the default) gives an unbuffered
      :class:`SocketWriter` that sends every write at once;
    * ``timeout`` -- seconds for each socket operation (None: block);
    * ``disable_nagle_algorithm`` -- set TCP_NODELAY (worth it with ``wbufsize != 0``).

    Attributes:
        connection: the request's socket.
        rfile: a binary file reading the request.
        wfile: a binary file writing the reply.
    """

    rbufsize: int = -1
    wbufsize: int = 0
    timeout: float | None = None
    disable_nagle_algorithm: bool = False

    connection: socket.socket
    rfile: Any
    wfile: Any

    def setup(self) -> None:
        """Apply the timeout and TCP_NODELAY, then make ``rfile`` and ``wfile``."""
        self.connection = conn = self.request
        if self.timeout is not None:
            conn.settimeout(self.timeout)
        if self.disable_nagle_algorithm and conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = conn.makefile("rb", self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = SocketWriter(conn)
        else:
            self.wfile = conn.makefile("wb", self.wbufsize)

    def finish(self) -> None:
        """Flush ``wfile`` (a failing final flush is ignored), then close both files."""
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                pass  # e.g. the peer already went away
        self.wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """A handler for datagram servers with file objects over one datagram.

    ``rfile`` reads the received datagram; what :meth:`handle` writes to ``wfile`` is
    sent back to the client as one datagram by :meth:`finish`.

    Attributes:
        packet: the datagram received.
        socket: the server's socket (used to reply).
        rfile: a binary file over ``packet``.
        wfile: a binary buffer collecting the reply.
    """

    packet: bytes
    socket: socket.socket
    rfile: io.BytesIO
    wfile: io.BytesIO

    def setup(self) -> None:
        self.packet, self.socket = self.request
        self.rfile = io.BytesIO(self.packet)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        """Send what :meth:`handle` wrote to ``wfile`` back to the client."""
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
