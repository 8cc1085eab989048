"""Debug mode: the reactor's loop-thread-only methods check the calling thread.

:func:`install` is called only for a reactor made with ``debug=True`` (or under
``python -X dev``): the checks are instance attributes shadowing the reactor's methods,
and the reactor's connection table becomes a :class:`DebugConnectionTable`, which
switches every transport added to it to a subclass whose loop-only methods check. A
reactor without debug mode runs the undecorated methods: no branch is added to any
path.

Part of the I/O layer. It reads the reactor through public names only
(:attr:`~reactor.io.loop.Reactor.running_thread_id`, ``connections``) and a
transport's reactor through the ``_reactor`` slot every transport class has. Must not
import the facades or the command line.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import Row
from ..sansio.table import ConnectionTable

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["LOOP_ONLY_METHODS", "TRANSPORT_LOOP_ONLY_METHODS", "DebugConnectionTable",
           "check_methods", "install", "uncheck_methods"]

#: Reactor methods that only the reactor's thread may call while it runs.
LOOP_ONLY_METHODS: Final = (
    "call_soon", "call_later", "call_at", "run_once", "run_until", "run_until_complete",
    "listen_tcp", "listen_unix", "listen_udp", "listen_unix_datagram",
    "connect_tcp", "connect_unix", "add_signal_handler", "remove_signal_handler",
)
#: Transport methods that only the reactor's thread may call while it runs.
TRANSPORT_LOOP_ONLY_METHODS: Final = (
    "write", "writelines", "write_eof", "sendto", "close", "abort", "pause_reading",
    "resume_reading", "set_write_buffer_limits", "set_protocol", "set_deadline",
)
_ADVICE: Final = (
    "from another thread, use reactor.call_soon_threadsafe(...) to run it there")


def install(reactor: Reactor) -> None:
    """Put ``reactor`` in debug mode: a checking connection table, checked methods.

    Called once, from the reactor's constructor, before anything is in its table.
    """
    reactor.connections = DebugConnectionTable()
    check_methods(reactor, LOOP_ONLY_METHODS)


def check_methods(reactor: Reactor, names: Iterable[str], advice: str = _ADVICE) -> list[str]:
    """Shadow each of the reactor's methods ``names`` with one that checks the calling
    thread, unless it is checked already; return the names shadowed here.

    Also used outside debug mode, for a while: :mod:`reactor.io.background` checks the
    methods a synchronous program would call while the reactor runs in its thread.
    ``advice`` ends the error's message (what to do instead).
    """
    shadowed = vars(reactor)
    installed = []
    for name in names:
        if name not in shadowed:
            setattr(reactor, name, _checked_reactor_method(reactor, name, advice))
            installed.append(name)
    return installed


def uncheck_methods(reactor: Reactor, names: Iterable[str]) -> None:
    """Undo :func:`check_methods` for ``names``: the plain methods again."""
    shadowed = vars(reactor)
    for name in names:
        shadowed.pop(name, None)


def _wrong_thread(reactor: Reactor, name: str, advice: str = _ADVICE) -> None:
    """Raise if the reactor runs in a thread other than the caller's."""
    loop_thread = reactor.running_thread_id
    if loop_thread is not None and loop_thread != threading.get_ident():
        raise RuntimeError(
            f"{name}() called from thread {threading.get_ident()} while the reactor runs "
            f"in thread {loop_thread}: it may only be called from the reactor's thread; "
            f"{advice}"
        )


def _checked_reactor_method(reactor: Reactor, name: str, advice: str) -> Callable[..., Any]:
    method = getattr(reactor, name)
    label = f"Reactor.{name}"

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _wrong_thread(reactor, label, advice)
        return method(*args, **kwargs)

    return checked


def _checked_transport_method(cls: type, name: str) -> Callable[..., Any]:
    function = getattr(cls, name)
    label = f"{cls.__name__}.{name}"

    @functools.wraps(function)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        _wrong_thread(self._reactor, label)
        return function(self, *args, **kwargs)

    return checked


_checked_classes: dict[type, type] = {}


def _checked_class(cls: type) -> type:
    """``cls`` with thread checks on its loop-only methods (same layout: no new slot, so
    a row can be switched to it), or ``cls`` itself when it has none of them."""
    checked = _checked_classes.get(cls)
    if checked is None:
        names = [n for n in TRANSPORT_LOOP_ONLY_METHODS if callable(getattr(cls, n, None))]
        if not names or "_reactor" not in dir(cls):
            checked = cls
        else:
            namespace: dict[str, Any] = {
                name: _checked_transport_method(cls, name) for name in names
            }
            namespace["__slots__"] = ()
            namespace["__module__"] = cls.__module__
            namespace["__qualname__"] = cls.__qualname__
            checked = type(cls.__name__, (cls,), namespace)
        _checked_classes[cls] = checked
    return checked


class DebugConnectionTable(ConnectionTable):
    """A connection table that switches each transport added to it to its checked
    class (debug mode only)."""

    __slots__ = ()

    def add(self, row: Row, slot: int = -1) -> None:
        cls = type(row)
        checked = _checked_class(cls)
        if checked is not cls:
            row.__class__ = checked
        super().add(row, slot)
