"""Who may send a PROXY header, which versions, and how long it may take: a listener's
:class:`ProxyPolicy`.

The PROXY protocol's specification says a receiver must be told whether the header is
present, never guess it, and should accept it only from the proxies it knows. So a
listener with a policy *requires* the header from every peer in ``allow_from`` and
*refuses* every other peer: such a connection is closed before any byte of it is read
(an untrusted peer is never served as a direct client, and never gets to send a header
that could be believed). Without ``allow_from`` only the loopback addresses are
trusted, as gunicorn's ``proxy_allow_ips`` and uvicorn's ``forwarded_allow_ips``
default to; ``"*"`` trusts every address. The peers of a Unix socket have no address:
there the header is required from every peer and the socket file's permissions decide
who may connect.

Socket-free: no socket, select, selectors, threading or os.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .access import Network, parse_networks, peer_ip
from .proxy import DEFAULT_MAX_SIZE, MIN_MAX_SIZE, VERSIONS

__all__ = ["DEFAULT_ALLOW_FROM", "DEFAULT_PROXY_TIMEOUT", "ProxyPolicy"]

DEFAULT_PROXY_TIMEOUT: Final = 5.0  # seconds for the whole header (the spec: >= 3 s)
DEFAULT_ALLOW_FROM: Final = ("127.0.0.0/8", "::1/128")


def _networks(allow_from: Iterable[str] | str | None) -> tuple[Network, ...] | None:
    """The allow list as networks; None means every address (``"*"``)."""
    found = parse_networks(DEFAULT_ALLOW_FROM if allow_from is None else allow_from,
                           "proxy_allow_from")
    if found is not None and not found:
        raise ValueError("proxy_allow_from is empty: no peer could send the header "
                         "(give '*' to trust every address)")
    return found


@dataclass(frozen=True)
class ProxyPolicy:
    """A listener's PROXY protocol settings (immutable, shared by its connections).

    Attributes:
        accept: ``"v1"``, ``"v2"`` or ``"any"``.
        allow_from: the networks whose peers must send the header; None: every address.
        timeout: seconds the whole header may take to arrive.
        max_size: the largest v2 header accepted, in bytes.
    """

    accept: str = "any"
    allow_from: tuple[Network, ...] | None = None
    timeout: float = DEFAULT_PROXY_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE

    def __post_init__(self) -> None:
        if self.accept not in VERSIONS:
            raise ValueError(f"proxy_protocol must be one of {', '.join(VERSIONS)}, not "
                             f"{self.accept!r}")
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0
                and math.isfinite(self.timeout)):
            raise ValueError(f"proxy_timeout must be a positive number of seconds, not "
                             f"{self.timeout!r}")
        if self.max_size < MIN_MAX_SIZE:
            raise ValueError(f"max_size must be at least {MIN_MAX_SIZE}")

    @classmethod
    def of(cls, accept: str, allow_from: Iterable[str] | str | None = None,
           timeout: float = DEFAULT_PROXY_TIMEOUT) -> ProxyPolicy:
        """A policy from the listener options' spelling: ``allow_from`` as addresses or
        CIDR networks (each string may hold several, comma- or space-separated), None
        for the loopback addresses, ``"*"`` for every address.

        Raises:
            ValueError: a version, network or timeout that is not valid.
        """
        return cls(accept, _networks(allow_from), timeout)

    def trusts(self, peer: Any) -> bool:
        """Whether ``peer`` (an address as ``accept`` reports it) may send the header.

        An IPv4 client seen through a dual-stack socket (``::ffff:a.b.c.d``) is matched
        as its IPv4 address; a peer with no IP address (a Unix socket's) is trusted.
        """
        networks = self.allow_from
        if networks is None:
            return True
        address = peer_ip(peer)
        if address is None:  # a Unix socket's peer, or an address that does not parse
            return not isinstance(peer, tuple) or not peer
        return any(address in network for network in networks)

    def describe(self) -> str:
        """The allow list in words, for logs."""
        if self.allow_from is None:
            return "every address"
        return ", ".join(str(network) for network in self.allow_from)
