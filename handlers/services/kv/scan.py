"""The order ``SCAN`` walks a keyspace in, and its cursors.

Role: :class:`ScanIndex`, kept by each :class:`~handlers.services.kv.store.KVStore`
beside its dict, so that a ``SCAN`` returns every key present for the whole scan at
least once, does bounded work per call, and costs nothing on the ``GET``/``SET`` path.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``, nor any other module
of the service.

How it works
------------
A dict keeps its keys in insertion order, and a key that stays in it keeps its place
among the others: updating a value does not move it, deleting other keys does not
reorder it, and a new key (or one deleted and added again) goes to the end. The index
copies that order into a list of *slots* (``_log``) with, for every key it holds, its
slot (``_pos``). A deleted key leaves a dead slot behind, so the slots of the others do
not move, and a cursor is simply the next slot to visit.

* Nothing is done when a key is added: the keys added since the last ``SCAN`` are the
  last ones of the dict (as many as the dict holds beyond ``_pos``), and the next
  ``SCAN`` appends them to the list (:meth:`ScanIndex._sync`, in C, amortised over the
  additions). Until the first ``SCAN`` the index is empty and every hook returns at once.
* When a key leaves the dict, the store calls :meth:`ScanIndex.forget`: its slot dies.
  Once the dead slots outnumber the live ones (plus :data:`SLACK`), the list is rebuilt
  from the dict's order (the live keys in their order, nothing dead): an *epoch* ends.
  The sorted dead slots of that epoch are kept (the last :data:`MAX_EPOCHS` epochs) so a
  cursor of an old epoch moves to the same key in the new one: slot ``p`` becomes ``p``
  minus the dead slots before it. A cursor older than that starts the scan again (it
  still returns every key present throughout; some twice).
* Emptying the store (``FLUSHDB``) ends an epoch in which every slot died.

A cursor is ``slot << 16 | epoch % 65536``; 0 starts a scan and a returned 0 ends it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any, Final

__all__ = ["EPOCH_BITS", "MAX_EPOCHS", "MAX_SCAN_COUNT", "SLACK", "ScanIndex"]

EPOCH_BITS: Final = 16
_EPOCH_MASK: Final = (1 << EPOCH_BITS) - 1
MAX_EPOCHS: Final = 8  # how many rebuilds a cursor survives
SLACK: Final = 64  # dead slots tolerated beyond the live ones before a rebuild
MAX_SCAN_COUNT: Final = 1000  # keys one SCAN call looks at, at most, whatever COUNT says
SLOTS_PER_KEY: Final = 10  # slots (dead ones included) visited per key asked for, at most


class ScanIndex:
    """The scan order of one keyspace dict (see the module docstring).

    Args:
        data: the store's dict; the index reads its order, never writes it.
    """

    __slots__ = ("_data", "_dead", "_epoch", "_history", "_log", "_pos")

    def __init__(self, data: dict[bytes, Any]) -> None:
        self._data = data
        self._log: list[bytes] = []  # slot -> key, dead slots included
        self._pos: dict[bytes, int] = {}  # key -> its live slot
        self._dead: list[int] = []  # the slots that died in this epoch
        self._epoch = 0
        # (epoch, its sorted dead slots, or None when every slot died), oldest first
        self._history: deque[tuple[int, list[int] | None]] = deque(maxlen=MAX_EPOCHS)

    @property
    def slots(self) -> int:
        """Slots in the list now, dead ones included (for tests and statistics)."""
        return len(self._log)

    def forget(self, key: bytes) -> None:
        """``key`` has just left the dict: its slot, if it has one, dies."""
        pos = self._pos
        if not pos:
            return
        slot = pos.pop(key, None)
        if slot is not None:
            self._dead.append(slot)
            if len(self._dead) > len(pos) + SLACK:
                self._rebuild()

    def clear(self) -> None:
        """The dict has just been emptied: every slot dies."""
        if self._log:
            self._end_epoch(None)
            self._log = []
            self._pos = {}

    def scan(self, cursor: int, count: int,
             keep: Callable[[bytes], bool] | None = None) -> tuple[int, list[bytes]]:
        """One step of a scan: (the next cursor, 0 at the end; the keys found).

        Looks at ``min(count, MAX_SCAN_COUNT)`` live keys at most, and ten times as
        many slots; ``keep`` filters what it looks at (the keys it refuses still count).
        """
        self._sync()
        slot = self._translate(cursor)
        log = self._log
        pos = self._pos
        end = len(log)
        count = min(count, MAX_SCAN_COUNT)
        stop = min(end, slot + count * SLOTS_PER_KEY)
        found: list[bytes] = []
        seen = 0
        while slot < stop and seen < count:
            key = log[slot]
            if pos.get(key) == slot:
                seen += 1
                if keep is None or keep(key):
                    found.append(key)
            slot += 1
        if slot >= end:
            return 0, found
        return slot << EPOCH_BITS | self._epoch & _EPOCH_MASK, found

    # -- internals ----------------------------------------------------------------------

    def _sync(self) -> None:
        """Append the keys added since the last call (the dict's last ones)."""
        added = len(self._data) - len(self._pos)
        if added <= 0:
            return
        keys = list(islice(reversed(self._data), added))
        keys.reverse()
        base = len(self._log)
        self._log.extend(keys)
        self._pos.update(zip(keys, range(base, base + added), strict=True))

    def _rebuild(self) -> None:
        """Start an epoch with the live slots only (the first keys of the dict)."""
        live = list(islice(self._data, len(self._pos)))
        self._dead.sort()
        self._end_epoch(self._dead)
        self._log = live
        self._pos = dict(zip(live, range(len(live)), strict=True))

    def _end_epoch(self, dead: list[int] | None) -> None:
        self._history.append((self._epoch, dead))
        self._epoch += 1
        self._dead = []

    def _translate(self, cursor: int) -> int:
        """The slot of this epoch where a scan at ``cursor`` goes on."""
        slot = cursor >> EPOCH_BITS
        behind = (self._epoch - cursor) & _EPOCH_MASK  # epochs since the cursor's
        if not behind or not slot:
            return slot
        history = self._history
        if behind > len(history):
            return 0  # too old: start again
        for _, dead in islice(history, len(history) - behind, None):
            if dead is None:
                return 0
            slot -= bisect_left(dead, slot)
        return slot
