"""What a reactor does in a child process just forked from its own.

An epoll (or kqueue, devpoll) descriptor is one interest list shared by parent and
child: an ``unregister`` or ``modify`` in the child would change what the parent
polls. So, from :func:`os.register_at_fork`, every live reactor detaches in the child:
the inherited selector's descriptor is closed, unregistering nothing
(:func:`detach_selector`), and the selector is replaced by a stand-in that builds a
fresh one of the same class with the same registrations when the child first uses it
(a child that only drops its copy, as the forking facades' children do, never pays
for that). The reactor also gives the child a wake-up channel of its own, since the
socketpair is shared too (the child would drain bytes meant for the parent). A
selector with no descriptor of its own (select, poll, a test's fake) shares no kernel
state and is kept.

Before any fork, every live reactor is told too: from then on a child may hold copies
of its descriptors, so its transports unregister before they close (see
:attr:`EpollPath.exclusive <reactor.io.dispatch.EpollPath>`).

Reactors are tracked weakly (:func:`track`): a program that never forks pays one
dictionary insertion per reactor, and the registry keeps no reactor alive.

The reactor's side of all this is the mix-in :class:`ReactorForking`, which
:class:`~reactor.io.loop.Reactor` inherits: it stores nothing itself and works on the
reactor's attributes (the host's contract, declared in it for the type checker), as the
transports' mix-ins do. Part of the I/O layer. Must not import the loop (but for type
checking), the facades or the command line.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .wakeup import SignalHandlers, Waker

if TYPE_CHECKING:
    from ..sansio.timers import Handle, TimerHeap
    from .dispatch import EpollPath

__all__ = ["ReactorForking", "backend_name", "detach_selector", "drop_inherited_selector",
           "rebuild_selector", "track", "untrack"]

logger = logging.getLogger("reactor")  # the loop's logger: these lines came from it

# Every reactor that is not closed, with the function to call on it in a forked child
# and the one to call on it before any fork.
_live_reactors: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = (
    weakref.WeakKeyDictionary())
_before_fork_hooks: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = (
    weakref.WeakKeyDictionary())


def track(owner: object, after_fork_in_child: Callable[[Any], None],
          before_fork: Callable[[Any], None] | None = None) -> None:
    """Call ``after_fork_in_child(owner)`` in the child after every fork, and
    ``before_fork(owner)`` in the forking process before it, while ``owner`` lives and
    is not :func:`untrack`-ed (held weakly: pass plain functions, not bound methods of
    ``owner``, or it is kept alive)."""
    _live_reactors[owner] = after_fork_in_child
    if before_fork is not None:
        _before_fork_hooks[owner] = before_fork


def untrack(owner: object) -> None:
    """Forget ``owner`` (it closed); harmless if it is not tracked."""
    _live_reactors.pop(owner, None)
    _before_fork_hooks.pop(owner, None)


def _run_hooks(hooks: Mapping[Any, Callable[[Any], None]], failure: str) -> None:
    for owner, hook in list(hooks.items()):
        try:
            hook(owner)
        except Exception:  # a hook must not fail the fork
            logger.exception(failure, owner)


def _after_fork_in_child() -> None:
    _run_hooks(_live_reactors, "could not detach %r from its parent after fork")


def _before_fork() -> None:
    _run_hooks(_before_fork_hooks, "could not prepare %r for a fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class _AfterForkSelector(selectors.BaseSelector):
    """A forked child's selector until first use: any call builds the real one with
    ``build(inherited)``, which the reactor then uses instead of this object."""

    def __init__(
        self, inherited: selectors.BaseSelector,
        build: Callable[[selectors.BaseSelector], selectors.BaseSelector],
    ) -> None:
        self.inherited = inherited
        self._build_from = build
        self._real: selectors.BaseSelector | None = None

    def _build(self) -> selectors.BaseSelector:
        if self._real is None:
            self._real = self._build_from(self.inherited)
        return self._real

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._build().register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._build().unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._build().modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._build().select(timeout)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._build().get_map()

    def fileno(self) -> int:
        fileno: int = self._build().fileno()  # type: ignore[attr-defined]
        return fileno

    def close(self) -> None:
        if self._real is not None:
            self._real.close()


def drop_inherited_selector(selector: selectors.BaseSelector) -> None:
    """Close the selector's own descriptor, if it has one, unregistering nothing."""
    inner = getattr(selector, "_selector", None)
    close = getattr(inner, "close", None)
    if close is not None:  # epoll, kqueue, devpoll objects
        close()


