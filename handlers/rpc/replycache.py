"""A duplicate-request cache for RPC over UDP, socket-free.

A UDP client that hears no reply in time sends the same call again, with the same
transaction id. Running the procedure twice would do its work twice (add an item
twice, move money twice); the :class:`ReplyCache` lets the server answer a
retransmission with the reply it already sent.

A call is a retransmission when it comes from the same client address with the same
xid *and the same bytes* (a digest of them): a client that reuses an xid for another
call (after a restart, or after 2**32 calls) gets that call run. The cache is bounded
twice, by entries and by the bytes of the replies it holds; the least recently used
entries go first. Only calls that got a reply are kept.

A call whose procedure still runs (in a worker thread, see :mod:`.blocking`) has no
reply yet, but its retransmissions must not run it again: :meth:`ReplyCache.begin`
marks it running, :meth:`ReplyCache.running` says so to the server, which drops the
retransmission (the reply goes out when the procedure is done), and
:meth:`ReplyCache.store` (or :meth:`ReplyCache.forget`) ends the mark. Running marks
are few (the thread pool bounds them), but they are bounded by ``max_entries`` too.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_CACHE_ENTRIES", "ReplyCache"]

DEFAULT_CACHE_ENTRIES: Final = 1024
DEFAULT_CACHE_BYTES: Final = 4 * 1024 * 1024


def _digest(call: bytes) -> bytes:
    return hashlib.blake2b(call, digest_size=16).digest()


class ReplyCache:
    """Recent replies by (client, xid), checked against a digest of the call.

    Args:
        max_entries: the most replies kept.
        max_bytes: the most bytes of replies kept (a larger reply is not kept).

    Attributes:
        hits: retransmissions answered from the cache.

    Raises:
        ValueError: a negative limit.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES,
                 max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"limits must not be negative, not max_entries="
                             f"{max_entries!r}, max_bytes={max_bytes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Hashable, bytes], tuple[bytes, bytes]] = (
            OrderedDict())
        self._bytes = 0
        self._running: OrderedDict[tuple[Hashable, bytes], bytes] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of replies held."""
        return self._bytes

    def lookup(self, client: Hashable, call: bytes) -> bytes | None:
        """The reply already sent for this very call from ``client``, or None."""
        if len(call) < 4 or not self._entries:
            return None
        key = (client, call[:4])
        entry = self._entries.get(key)
        if entry is None or entry[0] != _digest(call):
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def begin(self, client: Hashable, call: bytes) -> None:
        """Mark ``call`` from ``client`` as running: it has no reply yet."""
        if len(call) < 4 or self.max_entries == 0:
            return
        self._running[(client, call[:4])] = _digest(call)
        while len(self._running) > self.max_entries:
            self._running.popitem(last=False)

    def running(self, client: Hashable, call: bytes) -> bool:
        """Whether this very call from ``client`` is still running (see :meth:`begin`)."""
        if len(call) < 4 or not self._running:
            return False
        return self._running.get((client, call[:4])) == _digest(call)

    def forget(self, client: Hashable, call: bytes) -> None:
        """End the running mark of ``call`` without keeping a reply."""
        if len(call) >= 4:
            self._running.pop((client, call[:4]), None)

    def store(self, client: Hashable, call: bytes, reply: bytes) -> None:
        """Remember ``reply`` as the answer to ``call`` from ``client`` (ending its
        running mark)."""
        if len(call) < 4:
            return
        key = (client, call[:4])
        self._running.pop(key, None)
        if len(reply) > self.max_bytes or self.max_entries == 0:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[key] = (_digest(call), reply)
        self._bytes += len(reply)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
