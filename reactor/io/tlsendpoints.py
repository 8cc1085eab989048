"""TLS for listeners and outgoing connections: the protocol factories that put a
:class:`~reactor.io.tls.TLSLayer` between each connection and its protocol.

:func:`server_factory` wraps a listener's protocol factory; :func:`connect` wraps an
outgoing connect, so that its future resolves with ``(tls_transport, protocol)`` once
the handshake is done. Neither touches a plain connection: without ``ssl`` the
listeners and connects run exactly as before.

Must not import the loop, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .tls import DEFAULT_HANDSHAKE_TIMEOUT, TLSLayer, refuse_renegotiation
from .transports import ProtocolFactory

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["connect", "handshake_timeout", "server_factory"]

ConnectResult = tuple[Any, asyncio.BaseProtocol]


def handshake_timeout(ssl: _ssl.SSLContext | None, timeout: float | None) -> float:
    """The handshake deadline to use.

    Raises:
        ValueError: a timeout without ``ssl``, or one that is not positive.
        TypeError: ``ssl`` is not an :class:`ssl.SSLContext`.
    """
    if ssl is None:
        if timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        return DEFAULT_HANDSHAKE_TIMEOUT
    if not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}")
    if timeout is None:
        return DEFAULT_HANDSHAKE_TIMEOUT
    if not timeout > 0:
        raise ValueError(f"ssl_handshake_timeout must be positive, not {timeout!r}")
    return timeout


def server_factory(
    reactor: Reactor,
    protocol_factory: ProtocolFactory | None,
    ssl: _ssl.SSLContext | None,
    timeout: float | None,
    *,
    custom_accept: bool = False,
) -> ProtocolFactory | None:
    """A listener's protocol factory that serves ``protocol_factory`` over TLS
    (``protocol_factory`` itself without ``ssl``).

    Raises:
        TypeError: no protocol factory, or the listener has its own accept callback
            (which makes no protocol to wrap).
        ValueError: as for :func:`handshake_timeout`.
    """
    seconds = handshake_timeout(ssl, timeout)
    if ssl is None:
        return protocol_factory
    if protocol_factory is None or custom_accept:
        raise TypeError("ssl needs a protocol_factory (not on_accept)")
    inner, context = protocol_factory, ssl
    refuse_renegotiation(context)  # once here; each layer checks it again

    def make_layer() -> TLSLayer:
        return TLSLayer(reactor, context, inner, server_side=True,
                        handshake_timeout=seconds)

    return make_layer


def connect(
    reactor: Reactor,
    start: Callable[[ProtocolFactory], Future[Any]],
    protocol_factory: ProtocolFactory,
    ssl: _ssl.SSLContext | None,
    *,
    server_hostname: str | None,
    timeout: float | None,
) -> Future[ConnectResult]:
    """Run ``start`` (a plain connect, given the protocol factory to use) with a TLS
    layer as the connection's protocol.

    Returns:
        A future resolved with ``(tls_transport, protocol)`` once the handshake is
        done, or failed with the connect's error, the handshake's, or
        :class:`TimeoutError`.

    Raises:
        ValueError: the context checks host names and no ``server_hostname`` is known;
            or as for :func:`handshake_timeout`.
    """
    seconds = handshake_timeout(ssl, timeout)
    if ssl is None:  # a timeout without ssl raised above
        raise ValueError("ssl is required")
    if ssl.check_hostname and not server_hostname:
        raise ValueError("server_hostname is required when the context checks host names")
    context = ssl
    refuse_renegotiation(context)
    waiter: Future[ConnectResult] = Future()
    waiter.set_running_or_notify_cancel()

    def make_layer() -> TLSLayer:
        return TLSLayer(reactor, context, protocol_factory, server_side=False,
                        server_hostname=server_hostname or None, handshake_timeout=seconds,
                        waiter=waiter)

    def connected(future: Future[Any]) -> None:
        exc = future.exception()
        if exc is not None and not waiter.done():
            waiter.set_exception(exc)

    start(make_layer).add_done_callback(connected)
    return waiter
