"""Access lists on stream listeners: who is refused at accept, and a Unix peer's
credentials.

Theory of operation
-------------------
A listener made with ``allow_from``/``deny_from`` (TCP) or ``allow_uids``/
``allow_gids``/``peercred`` (Unix) accepts through a *guard* built here
(:func:`address_guard`, :func:`credentials_guard`); a listener without them never
meets this module, so its accept path is exactly what it was.

* **Addresses** (:class:`~reactor.sansio.access.AddressPolicy`): a refused peer's
  socket is closed as it comes out of ``accept``, before any byte is read and before
  any row, transport or protocol exists; its slot of ``max_connections`` is freed at
  once. Behind the PROXY protocol the lists judge the real client, the address the
  header names (the proxy itself is judged by ``proxy_allow_from``): the connection is
  aborted once its header is read, before the protocol is made or sees a byte.
* **Credentials** (:class:`~reactor.sansio.access.CredentialsPolicy`): a Unix
  listener reads its peer's ``SO_PEERCRED`` once, at accept, when an allow list needs
  it or ``peercred=True`` asks for it; a refused peer is closed as above; an admitted
  one's :class:`~reactor.sansio.access.PeerCredentials` go into the row
  (``get_extra_info('peercred')`` and the row's ``describe()``).

Each refusal adds one to the connection table's ``refused_by_address`` or
``refused_by_credentials`` (the reactor's ``statistics()``) and is logged once per
episode per listener (:func:`~reactor.io.episodes.episode`): the first refusal of a run
at INFO with the peer and the reason, the others at DEBUG, then one line with the
count. A flood of refused clients is a handful of lines.

Must not import the loop, the listeners or anything above the I/O layer (the
listeners for type checking only).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.access import AddressPolicy, CredentialsPolicy, PeerCredentials
from ..sansio.connection import ConnState
from ..sansio.words import counted
from .episodes import _Described, episode
from .proxy import attach_new, proxy_acceptor
from .stream import StreamTransport
from .transports import ProtocolFactory, TransportOptions

if TYPE_CHECKING:
    from .listeners import AcceptCallback, Listener

__all__ = ["AddressGuard", "CredentialsGuard", "Guard", "address_guard", "credentials_guard",
           "peer_credentials"]

logger = logging.getLogger("reactor.listeners")

_ACCEPTED: Final = ConnState.ACCEPTED
_UCRED: Final = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
PlainAcceptor = Callable[[ProtocolFactory, TransportOptions], "AcceptCallback"]


def peer_credentials(sock: Any) -> PeerCredentials:
    """The credentials of a connected Unix stream socket's peer (``SO_PEERCRED``: the
    process id, user id and group id the kernel recorded when the peer connected).

    Works on any socket object with ``getsockopt`` (a facade's request, a transport's
    ``get_extra_info('socket')``).

    Raises:
        OSError: the socket is not a connected Unix socket, or the platform has no
            ``SO_PEERCRED`` (Linux has it).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise OSError("SO_PEERCRED is not available on this platform")
    return PeerCredentials(*_UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)))


def _refused(listener: Listener, kind: str, policy: str, peer: str, reason: str) -> None:
    """Count one refusal (the table's ``refused_by_<kind>``) and log it once per
    episode."""
    table = listener.reactor.connections
    counter = "refused_by_" + kind
    setattr(table, counter, getattr(table, counter) + 1)
    where = _Described(listener)  # a getsockname only for a line that is written

    def summary(count: int, seconds: float) -> str:
        return (f"{where}: refused {counted(count, 'connection')} for its {kind} "
                f"lists in {seconds:.1f} s")

    found = episode(listener, "refused:" + kind, listener.reactor, logger, summary)
    found.event("%s: refused %s: %s (%s)", where, peer, reason, policy)


def _close_unread(listener: Listener, conn: Any) -> None:
    conn.close()
    listener.release_slot()