def detach_selector(
    selector: selectors.BaseSelector,
    build: Callable[[selectors.BaseSelector], selectors.BaseSelector],
) -> selectors.BaseSelector | None:
    """In a child just forked: what to use instead of ``selector``.

    A selector with a descriptor of its own has it closed and is replaced by a stand-in
    that calls ``build(selector)`` on first use (:func:`rebuild_selector` helps there);
    a stand-in not used yet (forked again) is returned as it is. None: ``selector``
    shares no kernel state with the parent and is kept.
    """
    if isinstance(selector, _AfterForkSelector):
        return selector  # forked again before first use: still nothing shared
    if getattr(selector, "_selector", None) is not None and hasattr(selector, "fileno"):
        drop_inherited_selector(selector)
        return _AfterForkSelector(selector, build)
    return None


def rebuild_selector(
    inherited: selectors.BaseSelector, keep: Callable[[selectors.SelectorKey], bool]
) -> selectors.BaseSelector:
    """A fresh selector of ``inherited``'s class with its registrations for which
    ``keep(key)`` is true (the Python-side map survives the closing of the inherited
    descriptor)."""
    fresh = type(inherited)()
    for key in list(inherited.get_map().values()):
        if keep(key):
            fresh.register(key.fileobj, key.events, key.data)
    return fresh


def backend_name(selector: selectors.BaseSelector) -> str:
    """The selector's class name; for a stand-in not used yet, the class it will be."""
    if isinstance(selector, _AfterForkSelector):
        return type(selector.inherited).__name__
    return type(selector).__name__


class ReactorForking:
    """A reactor around a fork: its copy in a child (:meth:`close_after_fork`, the hook
    that detaches it), and the hook that runs before any fork. A mix-in of
    :class:`~reactor.io.loop.Reactor` with no storage of its own."""

    # the host's contract: what the reactor stores and provides
    _closed: bool
    _thread_id: int | None
    _selector: selectors.BaseSelector
    epoll_path: EpollPath | None
    _waker: Waker
    _signals: SignalHandlers
    _timers: TimerHeap
    _ready: deque[Handle]

    if TYPE_CHECKING:

        def _use_selector(self, selector: selectors.BaseSelector) -> None: ...

    def close_after_fork(self) -> None:
        """In a forked child: drop this reactor without running anything.

        No callback runs and no protocol hears of it; the selector and the wake-up
        channel are closed and signal handlers restored. The parent is safe whichever
        way the child ends its copy: :func:`os.fork` already gave the child a selector
        and a wake-up channel of its own (see this module), so
        :meth:`close`, running the reactor, or this method all leave the parent's
        polling alone. Here, nothing is unregistered even so (a child's copy made by
        other means than :func:`os.fork` may still share its epoll object with the
        parent), and the child's copies of connection sockets are left to the caller.
        """
        if self._closed:
            return
        self._closed = True
        untrack(self)
        self._signals.remove_all(tolerant=True)  # tolerant: forked off the main thread
        self._timers.clear()
        self._ready.clear()
        drop_inherited_selector(self._selector)
        self._waker.close()

    def _before_fork(self) -> None:
        """Before any fork in this process (called through :func:`track`): from now
        on a child may hold copies of the descriptors, so every close unregisters
        first (see :attr:`EpollPath.exclusive <reactor.io.dispatch.EpollPath>`)."""
        if self.epoll_path is not None:
            self.epoll_path.exclusive = False

    def _after_fork_in_child(self) -> None:
        """In a child just forked (called through :func:`track`): stop sharing
        kernel state with the parent -- the selector's descriptor and the wake-up
        channel. A failure leaves the child a closed reactor (and is logged there).

        The loop thread, if it was another thread, does not exist in the child: the
        reactor is no longer running there.
        """
        try:
            if self._thread_id is not None and self._thread_id != threading.get_ident():
                self._thread_id = None
            old_waker = self._waker
            self._waker = Waker(self._signals.deliver)
            replacement = detach_selector(self._selector, self._selector_after_fork)
            if replacement is None:  # no kernel state: a plain dict
                self._selector.unregister(old_waker.rsock)
                self._selector.register(self._waker.rsock, selectors.EVENT_READ, self._waker)
            else:
                self._selector = replacement
                self.epoll_path = None
            old_waker.close()
            self._signals.point_wakeup_at(self._waker.wsock.fileno())
        except Exception:
            self._closed = True
            raise

    def _selector_after_fork(self, inherited: selectors.BaseSelector) -> selectors.BaseSelector:
        """Make the forked child's own selector: ``inherited``'s registrations and the
        new waker."""
        fresh = rebuild_selector(inherited, lambda key: not isinstance(key.data, Waker))
        fresh.register(self._waker.rsock, selectors.EVENT_READ, self._waker)
        self._use_selector(fresh)
        return fresh
