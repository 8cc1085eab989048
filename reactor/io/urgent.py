"""TCP urgent data ("out-of-band", ``MSG_OOB``) for the protocols that ask for it.

A protocol opts in by having a method ``urgent_data_received(byte)``: when it is set
on a stream transport (``attach``, ``set_protocol``), the transport switches to its
class's *urgent variant* (:func:`urgent_variant`), as a BufferedProtocol switches it to
its buffered variant (:mod:`.buffered`). Every other transport runs the plain class:
no test, no system call and no registration change is added to its path.

The kernel's rules (Linux; BSD alike but where said)
---------------------------------------------------
* Urgent data is one byte: the last byte of a ``send(data, MSG_OOB)``; the bytes
  before it are ordinary. The *mark* is its place in the stream.
* One at a time: a second urgent byte that arrives before the first was read takes
  its place, and the first stays in the stream as an ordinary byte (or, when it was
  the next byte to read, is dropped).
* An ordinary ``recv`` stops at the mark once it has copied a byte, so it never
  crosses it. One that *starts* at the mark steps over an urgent byte not yet read,
  and Linux then forgets it: the byte must be read with ``recv(1, MSG_OOB)`` first.
* ``SIOCATMARK`` says whether the next ordinary byte is at the mark (Python has no
  ``sockatmark``: :func:`at_mark` is the ``ioctl``).
* The poll family reports ``POLLPRI``/``EPOLLPRI``, and ``select`` the exceptional
  set, for as long as an urgent byte is there unread; an urgent byte alone does not
  make the socket readable.
* ``recv(1, MSG_OOB)`` fails with EINVAL when there is no urgent byte, when it was
  read already, or when ``SO_OOBINLINE`` is set (the byte then stays in the stream,
  at the mark, for ``data_received``); with EAGAIN when the urgent pointer arrived
  but not the byte yet.

Reading
-------
The variant's ``_read_ready`` asks :func:`at_mark` first (one ``ioctl``, the price an
urgent transport pays per read). At the mark it reads the urgent byte with
``recv(1, MSG_OOB)`` and calls ``urgent_data_received(byte)``; then, unless the
callback paused reading or closed the transport, it reads as the class it came from
(``data_received``, or a BufferedProtocol's buffer). Since an ordinary read stops at
the mark, the bytes sent before the urgent byte reach ``data_received`` first, then
the urgent byte, then the rest. EINVAL (inline, read already) and EAGAIN (not there
yet) are not errors: the ordinary read goes on, and finds the inline byte, or
nothing.

Watching, per selector
----------------------
An urgent byte alone makes nothing readable, so the transport asks for the priority
event too, while it is registered for reading (a paused or half-closed transport does
not, so a byte it cannot read yet never wakes the loop):

* the reactor's epoll fast path and any ``EpollSelector``: ``EPOLLPRI`` on the
  descriptor's registration (``epoll_ctl(MOD)`` after the transport's own);
* ``PollSelector``, ``DevpollSelector``: ``POLLPRI`` on the selector's poll object;
  both map it, as epoll, to a read event (and to a write event when the transport
  waits to write too: a spurious call, which transports tolerate);
* ``SelectSelector``: its descriptors go into ``select``'s exceptional set, and one
  found there is reported readable (the selector's ``_select`` is replaced, on that
  selector only and only once a transport opts in);
* ``KqueueSelector`` and others: nothing is watched; the byte is found at the mark
  when the next ordinary bytes (or the end of the stream) arrive.

The loop and the dispatch step are unchanged: both already call ``_read_ready`` for
any event but a write on a registration for reading, the priority event included. A
forked child's rebuilt selector (:mod:`.fork`) has the plain registrations; the
priority event comes back with the transport's next registration change.

No busy loop: every event an urgent transport is woken for either reads the urgent
byte (which ends the priority event), or reads ordinary bytes towards or past the
mark (a read past it ends the event), or finds nothing at all, which happens only
when the kernel reported readiness that is gone.

Must not import the stream transport, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import errno
import fcntl
import select
import selectors
import socket
import sys
import weakref
from typing import TYPE_CHECKING, Any, Final

from .transports import _EPOLL_BITS, _EXIT_EXC, EVENT_READ, EVENT_WRITE

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["SIOCATMARK", "URGENT_METHOD", "UrgentReads", "at_mark", "urgent_variant",
           "watch_urgent"]

#: the protocol method that opts a transport in
URGENT_METHOD: Final = "urgent_data_received"

#: the ``ioctl`` behind ``sockatmark()``: Linux's 0x8905 (``asm-generic/sockios.h``;
#: its own value on Alpha, MIPS, SPARC), the BSDs' and macOS's ``_IOR('s', 7, int)``
SIOCATMARK: Final = 0x8905 if sys.platform.startswith("linux") else 0x40047307
_ZERO_INT: Final = bytes(4)
_MSG_OOB: Final = socket.MSG_OOB
_EPOLLPRI: Final = getattr(select, "EPOLLPRI", 2)
_POLLPRI: Final = getattr(select, "POLLPRI", 2)


def at_mark(sock: Any) -> bool:
    """Whether the next ordinary byte ``sock`` would read is at the urgent mark
    (``sockatmark()``): a byte at the mark is the urgent byte itself when
    ``SO_OOBINLINE`` is set, or comes right after it.

    Raises:
        OSError: the ``ioctl`` failed (not a socket, a socket type without urgent data).
    """
    fd = sock if isinstance(sock, int) else sock.fileno()
    return fcntl.ioctl(fd, SIOCATMARK, _ZERO_INT) != _ZERO_INT


class UrgentReads:
    """The urgent variant's reading and registration (a mix-in with no storage; its
    host is a stream transport, whose slots it reads)."""

    if not TYPE_CHECKING:  # the storage is the transport's (see Row)
        __slots__ = ()

    #: whether the class is an urgent variant (class attributes)
    _urgent: bool = False
    _plain_class: Any = None

    # the host's contract
    _sock: Any
    _mask: int
    _protocol: Any
    _reactor: Reactor
    bytes_in: int
    last_activity: float

    if TYPE_CHECKING:

        def _read_normal(self) -> None: ...

        def _callback_failed(self, exc: BaseException, where: str) -> None: ...

        def _connection_error(self, exc: OSError) -> None: ...

    def _read_urgent_first(self) -> None:
        """One read: the urgent byte first when the stream is at its mark, then the
        ordinary read of the class this variant was made from."""
        sock = self._sock
        try:
            marked = fcntl.ioctl(sock.fileno(), SIOCATMARK, _ZERO_INT) != _ZERO_INT
        except (OSError, ValueError):  # a fake socket, a closed one: read as usual
            marked = False
        if marked:
            try:
                byte = sock.recv(1, _MSG_OOB)
            except (BlockingIOError, InterruptedError):
                byte = b""  # the urgent pointer came, the byte not yet
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    self._connection_error(exc)
                    return
                byte = b""  # read already, or SO_OOBINLINE: it is in the stream
            if byte:
                self.bytes_in += 1
                self.last_activity = self._reactor.now
                try:
                    self._protocol.urgent_data_received(byte)
                except _EXIT_EXC:
                    raise
                except BaseException as exc:
                    self._callback_failed(exc, URGENT_METHOD)
                    return
                if not self._mask & EVENT_READ:  # paused or closed in the callback
                    return
        self._read_normal()

    def _apply_mask(self, mask: int) -> None:
        super()._apply_mask(mask)  # type: ignore[misc]  # the host's registration
        watch_urgent(self, True)


def watch_urgent(transport: Any, on: bool) -> None:
    """Ask for (``on``) or stop asking for the priority event on ``transport``'s
    registration, as its selector allows (see the module's *Watching*). The event is
    asked for only while the transport is registered for reading.

    Raises:
        OSError: the selector refused the change.
    """
    sock = transport._sock
    if sock is None:
        return
    mask = transport._mask
    fd = sock.fileno()
    reactor = transport._reactor
    selector = reactor.selector
    hook = _select_hooks.get(selector)
    if hook is not None or (on and type(selector) is _SELECT_SELECTOR):
        if hook is None:
            hook = _select_hooks[selector] = _SelectExceptional()
            selector._select = hook
        if on and mask & EVENT_READ:
            hook.fds.add(fd)
        else:
            hook.fds.discard(fd)
        return
    if not mask or (on and not mask & EVENT_READ):
        return  # the registration the transport just made has no priority bit
    watch = _EPOLLPRI if on else 0
    path = reactor.epoll_path
    if path is not None:
        path.epoll.modify(fd, _EPOLL_BITS[mask] | watch)
        return
    poller = getattr(selector, "_selector", None)
    read_bit = getattr(selector, "_EVENT_READ", None)
    write_bit = getattr(selector, "_EVENT_WRITE", None)
    if poller is None or read_bit is None or write_bit is None or not hasattr(poller,
                                                                               "modify"):
        return  # kqueue, a fake or a custom selector: not watched
    if watch and not isinstance(selector, _EPOLL_SELECTOR):
        watch = _POLLPRI
    poller.modify(fd, (read_bit if mask & EVENT_READ else 0)
                  | (write_bit if mask & EVENT_WRITE else 0) | watch)


_SELECT_SELECTOR: Final = selectors.SelectSelector
_EPOLL_SELECTOR: Final = getattr(selectors, "EpollSelector", ())


class _SelectExceptional:
    """A SelectSelector's ``_select`` that also passes the urgent transports'
    descriptors as the exceptional set and reports those found there as readable."""

    __slots__ = ("fds",)

    def __init__(self) -> None:
        self.fds: set[int] = set()

    def __call__(self, r: Any, w: Any, x: Any, timeout: float | None = None) -> Any:
        fds = self.fds
        if not fds:
            return select.select(r, w, x, timeout)
        readable, writable, urgent = select.select(r, w, list(fds), timeout)
        if urgent:
            readable = readable + urgent  # the selector makes a set of it
        return readable, writable, []


_select_hooks: weakref.WeakKeyDictionary[selectors.BaseSelector, _SelectExceptional] = (
    weakref.WeakKeyDictionary())
_variants: dict[type, type] = {}


def urgent_variant(cls: type) -> type:
    """``cls`` delivering urgent bytes to ``urgent_data_received``: a subclass with no
    storage of its own (an instance switches to it and back), made once per class.
    ``cls`` may be a plain transport class or its buffered variant."""
    variant = _variants.get(cls)
    if variant is None:
        plain = getattr(cls, "_plain_class", None) or cls
        variant = _variants[cls] = type(
            f"{cls.__name__}[urgent]", (UrgentReads, cls),
            {"__slots__": (), "_read_ready": UrgentReads._read_urgent_first,
             "_read_normal": cls._read_ready,  # type: ignore[attr-defined]
             "_plain_class": plain, "_urgent": True, "__module__": cls.__module__},
        )
    return variant
