"""The addresses ``reactor serve --bind`` takes, and the notation listeners are shown in.

:func:`parse_bind` reads ``HOST:PORT``, ``[IPV6]:PORT`` (``[::]`` also serves IPv4
clients; a ``%scope`` is kept), ``unix:PATH`` (``unix:@NAME`` for the Linux abstract
namespace) and ``fd://N``, a listening stream socket inherited from the parent
(systemd, a supervisor), into a :class:`BindAddress`; :func:`inherited_socket` adopts
such a descriptor after checking it; :func:`format_listener` writes a bound listener's
address back in the same notation, with the real port.

Part of the command line layer; imports only the listener's type from below. Never
imports ``handlers``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from ..io.listeners import Listener

__all__ = ["BindAddress", "format_listener", "inherited_socket", "parse_bind"]


# -- addresses ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BindAddress:
    """One address to listen on (see :func:`parse_bind`).

    Attributes:
        kind: ``"tcp"``, ``"unix"`` or ``"fd"``.
        host: the TCP host (None: every IPv4 address).
        port: the TCP port (0: any free port).
        path: the Unix socket path (a leading NUL: the abstract namespace).
        fd: the inherited descriptor number.
    """

    kind: Literal["tcp", "unix", "fd"]
    host: str | None = None
    port: int = 0
    path: str | None = None
    fd: int | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            path = self.path or ""
            return "unix:" + ("@" + path[1:] if path.startswith("\0") else path)
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or "0.0.0.0"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


_BIND_FORMS: Final = "HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N"


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: the port must be a number from 0 to 65535")
    return int(text)


def parse_bind(text: str) -> BindAddress:
    """Parse a ``--bind`` value.

    Args:
        text: ``HOST:PORT`` (an empty HOST or ``*``: every IPv4 address),
            ``[IPV6]:PORT``, ``unix:PATH`` (``unix:@NAME``: abstract namespace) or
            ``fd://N``.

    Returns:
        The parsed address.

    Raises:
        ValueError: ``text`` is none of those forms; the message says why.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"{text!r}: unix: needs a path, e.g. unix:/run/app.sock")
        return BindAddress("unix", path="\0" + path[1:] if path.startswith("@") else path)
    if text.startswith("fd://"):
        number = text[5:]
        if not number.isdigit():
            raise ValueError(f"{text!r}: fd:// needs a descriptor number, e.g. fd://3")
        return BindAddress("fd", fd=int(number))
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT, e.g. [::1]:8888")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
        return BindAddress("tcp", host=host, port=_parse_port(rest[1:], text))
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"{text!r}: expected {_BIND_FORMS}")
    if ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:8888")
    port = _parse_port(port_text, text)
    return BindAddress("tcp", host=None if host in ("", "*") else host, port=port)


def format_listener(listener: Listener) -> str:
    """The address a listener is bound to, in :func:`parse_bind`'s notation (real port)."""
    sock = listener.sock
    try:
        addr = sock.getsockname()
    except OSError:
        return "closed"
    if sock.family == getattr(socket, "AF_UNIX", None):
        name = addr.decode(errors="replace") if isinstance(addr, bytes) else str(addr)
        return "unix:" + ("@" + name[1:] if name.startswith("\0") else name or "(unnamed)")
    if sock.family == socket.AF_INET6:
        host = addr[0]
        if addr[3] and "%" not in host:  # a link-local address: keep its scope
            try:
                host = f"{host}%{socket.if_indextoname(addr[3])}"
            except OSError:
                host = f"{host}%{addr[3]}"
        return f"[{host}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


def inherited_socket(fd: int) -> socket.socket:
    """Adopt an inherited descriptor, checking it is a listening stream socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"fd://{fd}: not a usable socket: {exc.strerror}") from exc
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "is not a stream socket"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "is not listening (call listen() before handing it over)"
    if problem is not None:
        sock.detach()  # not ours to close
        raise ValueError(f"fd://{fd} {problem}")
    return sock
