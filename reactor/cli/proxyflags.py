"""The PROXY protocol flags of ``reactor serve``: ``--proxy-protocol v1|v2|any``,
``--proxy-allow-from CIDR...`` and ``--proxy-timeout S``, turned into the listener
options of :func:`reactor.io.listeners.listen_tcp` (see :mod:`reactor.io.proxy`).

With ``--proxy-protocol`` every connection to every ``--bind`` address must start with
a PROXY header of that version; peers outside ``--proxy-allow-from`` (default: the
loopback addresses; ``*``: every address) are refused unread; Unix sockets take the
header from every peer. The service sees the client the header names.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..sansio.proxy import VERSIONS
from ..sansio.proxy_policy import DEFAULT_ALLOW_FROM, DEFAULT_PROXY_TIMEOUT, ProxyPolicy

__all__ = ["add_arguments", "listener_options"]


def _positive_seconds(text: str) -> float:
    try:
        return ProxyPolicy(timeout=float(text)).timeout
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of "
                                         f"seconds") from None


def _network(text: str) -> str:
    try:
        ProxyPolicy.of("any", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the group of PROXY protocol flags to ``parser``."""
    group = parser.add_argument_group(
        "PROXY protocol (behind HAProxy send-proxy[-v2], nginx proxy_protocol, Envoy)")
    group.add_argument(
        "--proxy-protocol", choices=VERSIONS, metavar="{v1,v2,any}",
        help="require a PROXY protocol header of this version (any: v1 or v2) at the "
             "start of every connection, and serve the client it names; never guessed",
    )
    group.add_argument(
        "--proxy-allow-from", action="append", type=_network, metavar="CIDR",
        help="the proxies allowed to connect and send the header: addresses or "
             "networks, comma-separated or repeated; '*' for any. Other peers are refused "
             f"before a byte is read (default: {' '.join(DEFAULT_ALLOW_FROM)}; Unix "
             "sockets: every peer)",
    )
    group.add_argument(
        "--proxy-timeout", type=_positive_seconds, default=DEFAULT_PROXY_TIMEOUT,
        metavar="S",
        help="close a connection whose header is not complete within S seconds "
             "(default: %(default)g)",
    )


def listener_options(args: argparse.Namespace) -> dict[str, Any]:
    """The listener keywords for the parsed flags (empty without ``--proxy-protocol``).

    Raises:
        ValueError: ``--proxy-allow-from`` or a changed ``--proxy-timeout`` without
            ``--proxy-protocol``.
    """
    if args.proxy_protocol is None:
        if args.proxy_allow_from or args.proxy_timeout != DEFAULT_PROXY_TIMEOUT:
            raise ValueError("--proxy-allow-from and --proxy-timeout need --proxy-protocol")
        return {}
    return {"proxy_protocol": args.proxy_protocol, "proxy_allow_from": args.proxy_allow_from,
            "proxy_timeout": args.proxy_timeout}
