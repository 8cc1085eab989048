"""Test helpers shipped with the package, so users test their code without sockets.

* :class:`FakeSelector` -- a :class:`selectors.BaseSelector` whose readiness the test
  sets by hand; ``select`` never blocks and records the timeouts it was asked for.
* :class:`~reactor.clock.FakeClock` -- re-exported: time moves only when told to.
"""

from __future__ import annotations

import selectors
from collections.abc import Mapping
from typing import Any

from .clock import FakeClock

__all__ = ["FakeClock", "FakeSelector"]


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[Any, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[fileobj]

    def __iter__(self) -> Any:
        return iter(self._keys)


class FakeSelector(selectors.BaseSelector):
    """A selector driven by the test.

    ``set_ready(fileobj, events)`` marks a registered object ready; the next ``select``
    reports it (masked by what it is registered for) and forgets it. Every timeout
    passed to ``select`` is appended to :attr:`timeouts`; an optional ``clock`` (a
    :class:`FakeClock`) is advanced by the timeout when nothing is ready, as if the
    call had blocked that long.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self._ready: dict[Any, int] = {}
        self.timeouts: list[float | None] = []
        self.clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        if fileobj in self._keys:
            raise KeyError(f"{fileobj!r} is already registered")
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        self._ready.pop(fileobj, None)
        return self._keys.pop(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        ready = []
        for fileobj, events in list(self._ready.items()):
            key = self._keys.get(fileobj)
            if key is not None and events & key.events:
                ready.append((key, events & key.events))
        self._ready.clear()
        if not ready and self.clock is not None and timeout is not None:
            self.clock.advance(timeout)
        return ready

    def set_ready(self, fileobj: Any, events: int) -> None:
        """Report ``fileobj`` ready for ``events`` on the next ``select``."""
        self._ready[fileobj] = self._ready.get(fileobj, 0) | events

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _KeyMap(self._keys)

    def close(self) -> None:
        self._keys.clear()
        self._ready.clear()
