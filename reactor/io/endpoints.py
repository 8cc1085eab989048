"""Datagram endpoints: :func:`listen_udp` and :func:`listen_unix_datagram`.

A datagram socket has no connections to accept: the endpoint is one
:class:`~reactor.io.datagram.DatagramTransport` (one row of the table) served by one
:class:`asyncio.DatagramProtocol`. Bound here with the checks and the Unix path care the
stream listeners use (:mod:`.validate`, :mod:`.unixpath`); re-exported by
:mod:`.listeners`, where the reactor's ``listen_*`` methods find them.

Must not import the listeners, the facades or the command line.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from .datagram import DatagramTransport
from .transports import ProtocolFactory, TransportOptions, options_from
from .unixpath import OwnedPath, check_mode, created_with_mode, prepare
from .validate import bind_or_close, bound_socket, check_path, check_port

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["listen_udp", "listen_unix_datagram"]


def _datagram_endpoint(
    reactor: Reactor, sock: socket.socket, protocol_factory: ProtocolFactory,
    opts: TransportOptions, connected: bool,
) -> DatagramTransport:
    sock.setblocking(False)
    transport = DatagramTransport(reactor, sock, options=opts, connected=connected)
    transport.attach(protocol_factory())
    return transport


def listen_udp(
    reactor: Reactor,
    host: str | None,
    port: int,
    protocol_factory: ProtocolFactory,
    *,
    reuse_port: bool = False,
    dual_stack: bool = False,
    remote: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    options: TransportOptions | None = None,
    **option_overrides: Any,
) -> DatagramTransport:
    """Open a UDP endpoint served by an :class:`asyncio.DatagramProtocol`.

    ``remote`` connects the socket to one peer (then ``sendto(data)`` needs no address).
    """
    opts = options_from(options, option_overrides)
    if sock is None:
        check_port(port)
        family: int
        address: Any
        if not host:
            family, address = ((socket.AF_INET6, ("::", port)) if dual_stack
                               else (socket.AF_INET, ("0.0.0.0", port)))
        else:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            family, address = info[0], info[4]
        sock = bound_socket(family, socket.SOCK_DGRAM, address, reuse_address=False,
                             reuse_port=reuse_port, dual_stack=dual_stack)
        if remote is not None:
            try:
                sock.connect(remote)
            except OSError:
                sock.close()
                raise
    return _datagram_endpoint(reactor, sock, protocol_factory, opts, remote is not None)


def listen_unix_datagram(
    reactor: Reactor,
    path: str | None,
    protocol_factory: ProtocolFactory,
    *,
    remote: str | None = None,
    sock: socket.socket | None = None,
    options: TransportOptions | None = None,
    mode: int | None = None,
    **option_overrides: Any,
) -> DatagramTransport:
    """Open a Unix datagram endpoint at ``path`` (None: unbound, e.g. a client).

    ``mode`` sets the socket file's permissions through the umask at ``bind``, as for
    :func:`.listeners.listen_unix`.

    Raises:
        ValueError: as for :func:`.listeners.listen_unix`.
        OSError: bind or connect fails, or the selector refuses the socket (the path
            is removed again then).
    """
    opts = options_from(options, option_overrides)
    owned: OwnedPath | None = None
    if sock is None:
        check_mode(check_path(path, optional=True), mode)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is not None:
            try:
                prepare(path)
            except BaseException:
                sock.close()
                raise
            with created_with_mode(mode):
                bind_or_close(sock, path)
            owned = OwnedPath.of(path)
        if remote is not None:
            try:
                sock.connect(remote)
            except OSError:
                sock.close()
                if owned is not None:
                    owned.remove()
                raise
    try:
        transport = _datagram_endpoint(reactor, sock, protocol_factory, opts,
                                       remote is not None)
    except BaseException:
        if owned is not None:
            owned.remove()
        raise
    if owned is not None:
        transport.after_close(owned.remove)
    return transport
