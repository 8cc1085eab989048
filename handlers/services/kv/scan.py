"""The order ``SCAN`` walks a keyspace in, and its cursors.

Role: :class:`ScanIndex`, kept by each :class:`~handlers.services.kv.store.KVStore`
beside its dict, so that a ``SCAN`` returns every key present for the whole scan at
least once, does bounded work per call, and costs nothing on the ``GET``/``SET`` path.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``, nor any other module
of the service.

How it works
------------
Each key gets a *slot*, a number that grows with every key numbered and never changes
while the key lives; a cursor is the next slot to visit. The slots of the live keys
are kept in chunks of :data:`CHUNK` consecutive numbers (a dict slot -> key each, in
slot order), and the chunk numbers in a sorted list, so a call finds where to go on
with a bisection and then walks slots in order. A key deleted leaves its chunk at once
(an emptied chunk goes too), so nothing is rebuilt or renumbered, and a key present
from a scan's start to its end keeps its slot and is visited.

Nothing is done when a key is added. A dict keeps its keys in insertion order, a key
that stays keeps its place among the others, and a new key (or one deleted and added
again) goes to the end; so the keys without a slot are always the last ones of the dict
(as many as it holds beyond the keys with a slot), and each ``SCAN`` numbers up to
:data:`SYNC_BATCH` of them, oldest first. A scan does not end while keys wait for a
slot. Until the first ``SCAN`` the index is empty and :meth:`ScanIndex.forget` returns
at once.

Work per call: at most ``min(COUNT, MAX_SCAN_COUNT)`` live keys looked at, ten times as
many chunk entries, and :data:`SYNC_BATCH` keys numbered (finding the first key waiting
walks over the keys already numbered or the ones waiting, whichever are fewer: C code,
a few milliseconds for a million keys).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import islice
from typing import Any, Final

__all__ = ["CHUNK", "MAX_SCAN_COUNT", "SLOTS_PER_KEY", "SYNC_BATCH", "ScanIndex"]

CHUNK_BITS: Final = 8
CHUNK: Final = 1 << CHUNK_BITS  # slots per chunk
MAX_SCAN_COUNT: Final = 1000  # keys one SCAN call looks at, at most, whatever COUNT says
SLOTS_PER_KEY: Final = 10  # chunk entries (or empty chunks) visited per key asked for
SYNC_BATCH: Final = 16384  # keys one call gives slots to, at most


class ScanIndex:
    """The scan order of one keyspace dict (see the module docstring).

    Args:
        data: the store's dict; the index reads its order, never writes it.
    """

    __slots__ = ("_chunk_ids", "_chunks", "_data", "_gone_chunks", "_next", "_pos")

    def __init__(self, data: dict[bytes, Any]) -> None:
        self._data = data
        self._pos: dict[bytes, int] = {}  # key -> its slot
        self._chunks: dict[int, dict[int, bytes]] = {}  # chunk number -> {slot: key}
        self._chunk_ids: list[int] = []  # sorted; may hold numbers of emptied chunks
        self._gone_chunks = 0  # emptied chunks still in _chunk_ids
        self._next = 0  # the next slot to give

    @property
    def numbered(self) -> int:
        """Keys that have a slot (for tests and statistics)."""
        return len(self._pos)

    @property
    def chunks(self) -> int:
        """Chunk numbers held, emptied ones not yet dropped included."""
        return len(self._chunk_ids)

    def forget(self, key: bytes) -> None:
        """``key`` has just left the dict: its slot, if it has one, is freed."""
        pos = self._pos
        if not pos:
            return
        slot = pos.pop(key, None)
        if slot is None:
            return
        number = slot >> CHUNK_BITS
        chunk = self._chunks[number]
        del chunk[slot]
        if not chunk:
            del self._chunks[number]
            self._gone_chunks += 1
            if self._gone_chunks > len(self._chunks) + 64:
                self._chunk_ids = list(self._chunks)  # in creation order: sorted
                self._gone_chunks = 0
        elif len(chunk) == CHUNK // 8:
            self._chunks[number] = dict(chunk)  # a dict does not shrink by itself

    def clear(self) -> None:
        """The dict has just been emptied (slots keep growing: old cursors end)."""
        self._pos = {}
        self._chunks = {}
        self._chunk_ids = []
        self._gone_chunks = 0

    def scan(self, cursor: int, count: int,
             keep: Callable[[bytes], bool] | None = None) -> tuple[int, list[bytes]]:
        """One step of a scan: (the next cursor, 0 at the end; the keys found).

        Looks at ``min(count, MAX_SCAN_COUNT)`` live keys at most, and ten times as
        many slots; ``keep`` filters what it looks at (the keys it refuses still count).
        """
        waiting = self._number(SYNC_BATCH)
        count = min(count, MAX_SCAN_COUNT)
        budget = count * SLOTS_PER_KEY
        chunks = self._chunks
        ids = self._chunk_ids
        found: list[bytes] = []
        seen = 0
        i = bisect_left(ids, cursor >> CHUNK_BITS)
        while i < len(ids):
            chunk = chunks.get(ids[i])
            budget -= 1
            if chunk is not None:
                for slot, key in chunk.items():
                    if slot < cursor:
                        continue
                    if seen == count or budget <= 0:
                        return slot, found
                    seen += 1
                    budget -= 1
                    if keep is None or keep(key):
                        found.append(key)
            i += 1
            if i < len(ids):
                cursor = ids[i] << CHUNK_BITS
            if budget <= 0 and i < len(ids):
                return cursor, found
        if waiting:  # the keys still waiting get the slots from _next on
            return max(cursor, self._next), found
        return 0, found

    # -- internals ----------------------------------------------------------------------

    def _number(self, limit: int) -> int:
        """Give slots to up to ``limit`` of the keys waiting (the dict's last ones,
        oldest first); how many still wait."""
        data = self._data
        pos = self._pos
        waiting = len(data) - len(pos)
        if waiting <= 0:
            return 0
        take = min(waiting, limit)
        if len(pos) <= waiting:  # skip the numbered keys
            keys = list(islice(data, len(pos), len(pos) + take))
        else:  # walk back over the waiting ones
            keys = list(islice(reversed(data), waiting))
            keys.reverse()
            del keys[take:]
        base = self._next
        self._next = base + take
        pos.update(zip(keys, range(base, base + take), strict=True))
        chunks = self._chunks
        ids = self._chunk_ids
        start = base
        while start < base + take:
            number = start >> CHUNK_BITS
            stop = min((number + 1) << CHUNK_BITS, base + take)
            chunk = chunks.get(number)
            if chunk is None:
                chunk = chunks[number] = {}
                if not ids or ids[-1] != number:
                    ids.append(number)
            chunk.update(zip(range(start, stop), keys[start - base : stop - base],
                             strict=True))
            start = stop
        return waiting - take
