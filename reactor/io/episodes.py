"""The reactor's episodes: what refuses, pauses or drops connections, logged once per
run of events (see :class:`reactor.sansio.episodes.Episode`).

* :func:`cap_reached` / :func:`cap_released` -- a listener reached its
  ``max_connections`` and stopped accepting (new clients wait in the kernel's backlog,
  or are refused with ``at_cap="refuse"``), then accepts again. WARNING when the cap
  is first reached, then one INFO line once the listener has stayed under it for a
  quiet second, with how often it was reached meanwhile.
* :func:`deadline_closed` -- a connection closed at its idle, first-byte, request or
  write deadline. The first close of a run is logged at INFO with the connection and
  the reason, the others at DEBUG; the run ends with one INFO count.
* :func:`episode` -- the same for any other owner and kind (the facades' request
  buffering uses it for its 408s and refusals).

Episodes are kept per owner (a reactor, a listener) in a weak dictionary, so nothing is
added to the reactor's or the listener's own storage, and nothing runs on a path that
serves a request: these functions are called only when something is refused or dropped.

Must not import the stream transport, the listeners or anything above the I/O layer.
"""

from __future__ import annotations

import errno
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..sansio.episodes import DEFAULT_QUIET, Cancellable, Episode
from ..sansio.errors import DEADLINE_KINDS
from ..sansio.words import counted

if TYPE_CHECKING:
    from .listeners import Listener
    from .loop import Reactor

__all__ = ["cap_reached", "cap_released", "deadline_closed", "episode", "limit_name"]

_BOOK: Final[weakref.WeakKeyDictionary[Any, dict[str, Episode]]] = (
    weakref.WeakKeyDictionary())

# what a deadline of each kind (DEADLINE_KINDS) is called in a summary
_DEADLINE_NAMES: Final = {
    "idle": "the idle timeout",
    "first-byte": "the first-byte timeout",
    "request": "the request deadline",
    "write": "the write timeout",
}


def episode(
    owner: Any,
    key: str,
    reactor: Reactor,
    logger: logging.Logger,
    summary: Callable[[int, float], str],
    **options: Any,
) -> Episode:
    """The episode of kind ``key`` that belongs to ``owner``, made on first use.

    Args:
        owner: what the episode belongs to (weakly referenced).
        key: the kind of event.
        reactor: gives the clock and the timer.
        logger / summary / options: as for :class:`Episode` (used on first use only).
    """
    book = _BOOK.get(owner)
    if book is None:
        book = _BOOK[owner] = {}
    found = book.get(key)
    if found is None:
        def schedule(delay: float, callback: Callable[[], None]) -> Cancellable | None:
            if reactor.is_closed():
                return None
            return reactor.call_later(delay, callback)

        found = book[key] = Episode(logger, clock=reactor.time, schedule=schedule,
                                    summary=summary, **options)
    return found


def deadline_closed(reactor: Reactor, logger: logging.Logger, where: str,
                    reason: str) -> None:
    """A connection (``where``: its description) was closed at a deadline."""
    kind = DEADLINE_KINDS.get(reason, "")
    name = _DEADLINE_NAMES.get(kind, reason)

    def summary(count: int, seconds: float) -> str:
        return f"{name}: closed {counted(count, 'connection')} in {seconds:.1f} s"

    episode(reactor, "deadline:" + reason, reactor, logger, summary).event(
        "%s: closing: %s", where, reason)


def cap_reached(listener: Listener, logger: logging.Logger) -> None:
    """``listener`` reached its ``max_connections`` and stopped accepting (the episode
    is held until :func:`cap_released`: no timer runs while the listener waits)."""
    cap = listener.max_connections
    where = _Described(listener)

    refusing = listener.at_cap == "refuse"

    def summary(count: int, seconds: float) -> str:
        refused = (f"; {counted(listener.refused, 'client')} refused since the start"
                   if refusing else "")
        return (f"{where}: accepting again: under max_connections={cap} for "
                f"{DEFAULT_QUIET:g} s (the cap was reached {counted(count, 'time')} in "
                f"{seconds:.1f} s{refused})")

    found = episode(listener, "cap", listener.reactor, logger, summary,
                    level=logging.WARNING, always_summarize=True)
    if refusing:
        found.event("%s: at max_connections=%s: refusing new clients (closed at once) "
                    "until a connection closes", where, cap)
    else:
        found.event("%s: at max_connections=%s: not accepting; new clients wait in the "
                    "backlog until a connection closes", where, cap)
    found.hold()


def cap_released(listener: Listener) -> None:
    """``listener`` accepts again after :func:`cap_reached`."""
    book = _BOOK.get(listener)
    found = book.get("cap") if book is not None else None
    if found is not None:
        found.release()


class _Described:
    """A listener's description, asked for only when a line is written (it costs a
    ``getsockname``)."""

    __slots__ = ("listener", "text")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.text: str | None = None

    def __str__(self) -> str:
        if self.text is None:
            self.text = self.listener.describe()
        return self.text


def limit_name(err: int) -> str:
    """What an accept() failure with ``err`` ran out of, in words."""
    if err == errno.EMFILE:
        try:
            import resource

            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            return f"the process's open-file limit (RLIMIT_NOFILE={soft}; see ulimit -n)"
        except (ImportError, OSError):
            return "the process's open-file limit (RLIMIT_NOFILE)"
    if err == errno.ENFILE:
        return "the system-wide open-file limit (fs.file-max)"
    return "kernel memory for sockets (ENOBUFS/ENOMEM)"
