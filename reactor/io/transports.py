"""What the stream and datagram transports share: their options, the selector's event
bits, the lifecycle events they fire, their selector registration
(:class:`SelectorRegistration`) and the hint logged when the selector refuses a socket.
The transports themselves are :mod:`.stream` and :mod:`.datagram`.

*The reactor's names they use.* Registrations go through the public
:attr:`Reactor.selector <reactor.io.loop.Reactor.selector>`, or, where the reactor
polls a plain epoll selector, straight to that selector's epoll object and key map
through :attr:`Reactor.epoll_path <reactor.io.loop.Reactor.epoll_path>` (the same
key the selector's ``register`` would store, without its five Python calls: measured
below). The activity stamps
(``created``, ``last_activity``, the write progress) are the clock reading the loop
takes after each poll, the public attribute :attr:`Reactor.now
<reactor.io.loop.Reactor.now>` (an attribute, not a property: it is read on every
event, and a property's call measured 1 162 more instructions per echo request).

Must not import the loop, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import errno
import select
import selectors
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..sansio.connection import ConnEvent, ConnState
from .allocator import fit_reads

if TYPE_CHECKING:
    from .dispatch import EpollPath

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_OPTIONS",
    "DEFAULT_READ_SIZE",
    "EVENT_READ",
    "EVENT_WRITE",
    "WRITES_AFTER_LOSS_WARNING",
    "ProtocolFactory",
    "SelectorRegistration",
    "TransportOptions",
    "options_from",
]


EVENT_READ: Final = 1
EVENT_WRITE: Final = 2
DEFAULT_HIGH_WATER: Final = 64 * 1024
DEFAULT_READ_SIZE: Final = 256 * 1024
WRITES_AFTER_LOSS_WARNING: Final = 5
# an Enum class's attributes go through EnumType.__getattr__'s slow lookup (3.11):
# module constants for the members read on every connection
_OPEN = ConnState.OPEN
_READ_CLOSED = ConnState.READ_CLOSED
_WRITE_CLOSED = ConnState.WRITE_CLOSED
_CLOSING = ConnState.CLOSING
_ENDING = ConnState.ENDING
_CLOSED = ConnState.CLOSED
#: the states in which a transport is closing (``is_closing()``) and reads no more
_SHUT: Final = frozenset({_CLOSING, _ENDING, _CLOSED})
#: the states in which the connection is lost: no more I/O, writes are dropped
_GONE: Final = frozenset({_ENDING, _CLOSED})
_ATTACH = ConnEvent.ATTACH
_EOF = ConnEvent.EOF
_WRITE_EOF = ConnEvent.WRITE_EOF
_CLOSE = ConnEvent.CLOSE
_FLUSHED = ConnEvent.FLUSHED
_ABORT = ConnEvent.ABORT
_LOST = ConnEvent.LOST

# A transport's flags, the same scheme for both transports: one int, ``_flags``, with
# the bits below (one int instead of several booleans keeps a row small). A flag never
# records what the lifecycle state says: closing, ending and lost are states (see
# reactor.sansio.connection), read from ``state``.
_F_EOF: Final = 1  # write_eof() was called (stream)
_F_READ_PAUSED: Final = 2  # pause_reading() is in effect (stream)
_F_WRITE_PAUSED: Final = 4  # the protocol was told to pause_writing() (stream)
_F_CONNECTED: Final = 8  # a connected endpoint: datagrams go to its peer (datagram)
# bits 4-6: writes refused after the loss, counted up to 7 (for the one warning)
_F_LOSS_WRITE_SHIFT: Final = 4
_F_LOSS_WRITE_ONE: Final = 1 << _F_LOSS_WRITE_SHIFT
_F_LOSS_WRITE_MAX: Final = 7
# the descriptor may be held outside this process's reactor (a facade's request, a
# socket handed out by get_extra_info): it leaves the selector before it is closed
_F_SHARED: Final = 128
# bits 8-9: how the close is counted as the row leaves the table (reactor.io.closes):
# ``_flags >> _MARK_SHIFT`` indexes the table's ``ends``: 0 an orderly close, 1 after the
# peer's end of stream, 2 or 3 already counted by its cause
_MARK_SHIFT: Final = 8
_F_PEER_EOF: Final = 1 << _MARK_SHIFT
_F_CLOSE_COUNTED: Final = 2 << _MARK_SHIFT
_EXIT_EXC = (SystemExit, KeyboardInterrupt)


def _water_marks(high: int | None, low: int | None) -> tuple[int, int]:
    if high is None:
        high = DEFAULT_HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


@dataclass(frozen=True)
class TransportOptions:
    """Settings shared by every connection of one listener (no per-connection cost).
    Frozen: what is derived from them (:attr:`has_deadlines`) is computed once.

    Attributes:
        read_size: the most bytes one ``recv`` asks for.
        nodelay: set TCP_NODELAY on TCP connections.
        idle_timeout: close after this many seconds with no bytes in either direction.
        first_byte_timeout: close when no byte arrived this long after the connection
            was made.
        write_timeout: abort when queued output made no progress for this long.
        high_water: the write-queue size that pauses the protocol's writing.
        low_water: the size at which it resumes (default: ``high_water // 4``).
        max_datagram_size: the largest datagram received whole (datagram transports).
    """

    read_size: int = DEFAULT_READ_SIZE
    nodelay: bool = True
    idle_timeout: float | None = None
    first_byte_timeout: float | None = None
    write_timeout: float | None = None
    high_water: int = DEFAULT_HIGH_WATER
    low_water: int | None = None
    max_datagram_size: int = 65536
    #: any of the three timeouts is set (read once per connection, as it is attached)
    has_deadlines: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "first_byte_timeout", "write_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # NaN fails this test too
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        if self.read_size <= 0:
            raise ValueError("read_size must be positive")
        # reads (and datagrams) of these sizes: from the heap, not one mmap each
        fit_reads(max(self.read_size, self.max_datagram_size))
        high, low = _water_marks(self.high_water, self.low_water)
        object.__setattr__(self, "high_water", high)  # frozen: set once, here
        object.__setattr__(self, "low_water", low)
        object.__setattr__(self, "has_deadlines", bool(
            self.idle_timeout or self.first_byte_timeout or self.write_timeout))


DEFAULT_OPTIONS: Final = TransportOptions()


def _registration_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return " (the epoll watch limit: see /proc/sys/fs/epoll/max_user_watches)"
    if exc.errno == errno.ENOMEM:
        return " (out of kernel memory)"
    return ""


class _HasSelector(Protocol):
    @property
    def selector(self) -> selectors.BaseSelector: ...

    epoll_path: EpollPath | None


# the epoll bits of a selectors mask (EVENT_READ 1, EVENT_WRITE 2), by index
_EPOLL_BITS: Final = (0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT) \
    if hasattr(select, "EPOLLIN") else (0, 1, 4, 5)


class SelectorRegistration:
    """A transport's registration with its reactor's selector, shared by the stream and
    datagram transports (which inherit it and store ``_mask``, ``_sock`` and
    ``_reactor`` in their own slots).

    :meth:`_set_mask` changes the registration only when the wanted mask changes; a
    mask of 0 unregisters the socket. A selector that refuses the socket (epoll's
    ENOSPC or ENOMEM) leaves it unregistered, and the transport's
    :meth:`_registration_failed` closes the connection.
    """

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    _mask: int  # the events registered now (0: not registered)
    _sock: Any
    _flags: int
    _reactor: _HasSelector

    def _set_mask(self, mask: int) -> None:
        if mask == self._mask or self._sock is None:
            return
        try:
            self._apply_mask(mask)
        except OSError as exc:
            # a failed register or modify leaves the socket unregistered (selectors
            # forget the key, and so does the fast path): nothing is registered now
            self._mask = 0
            self._registration_failed(exc)

    def _apply_mask(self, mask: int) -> None:
        """Register for ``mask`` (0: unregister); raises the selector's OSError."""
        old, sock = self._mask, self._sock
        path = self._reactor.epoll_path
        if path is None:
            selector = self._reactor.selector
            if mask == 0:
                selector.unregister(sock)
            elif old == 0:
                selector.register(sock, mask, self)
            else:
                selector.modify(sock, mask, self)
            self._mask = mask
            return
        # what EpollSelector's register, modify and unregister do, in one frame
        fd = sock.fileno()
        keys = path.keys
        if mask == 0:
            keys.drop(fd)
            self._mask = 0
            try:
                path.epoll.unregister(fd)
            except OSError:  # as selectors do: the descriptor may be closed already
                pass
            return
        # the transport is its own key in the map (BatchKeyMap.put): _mask is read as
        # the key's events, so it is set before any event can be dispatched
        if old == 0:
            keys.put(fd, self)  # type: ignore[arg-type]  # the host stores _mask and _sock
            try:
                path.epoll.register(fd, _EPOLL_BITS[mask])
            except OSError:
                keys.drop(fd)
                raise
        else:
            try:
                path.epoll.modify(fd, _EPOLL_BITS[mask])
            except OSError:
                keys.drop(fd)
                raise
            keys.put(fd, self)  # type: ignore[arg-type]
        self._mask = mask

    def _unwatch(self) -> None:
        """The transport is ending and its socket is closed next: no more events.

        Where the reactor alone holds the descriptor (one it made itself, never handed
        out, and no fork since: :attr:`EpollPath.exclusive
        <reactor.io.dispatch.EpollPath>`), only the key goes; the close that follows
        takes the descriptor off epoll's interest list by itself, so the
        ``epoll_ctl(DEL)`` is left out. Until then an event for it finds no key and
        is dropped, as for any descriptor unregistered in a batch.
        """
        if not self._mask or self._sock is None:
            return
        path = self._reactor.epoll_path
        flags = self._flags  # 0 for most: no bitwise test (costly under callgrind)
        if path is None or not path.exclusive or (flags and flags & _F_SHARED):
            self._set_mask(0)
            return
        path.keys.drop(self._sock.fileno())
        self._mask = 0

    def take_registration(self, mask: int) -> None:
        """The socket is already registered with the selector for ``mask``, with this
        transport as its data (an outgoing connect registered it and handed it over
        with one ``modify``): from now on the transport keeps that registration."""
        self._mask = mask

    def _registration_failed(self, exc: OSError) -> None:
        """The selector refused the socket: log it and close the connection."""
        raise NotImplementedError


#: What listeners and connects call to make a connection's protocol.
ProtocolFactory = Callable[[], Any]


def options_from(options: TransportOptions | None, overrides: dict[str, Any]) -> TransportOptions:
    """``options``, or a :class:`TransportOptions` made of the keyword ``overrides``.

    Raises:
        TypeError: both were given.
    """
    if options is not None and overrides:
        raise TypeError("pass either options= or individual option keywords, not both")
    return options if options is not None else TransportOptions(**overrides)
