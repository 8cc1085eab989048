"""The PROXY protocol on stream listeners: read the header, then attach the protocol.

Theory of operation
-------------------
A listener made with ``proxy_protocol="v1"|"v2"|"any"`` accepts through
:func:`proxy_acceptor` instead of the plain acceptor, so a listener without it pays
nothing. For each accepted connection:

* a peer outside the policy's ``allow_from`` (:class:`~reactor.sansio.proxy_policy.
  ProxyPolicy`) is refused: its row is released and the socket closed before any byte
  is read;
* otherwise the row moves to PROXY_HEADER and a :class:`HeaderReader` reads it (with
  :meth:`~reactor.io.stream.StreamTransport.start_reading`: no ``connection_made``
  yet), feeding a :class:`~reactor.sansio.proxy.ProxyHeaderParser`, under one timer
  from the reactor's heap (the policy's ``timeout``);
* a complete header moves the row back to ACCEPTED as from the client it names: the
  row's ``peername`` (hence ``get_extra_info('peername')`` and every log line) becomes
  the client's address, ``get_extra_info('proxy')`` gives the address the connection
  really came from (the proxy's), and ``get_extra_info('proxy_header')`` the parsed
  :class:`~reactor.sansio.proxy.ProxyHeader` (TLVs included). A LOCAL header, v1's
  UNKNOWN and v2's UNSPEC keep the real peer. The row's ``bytes_in`` leaves the
  header out (its size is the header's ``size``): a ``first_byte_timeout`` waits for
  the client's own first byte. Then the protocol is made and attached
  (``connection_made``), and the bytes that followed the header in the same read are
  handed to it at once, as the read that brought them (also when ``connection_made``
  paused reading: they were read already);
* a malformed, truncated, oversized or late header, or a refused peer, closes the
  connection (the protocol is never made) with its reason logged once per episode
  (:func:`~reactor.io.episodes.episode`: the first at INFO, the rest at DEBUG, then
  one count).

The facades read the header the same way before ``verify_request``
(:mod:`reactor.facades.proxied`), with their own ``on_header``.

Must not import the loop, the listeners or anything above the I/O layer (the
listeners for type checking only).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ConnEvent, ConnState
from ..sansio.proxy import ProxyHeader, ProxyHeaderError, ProxyHeaderParser
from ..sansio.proxy_policy import DEFAULT_PROXY_TIMEOUT, ProxyPolicy
from ..sansio.timers import TimerHandle
from ..sansio.words import counted
from .episodes import episode
from .stream import StreamTransport
from .tallies import count as _tally
from .transports import ProtocolFactory, TransportOptions

if TYPE_CHECKING:
    from .listeners import AcceptCallback, Listener

__all__ = ["DEFAULT_PROXY_TIMEOUT", "Admit", "HeaderReader", "attach_new", "log_refused",
           "proxy_acceptor", "start_header"]

logger = logging.getLogger("reactor.proxy")

_ACCEPTED: Final = ConnState.ACCEPTED
_PROXY_HEADER: Final = ConnEvent.PROXY_HEADER
_PROXIED: Final = ConnEvent.PROXIED

#: ``on_header(reader, header, rest)``: the header is read and the row is ACCEPTED again
HeaderCallback = Callable[["HeaderReader", ProxyHeader, bytes], None]
#: ``admit(transport)``: whether the client a header named may go on (else it closed
#: the transport itself); the access lists of :mod:`reactor.io.access`
Admit = Callable[[StreamTransport], bool]


def log_refused(transport: StreamTransport, reason: str) -> None:
    """A connection is closed for its PROXY header (or for its peer): the first of a
    run at INFO, the others at DEBUG, then one line with the count."""
    reactor = transport.reactor

    def summary(count: int, seconds: float) -> str:
        return (f"PROXY protocol: closed {counted(count, 'connection')} for their header "
                f"or peer in {seconds:.1f} s")

    episode(reactor, "proxy:refused", reactor, logger, summary).event(
        "%s: closing: %s", transport.describe(), reason)


class HeaderReader(asyncio.Protocol):
    """Reads a connection's PROXY header in the reactor (state PROXY_HEADER).

    An asyncio-style protocol given to
    :meth:`~reactor.io.stream.StreamTransport.start_reading`; it calls ``on_header``
    once the header is read and the row is accepted again as from its client, or
    closes the connection with the reason logged.
    """

    __slots__ = ("done", "on_header", "on_lost", "parser", "policy", "timer", "transport")

    def __init__(self, transport: StreamTransport, policy: ProxyPolicy,
                 on_header: HeaderCallback,
                 on_lost: Callable[[BaseException | None], None] | None = None) -> None:
        self.transport = transport
        self.policy = policy
        self.parser = ProxyHeaderParser(policy.accept, policy.max_size)
        self.on_header = on_header
        self.on_lost = on_lost
        self.done = False
        self.timer: TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            found = self.parser.feed(data)
        except ProxyHeaderError as exc:
            self.refuse(exc.reason)
            return
        if found is not None:
            self.accept(*found)

    def eof_received(self) -> bool:
        if not self.done:
            try:
                self.parser.feed_eof()
            except ProxyHeaderError as exc:
                self.refuse(exc.reason)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stop()
        if self.on_lost is not None:
            self.on_lost(exc)

    def expired(self) -> None:
        self.timer = None
        if not self.done:
            self.refuse(f"no complete PROXY header within {self.policy.timeout:g} s "
                        f"({self.parser.buffered} bytes received)")

    def stop(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def refuse(self, reason: str) -> None:
        """Close the connection for its header, with the reason logged."""
        self.stop()
        log_refused(self.transport, reason)
        self.transport.abort()

    def accept(self, header: ProxyHeader, rest: bytes) -> None:
        """The header is read: the row becomes the client's, then ``on_header``."""
        self.stop()
        transport = self.transport
        transport.set_meta("proxy", transport.peername)
        transport.set_meta("proxy_header", header)
        if header.source is not None:
            transport.peername = header.source
        # the row counts the client's bytes from now on, so that a first-byte deadline
        # waits for the client's first byte, not for the proxy's header
        transport.bytes_in -= header.size
        transport.advance(_PROXIED)
        self.on_lost = None  # the connection is the protocol's (or the facade's) now
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: PROXY v%d header from %r", transport.describe(),
                         header.version, transport.get_extra_info("proxy"))
        self.on_header(self, header, rest)


