"""Access lists on the socketserver facades: :class:`AccessControlMixIn`.

The mix-in judges each request in ``verify_request``, the standard library's hook, so
it runs where the standard library says: after the connection is accepted, before the
handler (inline, thread, child or multiplexed) gets it and before any byte of it is
read. A refused request is shut down and counted; the hook then asks the next class's
``verify_request``, so a program's own override that calls ``super()`` keeps working
whichever side of the mix-in it sits.

* ``allow_from`` / ``deny_from``: address lists of IPv4 and IPv6 networks, the deny
  list winning, IPv4-mapped peers matched as IPv4 (:mod:`reactor.sansio.access`).
  With :class:`~reactor.facades.proxied.ProxyProtocolMixIn` the header is read before
  ``verify_request`` runs, so the lists judge the real client (``client_address``).
  Datagram servers use them too (a refused datagram is dropped).
* ``allow_uids`` / ``allow_gids``: on a Unix stream server, the peer's credentials
  (``SO_PEERCRED``) are read once, in ``verify_request``; a peer is admitted when its
  uid or primary gid is listed. ``peercred = True`` reads them without a list. The
  credentials go into the request's row (its ``describe()``, ``meta["peercred"]``); a
  handler reads them with :func:`peer_credentials` (``peer_credentials(self.request)``).

A list that cannot apply (an address list on a Unix server with no PROXY protocol, a
uid list on an IP server) or a malformed one is an error when the server activates
(``server_activate``, called by the constructor); a list changed on the instance later
is read again at the next request. Refusals are counted in ``statistics()``
(``refused_by_address``, ``refused_by_credentials``; they are ``rejected`` too) and
logged once per episode (the first at INFO, the others at DEBUG, then a count).

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterable
from typing import Any, Final

from ..io.access import peer_credentials
from ..io.episodes import episode
from ..sansio.access import AddressPolicy, CredentialsPolicy, PeerCredentials
from ..sansio.words import counted
from .requests import ServerStatistics

__all__ = ["AccessControlMixIn", "peer_credentials"]

logger = logging.getLogger("reactor.servers")

_AF_UNIX: Final = getattr(socket, "AF_UNIX", None)
_ATTRIBUTES: Final = ("allow_from", "deny_from", "allow_uids", "allow_gids", "peercred")


@dataclasses.dataclass(frozen=True)
class _Policies:
    key: tuple[Any, ...]
    addresses: AddressPolicy | None
    credentials: CredentialsPolicy | None
    read_credentials: bool


def _policies(server: Any) -> _Policies:
    """The server's policies from its attributes (made again when one changed)."""
    key = tuple(getattr(server, name, None) for name in _ATTRIBUTES)
    found: _Policies | None = getattr(server, "_access_policies", None)
    if found is not None and all(a is b for a, b in zip(found.key, key, strict=True)):
        return found
    allow_from, deny_from, allow_uids, allow_gids, peercred = key
    addresses = AddressPolicy.of(allow_from, deny_from)
    credentials = CredentialsPolicy.of(allow_uids, allow_gids)
    unix = getattr(server, "address_family", None) == _AF_UNIX and _AF_UNIX is not None
    name = type(server).__name__
    if addresses is not None and unix and getattr(server, "proxy_protocol", None) is None:
        raise ValueError(f"{name}: allow_from/deny_from judge IP addresses, and the peers "
                         f"of a Unix socket have none (use allow_uids/allow_gids)")
    wants_credentials = credentials is not None or bool(peercred)
    if wants_credentials and not unix:
        raise ValueError(f"{name}: allow_uids/allow_gids/peercred need a Unix stream "
                         f"server (peer credentials exist only there)")
    found = _Policies(key, addresses, credentials, wants_credentials)
    server._access_policies = found
    return found


class AccessControlMixIn:
    """Refuse clients by address (IP servers) or by peer uid and gid (Unix stream
    servers) in ``verify_request``; see the module's docstring. Put it first in the
    bases::

        class Server(AccessControlMixIn, ThreadingMixIn, TCPServer):
            allow_from = ["10.0.0.0/8", "2001:db8::/32"]
            deny_from = ["10.0.0.13"]

        class Local(AccessControlMixIn, UnixStreamServer):
            allow_uids = [1000]

    Attributes:
        allow_from: addresses or networks admitted (None: every address not denied).
        deny_from: addresses or networks refused, even when allowed.
        allow_uids / allow_gids: on a Unix stream server, the peer uids and primary
            gids admitted (a peer passes when either matches).
        peercred: read the peer's credentials on a Unix stream server even without a
            list (for the row and the log).
    """

    allow_from: Iterable[str] | str | None = None
    deny_from: Iterable[str] | str | None = None
    allow_uids: Iterable[int] | int | None = None
    allow_gids: Iterable[int] | int | None = None
    peercred: bool = False

    _refused_by_address = 0
    _refused_by_credentials = 0

    def server_activate(self) -> None:
        """Check the lists (a malformed or inapplicable one raises ValueError), then
        activate as the next class does."""
        _policies(self)
        super().server_activate()  # type: ignore[misc]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a client the lists do not admit; else ask the next class."""
        policies = _policies(self)
        if policies.addresses is not None:
            reason = policies.addresses.refusal(client_address)
            if reason is not None:
                self._refused_by_address += 1
                self._log_refused("address", repr(client_address), reason,
                                  policies.addresses.describe())
                return False
        if policies.read_credentials:
            credentials = self._read_credentials(request)
            policy = policies.credentials
            if policy is not None and not policy.admits(credentials):
                self._refused_by_credentials += 1
                peer = f"a peer ({credentials})" if credentials is not None else (
                    "a peer whose credentials cannot be read")
                self._log_refused("credentials", peer, "not in allow_uids/allow_gids",
                                  policy.describe())
                return False
        return bool(super().verify_request(request, client_address))  # type: ignore[misc]

    def statistics(self) -> ServerStatistics:
        """The server's snapshot, with the refusals counted."""
        found: ServerStatistics = super().statistics()  # type: ignore[misc]
        return dataclasses.replace(found, refused_by_address=self._refused_by_address,
                                   refused_by_credentials=self._refused_by_credentials)

    def _read_credentials(self, request: Any) -> PeerCredentials | None:
        """The peer's credentials, recorded in the request's row (None: unreadable)."""
        try:
            credentials = peer_credentials(request)
        except OSError:
            return None
        engine = getattr(self, "_reactor_engine", None)
        row = engine.rows.get(id(request)) if engine is not None else None
        if row is not None:
            row.set_meta("peercred", credentials)
        return credentials

    def _log_refused(self, kind: str, peer: str, reason: str, policy: str) -> None:
        engine = getattr(self, "_reactor_engine", None)
        reactor = engine.reactor if engine is not None else None
        where = f"{type(self).__name__} {getattr(self, 'server_address', None)!r}"
        if reactor is None or reactor.is_closed():
            logger.info("%s: refused %s: %s (%s)", where, peer, reason, policy)
            return

        def summary(count: int, seconds: float) -> str:
            return (f"{where}: refused {counted(count, 'request')} for its {kind} lists "
                    f"in {seconds:.1f} s")

        episode(self, "refused:" + kind, reactor, logger, summary).event(
            "%s: refused %s: %s (%s)", where, peer, reason, policy)
