"""The addresses ``reactor serve --bind`` takes, and the notation listeners are shown in.

:func:`parse_bind` reads ``HOST:PORT``, ``[IPV6]:PORT`` (``[::]`` also serves IPv4
clients; a ``%scope`` is kept), ``unix:PATH`` (``unix:@NAME`` for the Linux abstract
namespace) and ``fd://N``, a listening stream socket inherited from the parent
(systemd, a supervisor), into a :class:`BindAddress`; :func:`inherited_socket` adopts
such a descriptor after checking it; :func:`listen_on` makes a listener for one;
:func:`format_listener` writes a bound listener's address back in the same notation,
with the real port.

Part of the command line layer; uses the reactor's ``listen_*`` methods. Never imports
``handlers``.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from ..io.listeners import Listener
    from ..io.loop import Reactor

__all__ = [
    "BadBindAddress",
    "BindAddress",
    "BindError",
    "format_listener",
    "inherited_socket",
    "listen_on",
    "parse_bind",
    "parse_binds",
    "scope_note",
]


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
# endpoint prefixes other servers use (twist's tcp:PORT, ...) that mean plain TCP here
_TCP_PREFIXES: Final = ("tcp:", "tcp4:", "tcp6:")
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DOTTED: Final = re.compile(r"[0-9.]+")


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{whole}: the port must be a number from 0 to 65535")
    return int(text)


def _examples(port: str) -> str:
    return f"127.0.0.1:{port} (this host only) or :{port} (all interfaces)"


def _foreign_notation(text: str) -> str | None:
    """What to say about an address written in another program's notation, or None."""
    lowered = text.lower()
    if lowered.startswith(_TCP_PREFIXES):
        port = text.partition(":")[2].partition(":")[0] or "PORT"
        return (f"{text}: no tcp: prefix is needed; write HOST:PORT, e.g. "
                f"{_examples(port)}")
    if _URL.match(text) and not lowered.startswith("fd://"):
        rest = text.partition("://")[2]
        hostport = rest.split("/", 1)[0].rpartition("@")[2] or "HOST:PORT"
        if ":" not in hostport.rpartition("]")[2]:
            hostport += ":PORT"
        return f"{text}: --bind takes HOST:PORT, not a URL; write {hostport}"
    if text.isdigit():
        return f"{text}: expected HOST:PORT; for port {text} write {_examples(text)}"
    return None


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
            raise ValueError(f"{text}: unix: needs a path, e.g. unix:/run/app.sock")
        return BindAddress("unix", path="\0" + path[1:] if path.startswith("@") else path)
    if text.startswith("fd://"):
        number = text[5:]
        if not number.isdigit():
            raise ValueError(f"{text}: fd:// needs a descriptor number, e.g. fd://3")
        return BindAddress("fd", fd=int(number))
    advice = _foreign_notation(text)
    if advice is not None:
        raise ValueError(advice)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text}: expected [IPV6]:PORT, e.g. [::1]:8888")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{text}: {host} is not an IPv6 address") from None
        return BindAddress("tcp", host=host, port=_parse_port(rest[1:], text))
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"{text or '(empty)'}: expected {_BIND_FORMS}")
    if ":" in host:
        raise ValueError(f"{text}: put an IPv6 address in brackets, e.g. [::1]:8888")
    port = _parse_port(port_text, text)
    if _DOTTED.fullmatch(host):  # digits and dots: meant as an IPv4 address, never a name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{text}: {host} is not an IPv4 address (four numbers from 0 "
                             f"to 255, e.g. 127.0.0.1 or 0.0.0.0 for all interfaces)") from None
    return BindAddress("tcp", host=None if host in ("", "*") else host, port=port)


def parse_binds(binds: Iterable[BindAddress | str]) -> list[BindAddress]:
    """Each address as a :class:`BindAddress` (strings through :func:`parse_bind`).

    Raises:
        ValueError: an address does not parse, or there is none.
    """
    parsed = [b if isinstance(b, BindAddress) else parse_bind(b) for b in binds]
    if not parsed:
        raise ValueError("at least one bind address is needed")
    return parsed


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


