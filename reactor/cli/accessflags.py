"""The access-list flags of ``reactor serve`` (the argument group "Access"), turned into
listener options (see :mod:`reactor.io.access`). Not the access *log*: that is
:mod:`reactor.cli.access`.

* ``--allow-from CIDR...`` / ``--deny-from CIDR...``: for the TCP addresses, IPv4 and
  IPv6 networks or addresses (several per flag, comma- or space-separated, or the flag
  repeated; ``*`` is every address). A client in a ``--deny-from`` network, or outside
  every ``--allow-from`` one, is closed at accept before a byte is read; the deny list
  wins. With ``--proxy-protocol`` the lists judge the client the header names.
* ``--allow-uid UID...`` / ``--allow-gid GID...``: for the ``unix:`` addresses, the
  peer users and groups admitted (numbers or names; a peer passes when its uid or its
  primary gid is listed), read from the kernel (``SO_PEERCRED``) at accept.

Like every flag they may come from ``REACTOR_ALLOW_FROM`` and the others, or from the
``--config`` file (:mod:`reactor.cli.config`). A malformed entry is a usage error; a
list that no ``--bind`` address can use is one too.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ..sansio.access import AddressPolicy, CredentialsPolicy, parse_networks

__all__ = ["add_arguments", "listener_options"]


def _network(text: str) -> str:
    try:
        parse_networks(text, "network")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address or network (CIDR), nor '*'") from None
    return text


def _id(kind: str, text: str) -> int:
    """A uid or gid: a number, or a user or group name looked up now."""
    if text.isdigit():
        return int(text)
    try:
        if kind == "user":
            import pwd

            return pwd.getpwnam(text).pw_uid
        import grp

        return grp.getgrnam(text).gr_gid
    except (KeyError, ImportError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a {kind} id nor a known "
                                         f"{kind} name") from None


def _uid(text: str) -> int:
    return _id("user", text)


def _gid(text: str) -> int:
    return _id("group", text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the group "Access" to ``parser``."""
    group = parser.add_argument_group(
        "Access", "who may connect; refused clients are closed at accept, unread, counted "
                  "in the statistics and logged once per episode")
    group.add_argument(
        "--allow-from", action="extend", nargs="+", type=_network, metavar="CIDR",
        help="TCP addresses: serve only clients in these networks (IPv4 or IPv6, "
             "comma-separated or repeated; IPv4 clients of a [::] socket are matched as "
             "IPv4; behind --proxy-protocol: the client the header names)",
    )
    group.add_argument(
        "--deny-from", action="extend", nargs="+", type=_network, metavar="CIDR",
        help="TCP addresses: refuse clients in these networks, even when --allow-from "
             "names them (the deny list wins)",
    )
    group.add_argument(
        "--allow-uid", action="extend", nargs="+", type=_uid, metavar="UID",
        help="unix: addresses: serve only peers running as these users (numbers or "
             "names), or in an --allow-gid group",
    )
    group.add_argument(
        "--allow-gid", action="extend", nargs="+", type=_gid, metavar="GID",
        help="unix: addresses: serve only peers whose primary group is one of these "
             "(numbers or names), or an --allow-uid user",
    )


def _applies(binds: Iterable[str], kinds: tuple[str, ...]) -> bool:
    """Whether a list for ``kinds`` of address can be used by one of ``binds`` (an
    inherited ``fd://`` may be either kind: it is only known at start)."""
    for bind in binds:
        kind = "unix" if bind.startswith("unix:") else "fd" if bind.startswith("fd://") else (
            "tcp")
        if kind == "fd" or kind in kinds:
            return True
    return False


def listener_options(args: argparse.Namespace, binds: Iterable[str]) -> dict[str, Any]:
    """The extra listener keywords per kind of address (``{"tcp": {...}, "unix":
    {...}}``) for the parsed flags; empty dictionaries when no flag is given.

    Raises:
        ValueError: an empty list (from the environment or the file), or a list that
            no address in ``binds`` can use.
    """
    binds = list(binds)
    tcp: dict[str, Any] = {}
    unix: dict[str, Any] = {}
    if args.allow_from is not None or args.deny_from is not None:
        AddressPolicy.of(args.allow_from, args.deny_from)  # raises for a bad list
        if not _applies(binds, ("tcp",)):
            raise ValueError("--allow-from and --deny-from apply to TCP addresses, and no "
                             "--bind gives one (a unix: peer has no address: see "
                             "--allow-uid)")
        tcp = {"allow_from": args.allow_from, "deny_from": args.deny_from}
    if args.allow_uid is not None or args.allow_gid is not None:
        CredentialsPolicy.of(args.allow_uid, args.allow_gid)
        if not _applies(binds, ("unix",)):
            raise ValueError("--allow-uid and --allow-gid apply to unix:PATH addresses, "
                             "and no --bind gives one")
        unix = {"allow_uids": args.allow_uid, "allow_gids": args.allow_gid}
    return {"tcp": tcp, "unix": unix}
