"""What :meth:`Reactor.statistics <reactor.io.loop.Reactor.statistics>` returns: an
immutable snapshot of one reactor, its connection table's counts included.

Part of the I/O layer only because the loop fills it in; it holds plain numbers.
Imports nothing of the project but the table's empty-counts default; must not import
the loop, the facades or the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..sansio.table import _empty_counts

__all__ = ["ReactorStatistics"]


@dataclass(frozen=True)
class ReactorStatistics:
    """An immutable snapshot of a reactor (see :meth:`Reactor.statistics`).

    Attributes:
        backend: the selector class name (``EpollSelector``, ``PollSelector``, ...).
        iterations: loop iterations so far (each returned from one ``select``).
        open: connections in the table now.
        by_state: connections per lifecycle state name.
        by_kind: connections per transport kind.
        opened_total: connections ever added to the table.
        closed_total: connections ever removed.
        bytes_in: bytes received over the reactor's life.
        bytes_out: bytes sent over the reactor's life.
        write_buffered: bytes queued for writing now.
        discarded: bytes aborted connections dropped unsent from their write queues.
        refused_by_address / refused_by_credentials: connections closed at accept
            for a listener's access lists (see :class:`~reactor.sansio.table.
            TableStatistics`).
        closes: stream connections closed over the reactor's life, by reason
            (:mod:`reactor.sansio.closes`; only reasons counted).
        listeners: listening sockets now.
        pending_timers: scheduled, uncancelled timers.
        timer_heap: entries in the timer heap, cancelled ones not dropped yet included
            (the heap compacts, so this stays within about twice ``pending_timers``
            plus :data:`~reactor.sansio.timers.COMPACT_MIN`).
        ready_callbacks: callbacks waiting for the next iteration.
    """

    backend: str
    iterations: int
    open: int
    by_state: MappingProxyType[str, int] | Any = field(default_factory=_empty_counts)
    by_kind: MappingProxyType[str, int] | Any = field(default_factory=_empty_counts)
    opened_total: int = 0
    closed_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    write_buffered: int = 0
    discarded: int = 0
    refused_by_address: int = 0
    refused_by_credentials: int = 0
    closes: MappingProxyType[str, int] | Any = field(default_factory=_empty_counts)
    listeners: int = 0
    pending_timers: int = 0
    ready_callbacks: int = 0
    timer_heap: int = 0
