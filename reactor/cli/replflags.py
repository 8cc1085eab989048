"""The kv replication flags of ``reactor serve``: ``--replicate-to HOST:PORT`` (repeatable),
``--min-replicas N``, ``--replication-secret SECRET`` and ``--replication-timeout S``,
turned into the kv service's settings (``replicate_to``, ``min_replicas``,
``replication_secret``, ``replication_timeout``, ``replication_header``; see
``handlers.services.kv.peers``).

With ``--proxy-protocol`` the links send a LOCAL PROXY header first: the peers are taken
to serve as this host does (the deploy example runs every host with the same flags).
"""

from __future__ import annotations

import argparse
from typing import Any

from . import argtypes

__all__ = ["SETTINGS", "add_arguments", "check", "settings"]

SETTINGS = ("replicate_to", "min_replicas", "replication_secret", "replication_timeout",
            "replication_header")


def _peer(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 1 to "
                                         "65535)")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the group of kv replication flags to ``parser``."""
    group = parser.add_argument_group(
        "kv replication (synchronous, to peers; no consensus, no resync)")
    group.add_argument(
        "--replicate-to", action="append", type=_peer, metavar="HOST:PORT",
        help="kv only: a peer (another kv host) every write is sent to before its reply; "
             "repeat for each peer. Needs --replication-secret",
    )
    group.add_argument(
        "--min-replicas", type=argtypes.whole(0), metavar="N",
        help="kv only: peers that must acknowledge each write (default: 1 with peers); "
             "with fewer live peers a write is refused, unapplied, with -NOREPLICAS",
    )
    group.add_argument(
        "--replication-secret", metavar="SECRET",
        help="kv only: the secret the hosts' replication links present (REPLLINK), the "
             "same on every host; a host with a secret and no --replicate-to only accepts "
             "links. Give it through REACTOR_REPLICATION_SECRET or --config rather than "
             "here (ps shows command lines)",
    )
    group.add_argument(
        "--replication-timeout", type=argtypes.positive_seconds, metavar="S",
        help="kv only: seconds a peer has to connect and to acknowledge a write before "
             "it is marked down (its waiting writes then count as not replicated to it; "
             "default: 2)",
    )


def check(args: argparse.Namespace) -> None:
    """Raises ValueError for flags that do not combine (replication with --workers)."""
    if getattr(args, "workers", None) is not None and (args.replicate_to
                                                      or args.replication_secret):
        raise ValueError("kv replication does not combine with --workers (each worker "
                         "would be a store of its own)")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The kv settings for the parsed flags (None: not given)."""
    header = None
    if args.replicate_to and args.proxy_protocol is not None:
        header = args.proxy_protocol
    return {"replicate_to": args.replicate_to, "min_replicas": args.min_replicas,
            "replication_secret": args.replication_secret,
            "replication_timeout": args.replication_timeout, "replication_header": header}
