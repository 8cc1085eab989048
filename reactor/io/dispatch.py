"""The dispatch step: from a poll's results to the ready targets' callbacks.

Two paths with one rule. The generic one dispatches ``selector.select()``'s
``(key, events)`` pairs (:func:`dispatch_selected`). On Linux, with the standard
library's own :class:`selectors.EpollSelector`, the loop takes the fast path of
:class:`EpollPath`: the loop polls the path's ``epoll`` object itself (its raw
``(fd, mask)`` pairs; the poll is the one blocking call, a few lines of
:meth:`Reactor.run_once <reactor.io.loop.Reactor.run_once>`) and
:meth:`EpollPath.dispatch` processes them, so the dispatch step is tested apart, with
literal event lists, like the generic path.

Stale keys (the rule of both paths): a callback earlier in the batch may have
unregistered a descriptor, or closed it and let a new object register the same number.
An event is dropped when its descriptor is no longer registered, or is registered now
to another object than at poll time (the event was for the old file: a new connecting
socket must not take a hang-up for "connected"); when it is registered to the same
object, its current interest mask applies. The generic path checks this per event; the
fast path lets the selector's map (a :class:`BatchKeyMap`) enforce the second half when
a registration changes, so its loop looks each key up once.

A callback that raises is logged with its target's ``describe()`` and the target's
``_force_close(exc)`` is called (:func:`dispatch_failed`); the batch goes on.

Part of the I/O layer; holds no reactor state (the loop hands it the selector's map).
Must not import the loop, the facades or the command line.
"""

from __future__ import annotations

import logging
import select
import selectors
from collections.abc import Mapping
from typing import Any, Final, Protocol

from .tallies import count as _tally

__all__ = ["BatchKeyMap", "DirectTarget", "EpollPath", "ReadyTarget", "dispatch_failed",
           "dispatch_selected", "epoll_path"]

logger = logging.getLogger("reactor")  # the loop's logger: these lines came from it

EVENT_READ: Final = selectors.EVENT_READ
EVENT_WRITE: Final = selectors.EVENT_WRITE
_EPOLLIN: Final = getattr(select, "EPOLLIN", 1)
_NOT_EPOLLOUT: Final = ~select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 0
_NOT_EPOLLIN: Final = ~select.EPOLLIN if hasattr(select, "EPOLLIN") else 0


class ReadyTarget(Protocol):
    """What the loop dispatches to: the ``data`` of every selector registration.

    Transports, listeners, outgoing connections and the waker implement it; so do the
    fakes that feed the dispatch steps literal event lists in tests. Both methods must
    tolerate a spurious call (level-triggered polling: the kernel may report readiness
    that a ``recv``/``accept`` then finds gone). Optional: ``describe()`` (named in the
    log when a method raises) and ``_force_close(exc)`` (called after that log line).
    """

    def _read_ready(self) -> None:
        """The descriptor is readable (or in error, or hung up)."""

    def _write_ready(self) -> None:
        """The descriptor is writable (or in error, or hung up)."""


def dispatch_failed(obj: ReadyTarget, exc: BaseException) -> None:
    """A target's callback raised: log it with the target, then force the target closed."""
    describe = getattr(obj, "describe", None)
    where = describe() if describe is not None else repr(obj)
    logger.error("unexpected error while serving %s", where, exc_info=exc)
    reactor = getattr(obj, "reactor", None)
    _tally(reactor if reactor is not None else obj, "errors", "callback")
    force_close = getattr(obj, "_force_close", None)
    if force_close is not None:
        force_close(exc)


def dispatch_selected(
    current: Mapping[Any, selectors.SelectorKey],
    events: list[tuple[selectors.SelectorKey, int]],
) -> None:
    """Dispatch ``selector.select()``'s pairs; ``current`` is the selector's map."""
    for key, reported in events:
        obj: ReadyTarget = key.data
        # a callback earlier in this batch may have closed this descriptor or
        # changed what it waits for: trust the registration as it is now
        try:
            now_key = current.get(key.fileobj)
        except ValueError:  # the socket object was closed since the poll: not ours now
            continue
        if now_key is None or now_key.data is not obj:
            continue
        mask = reported & now_key.events
        try:
            if mask & EVENT_READ:
                obj._read_ready()
            if mask & EVENT_WRITE:
                obj._write_ready()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            dispatch_failed(obj, exc)


_KEY: Final = selectors.SelectorKey
_new_key = tuple.__new__


class DirectTarget(ReadyTarget, Protocol):
    """A target registered with the fast path without a :class:`~selectors.SelectorKey`:
    it is its own key, and ``_mask`` is the events it is registered for (a transport)."""

    _mask: int
    _sock: Any


def _target(value: Any) -> Any:
    """The object a raw value of :class:`BatchKeyMap` dispatches to."""
    return value[3] if type(value) is _KEY else value


