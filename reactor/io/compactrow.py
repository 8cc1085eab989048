"""A stream transport's row, stored compactly: what an idle connection holds, cut down.

Three fields of a row cost more than their use on the event path (none reads them
there): the peer address, ``meta`` and the listener. :class:`CompactRow`, a mix-in of
:class:`~reactor.io.stream.StreamTransport`, stores them as follows: 56 bytes fewer
for the address and three slots fewer in the row (with pymalloc's 16-byte size
classes, the transport went from a 176-byte block to a 144-byte one;
``python -m bench.memory`` shows the sizes asked for).

*The peer address, in one int when it is an IPv4 one.* ``accept`` returns a 2-tuple
(56 bytes) and its port int (32 bytes). An IPv4 address and port fit in 48 bits, so the
row stores ``address << 16 | port``, one int of 32 bytes, and
:attr:`CompactRow.peername` makes the ``(host, port)`` tuple again when it is read:
equal to the one ``accept`` returned (the dotted quad of the kernel's address, which is
what ``accept`` printed), for ``get_extra_info("peername")``, the logs, the table and
its snapshots. What is stored packed: a 2-tuple of a ``str`` whose dotted-quad form
reads back the same (``inet_aton`` then ``inet_ntoa``) and an ``int`` port from 0 to
65535. Everything else (IPv6 4-tuples, Unix paths, ``None``, a name given to an
outgoing link) is stored as given; an ``int`` given as the peer is boxed
(:class:`_Literal`), so that no value reads back as anything but itself. The hosts seen
are kept in a dict, host string to ``address << 16`` (-1: not a dotted quad), cleared
when it reaches :data:`KNOWN_HOSTS_MAX` entries; the host packed last is kept apart, so
a row from the same host as the one before packs in :meth:`CompactRow._store_peer`'s
frame, with no lookup and no call (an accept costs no more than it did with the
intern and the tuple: ``python -m bench.instructions --mode churn``).

*The peer and meta, in asyncio's slot.* Every :class:`asyncio.BaseTransport` has a
slot, ``_extra``, where asyncio keeps ``get_extra_info``'s values; ours never used it.
It holds the stored peer; once ``meta`` (the per-connection metadata, which
``get_extra_info`` falls back to; None on most rows) is set, a small object with both
(:class:`_PeerAndMeta`). ``peername`` and ``meta`` are properties over it.

*The listener, in the options.* Every connection of a listener shares its
:class:`~reactor.io.transports.TransportOptions`; :func:`bound_options` makes, once
per listener and options, a copy of the options that names the listener
(:class:`ListenerOptions`, ``.listener``), and the transport keeps that in its ``_opts``
slot (:func:`listener_of` reads it back). Equal to the options it copies.

Part of the I/O layer (it uses ``socket``'s address conversions). Must not import the
stream transport or the listeners: they import it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ROW_SLOTS
from .transports import TransportOptions

__all__ = ["COMPACT_ROW_SLOTS", "KNOWN_HOSTS_MAX", "CompactRow", "ListenerOptions", "bind_listener",
           "bound_options", "listener_of", "pack_peer", "unpack_peer"]

KNOWN_HOSTS_MAX: Final = 4096
_PORT_MAX: Final = 0xFFFF
_known: dict[Any, int] = {}  # host -> its IPv4 address << 16, or -1: not a dotted quad
# the host packed last and its address << 16: a row from the same host as the one before
# (the common case: many clients behind one address) packs without a lookup
_last_host: Any = object()  # equal to no host until a first one is packed
_last_base = 0


class _Literal:
    """An ``int`` given as a peer address, boxed so that it is not read as packed."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def _learn(host: Any) -> int:
    """``host``'s IPv4 address shifted left by 16, or -1 (not a dotted quad that reads
    back the same); remembered either way."""
    base = -1
    if type(host) is str:
        try:
            packed = socket.inet_aton(host)
        except (OSError, ValueError):
            packed = None
        if packed is not None and socket.inet_ntoa(packed) == host:
            base = int.from_bytes(packed, "big") << 16
    if len(_known) >= KNOWN_HOSTS_MAX:
        _known.clear()
    _known[host] = base
    return base


def pack_peer(peer: Any) -> Any:
    """What a transport stores for ``peer`` (see the module's text)."""
    global _last_host, _last_base
    if type(peer) is tuple and len(peer) == 2:
        host, port = peer
        try:
            base = _known[host]
        except KeyError:
            base = _learn(host)
        except TypeError:  # an unhashable host: kept as given
            return peer
        if base >= 0 and type(port) is int and not port >> 16:
            _last_host, _last_base = host, base
            return base | port
        return peer
    if type(peer) is int:
        return _Literal(peer)
    return peer


