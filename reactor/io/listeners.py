"""Listening sockets: the code that calls ``accept``, ``bind`` and ``listen`` (datagram
endpoints are :mod:`.endpoints`', re-exported here; outgoing connections are
:mod:`.connect`'s).

Theory of operation
-------------------
A :class:`Listener` is registered for reading. Each wake-up accepts at most
``accept_batch`` connections, so a connect storm cannot starve established connections.
Each accepted socket is made non-blocking and handed to the listener's accept callback;
the default one makes a :class:`~reactor.io.stream.StreamTransport` and attaches a
protocol from the factory. A listener given a ``connection_factory`` lets it make the
accepted socket object instead (and leaves its blocking mode alone).

When ``accept`` fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
listener is *paused*: unregistered from the selector, so a level-triggered selector
cannot spin on the pending connection, and re-registered after ``accept_retry_delay``.
Pending clients wait in the kernel's backlog meanwhile. The first failure of an episode
is logged at warning level naming the limit; retries in the same episode are silent; the
first successful accept ends the episode and says so.

With ``max_connections`` the listener stops polling when that many of its connections
are open and resumes when one closes (logged once per episode, not per connection:
:func:`.episodes.cap_reached`); with ``at_cap="refuse"`` it accepts and closes the
clients that come while it is full instead (:mod:`.refusal`). A connection the
selector refuses to register (epoll's ENOSPC or ENOMEM) is closed and frees its slot at once (see
:meth:`~reactor.io.stream.StreamTransport.attach`); an outgoing connect whose socket
is refused fails its future with the error.

With ``defer_accept`` (Linux's ``TCP_DEFER_ACCEPT``, nginx's ``deferred``) the kernel
hands over a TCP connection only once its first bytes have arrived (or the deferral ran
out), and the listener reads them at once after ``connection_made`` instead of waiting
for the next poll.

A Unix socket path gets the care of :mod:`.unixpath`: a stale one is removed before
bind, a requested ``mode`` is set through the umask at bind, and the path is removed on
close by the process that bound it.

Uses the reactor through its public names (``selector``, ``listeners``,
``call_later``, ``is_closed``). Must not import the facades or the command line.
"""

from __future__ import annotations

import _socket
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ConnState
from ..sansio.timers import TimerHandle
from .access import Guard, address_guard, credentials_guard
from .compactrow import ListenerOptions, bind_listener
from .endpoints import listen_udp, listen_unix_datagram
from .episodes import cap_reached, cap_released, limit_name
from .proxy import DEFAULT_PROXY_TIMEOUT, proxy_acceptor
from .refusal import CapRefuser, check_at_cap
from .stream import StreamTransport
from .tallies import count as _tally
from .tlsendpoints import server_factory as tls_server
from .transports import ProtocolFactory, TransportOptions, options_from
from .unixpath import UNIX_PATH_MAX, OwnedPath, check_mode, created_with_mode, prepare
from .validate import (
    bind_or_close,
    check_backlog,
    check_defer_accept,
    check_path,
    check_port,
    listening_tcp_socket,
)

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["CAPACITY_ERRNOS", "UNIX_PATH_MAX", "Listener", "listen_tcp", "listen_udp",
           "listen_unix", "listen_unix_datagram"]

logger = logging.getLogger("reactor.listeners")

# called with the listener, the accepted connection (a non-blocking _socket.socket)
# and the peer's address
AcceptCallback = Callable[["Listener", Any, Any], None]
# makes the accepted connection's socket object from (family, type, proto, fd)
ConnectionFactory = Callable[[int, int, int, int], Any]
# told of each client refused at the cap: the listener, the client's address and how
# many bytes of the reply it was sent
RefusedCallback = Callable[["Listener", Any, int], None]

EVENT_READ: Final = 1
CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TRANSIENT_ERRNOS: Final = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN, errno.EPERM}
)
DEFAULT_BACKLOG: Final = 1024
DEFAULT_ACCEPT_BATCH: Final = 128
ACCEPT_RETRY_DELAY: Final = 0.5
INTERN_FROM: Final = 16  # open connections past which peer host strings are interned
_ACCEPTED: Final = ConnState.ACCEPTED  # Enum class attributes are slow to read (3.11)


