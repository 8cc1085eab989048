"""A stream transport's row, stored compactly: what an idle connection holds, cut down.

Three fields of a row cost more than their use on the event path (none reads them
there): the peer address, ``meta`` and the listener. :class:`CompactRow`, a mix-in of
:class:`~reactor.io.stream.StreamTransport`, stores them as follows; 72 bytes fewer per
connection than a tuple and two slots of their own (``python -m bench.memory``).

*The peer address, in one int when it is an IPv4 one.* ``accept`` returns a 2-tuple
(56 bytes) and its port int (32 bytes). An IPv4 address and port fit in 48 bits, so the
row stores ``address << 16 | port``, one int of 32 bytes, in its ``_peer`` slot, and
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
a row from the same host as the one before packs in :meth:`CompactRow._init_row`'s
frame, with no lookup and no call (an accept costs no more than it did with the
intern and the tuple: ``python -m bench.instructions --mode churn``).

*meta, in asyncio's slot.* Every :class:`asyncio.BaseTransport` has a slot, ``_extra``,
where asyncio keeps ``get_extra_info``'s values; ours never used it. ``meta`` (the
per-connection metadata, which ``get_extra_info`` falls back to) is stored there.

*The listener, in the options.* Every connection of a listener shares its
:class:`~reactor.io.transports.TransportOptions`; :func:`bound_options` makes, once
per listener and options, a copy of the options that names the listener
(``.listener``, None on options of no listener), and the transport keeps that in its
``_opts`` slot. Equal to the options it copies (the same fields).

Part of the I/O layer (it uses ``socket``'s address conversions). Must not import the
transports or the listeners: they import it.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ROW_SLOTS, ConnState
from .transports import TransportOptions

__all__ = ["COMPACT_ROW_SLOTS", "KNOWN_HOSTS_MAX", "CompactRow", "bound_options", "pack_peer",
           "unpack_peer"]

KNOWN_HOSTS_MAX: Final = 4096
_PORT_MAX: Final = 0xFFFF
_known: dict[Any, int] = {}  # host -> its IPv4 address << 16, or -1: not a dotted quad
# the host packed last and its address << 16: a row from the same host as the one before
# (the common case: many clients behind one address) packs without a lookup
_last_host: Any = None
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


def bound_options(listener: Any, options: TransportOptions) -> TransportOptions:
    """``options`` naming ``listener`` (see the module's text): made once and kept on
    the listener (``_bound_options``) for as long as it is given the same options."""
    if options.listener is listener:
        return options
    try:
        bound: TransportOptions | None = listener._bound_options
    except AttributeError:  # not a Listener: a stand-in (tests), made each time
        bound = None
    if bound is None or bound.unbound is not options:
        bound = copy.copy(options)
        object.__setattr__(bound, "listener", listener)  # frozen: set once, here
        object.__setattr__(bound, "unbound", options)
        try:
            listener._bound_options = bound
        except AttributeError:
            pass
    return bound


COMPACT_ROW_SLOTS: Final = (
    *(name for name in ROW_SLOTS if name not in ("meta", "peername")), "_peer")
"""The row's slots in a :class:`CompactRow`: ``peername`` is stored packed in ``_peer``
and ``meta`` in asyncio's own slot."""


class CompactRow:
    """A row's ``peername`` stored packed, in the ``_peer`` slot, and its ``meta`` in
    the slot every :class:`asyncio.BaseTransport` has, ``_extra``: asyncio keeps
    ``get_extra_info``'s values there, which is what ``meta`` holds for our transports
    too, and our ``get_extra_info`` does not read it under that name. For transports
    only (a row that is an :class:`asyncio.BaseTransport`); 16 bytes fewer per row."""

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()
        # the member descriptor of asyncio's slot, under the row's name: read and
        # written as fast as a slot of the row's own
        meta = asyncio.BaseTransport.__dict__["_extra"]

    _peer: Any
    state: ConnState
    created: float
    last_activity: float
    bytes_in: int
    bytes_out: int
    meta: dict[str, Any] | None

    def _init_row(self, state: ConnState, peername: Any, now: float) -> None:
        """:meth:`Row._init_row <reactor.sansio.connection.Row._init_row>`, the peer
        packed: in this frame when it comes from the same host as the one packed last
        (an accept costs no more than it did with the tuple kept)."""
        self.state = state
        self.created = now
        self.last_activity = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.meta = None
        if type(peername) is tuple and len(peername) == 2 and peername[0] == _last_host:
            port = peername[1]
            if type(port) is int and not port >> 16:  # 0 to 65535 (not a bool)
                self._peer = _last_base | port
                return
        self._peer = pack_peer(peername)

    @property
    def peername(self) -> Any:
        """The peer's address, as the socket layer reported it (or None)."""
        return unpack_peer(self._peer)

    @peername.setter
    def peername(self, value: Any) -> None:
        self._peer = pack_peer(value)
