"""Who may connect: address allow and deny lists, and a Unix peer's credentials.

The project's one reader of address lists (:func:`parse_networks`): the PROXY
protocol's ``proxy_allow_from`` (:mod:`.proxy_policy`) and the access lists below both
go through it, so an address is spelled and matched the same way everywhere.

Address lists (:class:`AddressPolicy`)
---------------------------------------
``allow_from`` and ``deny_from`` are addresses or CIDR networks, IPv4 or IPv6 (each
string may hold several, comma- or space-separated; ``"*"`` is every address). A peer
is refused when it is in ``deny_from``, and, when ``allow_from`` is given, when it is
not in ``allow_from``: **the deny list wins** over the allow list, so
``allow_from=["10.0.0.0/8"], deny_from=["10.0.0.13"]`` admits the network but one
host. Without ``allow_from`` every address not denied is admitted.

* An IPv4 client seen through a dual-stack socket (``::ffff:a.b.c.d``) is matched as
  its IPv4 address, and an IPv4-mapped network in a list (``::ffff:10.0.0.0/104``) is
  read as the IPv4 network it maps (``10.0.0.0/8``): a client is judged by the family
  it really uses, so ``::/0`` is every IPv6 client and ``0.0.0.0/0`` every IPv4 one.
* A link-local peer's zone (``fe80::1%eth0``) is left out of the match.
* A peer with no IP address (a Unix socket's) is in no network: an allow list refuses
  it, a deny list lets it pass.
* An empty ``allow_from`` is an error (it would refuse every client: say so with
  ``deny_from="*"``); an empty ``deny_from`` denies nothing. A malformed entry is an
  error naming it. Both are raised when the policy is made, so at start-up.

Matching costs one set probe per distinct prefix length in a list, whatever the
number of networks (:class:`NetworkSet`).

Peer credentials (:class:`CredentialsPolicy`)
----------------------------------------------
A Unix socket's peer is known by the credentials the kernel recorded when it
connected (``SO_PEERCRED``: :class:`PeerCredentials`, pid, uid and gid). A peer is
admitted when its uid is in ``allow_uids`` *or* its gid is in ``allow_gids`` (the
primary gid the kernel reports; supplementary groups are not seen).

Socket-free: no socket, select, selectors, threading or os.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

__all__ = ["AddressPolicy", "CredentialsPolicy", "Network", "NetworkSet", "PeerCredentials",
           "parse_networks", "peer_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_BITS: Final = {4: 32, 6: 128}


def parse_networks(entries: Iterable[str] | str | None, option: str
                   ) -> tuple[Network, ...] | None:
    """The networks a list names, in order; None when it holds ``"*"`` (every address).

    Args:
        entries: addresses or CIDR networks; each string may hold several, comma- or
            space-separated. None reads as an empty list.
        option: the option's name, for the error.

    Raises:
        ValueError: an entry is not an address, a network or ``"*"``.
    """
    if entries is None:
        return ()
    if isinstance(entries, str):
        entries = [entries]
    found: list[Network] = []
    every = False
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"{option}: {entry!r} is not a string (an IP address or "
                             f"network in CIDR notation)")
        for text in entry.replace(",", " ").split():
            if text == "*":
                every = True
                continue
            try:
                found.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{option}: {text!r} is not an IP address or network "
                                 f"(CIDR), nor '*'") from None
    return None if every else tuple(found)


def peer_ip(peer: Any) -> IPAddress | None:
    """The IP address of ``peer`` (an address as ``accept`` reports it), IPv4-mapped
    IPv6 as IPv4 and without a zone; None for a peer with no IP address."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(peer[0].split("%", 1)[0])
    return address


def _unmapped(network: Network) -> Network:
    """An IPv4-mapped IPv6 network as the IPv4 network it maps; others unchanged."""
    if (isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96
            and network.subnet_of(_MAPPED)):
        low = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return network


