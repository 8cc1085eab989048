"""``reactor serve --metrics HOST:PORT --status HOST:PORT --loop-health``.

* ``--metrics HOST:PORT`` serves Prometheus's text format at ``/metrics``;
* ``--status HOST:PORT`` serves the live status page at ``/`` (and its data at
  ``/status.json``); the same address for both serves all three paths on one port
  (port 0 for both: two free ports);
* ``--loop-health`` times every callback and warns about those that hold the loop
  ``--slow-callback-duration`` seconds (0.1) or more; the loop's lag is measured
  whenever any of the three is given.

Both endpoints are plain HTTP without authentication: bind them to a loopback or
private address. Their bound addresses are logged as ``metrics on http://...`` and
``status page on http://...``.

``reactor_connection_closes_total{reason}`` has the access log's reasons for every
connection, with or without ``--access-log``: the transports count each close as the
connection leaves the table (:mod:`reactor.io.closes`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..io.observe import ObserveServer, serve_observe
from .addresses import format_listener, parse_bind
from .graceful import Server

__all__ = ["add_arguments", "http_address", "start"]


def http_address(text: str) -> tuple[str, int]:
    """A ``HOST:PORT`` (``[V6]:PORT``) for an observation endpoint.

    Raises:
        argparse.ArgumentTypeError: another form (``unix:`` and ``fd://`` included).
    """
    try:
        bind = parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if bind.kind != "tcp":
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT (TCP)")
    return (bind.host or "0.0.0.0", bind.port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give zero or more seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics``, ``--status``, ``--loop-health`` and
    ``--slow-callback-duration`` to ``parser``."""
    parser.add_argument(
        "--metrics", type=http_address, metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (no authentication: "
             "bind a loopback or private address; default: none)")
    parser.add_argument(
        "--status", type=http_address, metavar="HOST:PORT",
        help="serve a live status page at http://HOST:PORT/ (its data at /status.json; "
             "no authentication; default: none)")
    parser.add_argument(
        "--loop-health", action="store_true",
        help="time every callback and warn about those that hold the loop too long "
             "(the loop's lag is measured with --metrics or --status alone)")
    parser.add_argument(
        "--slow-callback-duration", type=_seconds, default=0.1, metavar="SECONDS",
        help="with --loop-health: a callback holding the loop this long is slow "
             "(default: 0.1)")


def any_endpoint(args: argparse.Namespace) -> bool:
    """Whether an endpoint is asked for."""
    return args.metrics is not None or args.status is not None


def _describe(server: Server) -> dict[str, Any]:
    return {
        "service": server.name,
        "addresses": [format_listener(listener) for listener in server.listeners],
        "stopping": server.stopping,
        "max_connections": server.max_connections,
    }


def start(args: argparse.Namespace, server: Server) -> list[ObserveServer]:
    """Open the endpoints ``args`` asks for on ``server``'s reactor (an empty list when
    none); enable loop health as asked.

    Raises:
        OSError: an address cannot be bound.
    """
    reactor = server.reactor
    if args.loop_health:
        reactor.enable_health(args.slow_callback_duration)
    elif any_endpoint(args):
        reactor.enable_health(None)  # the lag alone: one timer a second
    wanted: dict[Any, dict[str, bool]] = {}
    for name in ("metrics", "status"):
        address = getattr(args, name)
        if address is not None:  # port 0 twice: two free ports, not one
            key = address if address[1] else (name, *address)
            wanted.setdefault(key, {})[name] = True
    views = []
    for key, paths in wanted.items():
        host, port = key[-2:]
        views.append(serve_observe(
            reactor, host, port, metrics=paths.get("metrics", False),
            status=paths.get("status", False), describe=lambda: _describe(server)))
    return views