def unpack_peer(stored: Any) -> Any:
    """The peer address a stored value stands for (:func:`pack_peer` reversed)."""
    if type(stored) is int:
        return (socket.inet_ntoa((stored >> 16).to_bytes(4, "big")), stored & _PORT_MAX)
    if type(stored) is _Literal:
        return stored.value
    return stored


class ListenerOptions(TransportOptions):
    """Options naming the listener whose connections use them: ``listener`` and
    ``unbound`` (the options copied) are slots, read as fast as a slot of the
    transport's own. Equal to, and hashed as, the options copied."""

    __slots__ = ("listener", "unbound")
    listener: Any
    unbound: TransportOptions

    def __eq__(self, other: object) -> bool:
        if type(other) is ListenerOptions:
            other = other.unbound
        return self.unbound == other

    def __hash__(self) -> int:
        return hash(self.unbound)


def bound_options(listener: Any, options: TransportOptions) -> TransportOptions:
    """``options`` naming ``listener`` (:func:`bind_listener`); for no listener, the
    options themselves (unbound)."""
    if listener is None:
        return options.unbound if type(options) is ListenerOptions else options
    return bind_listener(listener, options)


def bind_listener(listener: Any, options: TransportOptions) -> ListenerOptions:
    """``options`` naming ``listener`` (see the module's text), made once and kept on
    the listener (``_bound_options``) for as long as it is given the same options."""
    unbound = options.unbound if type(options) is ListenerOptions else options
    try:
        bound: ListenerOptions | None = listener._bound_options
    except AttributeError:  # not a Listener: a stand-in (tests), made each time
        bound = None
    if bound is None or bound.unbound is not unbound:
        bound = object.__new__(ListenerOptions)
        # the fields, in a dict of its own: the key-sharing dict that updating
        # bound.__dict__ makes sends every read of read_size down the slow path (270
        # instructions per echo request)
        object.__setattr__(bound, "__dict__", dict(unbound.__dict__))
        object.__setattr__(bound, "listener", listener)
        object.__setattr__(bound, "unbound", unbound)
        try:
            listener._bound_options = bound
        except AttributeError:
            pass
    return bound


def listener_of(options: TransportOptions) -> Any:
    """The listener ``options`` name, or None."""
    return options.listener if type(options) is ListenerOptions else None


COMPACT_ROW_SLOTS: Final = tuple(name for name in ROW_SLOTS if name not in ("meta", "peername"))
"""The row's slots in a :class:`CompactRow`: ``peername`` and ``meta`` are stored in
asyncio's own slot, ``_extra``."""


class _PeerAndMeta:
    """What a :class:`CompactRow`'s ``_extra`` holds once ``meta`` is set."""

    __slots__ = ("meta", "peer")

    def __init__(self, peer: Any, meta: dict[str, Any]) -> None:
        self.peer = peer
        self.meta = meta


class CompactRow:
    """A row's ``peername`` (packed) and ``meta`` in one slot, the one every
    :class:`asyncio.BaseTransport` has, ``_extra`` (see the module's text). For
    transports only (a row that is an :class:`asyncio.BaseTransport`)."""

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    _extra: Any  # the stored peer, or a _PeerAndMeta once meta is set

    def _store_peer(self, peername: Any) -> None:
        """:meth:`Row._store_peer <reactor.sansio.connection.Row._store_peer>`, packed:
        in this frame when the peer comes from the same host as the one packed last (an
        accept costs no more than it did with the tuple kept); no metadata yet."""
        if type(peername) is tuple and len(peername) == 2 and peername[0] == _last_host:
            port = peername[1]
            if type(port) is int and not port >> 16:  # 0 to 65535 (not a bool)
                self._extra = _last_base | port
                return
        self._extra = pack_peer(peername)

    @property
    def peername(self) -> Any:
        """The peer's address, as the socket layer reported it (or None)."""
        stored = self._extra
        if type(stored) is _PeerAndMeta:
            stored = stored.peer
        return unpack_peer(stored)

    @peername.setter
    def peername(self, value: Any) -> None:
        stored = self._extra
        if type(stored) is _PeerAndMeta:
            stored.peer = pack_peer(value)
        else:
            self._extra = pack_peer(value)

    @property
    def meta(self) -> dict[str, Any] | None:
        """Per-connection metadata for layers above (None until first used)."""
        stored = self._extra
        return stored.meta if type(stored) is _PeerAndMeta else None

    @meta.setter
    def meta(self, value: dict[str, Any] | None) -> None:
        stored = self._extra
        if type(stored) is _PeerAndMeta:
            if value is None:
                self._extra = stored.peer
            else:
                stored.meta = value
        elif value is not None:
            self._extra = _PeerAndMeta(stored, value)