class BatchKeyMap(dict[int, Any]):
    """An EpollSelector's fd-to-key map that keeps the stale-key rule for the batch
    being dispatched, so that :meth:`EpollPath.dispatch` checks nothing per event.

    Two kinds of value. What registers through the ``selectors`` API (listeners, the
    waker, an embedding host) is stored as the selector stores it, a
    :class:`~selectors.SelectorKey`. A transport registered by the fast path
    (:meth:`put`) is stored as itself, its own key: ``_mask`` is its events, and the
    80-byte named tuple per connection is never made. Read through the selector's API
    (``__getitem__``, ``get``, ``pop``, ``values``, ``items``), such a value is shown as
    the SelectorKey the selector would have stored, made on demand; the dispatch step
    and the fast path read the raw values.

    Where the values are: ``slots``, a list indexed by descriptor (None where nothing
    is registered), holds both kinds, and is what the dispatch step reads, one
    indexing per event; the dict itself holds the SelectorKeys only. A transport thus
    costs one list slot (8 bytes), not a dict entry and the descriptor's int object
    (30 to 49 bytes and 32 bytes at thousands of connections). The list grows to the
    highest descriptor registered and does not shrink (until :meth:`clear`);
    ``size`` is the count of registrations of both kinds (``len()``).

    Outside a batch it is a plain map (a check of ``batch`` per registration change).
    During one, the first change to a descriptor records the object it was registered
    to at poll time; when it is registered again, or modified, to another object, its
    events left in the batch are held (their mask set to 0, so nothing is called),
    and released if it goes back to that object. Unregistering needs nothing: the
    event then finds no key. Costs fall on registration changes (accept, close, a
    write that blocks), never on an event.
    """

    __slots__ = ("batch", "held", "polled", "size", "slots")

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        super().__init__()
        self.slots: list[Any] = []
        self.size = 0
        self.batch: list[tuple[int, int]] | None = None
        self.polled: dict[int, Any] = {}  # fd -> its object at poll time
        self.held: dict[int, list[tuple[int, int]]] = {}  # fd -> (index, mask) held
        for fd, key in keys.items():
            self[fd] = key

    def _grow(self, fd: int) -> None:
        slots = self.slots
        slots.extend([None] * (fd + 1 - len(slots) + len(slots) // 4 + 16))

    def raw_get(self, fd: int) -> Any:
        """The raw value registered for ``fd`` (a SelectorKey or a transport), or None."""
        slots = self.slots
        return slots[fd] if 0 <= fd < len(slots) else None

    # -- the fast path's own access (raw values) ----------------------------------------

    def put(self, fd: int, target: DirectTarget) -> None:
        """Register ``target`` as its own key (its ``_mask`` says for what)."""
        slots = self.slots
        if fd >= len(slots):
            self._grow(fd)
        old = slots[fd]
        if self.batch is not None and (old is not None or fd in self.polled):
            self._changed(fd, target)
        if old is None:
            self.size += 1
        elif type(old) is _KEY:
            dict.__delitem__(self, fd)
        slots[fd] = target

    def drop(self, fd: int) -> None:
        """Unregister ``fd`` (no error when it is not registered)."""
        slots = self.slots
        value = slots[fd] if 0 <= fd < len(slots) else None
        if value is None:
            return
        if type(value) is _KEY:
            dict.__delitem__(self, fd)
        slots[fd] = None
        self.size -= 1
        if self.batch is not None and fd not in self.polled:
            self.polled[fd] = _target(value)

    # -- the selectors API (SelectorKeys in and out) ------------------------------------

    def _as_key(self, fd: int, value: Any) -> selectors.SelectorKey:
        if type(value) is _KEY:
            return value
        key: selectors.SelectorKey = _new_key(_KEY, (value._sock, fd, value._mask, value))
        return key

    def __getitem__(self, fd: int) -> selectors.SelectorKey:
        value = self.raw_get(fd)
        if value is None:
            raise KeyError(fd)
        return self._as_key(fd, value)

    def get(self, fd: int, default: Any = None) -> Any:
        value = self.raw_get(fd)
        return default if value is None else self._as_key(fd, value)

    def pop(self, fd: int, *default: Any) -> Any:
        value = self.raw_get(fd)
        if value is None:
            if default:
                return default[0]
            raise KeyError(fd)
        self.drop(fd)
        return self._as_key(fd, value)

    def __contains__(self, fd: object) -> bool:
        return type(fd) is int and self.raw_get(fd) is not None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Any:
        return iter([fd for fd, value in enumerate(self.slots) if value is not None])

    def keys(self) -> Any:
        return list(self)

    def values(self) -> Any:
        return [self._as_key(fd, value) for fd, value in enumerate(self.slots)
                if value is not None]

    def items(self) -> Any:
        return [(fd, self._as_key(fd, value)) for fd, value in enumerate(self.slots)
                if value is not None]

    def clear(self) -> None:
        dict.clear(self)
        slots = self.slots  # its length kept: a batch being dispatched may index it
        slots[:] = [None] * len(slots)
        self.size = 0

    def __setitem__(self, fd: int, key: selectors.SelectorKey) -> None:
        slots = self.slots
        if fd >= len(slots):
            self._grow(fd)
        old = slots[fd]
        # a descriptor neither registered now nor dropped in this batch (a new
        # connection's) has no event in the batch: no call for it
        if self.batch is not None and (old is not None or fd in self.polled):
            self._changed(fd, key[3])
        if old is None:
            self.size += 1
        dict.__setitem__(self, fd, key)
        slots[fd] = key

    def _changed(self, fd: int, data: Any) -> None:
        polled = self.polled
        if fd in polled:
            was = polled[fd]
        else:
            old = self.slots[fd]
            if old is None:
                return  # not registered at poll time: no event of this batch is its
            was = polled[fd] = _target(old)
        batch = self.batch
        assert batch is not None
        if data is not was:
            if fd not in self.held:
                held = self.held[fd] = []
                for index, (event_fd, mask) in enumerate(batch):
                    if event_fd == fd and mask:
                        held.append((index, mask))
                        batch[index] = (fd, 0)
        else:
            for index, mask in self.held.pop(fd, ()):
                batch[index] = (fd, mask)

    def end_batch(self) -> None:
        self.batch = None
        if self.polled:
            self.polled.clear()
            self.held.clear()


class EpollPath:
    """The poll and dispatch steps over a plain :class:`selectors.EpollSelector`.

    Transports register through it too (see
    :meth:`reactor.io.transports.SelectorRegistration._set_mask`): ``epoll`` directly,
    and the transport itself in ``keys`` (:meth:`BatchKeyMap.put`), without the
    selector's layers of Python calls and without a SelectorKey per connection.

    Attributes:
        epoll: the selector's ``select.epoll`` object.
        keys: the selector's fd-to-key map, a :class:`BatchKeyMap`.
        exclusive: no process was forked while this path was in use, so a descriptor
            that a transport made itself (an accepted or connected socket never handed
            out) is held by this process alone; closing it takes it off the interest
            list, and the transport leaves out the ``epoll_ctl(DEL)`` before the close.
            Set false, for good, before any fork (:mod:`reactor.io.fork`): the hook runs
            for every fork Python makes (``os.fork``, multiprocessing, a subprocess with
            ``preexec_fn``); a subprocess started without it holds the descriptors
            only until its exec (Python makes sockets close-on-exec): at worst a few
            stale wake-ups for the parent until then.
    """

    __slots__ = ("epoll", "exclusive", "keys")

    def __init__(self, epoll: Any, keys: BatchKeyMap) -> None:
        self.epoll = epoll
        self.keys = keys
        self.exclusive = True

    def dispatch(self, events: list[tuple[int, int]]) -> None:
        """Dispatch ``(fd, epoll mask)`` pairs, as :func:`dispatch_selected` dispatches
        ``selector.select()``'s pairs, with the same stale-key rule.

        Events are mapped as ``selectors`` maps them: error and hang-up count as both
        readable and writable, masked by what the key is registered for now.
        """
        fd_to_key = self.keys
        slots = fd_to_key.slots  # the raw values, not SelectorKeys; never replaced
        fd_to_key.batch = events
        try:
            for fd, event in events:
                obj = slots[fd]  # epoll reports registered descriptors: in the list
                if obj is None:
                    continue
                if type(obj) is _KEY:  # registered through the selectors API
                    # indexed, not read by name: key[2]/key[3] (events/data) are much
                    # cheaper than the named tuple's attribute getters
                    wanted = obj[2]
                    obj = obj[3]
                else:  # a transport, its own key
                    wanted = obj._mask
                try:
                    if event == _EPOLLIN and wanted == 1:  # the common case: readable
                        obj._read_ready()
                        continue
                    if event & _NOT_EPOLLOUT and wanted & 1:  # EVENT_READ
                        obj._read_ready()
                    if event & _NOT_EPOLLIN and wanted & 2:  # EVENT_WRITE
                        obj._write_ready()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    dispatch_failed(obj, exc)
        finally:
            fd_to_key.batch = None
            if fd_to_key.polled:  # registrations changed in this batch
                fd_to_key.end_batch()


def epoll_path(selector: selectors.BaseSelector) -> EpollPath | None:
    """The fast path over ``selector`` if it is a plain EpollSelector, else None.

    The selector's map is replaced by a :class:`BatchKeyMap` with the same keys.

    Only the standard library's own class qualifies (a subclass may override
    ``select``), and only when it has the internals this shortcut reads.
    """
    if type(selector) is not getattr(selectors, "EpollSelector", None):
        return None
    epoll = getattr(selector, "_selector", None)
    fd_to_key = getattr(selector, "_fd_to_key", None)
    if not isinstance(fd_to_key, dict) or not hasattr(epoll, "poll"):
        return None
    if not isinstance(fd_to_key, BatchKeyMap):
        fd_to_key = BatchKeyMap(fd_to_key)
        selector._fd_to_key = fd_to_key  # type: ignore[attr-defined]
    return EpollPath(epoll, fd_to_key)
