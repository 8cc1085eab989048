"""The supervisor's listening sockets, bound once and shared by its workers.

:func:`bind_shared` turns each ``--bind`` address into what a worker is given:

* ``HOST:PORT`` (no ``--reuse-port``) and ``unix:PATH``: the supervisor binds and
  listens; every worker inherits the socket across ``fork`` and accepts on it, named
  ``fd://N``. The socket stays open in the supervisor while workers come and go, so a
  reload never closes it: a client connecting meanwhile waits in its backlog, never
  refused.
* ``HOST:PORT`` with ``--reuse-port``: the supervisor binds a socket with
  ``SO_REUSEPORT`` but never listens on it: it only holds the port (port 0 is resolved
  once, so every worker gets the same port). Each worker binds and listens on its own
  socket at that port, and the kernel spreads connections over the listening ones.
  Closing a worker's socket drops the connections still in its own backlog; the
  graceful stop accepts those first (one last accept pass).
* ``fd://N`` (systemd, a parent): shared as it is.

Part of the command line layer; never imports ``handlers``.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable

from ..io.unixpath import OwnedPath, created_with_mode, prepare
from .addresses import BadBindAddress, BindAddress, BindError, inherited_socket

__all__ = ["SharedSocket", "bind_shared"]


@dataclasses.dataclass
class SharedSocket:
    """One address as the supervisor holds it.

    Attributes:
        bind: the address as given.
        sock: the supervisor's socket (listening, or with reuse-port only bound).
        for_worker: what each worker binds (``fd://N``, or ``HOST:PORT`` with the
            real port for reuse-port).
        path: a Unix socket path the supervisor bound (removed by :meth:`close`).
    """

    bind: BindAddress
    sock: socket.socket
    for_worker: BindAddress
    path: OwnedPath | None = None

    def describe(self) -> str:
        """The address in ``--bind`` notation, with the real port."""
        name = self.sock.getsockname()
        if self.sock.family == socket.AF_UNIX:
            text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            return "unix:" + ("@" + text[1:] if text.startswith("\0") else text)
        if self.sock.family == socket.AF_INET6:
            return f"[{name[0]}]:{name[1]}"
        return f"{name[0]}:{name[1]}"

    def close(self) -> None:
        """Close the socket and remove a path this process bound."""
        self.sock.close()
        if self.path is not None:
            self.path.remove()


def _tcp(bind: BindAddress, backlog: int, reuse_port: bool) -> socket.socket:
    host = bind.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    info = socket.getaddrinfo(host, bind.port, family, socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        if not reuse_port:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _unix(bind: BindAddress, backlog: int,
          mode: int | None) -> tuple[socket.socket, OwnedPath | None]:
    assert bind.path is not None
    prepare(bind.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with created_with_mode(mode):
            sock.bind(bind.path)
        owned = OwnedPath.of(bind.path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock, owned


def bind_shared(binds: Iterable[BindAddress], *, backlog: int, reuse_port: bool = False,
                unix_mode: int | None = None) -> list[SharedSocket]:
    """Bind every address for the workers to share (see the module docstring).

    Raises:
        BindError: an address cannot be bound; nothing stays bound.
        BadBindAddress: an inherited descriptor is not a listening stream socket, or a
            Unix path is too long.
    """
    shared: list[SharedSocket] = []
    try:
        for bind in binds:
            try:
                shared.append(_one(bind, backlog, reuse_port, unix_mode))
            except OSError as exc:
                raise BindError(bind, exc) from exc
            except ValueError as exc:
                raise BadBindAddress(bind, exc) from exc
    except BaseException:
        for item in shared:
            item.close()
        raise
    return shared


def _one(bind: BindAddress, backlog: int, reuse_port: bool, mode: int | None) -> SharedSocket:
    if bind.kind == "fd":
        assert bind.fd is not None
        return SharedSocket(bind, inherited_socket(bind.fd), bind)
    if bind.kind == "unix":
        sock, owned = _unix(bind, backlog, mode)
        return SharedSocket(bind, sock, BindAddress("fd", fd=sock.fileno()), owned)
    sock = _tcp(bind, backlog, reuse_port)
    if reuse_port:
        port = sock.getsockname()[1]
        return SharedSocket(bind, sock, dataclasses.replace(bind, port=port))
    return SharedSocket(bind, sock, BindAddress("fd", fd=sock.fileno()))
