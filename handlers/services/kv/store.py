"""The keyspace of the key-value service, with expiry in loop time.

Role: :class:`KVStore`, one database: the data (strings, lists, hashes and sets) shared
by every connection of one server that selected it, with expiry: *lazy* (a read of an
expired key deletes it) and *active* (one timer on the loop, armed for the nearest
deadline, deletes keys nobody reads); the connections that WATCH its keys (every change
of a key marks them); and the order SCAN walks it in (:mod:`.scan`).

Must not import ``socket``, ``selectors``, ``threading`` or ``os`` (time and
timers come from the loop it is bound to), nor the command table or the connection.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from reactor.sansio.errors import LocalProtocolError

from .glob import compile_glob
from .scan import ScanIndex
from .watch import Watch

__all__ = ["MAX_EXPIRE_BATCH", "KVStore", "Scheduler", "Value"]

MAX_EXPIRE_BATCH: Final = 1000  # keys one active-expiry callback deletes at most

Value = bytes | deque[bytes] | dict[bytes, bytes] | set[bytes]


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the store needs from a loop: a :class:`reactor.Reactor` or an asyncio loop."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Cancellable: ...


class KVStore:
    """One database: string, list, hash and set values, with expiry deadlines in loop
    time.

    Who changes a value in place (a list, hash or set) calls :meth:`touch` for it;
    :meth:`set`, :meth:`delete`, expiry and :meth:`flush` do it themselves. An emptied
    list, hash or set is deleted by its command.

    Args:
        loop: the loop whose clock and timers drive expiry; None binds later (until
            then the clock is :func:`time.monotonic` and only lazy expiry runs).

    Not thread-safe: use it from the thread of the loop it is bound to.
    """

    __slots__ = (
        "_data",
        "_expires",
        "_heap",
        "_loop",
        "_timer",
        "_timer_when",
        "_watched",
        "expired_keys",
        "scan_index",
    )

    def __init__(self, loop: Scheduler | None = None) -> None:
        self._data: dict[bytes, Value] = {}
        self._expires: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []  # (deadline, key), stale entries too
        self._loop: Scheduler | None = None
        self._timer: _Cancellable | None = None
        self._timer_when = 0.0
        self._watched: dict[bytes, set[Watch]] = {}
        self.expired_keys = 0
        self.scan_index = ScanIndex(self._data)
        if loop is not None:
            self.bind(loop)

    @property
    def loop(self) -> Scheduler | None:
        """The loop this store is bound to."""
        return self._loop

    def bind(self, loop: Scheduler) -> None:
        """Use ``loop``'s clock and timers from now on.

        Raises:
            LocalProtocolError: the store is already bound to another loop.
        """
        if self._loop is loop:
            return
        if self._loop is not None:
            raise LocalProtocolError("this KVStore is already bound to another loop")
        self._loop = loop
        self._arm()

    def time(self) -> float:
        """The bound loop's clock reading (seconds)."""
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def expiring(self) -> int:
        """Keys with a deadline."""
        return len(self._expires)

    def get(self, key: bytes) -> Value | None:
        """The value of ``key``, or None (an expired key is deleted on the way)."""
        expires = self._expires
        if expires:
            when = expires.get(key)
            if when is not None and when <= self.time():
                self._expire(key)
                return None
        return self._data.get(key)

    def set(self, key: bytes, value: Value, *, deadline: float | None = None,
            keep_ttl: bool = False) -> None:
        """Store ``value``; ``deadline`` (loop time) sets a TTL, else the old TTL is
        dropped unless ``keep_ttl``."""
        self._data[key] = value
        if deadline is not None:
            self.set_deadline(key, deadline)
        elif not keep_ttl and self._expires:
            self._expires.pop(key, None)
        if self._watched:
            self.touch(key)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; whether it existed (and had not expired)."""
        if self.get(key) is None:
            return False
        del self._data[key]
        self._expires.pop(key, None)
        self.scan_index.forget(key)
        if self._watched:
            self.touch(key)
        return True

    def deadline(self, key: bytes) -> float | None:
        """The loop time at which ``key`` expires, None without a TTL."""
        return self._expires.get(key)

    def set_deadline(self, key: bytes, when: float) -> None:
        """Expire the existing ``key`` at loop time ``when``."""
        self._expires[key] = when
        if self._watched:
            self.touch(key)
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 2 * len(self._expires) + 64:  # mostly stale entries: rebuild
            heap[:] = [(deadline, k) for k, deadline in self._expires.items()]
            heapq.heapify(heap)
        if self._timer is None or when < self._timer_when:
            self._arm()

    def persist(self, key: bytes) -> bool:
        """Drop the TTL of ``key``; whether it had one."""
        if self._expires.pop(key, None) is None:
            return False
        if self._watched:
            self.touch(key)
        return True

    def keys(self, pattern: bytes = b"*") -> list[bytes]:
        """Live keys matching the Redis glob ``pattern``."""
        match = compile_glob(pattern)
        expires = self._expires
        now = self.time()
        found = []
        for key in self._data:
            if match(key):
                when = expires.get(key) if expires else None
                if when is None or when > now:
                    found.append(key)
        return found

    def flush(self) -> None:
        """Delete every key."""
        data = self._data
        for key in [key for key in self._watched if key in data]:
            self.touch(key)
        data.clear()
        self.scan_index.clear()
        self._expires.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- WATCH ----------------------------------------------------------------------------

    def touch(self, key: bytes) -> None:
        """``key`` changed: mark every connection watching it."""
        watches = self._watched.pop(key, None) if self._watched else None
        if watches:
            for watch in watches:
                watch.dirty = True

    def add_watch(self, key: bytes, watch: Watch) -> None:
        """Mark ``watch`` dirty when ``key`` changes (see :class:`~.watch.Watch`)."""
        self._watched.setdefault(key, set()).add(watch)

    def remove_watch(self, key: bytes, watch: Watch) -> None:
        """Forget ``watch`` for ``key`` (gone already if the key changed)."""
        watches = self._watched.get(key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watched[key]

    @property
    def watched(self) -> int:
        """Keys some connection watches."""
        return len(self._watched)

    def _expire(self, key: bytes) -> None:
        del self._data[key]
        del self._expires[key]
        self.expired_keys += 1
        self.scan_index.forget(key)
        if self._watched:
            self.touch(key)

    # Active expiry: the heap holds (deadline, key) for every deadline ever set; an
    # entry is live when the key's current deadline still equals it. One timer is armed
    # for the heap's first entry; when it fires it deletes what is due (a bounded batch)
    # and re-arms. An idle store with no deadlines has no timer at all.

    def _arm(self) -> None:
        loop = self._loop
        heap = self._heap
        if loop is None or not heap:
            return
        when = heap[0][0]
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.time()
        heap = self._heap
        expires = self._expires
        budget = MAX_EXPIRE_BATCH
        while heap and heap[0][0] <= now and budget:
            when, key = heapq.heappop(heap)
            if expires.get(key) == when:
                self._expire(key)
                budget -= 1
        self._arm()
