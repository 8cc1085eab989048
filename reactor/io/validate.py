"""Checking what a caller asks of the I/O layer before any socket exists.

The kernel and :func:`socket.getaddrinfo` are lenient in ways that hide mistakes:
``getaddrinfo("127.0.0.1", 99999)`` quietly takes the port modulo 65536 (so a listener
asked for port 99999 lands on 34463), ``listen(-5)`` is read as "the system's
default", a connect timeout of NaN never fires. Every public entry point that opens a
socket (:func:`~reactor.io.listeners.listen_tcp` and its siblings,
:func:`~reactor.io.connect.connect_tcp`, :func:`~reactor.io.connect.connect_unix`)
therefore checks its arguments here first and raises, at the call, :class:`ValueError`
for a value out of range and :class:`TypeError` for a value of the wrong kind, as
asyncio's ``create_server`` and ``create_connection`` do. The messages name the
argument and the accepted range, and say what was given without a Python repr.

:func:`address_text` writes a socket address as a user writes it (``127.0.0.1:80``,
``[::1]:80``, a path) for error messages; :func:`bind_or_close` binds and, on failure,
closes the socket and raises an :class:`OSError` that names the address that way;
:func:`bound_socket` and :func:`listening_tcp_socket` make the sockets the listeners
and endpoints bind, on top of it.

Cold paths only: nothing here runs per connection or per read. Imports only the
standard library.
"""

from __future__ import annotations

import math
import socket
from typing import Any, Final

__all__ = [
    "address_text",
    "bind_or_close",
    "bound_socket",
    "check_backlog",
    "check_defer_accept",
    "check_path",
    "check_port",
    "check_timeout",
    "listening_tcp_socket",
]

PORT_MAX = 65535


def _kind(value: object) -> str:
    """A value's kind in words, for "must be ..., not ..." messages."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return f'the text "{value}"'
    return f"an object of type {type(value).__name__}"


def _whole(value: object, name: str, what: str) -> int:
    # bool is an int subclass: True as a port or backlog is a mistake, never meant
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {what}, not {_kind(value)}")
    return value


def check_port(port: object, name: str = "port") -> int:
    """``port`` if it is a whole number from 0 (any free port) to 65535.

    Raises:
        TypeError: not an int (a numeric string is refused too: say ``int(text)``).
        ValueError: out of range.
    """
    what = f"a whole number from 0 to {PORT_MAX}"
    value = _whole(port, name, what)
    if not 0 <= value <= PORT_MAX:
        raise ValueError(f"{name} must be {what} (0 picks a free port), not {value}")
    return value


def check_backlog(backlog: object) -> int:
    """``backlog`` if it is a whole number of zero or more.

    Raises:
        TypeError: not an int.
        ValueError: negative (the kernel would silently use its own default).
    """
    value = _whole(backlog, "backlog", "a whole number of zero or more")
    if value < 0:
        raise ValueError(f"backlog must be zero or more (the kernel's queue of connections "
                         f"not yet accepted), not {value}")
    return value


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """``timeout`` if it is None (no deadline) or a finite number of seconds above zero.

    Raises:
        TypeError: neither None nor a number.
        ValueError: zero, negative, infinite or NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {_kind(timeout)}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"{name} must be more than zero seconds (None: no deadline), "
                         f"not {timeout}")
    return float(timeout)


def check_path(path: Any, name: str = "path", *, optional: bool = False) -> Any:
    """``path`` if it is a non-empty str (a leading NUL: the abstract namespace), or
    None where ``optional``.

    Raises:
        TypeError: not a str.
        ValueError: empty (binding "" would auto-bind a random abstract name).
    """
    if path is None and optional:
        return None
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str, not {_kind(path)}")
    if not path:
        raise ValueError(f"{name} must not be empty (a name in the abstract namespace "
                         "starts with a NUL character)")
    return path


MAX_DEFER_ACCEPT: Final = 3600  # seconds; the kernel counts SYN-ACK retransmits anyway


def check_defer_accept(seconds: object) -> int | None:
    """``defer_accept`` as TCP_DEFER_ACCEPT takes it (whole seconds), or None.

    Raises:
        TypeError / ValueError: not a number of seconds from 1 to 3600.
        ValueError: the platform has no TCP_DEFER_ACCEPT (Linux only).
    """
    if check_timeout(seconds, "defer_accept") is None:
        return None
    assert isinstance(seconds, (int, float))
    if seconds > MAX_DEFER_ACCEPT:
        raise ValueError(f"defer_accept must be at most {MAX_DEFER_ACCEPT} seconds, "
                         f"not {seconds}")
    if not hasattr(socket, "TCP_DEFER_ACCEPT"):
        raise ValueError("defer_accept needs TCP_DEFER_ACCEPT, which only Linux has")
    return math.ceil(seconds)


def address_text(address: Any) -> str:
    """A socket address as users write it: ``host:port``, ``[v6]:port`` or a path."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        address = address.decode(errors="replace")
    if isinstance(address, str) and address.startswith("\0"):
        return "@" + address[1:]  # the abstract namespace, as ss(8) shows it
    return str(address)


def bind_or_close(sock: socket.socket, address: Any) -> None:
    """Bind ``sock``; on failure close it and raise an :class:`OSError` (same errno)
    whose message names the address as :func:`address_text` writes it."""
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {address_text(address)}: {exc.strerror}") from exc


def bound_socket(family: int, type_: int, address: Any, *, reuse_address: bool,
                  reuse_port: bool, dual_stack: bool) -> socket.socket:
    """A socket with the reuse and dual-stack options, bound (closed on failure)."""
    sock = socket.socket(family, type_)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
    except OSError:
        sock.close()
        raise
    bind_or_close(sock, address)
    return sock


def listening_tcp_socket(
    host: str | None, port: int, backlog: int, *, reuse_address: bool, reuse_port: bool,
    dual_stack: bool,
) -> socket.socket:
    """A TCP socket bound to ``host`` (None or "": every address) and listening."""
    family: int
    address: Any
    if not host:
        if dual_stack and socket.has_dualstack_ipv6():
            family, address = socket.AF_INET6, ("::", port)
        else:
            family, address = socket.AF_INET, ("0.0.0.0", port)
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _t, _p, _c, address = infos[0]
    sock = bound_socket(family, socket.SOCK_STREAM, address, reuse_address=reuse_address,
                         reuse_port=reuse_port, dual_stack=dual_stack)
    try:
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