def start_header(transport: StreamTransport, policy: ProxyPolicy,
                 on_header: HeaderCallback,
                 on_lost: Callable[[BaseException | None], None] | None = None) -> bool:
    """Begin reading ``transport``'s PROXY header (True), or refuse a peer outside the
    policy's ``allow_from``: the connection is closed at once, unread (False)."""
    if not policy.trusts(transport.peername):
        log_refused(transport, f"not in proxy_allow_from ({policy.describe()}): a PROXY "
                               f"header is accepted only from there")
        _tally(transport.listener or transport.reactor, "refused", "allow-list")
        transport.release()
        return False
    transport.advance(_PROXY_HEADER)
    reader = HeaderReader(transport, policy, on_header, on_lost)
    transport.start_reading(reader)
    if not reader.done and transport.state is ConnState.PROXY_HEADER:
        reader.timer = transport.reactor.call_later(policy.timeout, reader.expired)
    return True


def deliver(protocol: Any, data: bytes) -> None:
    """Hand ``data`` to ``protocol`` as one read would (a BufferedProtocol through its
    buffers)."""
    if not isinstance(protocol, asyncio.BufferedProtocol):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
        size = min(len(buffer), len(view))
        if not size:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


def attach_new(transport: StreamTransport, protocol_factory: ProtocolFactory) -> Any:
    """Make a protocol and attach it to ``transport``; the protocol, or None when the
    factory raised (logged; the connection is aborted)."""
    try:
        protocol = protocol_factory()
    except Exception as exc:
        logger.error("%s: protocol factory raised; closing", transport.describe(),
                     exc_info=exc)
        transport.abort()
        return None
    transport.attach(protocol)
    return protocol


def _attach(protocol_factory: ProtocolFactory, admit: Admit | None) -> HeaderCallback:
    def on_header(reader: HeaderReader, header: ProxyHeader, rest: bytes) -> None:
        transport = reader.transport
        if admit is not None and not admit(transport):
            return
        protocol = attach_new(transport, protocol_factory)
        if protocol is not None and rest and not transport.is_closing():
            # inside the transport's read callback: an exception here is the
            # protocol's own, reported and closed as a data_received failure
            deliver(protocol, rest)

    return on_header


def proxy_acceptor(
    on_accept: AcceptCallback | None,
    plain: Callable[[ProtocolFactory, TransportOptions], AcceptCallback],
    protocol_factory: ProtocolFactory | None,
    options: TransportOptions,
    *,
    proxy_protocol: str | None,
    proxy_allow_from: Iterable[str] | str | None = None,
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
    admit: Admit | None = None,
) -> AcceptCallback:
    """A stream listener's accept callback: ``on_accept`` if given, else ``plain``'s
    for ``protocol_factory``, or, with ``proxy_protocol``, one that reads the PROXY
    header first (see the module's theory of operation), then asks ``admit`` whether
    the client it names may go on.

    Raises:
        TypeError: neither ``on_accept`` nor ``protocol_factory`` was given, or
            ``proxy_protocol`` with ``on_accept`` (which makes its own transports).
        ValueError: a ``proxy_protocol``, ``proxy_allow_from`` or ``proxy_timeout``
            that is not valid.
    """
    if on_accept is not None:
        if proxy_protocol is not None:
            raise TypeError("proxy_protocol needs a protocol_factory, not on_accept")
        return on_accept
    if protocol_factory is None:
        raise TypeError("a stream listener needs a protocol_factory or on_accept")
    if proxy_protocol is None:
        return plain(protocol_factory, options)
    policy = ProxyPolicy.of(proxy_protocol, proxy_allow_from, proxy_timeout)
    on_header = _attach(protocol_factory, admit)
    nodelay = options.nodelay

    def accept_proxied(listener: Listener, conn: Any, addr: Any) -> None:
        if nodelay and conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = StreamTransport(listener.reactor, conn, addr, _ACCEPTED, listener,
                                    options, 0)
        start_header(transport, policy, on_header)

    return accept_proxied