class AddressGuard:
    """Builds a TCP listener's accept callback with its address lists (see the
    module's docstring)."""

    __slots__ = ("policy", "text")

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self.text = policy.describe()

    def acceptor(self, on_accept: AcceptCallback | None, plain: PlainAcceptor,
                 protocol_factory: ProtocolFactory | None, options: TransportOptions,
                 **proxy: Any) -> AcceptCallback:
        """The accept callback ``proxy_acceptor`` would make, guarded."""
        if proxy.get("proxy_protocol") is not None:
            return proxy_acceptor(on_accept, plain, protocol_factory, options,
                                  admit=self.admit_client, **proxy)
        inner = proxy_acceptor(on_accept, plain, protocol_factory, options, **proxy)
        refusal = self.policy.refusal

        def accept_listed(listener: Listener, conn: Any, addr: Any) -> None:
            reason = refusal(addr)
            if reason is None:
                inner(listener, conn, addr)
                return
            _close_unread(listener, conn)
            _refused(listener, "address", self.text, repr(addr),
                     reason)

        return accept_listed

    def admit_client(self, transport: StreamTransport) -> bool:
        """After a PROXY header: whether the client it names may go on (else the
        connection is aborted, its protocol never made)."""
        reason = self.policy.refusal(transport.peername)
        if reason is None:
            return True
        listener = transport.listener
        transport.abort()
        if listener is not None:
            _refused(listener, "address", self.text,
                     f"{transport.peername!r} (through {transport.get_extra_info('proxy')!r})",
                     reason)
        return False


class CredentialsGuard:
    """Builds a Unix listener's accept callback that reads each peer's credentials,
    refuses those its policy does not admit, and records them in the row."""

    __slots__ = ("policy", "text")

    def __init__(self, policy: CredentialsPolicy | None) -> None:
        self.policy = policy
        self.text = policy.describe() if policy is not None else ""

    def admit(self, listener: Listener, conn: Any) -> tuple[bool, PeerCredentials | None]:
        """Whether the peer is admitted (else it is closed unread, counted and logged),
        and its credentials (None if they cannot be read)."""
        try:
            credentials: PeerCredentials | None = peer_credentials(conn)
        except OSError:
            credentials = None
        policy = self.policy
        if policy is None or policy.admits(credentials):
            return True, credentials
        _close_unread(listener, conn)
        peer = f"a peer ({credentials})" if credentials is not None else (
            "a peer whose credentials cannot be read")
        _refused(listener, "credentials", self.text, peer,
                 "not in allow_uids/allow_gids")
        return False, credentials

    def recording(self, protocol_factory: ProtocolFactory,
                  options: TransportOptions) -> AcceptCallback:
        """The plain stream acceptor, with the credentials read, judged and kept."""
        admit = self.admit

        def accept_credited(listener: Listener, conn: Any, addr: Any) -> None:
            admitted, credentials = admit(listener, conn)
            if not admitted:
                return
            transport = StreamTransport(listener.reactor, conn, addr, _ACCEPTED, listener,
                                        options, 0)
            if credentials is not None:
                transport.set_meta("peercred", credentials)
            attach_new(transport, protocol_factory)

        return accept_credited

    def acceptor(self, on_accept: AcceptCallback | None, plain: PlainAcceptor,
                 protocol_factory: ProtocolFactory | None, options: TransportOptions,
                 **proxy: Any) -> AcceptCallback:
        """The accept callback ``proxy_acceptor`` would make, guarded. Only the plain
        path records the credentials in the row; with ``on_accept`` or the PROXY
        protocol the peer is judged before the inner callback runs."""
        if on_accept is None and proxy.get("proxy_protocol") is None:
            return proxy_acceptor(None, self.recording, protocol_factory, options, **proxy)
        inner = proxy_acceptor(on_accept, plain, protocol_factory, options, **proxy)
        admit = self.admit

        def accept_judged(listener: Listener, conn: Any, addr: Any) -> None:
            if admit(listener, conn)[0]:
                inner(listener, conn, addr)

        return accept_judged


def address_guard(allow_from: Iterable[str] | str | None,
                  deny_from: Iterable[str] | str | None) -> AddressGuard | None:
    """The guard for a TCP listener's lists; None when there are none.

    Raises:
        ValueError: a malformed entry or an empty ``allow_from``.
    """
    policy = AddressPolicy.of(allow_from, deny_from)
    return AddressGuard(policy) if policy is not None else None


def credentials_guard(allow_uids: Iterable[int] | int | None,
                      allow_gids: Iterable[int] | int | None,
                      peercred: bool) -> CredentialsGuard | None:
    """The guard for a Unix listener's lists and ``peercred``; None when neither is
    asked for.

    Raises:
        ValueError: an id that is not an integer >= 0, or an empty list.
        OSError: the platform has no ``SO_PEERCRED``.
    """
    policy = CredentialsPolicy.of(allow_uids, allow_gids)
    if policy is None and not peercred:
        return None
    if getattr(socket, "SO_PEERCRED", None) is None:
        raise OSError("peer credentials (SO_PEERCRED) are not available on this platform")
    return CredentialsGuard(policy)


Guard = AddressGuard | CredentialsGuard