def listen_on(
    reactor: Reactor, bind: BindAddress, factory: Callable[[], Any], *,
    unix_mode: int | None = None, reuse_port: bool = False,
    by_kind: Mapping[str, Mapping[str, Any]] | None = None, **common: Any,
) -> Listener:
    """A listener on ``bind`` serving ``factory``, with the ``listen_*`` keywords in
    ``common``, and those of ``by_kind["tcp"]`` or ``by_kind["unix"]`` for that kind
    (``unix_mode`` for a path bound here, ``reuse_port`` for TCP)."""
    unix = {**common, **(by_kind or {}).get("unix", {})}
    tcp = {**common, **(by_kind or {}).get("tcp", {})}
    if bind.kind == "unix":
        assert bind.path is not None
        return reactor.listen_unix(bind.path, factory, mode=unix_mode, **unix)
    if bind.kind == "fd":
        assert bind.fd is not None
        sock = inherited_socket(bind.fd)
        if sock.family == getattr(socket, "AF_UNIX", None):
            return reactor.listen_unix(str(bind), factory, sock=sock, **unix)
        return reactor.listen_tcp(None, 0, factory, sock=sock, **tcp)
    return reactor.listen_tcp(bind.host, bind.port, factory, reuse_port=reuse_port,
                              dual_stack=bind.host == "::", **tcp)


def scope_note(address: str) -> str:
    """`` (all interfaces)`` for a wildcard address in :func:`format_listener`'s
    notation (``0.0.0.0:PORT``, ``[::]:PORT``), so a log line says what ``:PORT`` means;
    otherwise ``""``."""
    host = address.rpartition(":")[0]
    return " (all interfaces)" if host in ("0.0.0.0", "[::]") else ""


# -- failures -----------------------------------------------------------------------------

# errno -> what to add after the system's own words
_HINTS: Final = {
    errno.EADDRINUSE: "another socket is bound there; choose another port, or 0 for a "
                      "free one",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
    errno.EACCES: "ports below 1024 need privileges (root or CAP_NET_BIND_SERVICE)",
}


def _reason(address: BindAddress, exc: BaseException) -> str:
    """Why binding ``address`` failed, in words, without the errno number or a repr."""
    inner = exc
    while isinstance(inner.__cause__, OSError):  # the kernel's own error, under ours
        inner = inner.__cause__
    if isinstance(inner, socket.gaierror):
        what = (inner.strerror or str(inner)).lower()
        return (f"the host name {address.host} cannot be resolved ({what}); give an IP "
                "address, e.g. 127.0.0.1, or 0.0.0.0 for all interfaces")
    if not isinstance(inner, OSError) or inner.errno is None:
        return str(exc)
    standard = os.strerror(inner.errno)
    if inner.strerror != standard:  # a message of ours that says more than the errno
        return str(inner.strerror)
    text = standard[:1].lower() + standard[1:]
    hint = _HINTS.get(inner.errno)
    if hint is not None and not (inner.errno == errno.EACCES and (
            address.kind != "tcp" or address.port >= 1024)):
        text += f" ({hint})"
    return text


class BindError(OSError):
    """An address that cannot be bound: an :class:`OSError` (with the system's errno)
    whose message names the address, as ``--bind`` writes it, and why.

    Attributes:
        address: the address that failed.
        reason: why, in words (``address already in use (...)``).
    """

    def __init__(self, address: BindAddress, exc: OSError) -> None:
        self.address = address
        self.reason = _reason(address, exc)
        super().__init__(exc.errno, f"cannot listen on {address}: {self.reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class BadBindAddress(ValueError):
    """An address that cannot be used as given (an inherited descriptor that is not a
    listening socket, a Unix path too long): a :class:`ValueError` naming it.

    Attributes:
        address: the address at fault.
        reason: why, in words.
    """

    def __init__(self, address: BindAddress, exc: ValueError) -> None:
        self.address = address
        self.reason = str(exc)
        super().__init__(f"cannot listen on {address}: {self.reason}")
