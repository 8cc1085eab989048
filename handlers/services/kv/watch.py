"""What one connection WATCHes, for the optimistic transactions of MULTI/EXEC.

Role: :class:`Watch`, a connection's watched keys (each a key of one database) and
whether one of them has changed since it was watched. A store marks the watches of a
key dirty when the key changes (:meth:`~handlers.services.kv.store.KVStore.touch`): a
write, a deletion, an expiry, a flush; ``EXEC`` then answers nil instead of running
the transaction.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``; imports the store
only for type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import KVStore

__all__ = ["Watch"]


class Watch:
    """The keys one connection watches, and whether one changed.

    A watch is registered in each store it watches a key of; :meth:`clear` takes it out
    of all of them (UNWATCH, EXEC, DISCARD, the connection's end).
    """

    __slots__ = ("dirty", "keys")

    def __init__(self) -> None:
        self.dirty = False
        self.keys: set[tuple[KVStore, bytes]] = set()

    def add(self, store: KVStore, key: bytes) -> None:
        """Watch ``key`` of ``store`` (an expired key is deleted first, so that its
        expiry is not taken for a change)."""
        if self.dirty:
            return  # the transaction will fail anyway
        store.get(key)
        if (store, key) not in self.keys:
            self.keys.add((store, key))
            store.add_watch(key, self)

    def changed(self) -> bool:
        """Whether a watched key changed; a key whose time has passed since it was
        watched has changed (it is deleted now, as a read would)."""
        if not self.dirty:
            for store, key in list(self.keys):
                store.get(key)  # deletes it if its time passed, which marks us dirty
        return self.dirty

    def clear(self) -> None:
        """Stop watching everything (the dirty mark goes too)."""
        for store, key in self.keys:
            store.remove_watch(key, self)
        self.keys.clear()
        self.dirty = False