class NetworkSet:
    """A set of networks that tells whether an address is in one of them.

    Kept per address family as, for each prefix length present, the set of network
    prefixes of that length: a lookup costs one shift and one set probe per distinct
    prefix length, not one comparison per network.

    Attributes:
        networks: the networks, as given (IPv4-mapped ones read as IPv4).
    """

    __slots__ = ("_tables", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(_unmapped(network) for network in networks)
        prefixes: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in self.networks:
            shift = _BITS[network.version] - network.prefixlen
            by_length = prefixes[network.version]
            by_length.setdefault(shift, set()).add(int(network.network_address) >> shift)
        self._tables = {version: tuple((shift, frozenset(keys)) for shift, keys
                                       in sorted(by_length.items(), reverse=True))
                        for version, by_length in prefixes.items()}

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        value = int(address)
        return any(value >> shift in keys for shift, keys in self._tables[address.version])

    def __len__(self) -> int:
        return len(self.networks)

    def __str__(self) -> str:
        return ", ".join(str(network) for network in self.networks)


_EVERY: Final = NetworkSet(ipaddress.ip_network(text) for text in ("0.0.0.0/0", "::/0"))


def _network_set(entries: Iterable[str] | str | None, option: str) -> NetworkSet | None:
    networks = parse_networks(entries, option)
    if networks is None:
        return _EVERY
    return NetworkSet(networks) if networks else None


@dataclass(frozen=True)
class AddressPolicy:
    """A listener's (or a server's) address allow and deny lists (see the module's
    docstring). Immutable, shared by the connections it judges.

    Attributes:
        allow: the networks a peer must be in (None: every address not denied).
        deny: the networks a peer must not be in (None: none).
    """

    allow: NetworkSet | None = None
    deny: NetworkSet | None = None

    @classmethod
    def of(cls, allow_from: Iterable[str] | str | None = None,
           deny_from: Iterable[str] | str | None = None) -> AddressPolicy | None:
        """The policy the options spell, or None when neither list is given (nothing
        to check: the caller keeps its plain path).

        Raises:
            ValueError: a malformed entry, or an empty ``allow_from``.
        """
        allow = _network_set(allow_from, "allow_from")
        if allow_from is not None and allow is None:
            raise ValueError("allow_from is empty: every client would be refused "
                             "(leave it out to allow every address, or deny '*')")
        deny = _network_set(deny_from, "deny_from")
        if allow is None and deny is None:
            return None
        return cls(allow, deny)

    def refusal(self, peer: Any) -> str | None:
        """Why ``peer`` (an address as ``accept`` reports it) is refused; None when it
        is admitted."""
        address = peer_ip(peer)
        deny = self.deny
        if deny is not None and address in deny:
            return "in deny_from"
        allow = self.allow
        if allow is not None and address not in allow:
            return "not in allow_from"
        return None

    def admits(self, peer: Any) -> bool:
        """Whether ``peer`` may connect."""
        return self.refusal(peer) is None

    def describe(self) -> str:
        """The lists in words, for logs."""
        parts = []
        if self.allow is not None:
            parts.append(f"allow_from {self.allow}")
        if self.deny is not None:
            parts.append(f"deny_from {self.deny}")
        return "; ".join(parts)


class PeerCredentials(NamedTuple):
    """A Unix socket peer's credentials as the kernel recorded them at connect."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def _ids(values: Iterable[int] | int | None, option: str) -> frozenset[int] | None:
    if values is None:
        return None
    if isinstance(values, int):
        values = [values]
    found = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{option}: {value!r} is not a user or group id (an "
                             f"integer >= 0)")
        found.append(value)
    if not found:
        raise ValueError(f"{option} is empty: every client would be refused")
    return frozenset(found)


@dataclass(frozen=True)
class CredentialsPolicy:
    """A Unix listener's allow list by peer uid and gid (see the module's docstring).

    Attributes:
        uids: the user ids admitted (None: none by uid).
        gids: the group ids admitted (None: none by gid).
    """

    uids: frozenset[int] | None = None
    gids: frozenset[int] | None = None

    @classmethod
    def of(cls, allow_uids: Iterable[int] | int | None = None,
           allow_gids: Iterable[int] | int | None = None) -> CredentialsPolicy | None:
        """The policy the options spell, or None when neither list is given.

        Raises:
            ValueError: an id that is not an integer >= 0, or an empty list.
        """
        uids = _ids(allow_uids, "allow_uids")
        gids = _ids(allow_gids, "allow_gids")
        if uids is None and gids is None:
            return None
        return cls(uids, gids)

    def admits(self, credentials: PeerCredentials | None) -> bool:
        """Whether a peer with ``credentials`` may connect (None: unknown, refused)."""
        if credentials is None:
            return False
        return ((self.uids is not None and credentials.uid in self.uids)
                or (self.gids is not None and credentials.gid in self.gids))

    def describe(self) -> str:
        """The lists in words, for logs."""
        parts = []
        if self.uids is not None:
            parts.append("allow_uids " + ", ".join(str(n) for n in sorted(self.uids)))
        if self.gids is not None:
            parts.append("allow_gids " + ", ".join(str(n) for n in sorted(self.gids)))
        return "; ".join(parts)
