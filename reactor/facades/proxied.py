"""The PROXY protocol on the stream servers: the reactor reads the header before any
hook sees the client, so ``verify_request``, the handler and ``handle_error`` all get
the real client's address as ``client_address``.

A stream server whose ``proxy_protocol`` is ``"v1"``, ``"v2"`` or ``"any"`` (a class or
instance attribute, or the defaults of :class:`ProxyProtocolMixIn`) reads the header of
each accepted connection without blocking, in the reactor, in state PROXY_HEADER, with
the listener's machinery (:func:`reactor.io.proxy.start_header`):

* a peer outside ``proxy_allow_from`` (default: the loopback addresses; ``"*"``: any)
  is closed at once, unread, and counted as rejected; the request is shut down;
* a malformed, truncated, oversized or late (``proxy_timeout``) header closes the
  connection with one logged reason per episode, and the request is shut down;
* a header read, the row moves back to ACCEPTED with the client's address as its
  ``peername`` and the request goes on as any other (verify, buffer, dispatch), with
  that address as ``client_address``. The bytes that followed the header come first
  from the handler's socket (a blocking handler's socket replays them, as request
  buffering's does), or go to the request buffer's scanner, or to the multiplexed
  handler right after ``connection_made``.

The header is read only on the server's own accept path: a server that overrides
``get_request`` (it accepts for itself) cannot take it, and serving one raises.

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ..io.proxy import HeaderReader, deliver, start_header
from ..io.stream import StreamTransport
from ..sansio.connection import ConnState
from ..sansio.proxy import ProxyHeader
from ..sansio.proxy_policy import DEFAULT_PROXY_TIMEOUT, ProxyPolicy
from .requests import BufferedRequestSocket

if TYPE_CHECKING:
    from .pipeline import RequestPath

__all__ = ["ProxyProtocolMixIn", "proxy_policy", "read_header_first"]

_REACTOR_READS: Final = frozenset({ConnState.BUFFERING, ConnState.OPEN})


class ProxyProtocolMixIn:
    """Serve behind a load balancer that sends the PROXY protocol (HAProxy's
    ``send-proxy``/``send-proxy-v2``): ``client_address`` is the client the header
    names. Put it first in the bases, before the server class (with or without a
    threading, forking or multiplexing mix-in)::

        class Server(ProxyProtocolMixIn, ThreadingMixIn, TCPServer):
            proxy_allow_from = ["10.0.0.0/8"]

    Attributes:
        proxy_protocol: ``"v1"``, ``"v2"`` or ``"any"`` (default); None turns it off.
        proxy_allow_from: the proxies' addresses or networks; None: the loopback
            addresses; ``"*"``: any. Others are refused, unread.
        proxy_timeout: seconds the header may take to arrive.
    """

    proxy_protocol: str | None = "any"
    proxy_allow_from: Iterable[str] | str | None = None
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT


def proxy_policy(server: Any) -> ProxyPolicy | None:
    """The server's PROXY protocol policy from its attributes (None: not used).

    Raises:
        ValueError: an attribute's value is not valid.
    """
    version = getattr(server, "proxy_protocol", None)
    if version is None:
        return None
    return ProxyPolicy.of(version, getattr(server, "proxy_allow_from", None),
                          getattr(server, "proxy_timeout", DEFAULT_PROXY_TIMEOUT))


def read_header_first(engine: RequestPath, policy: ProxyPolicy, request: Any,
                      client_address: Any, row: StreamTransport) -> None:
    """Read the request's PROXY header in the reactor, then take the request on as
    from the client it names (see the module's docstring)."""
    key = id(request)
    engine.rows[key] = row  # server_close aborts it while the header is read

    def on_header(reader: HeaderReader, header: ProxyHeader, rest: bytes) -> None:
        engine.rows.pop(key, None)
        if not engine.work.nonblocking:
            row.detach_socket()  # blocking and unregistered, as the hooks expect
            if engine.server.request_buffer is None and isinstance(
                    request, BufferedRequestSocket):
                request.set_prefix(rest)
                rest = b""
        engine.serve_request(request, row.peername, row)
        if rest and row.state in _REACTOR_READS:  # buffering, or a multiplexed handler
            deliver(row.get_protocol(), rest)

    def on_lost(exc: BaseException | None) -> None:
        engine.rows.pop(key, None)
        engine.shutdown_quietly(request, client_address)
        engine.done()

    request.setblocking(False)
    if not start_header(row, policy, on_header, on_lost):
        engine.rows.pop(key, None)
        engine.rejected += 1
        engine.shutdown_quietly(request, client_address)
        engine.done()