class Listener:
    """A listening socket registered with a reactor.

    Attributes:
        sock: the listening socket.
        max_connections: the cap on this listener's open connections, or None.
        at_cap: ``"wait"`` (stop accepting while full) or ``"refuse"`` (accept and close
            the clients that come while full, after sending ``cap_reply``).
        cap_reply: bytes sent to a refused client (best effort), or empty.
        on_refused: called with the listener, the address of each refused client and
            the bytes of ``cap_reply`` it was sent.
        active: this listener's connections open now.
        accepted: connections accepted so far.
        refused: clients refused at the cap so far.
    """

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        on_accept: AcceptCallback,
        *,
        max_connections: int | None = None,
        accept_batch: int = DEFAULT_ACCEPT_BATCH,
        accept_retry_delay: float = ACCEPT_RETRY_DELAY,
        unix_path: str | None = None,
        connection_factory: ConnectionFactory | None = None,
        at_cap: str = "wait",
        cap_reply: bytes = b"",
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.at_cap = check_at_cap(at_cap, cap_reply)
        self.cap_reply = bytes(cap_reply)
        self.on_refused: RefusedCallback | None = None
        self.refused = 0
        # while full with at_cap="refuse": what the selector holds instead of self
        self.refuser: CapRefuser | None = None
        self.reactor = reactor
        self.sock = sock
        # read once: socket.socket's family/type properties convert to enums in Python
        self.kind = (int(sock.family), int(sock.type), sock.proto)
        self._on_accept = on_accept
        # None: the connection is a non-blocking _socket.socket; otherwise this makes it
        # from (family, type, proto, fd), left as the factory made it (a facade's
        # blocking handler takes a blocking socket.socket: no setblocking round trip)
        self._connection_factory = connection_factory
        self.max_connections = max_connections
        self.accept_batch = max(1, accept_batch)
        self.accept_retry_delay = accept_retry_delay
        self.active = 0
        self.accepted = 0
        self._registered = False
        self._capacity_error: int | None = None  # errno of the current episode
        self._retry: TimerHandle | None = None
        self._closed = False
        self._owned_path = OwnedPath.of(unix_path)  # removed on close
        # the options its connections keep, naming it (.compactrow.bound_options)
        self._bound_options: ListenerOptions | None = None
        sock.setblocking(False)
        reactor.listeners.append(self)
        try:
            self._update_registration(refusal_is_fatal=True)
        except OSError as exc:
            reactor.listeners.remove(self)
            self._closed = True
            where = self.describe()
            sock.close()
            if self._owned_path is not None:
                self._owned_path.remove()
            raise OSError(exc.errno, f"cannot register the {where} with the selector: "
                                     f"{exc.strerror}") from exc

    # -- registration -----------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether the listener is registered with the selector now."""
        return self._registered

    @property
    def paused(self) -> bool:
        """Paused after a resource error (EMFILE and the like)."""
        return self._retry is not None

    def _wants_accept(self) -> bool:
        if self._closed or self._retry is not None:
            return False
        return self.max_connections is None or self.active < self.max_connections

    def _update_registration(self, refusal_is_fatal: bool = False) -> None:
        wanted = self._wants_accept()
        if wanted and not self._registered:
            self._drop_refuser()
            try:
                self.reactor.selector.register(self.sock, 1, self)
            except OSError as exc:
                if refusal_is_fatal:
                    raise
                # epoll's ENOSPC or ENOMEM when polling resumes: retry later, as after
                # an accept() that ran out of resources (once-per-episode log)
                if self._capacity_error is None:
                    logger.error("%s: the selector refused the listening socket: %s; "
                                 "retrying every %.1f s", self.describe(), exc,
                                 self.accept_retry_delay)
                self._capacity_error = exc.errno or 0
                self._retry = self.reactor.call_later(self.accept_retry_delay, self._resume)
                self._registered = False
                return
            cap_released(self)  # after the cap: a quiet second ends its episode
        elif not wanted and self._registered:
            self.reactor.selector.unregister(self.sock)
            if self._retry is None and not self._closed:  # at the cap: once per episode
                cap_reached(self, logger)
        self._registered = wanted
        if not wanted:
            if self.at_cap == "refuse" and self._retry is None and not self._closed:
                if self.refuser is None:  # full: refuse the clients who come meanwhile
                    self.refuser = CapRefuser(self)
                    self.reactor.selector.register(self.sock, 1, self.refuser)
            else:
                self._drop_refuser()

    def _drop_refuser(self) -> None:
        if self.refuser is not None:
            self.refuser = None
            if not self.reactor.is_closed():
                self.reactor.selector.unregister(self.sock)

    def release_slot(self) -> None:
        """One of this listener's connections ended: its slot of ``max_connections``
        is free (accepting resumes if the cap had paused it)."""
        self.active -= 1
        if not self._registered and not self._closed:
            self._update_registration()

    def adopt(self) -> None:
        """Count a connection accepted elsewhere (by a facade's own get_request)."""
        self.accepted += 1
        self.active += 1
        if self.max_connections is not None and self.active >= self.max_connections:
            self._update_registration()

    # -- accepting --------------------------------------------------------------------

    def _read_ready(self) -> None:
        sock = self.sock
        family, type_, proto = self.kind
        for _ in range(self.accept_batch):
            if not self._registered:
                return
            try:
                # the C-level accept: the connection stays a bare _socket.socket,
                # 40 bytes smaller than socket.socket and not tracked by the GC
                fd, addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _TRANSIENT_ERRNOS:
                    continue
                self.accept_failed(exc)
                return
            if self._capacity_error is not None:
                logger.info("%s: accepting again after %s", self.describe(),
                               errno.errorcode.get(self._capacity_error, "error"))
                self._capacity_error = None
            self.accepted += 1
            self.active += 1
            factory = self._connection_factory
            try:
                conn = (_socket.socket if factory is None else factory)(
                    family, type_, proto, fd)
            except BaseException:
                os.close(fd)
                self.active -= 1
                raise
            if self.active > INTERN_FROM and type(addr) is tuple and len(addr) != 2:
                # one string object per distinct peer host, not one per connection --
                # once there are enough connections for it to matter (it costs a new
                # tuple per accept: a listener with a few connections at a time skips
                # it); an IPv4 pair is held packed by its transport (.compactrow), no string
                addr = (sys.intern(addr[0]), *addr[1:])
            try:
                if factory is None:
                    conn.setblocking(False)
                self._on_accept(self, conn, addr)
            except Exception as exc:
                logger.error("%s: setting up the connection from %r failed", self.describe(),
                             addr, exc_info=exc)
                if conn.fileno() != -1:
                    conn.close()
                    self.active -= 1
            if self.max_connections is not None and self.active >= self.max_connections:
                self._update_registration()
                return

    def _write_ready(self) -> None:  # never registered for writing
        pass

    def accept_failed(self, exc: OSError) -> None:
        """``accept`` failed with ``exc``: a transient error is ignored (the selector
        reports the socket again), any other pauses the listener."""
        if exc.errno not in _TRANSIENT_ERRNOS:
            self._pause(exc)

    def _pause(self, exc: OSError) -> None:
        err = exc.errno or 0
        # counted for the metrics (a failure path: never per request)
        _tally(self, "paused", errno.errorcode.get(err, "error"))
        if err not in CAPACITY_ERRNOS:
            _tally(self.reactor, "errors", "accept")
        if self._capacity_error is None and err not in CAPACITY_ERRNOS:
            # not a resource limit: say what failed, once per episode, and name no limit
            logger.error("%s: accept() failed: %s; pausing the listener and retrying every "
                         "%.1f s", self.describe(), exc, self.accept_retry_delay)
        elif self._capacity_error is None:  # a limit, not a fault: the server waits
            logger.warning(
                "%s: accept() failed: %s -- reached %s; pausing the listener and retrying "
                "every %.1f s (pending clients wait in the backlog)",
                self.describe(), exc, limit_name(err), self.accept_retry_delay,
            )
        self._capacity_error = err
        self._retry = self.reactor.call_later(self.accept_retry_delay, self._resume)
        self._update_registration()

    def _resume(self) -> None:
        self._retry = None
        self._update_registration()

    # -- the rest ---------------------------------------------------------------------

    @property
    def address(self) -> Any:
        """The bound address (``(host, port[, ...])`` or a Unix path)."""
        return self.sock.getsockname() if not self._closed else None

    @property
    def port(self) -> int:
        """The bound TCP port (handy after binding port 0)."""
        return int(self.address[1])

    def describe(self) -> str:
        try:
            where = self.sock.getsockname()
        except OSError:
            where = "closed"
        return f"listener {where!r}"

    def close(self) -> None:
        """Stop listening and close the socket (removing a Unix path we created).

        Connections already accepted stay open."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._registered and not self.reactor.is_closed():
            self.reactor.selector.unregister(self.sock)
        self._registered = False
        self._drop_refuser()
        self.sock.close()
        if self._owned_path is not None:
            self._owned_path.remove()
        try:
            self.reactor.listeners.remove(self)
        except ValueError:
            pass

    def __repr__(self) -> str:
        return f"<Listener {self.describe()} active={self.active}>"


def _stream_acceptor(
    protocol_factory: ProtocolFactory, options: TransportOptions, read_at_once: bool = False
) -> AcceptCallback:
    nodelay = options.nodelay

    def on_accept(listener: Listener, conn: socket.socket, addr: Any) -> None:
        if nodelay and conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opts = listener._bound_options  # the options naming the listener (.compactrow)
        if opts is None or opts.unbound is not options:
            opts = bind_listener(listener, options)
        transport = StreamTransport(  # by position: no keyword dict per connection
            listener.reactor, conn, addr, _ACCEPTED, listener, opts, 0
        )  # flags 0: a socket the reactor made, held nowhere else
        try:
            protocol = protocol_factory()
        except Exception as exc:
            logger.error("protocol factory raised for %r; closing", addr, exc_info=exc)
            transport.abort()
            return
        transport.attach(protocol)
        if read_at_once and transport._mask & EVENT_READ:  # still reading after attach
            transport._read_ready()  # the first bytes are there (TCP_DEFER_ACCEPT)

    return on_accept


def _deferred_acceptor(protocol_factory: ProtocolFactory,
                       options: TransportOptions) -> AcceptCallback:
    """:func:`_stream_acceptor` that reads at once after ``connection_made``."""
    return _stream_acceptor(protocol_factory, options, read_at_once=True)


def _layered_acceptor(  # noqa: PLR0917 -- the listen_* options, passed on
    reactor: Reactor, on_accept: AcceptCallback | None,
    protocol_factory: ProtocolFactory | None, opts: TransportOptions,
    ssl: SSLContext | None, ssl_handshake_timeout: float | None,
    proxy_protocol: str | None, proxy_allow_from: Iterable[str] | None,
    proxy_timeout: float, guard: Guard | None, read_at_once: bool = False,
) -> AcceptCallback:
    """A stream listener's accept callback with its layers, checked before binding: TLS
    wraps the protocol factory, and a PROXY header, when asked for, is read before that
    (in clear, as a balancer sends it); access lists, when given, come first of all
    (:mod:`.access`)."""
    if ssl is not None or ssl_handshake_timeout is not None:
        protocol_factory = tls_server(reactor, protocol_factory, ssl, ssl_handshake_timeout,
                                      custom_accept=on_accept is not None)
    plain = _deferred_acceptor if read_at_once else _stream_acceptor
    build = proxy_acceptor if guard is None else guard.acceptor
    return build(on_accept, plain, protocol_factory, opts,
                 proxy_protocol=proxy_protocol, proxy_timeout=proxy_timeout,
                 proxy_allow_from=proxy_allow_from)


def listen_tcp(
    reactor: Reactor,
    host: str | None,
    port: int,
    protocol_factory: ProtocolFactory | None = None,
    *,
    backlog: int = DEFAULT_BACKLOG,
    reuse_address: bool = True,
    reuse_port: bool = False,
    dual_stack: bool = False,
    sock: socket.socket | None = None,
    max_connections: int | None = None,
    accept_batch: int = DEFAULT_ACCEPT_BATCH,
    on_accept: AcceptCallback | None = None,
    options: TransportOptions | None = None,
    proxy_protocol: str | None = None, proxy_allow_from: Iterable[str] | None = None,
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
    ssl: SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
    at_cap: str = "wait",
    cap_reply: bytes = b"",
    defer_accept: float | None = None,
    allow_from: Iterable[str] | str | None = None,
    deny_from: Iterable[str] | str | None = None,
    **option_overrides: Any,
) -> Listener:
    """Listen on TCP and serve each connection with a protocol from ``protocol_factory``.

    Args:
        host: an address to bind; None or "" means every address (with
            ``dual_stack``: one IPv6 socket that also serves IPv4-mapped clients).
        port: the port; 0 picks a free one (read it back from ``Listener.port``).
        protocol_factory: makes one :class:`asyncio.Protocol` per connection.
        backlog: the kernel's queue of connections not yet accepted.
        reuse_port: set SO_REUSEPORT (several processes sharing one port).
        dual_stack: on an IPv6 address, accept IPv4 clients as well.
        sock: an already bound and listening socket (e.g. inherited from a parent or
            from systemd); host, port and the socket options are then ignored.
        max_connections: stop accepting while this many connections are open.
        at_cap: at ``max_connections``, ``"wait"`` (new clients wait in the backlog) or
            ``"refuse"`` (each is accepted, sent ``cap_reply`` and closed: see
            :mod:`.refusal`).
        cap_reply: what a client refused at the cap is sent, best effort.
        defer_accept: seconds (whole, 1 to 3600) the kernel may hold a connection that
            has sent nothing yet before handing it over (Linux's TCP_DEFER_ACCEPT); the
            first bytes are then read at once, not at the next poll.
        options / option_overrides: :class:`TransportOptions` (timeouts, read size ...).
        proxy_protocol / proxy_allow_from / proxy_timeout: see :mod:`reactor.io.proxy`.
        ssl: serve TLS with this server context: each connection's protocol runs over
            a :class:`~reactor.io.tls.TLSLayer` and is made once the handshake is done
            (after the PROXY header, when both are asked for).
        ssl_handshake_timeout: seconds the handshake may take (default 10).
        allow_from / deny_from: addresses or CIDR networks; a client in ``deny_from``,
            or outside a given ``allow_from``, is closed at accept, unread (the deny
            list wins; behind the PROXY protocol: the client the header names). See
            :mod:`reactor.sansio.access` and :mod:`.access`.

    Raises:
        ValueError, TypeError: a port or backlog out of range or of the wrong type
            (:mod:`.validate`), a malformed network or an empty ``allow_from``, before
            any socket exists.
        OSError: the address cannot be bound (in use, not available), or the selector
            refuses the socket (epoll's ENOSPC or ENOMEM); no socket leaks.
    """
    opts = options_from(options, option_overrides)
    check_at_cap(at_cap, cap_reply)
    deferral = check_defer_accept(defer_accept)
    on_accept = _layered_acceptor(reactor, on_accept, protocol_factory, opts, ssl,
                                  ssl_handshake_timeout, proxy_protocol, proxy_allow_from,
                                  proxy_timeout, address_guard(allow_from, deny_from),
                                  read_at_once=deferral is not None)
    if sock is None:
        sock = listening_tcp_socket(host, check_port(port), check_backlog(backlog),
                           reuse_address=reuse_address, reuse_port=reuse_port,
                           dual_stack=dual_stack)
    if deferral is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, deferral)
    return Listener(reactor, sock, on_accept, max_connections=max_connections,
                    accept_batch=min(accept_batch, max(backlog, 1)), at_cap=at_cap,
                    cap_reply=cap_reply)


def listen_unix(
    reactor: Reactor,
    path: str,
    protocol_factory: ProtocolFactory | None = None,
    *,
    backlog: int = DEFAULT_BACKLOG,
    sock: socket.socket | None = None,
    max_connections: int | None = None,
    accept_batch: int = DEFAULT_ACCEPT_BATCH,
    on_accept: AcceptCallback | None = None,
    options: TransportOptions | None = None,
    proxy_protocol: str | None = None, proxy_allow_from: Iterable[str] | None = None,
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
    mode: int | None = None,
    ssl: SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
    at_cap: str = "wait",
    cap_reply: bytes = b"",
    allow_uids: Iterable[int] | int | None = None,
    allow_gids: Iterable[int] | int | None = None,
    peercred: bool = False,
    **option_overrides: Any,
) -> Listener:
    """Listen on a Unix stream socket at ``path``.

    A stale socket at ``path`` (nobody listening) is removed; any other file there is
    an error. The path is removed when the listener closes.

    Args:
        mode: the socket file's permission bits, e.g. ``0o600`` (only the owner may
            connect) or ``0o660``; None leaves them to the umask. Set through the
            umask around ``bind``, never by a ``chmod`` after it (see
            :func:`reactor.io.unixpath.created_with_mode`, and its note on the
            process-wide umask). Ignored with ``sock``.
        allow_uids / allow_gids: admit only peers whose uid, or primary gid, is
            listed (``SO_PEERCRED``, read at accept); others are closed unread.
        peercred: read every peer's credentials at accept even without a list:
            ``get_extra_info('peercred')`` gives a
            :class:`~reactor.sansio.access.PeerCredentials` (pid, uid, gid).
        (the other arguments as for :func:`listen_tcp`; a Unix peer has no address,
        so there is no ``allow_from``)

    Raises:
        ValueError: the path is longer than the platform allows, or ``mode`` is not
            permission bits (or is given for an abstract-namespace path).
        FileExistsError: something that is not a socket exists at ``path``.
        OSError: a running server listens at ``path``, or bind fails.
    """
    opts = options_from(options, option_overrides)
    check_at_cap(at_cap, cap_reply)
    on_accept = _layered_acceptor(reactor, on_accept, protocol_factory, opts, ssl,
                                  ssl_handshake_timeout, proxy_protocol, proxy_allow_from,
                                  proxy_timeout,
                                  credentials_guard(allow_uids, allow_gids, peercred))
    owned_path: str | None = None
    if sock is None:
        check_mode(check_path(path), mode)
        check_backlog(backlog)
        prepare(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with created_with_mode(mode):  # exactly mode's permissions
            bind_or_close(sock, path)
        try:
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        owned_path = path
    return Listener(reactor, sock, on_accept, max_connections=max_connections,
                    accept_batch=min(accept_batch, max(backlog, 1)), unix_path=owned_path,
                    at_cap=at_cap, cap_reply=cap_reply)
