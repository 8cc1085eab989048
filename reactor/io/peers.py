"""A stream transport's peer address, held in one int when it is an IPv4 one.

An idle connection's address is most of what it costs past its row: the 2-tuple
``accept`` returns (56 bytes) and its port int (32 bytes), the host string interned and
shared. An IPv4 address and port fit in 48 bits, so :class:`CompactRow` (a mix-in of
:class:`~reactor.io.stream.StreamTransport`) stores ``address << 16 | port``, one int of
32 bytes, in its ``_peer`` slot, and :attr:`CompactRow.peername` makes the
``(host, port)`` tuple again when it is read: equal to the one ``accept`` returned
(the dotted quad the kernel's address gives, which is what ``accept`` printed), for
``get_extra_info("peername")``, the logs, the table and its snapshots, all of which
read it rarely. The event path never reads it.

What is stored packed: a 2-tuple of a ``str`` whose dotted-quad form reads back the same
(``inet_aton`` then ``inet_ntoa``) and an ``int`` port from 0 to 65535. Everything else
(IPv6 4-tuples, Unix paths, ``None``, a name given to an outgoing link) is stored as
given. An ``int`` given as the peer is boxed (:class:`_Literal`), so that no value reads
back as anything but itself.

The hosts seen are kept in a dict, host string to ``address << 16``, so that packing a
peer seen before is one lookup and one ``|`` (no parsing); it is cleared when it
reaches :data:`KNOWN_HOSTS_MAX` entries, so many distinct clients cannot grow it
without end. Hosts that are not dotted quads are remembered too (as -1).

Part of the I/O layer (it uses ``socket``'s address conversions). Must not import the
transports: they import it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ROW_SLOTS

__all__ = ["COMPACT_ROW_SLOTS", "KNOWN_HOSTS_MAX", "CompactRow", "pack_peer", "unpack_peer"]

KNOWN_HOSTS_MAX: Final = 4096
_PORT_MAX: Final = 0xFFFF
_known: dict[Any, int] = {}  # host -> its IPv4 address << 16, or -1: not a dotted quad


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
    if type(peer) is tuple and len(peer) == 2:
        host, port = peer
        try:
            base = _known[host]
        except KeyError:
            base = _learn(host)
        except TypeError:  # an unhashable host: kept as given
            return peer
        if base >= 0 and type(port) is int and 0 <= port <= _PORT_MAX:
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

    @property
    def peername(self) -> Any:
        """The peer's address, as the socket layer reported it (or None)."""
        return unpack_peer(self._peer)

    @peername.setter
    def peername(self, value: Any) -> None:
        self._peer = pack_peer(value)
