"""TLS on the stream servers: the handshake runs in the reactor, without blocking,
before any hook sees the client; handlers get a blocking :class:`ssl.SSLSocket`.

A stream server (``TCPServer``, ``UnixStreamServer`` and their threading and forking
kinds) with an ``ssl_context`` (a class or instance attribute, or
:class:`TLSMixIn`'s keyword argument) serves every accepted connection over TLS:

* the connection is wrapped, server side, with ``do_handshake_on_connect=False`` and
  the handshake runs in the reactor, non-blocking, under a deadline
  (``ssl_handshake_timeout``, 10 s by default): its row stays ACCEPTED and its
  ``meta["tls"]`` shows the session (handshaking, established; see
  :mod:`reactor.io.tlsaccept`);
* a handshake that fails (not a ClientHello, no common version, a refused client
  certificate), stalls past its deadline or whose client goes away never reaches a
  hook, a thread or a child: one INFO line on ``reactor.tls`` names the peer and the
  reason, the connection is closed, and ``statistics().tls_failed`` counts it;
* a completed one goes on as any request: ``get_request`` returns the
  ``SSLSocket`` (blocking, or the default timeout: as a plain accepted connection),
  then ``verify_request``, request buffering (the reactor reads decrypted bytes; the
  handler's socket replays them first) and the dispatch, with ``client_address`` as
  always;
* with the PROXY protocol (:mod:`.proxied`) the header is read first, in clear, then
  the handshake.

Served where: inline, ``ThreadingMixIn`` (also with ``max_threads``) and
``ForkingMixIn``. A multiplexing server's handlers are protocols: TLS for them is the
reactor's own layer (``Reactor.listen_tcp(..., ssl=context)``), and the combination
raises :class:`TypeError`, as does a server that overrides ``get_request`` (it accepts,
and wraps, for itself: as on the standard library, its handshake blocks) or one whose
listening socket is wrapped already.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..io.proxy import HeaderReader, start_header
from ..io.tls import DEFAULT_HANDSHAKE_TIMEOUT, refuse_renegotiation
from ..io.tlsaccept import ReactorTLSReads, TLSRequestRow
from ..io.tlsendpoints import handshake_timeout
from ..sansio.connection import ConnState
from ..sansio.proxy import ProxyHeader
from .requests import BufferedRequestSocket

if TYPE_CHECKING:
    from ..io.listeners import Listener
    from .pipeline import InlineWork
    from .sources import StreamEngine

__all__ = ["TLSMixIn", "TLSRequestSocket", "TLSSettings", "accept_tls", "tls_settings"]

_ACCEPTED: Final = ConnState.ACCEPTED


class _TLSReplay(BufferedRequestSocket):
    """What a TLS request's socket adds to its ``SSLSocket`` class: the replay of
    buffered plaintext, and close_notify on ``shutdown``."""

    __slots__ = ()

    def shutdown(self, how: int) -> None:
        """Send close_notify (without waiting for the peer's), then shut the socket
        down: a client can tell the end of the response from a cut connection."""
        send_close_notify(self, how)
        super().shutdown(how)


# the replaying methods take the socket module's positional arguments, SSLSocket's
# are looser (keywords, a None buffer size): the MRO puts the replay first
class TLSRequestSocket(_TLSReplay, ReactorTLSReads):  # type: ignore[misc]
    """The ``SSLSocket`` a TLS request's handler gets: with request buffering, the
    plaintext the reactor read comes first (as :class:`BufferedRequestSocket`), and
    ``shutdown`` (the server's ``shutdown_request``) sends close_notify first."""

    __slots__ = ()


def send_close_notify(sock: Any, how: int) -> None:
    """Write ``sock``'s close_notify alert, if it has a session and ``how`` ends the
    sending side; never blocks, and a failure only means the alert is not sent."""
    sslobj: Any = getattr(sock, "_sslobj", None)  # None once shut down or unwrapped
    if sslobj is None or how == socket.SHUT_RD:
        return
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)  # one alert out; the peer's answer is not awaited
        sslobj.shutdown()
    except (OSError, ValueError):
        pass  # SSLWantReadError: sent, the peer's not there yet (the usual case)
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass


_classes: dict[type[ssl.SSLSocket], type[ReactorTLSReads]] = {ssl.SSLSocket: TLSRequestSocket}


def _socket_class(base: type[ssl.SSLSocket]) -> type[ReactorTLSReads]:
    """:class:`TLSRequestSocket`, or the same over a context's own ``sslsocket_class``."""
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(f"{base.__name__}[replay]",
                                    (_TLSReplay, ReactorTLSReads, base),
                                    {"__slots__": (), "__module__": __name__})
    return cls


def wrap_request(context: ssl.SSLContext, sock: socket.socket) -> ReactorTLSReads:
    """``context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)``,
    made of the class that can replay buffered plaintext."""
    cls: Any = _socket_class(context.sslsocket_class)
    # what SSLContext.wrap_socket itself calls, with our class in place of the context's
    wrapped: Any = cls._create(sock=sock, server_side=True, do_handshake_on_connect=False,
                               suppress_ragged_eofs=True, server_hostname=None,
                               context=context, session=None)
    wrapped.set_prefix(b"")
    return wrapped  # type: ignore[no-any-return]


class TLSMixIn:
    """Serve over TLS, with the handshake in the reactor (a client that sends nothing
    blocks nobody). Put it first in the bases::

        class Server(TLSMixIn, ThreadingMixIn, TCPServer):
            pass

        server = Server(("", 8443), Handler, ssl_context=context)

    Keyword arguments (also class or instance attributes):
        ssl_context: the server's :class:`ssl.SSLContext` (required).
        ssl_handshake_timeout: seconds a handshake may take (10 by default).
    """

    ssl_context: ssl.SSLContext | None = None
    ssl_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def __init__(self, *args: Any, ssl_context: ssl.SSLContext | None = None,
                 ssl_handshake_timeout: float | None = None, **kwargs: Any) -> None:
        if ssl_context is not None:
            self.ssl_context = ssl_context
        if ssl_handshake_timeout is not None:
            self.ssl_handshake_timeout = ssl_handshake_timeout
        super().__init__(*args, **kwargs)


@dataclass(frozen=True)
class TLSSettings:
    """A server's TLS: its context and handshake deadline."""

    context: ssl.SSLContext
    timeout: float


def tls_settings(server: Any, work: InlineWork) -> TLSSettings | None:
    """The server's TLS settings from its attributes (None: plain).

    Raises:
        TypeError: a :class:`TLSMixIn` without a context, a context that is not an
            :class:`ssl.SSLContext`, a multiplexing server, or a listening socket
            wrapped already.
        ValueError: a handshake timeout that is not positive.
    """
    context = getattr(server, "ssl_context", None)
    name = type(server).__name__
    if context is None:
        if isinstance(server, TLSMixIn):
            raise TypeError(f"{name}: TLSMixIn needs an ssl_context")
        return None
    timeout = handshake_timeout(context, getattr(server, "ssl_handshake_timeout", None))
    if work.nonblocking:
        raise TypeError(f"{name}: ssl_context serves blocking handlers; a multiplexing "
                        "server's protocols get TLS from Reactor.listen_tcp(..., ssl=)")
    if isinstance(getattr(server, "socket", None), ssl.SSLSocket):
        raise TypeError(f"{name}: the listening socket is wrapped already; give the "
                        "context as ssl_context only")
    refuse_renegotiation(context)
    return TLSSettings(context, timeout)


def accept_tls(engine: StreamEngine, settings: TLSSettings, listener: Listener, raw: Any,
               addr: Any) -> None:
    """A TLS server accepted a connection: read its PROXY header if one is expected,
    run its handshake in the reactor, then take it on as a request."""
    row = TLSRequestRow(listener.reactor, raw, addr, _ACCEPTED, listener)
    key = id(row)
    engine.rows[key] = row  # server_close closes it while the reactor holds it

    def handshake_done(row: TLSRequestRow) -> None:
        engine.rows.pop(key, None)
        sock = row.detach_socket()
        sock.settimeout(socket.getdefaulttimeout())  # as a plain accepted connection
        engine.take_staged(sock, row.peername, row)

    def handshake_ended(failed: bool) -> None:
        engine.rows.pop(key, None)
        if failed:
            engine.tls_failed += 1
        engine.done()

    def start() -> None:
        context = settings.context
        row.start_tls(lambda sock: wrap_request(context, sock), settings.timeout,
                      handshake_done, handshake_ended)

    policy = engine.proxy
    if policy is None:
        start()
        return

    def on_header(reader: HeaderReader, header: ProxyHeader, rest: bytes) -> None:
        start()  # nothing past the header was read (ExactHeaderSocket): rest is empty

    def on_lost(exc: BaseException | None) -> None:
        handshake_ended(False)

    if not start_header(row, policy, on_header, on_lost):
        engine.rows.pop(key, None)
        engine.rejected += 1
        engine.done()
