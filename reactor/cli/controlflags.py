"""``reactor serve --control unix:PATH``: the control socket of a served process.

The socket is created owner-only (mode 0600, through the umask at bind, as
``--unix-mode`` sets a served socket's mode), an existing path that is not a socket is
refused, and the path is removed at exit. ``drain`` on it stops the server as SIGTERM
does (the same graceful stop, exit status 0); ``info`` adds the service's name, its
addresses, its limits (connections, backlog, timeouts), the grace period and whether a
stop has begun. Talk to it with
``reactor ctl PATH COMMAND`` (:mod:`reactor.cli.ctl`), ``nc -U`` or ``socat``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..io.control import ControlServer, serve_control
from .addresses import format_listener
from .graceful import Server

__all__ = ["add_arguments", "control_path", "start"]


def control_path(text: str) -> str:
    """The path of a ``unix:PATH`` control address.

    Raises:
        argparse.ArgumentTypeError: not ``unix:PATH``, or an abstract ``unix:@NAME``
            (no file permissions: any local user could connect).
    """
    if not text.startswith("unix:") or len(text) == len("unix:"):
        raise argparse.ArgumentTypeError(f"{text!r}: the control socket is unix:PATH")
    path = text[len("unix:"):]
    if path.startswith("@"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an abstract socket has no permissions (any local user could "
            "connect); give a filesystem path")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--control`` to ``parser``."""
    parser.add_argument(
        "--control", type=control_path, metavar="unix:PATH",
        help="serve a control socket at PATH, owner-only (mode 600): info, conns, "
             "close ID, abort ID, drain, loglevel LEVEL; use 'reactor ctl PATH "
             "COMMAND', nc -U or socat (default: none)",
    )


def _describe(server: Server) -> dict[str, Any]:
    return {
        "service": server.name,
        "addresses": [format_listener(listener) for listener in server.listeners],
        "graceful_timeout": server.graceful_timeout,
        "stopping": server.stopping,
        "limits": {
            "max_connections": server.max_connections, "backlog": server.backlog,
            "idle_timeout": server.options.idle_timeout,
            "first_byte_timeout": server.options.first_byte_timeout,
            "write_timeout": server.options.write_timeout,
            "high_water": server.options.high_water,
        },
    }


def start(args: argparse.Namespace, server: Server) -> ControlServer | None:
    """Open the control socket ``args.control`` names for ``server`` (None: none asked).

    Raises:
        ValueError, OSError: the path is unusable (see
            :func:`reactor.io.control.serve_control`).
    """
    if args.control is None:
        return None
    return serve_control(
        server.reactor, args.control,
        on_drain=lambda: server.stop(reason="drain (control socket)"),
        describe=lambda: _describe(server),
    )
