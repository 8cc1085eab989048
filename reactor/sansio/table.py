"""The connection table: every live connection, one row each.

A row is kept in one of two places. A row with a small-number key of its own that
nothing else can reuse while the row lives (a stream connection's descriptor, when the
reactor alone holds it: the caller says so by passing the number) sits in a list at that
index, 8 bytes a row. Any other row is a key of an insertion-ordered dict (30 to 49
bytes a row at thousands of rows). Either way adding and removing a row is one
operation, and iteration gives the dict's rows in the order they came, then the list's
in the order of their numbers. A caller that can no longer vouch for a row's number (it
handed the socket out) moves the row to the dict (:meth:`ConnectionTable.unslot`); a
number found taken by another row moves that row to the dict too, so a row is never
lost, only found more slowly.

Totals survive the rows: when a row leaves, its byte counters are added to the table's
running totals, so :meth:`ConnectionTable.statistics` reports the life of
the reactor, not just the connections open right now. So do the bytes that aborted
connections dropped from their write queues (``discarded``): the transports report them
as they drop them, which costs the rows nothing while they live. And so do the closes by
reason (:meth:`ConnectionTable.close_counts`, :mod:`reactor.sansio.closes`): the stream
transports add one as a row leaves (:meth:`ConnectionTable.leave`), in the teardown
they run anyway. That is one increment of a list item (:attr:`ConnectionTable.ends`)
indexed by a mark the row keeps: 0 for an orderly close, 1 for one after the peer's
end of stream, 2 for a close already counted by its cause (a reset, an error, a
deadline) in :attr:`ConnectionTable.closes`; other rows leave with 3
(:meth:`ConnectionTable.remove`). :meth:`ConnectionTable.begin_stopping` swaps the list
for another, so that closes during a stop count as ``shutdown`` with no test per
close. Every removal being counted there, the rows ever removed are the sum of both
lists, and those ever added that plus the rows in the table: adding counts nothing.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .closes import ORDERLY, ORDERLY_STOPPING
from .connection import ConnState, Row

__all__ = ["ConnectionTable", "TableStatistics"]

_OTHER = 3  # the mark of a row that is not a stream connection (see ConnectionTable)


def _empty_counts() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class TableStatistics:
    """An immutable snapshot of the connection table.

    Attributes:
        open: rows in the table now.
        by_state: rows per lifecycle state name (only states with rows).
        by_kind: rows per transport kind ("tcp", "unix", "udp", ...).
        opened_total: rows ever added.
        closed_total: rows ever removed.
        bytes_in: bytes received over the table's life (open and closed rows).
        bytes_out: bytes sent over the table's life.
        write_buffered: bytes queued for writing in open rows now.
        discarded: bytes dropped unsent from write queues over the table's life, by
            aborts and by closes forced by an error, a reset or a deadline.
        refused_by_address: connections closed at accept, unread and never rows, for
            a listener's ``allow_from``/``deny_from`` (:mod:`reactor.io.access`).
        refused_by_credentials: the same for a Unix listener's ``allow_uids`` and
            ``allow_gids``.
        closes: stream connections closed over the table's life, by reason
            (:func:`~reactor.sansio.closes.close_reason`; only reasons counted).
    """

    open: int = 0
    by_state: Mapping[str, int] = field(default_factory=_empty_counts)
    by_kind: Mapping[str, int] = field(default_factory=_empty_counts)
    opened_total: int = 0
    closed_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    write_buffered: int = 0
    discarded: int = 0
    refused_by_address: int = 0
    refused_by_credentials: int = 0
    closes: Mapping[str, int] = field(default_factory=_empty_counts)


class ConnectionTable:
    """The reactor's table of connections (iterate it, ``len()`` it, snapshot it)."""

    __slots__ = ("_bytes_in", "_bytes_out", "_discarded", "_ends_running", "_ends_stopping",
                 "_rows", "_slots", "closes", "ends", "refused_by_address",
                 "refused_by_credentials")

    def __init__(self) -> None:
        self._rows: dict[Row, None] = {}
        self._slots: list[Row | None] = []  # rows by their number (see the module docstring)
        self._bytes_in = 0
        self._bytes_out = 0
        self._discarded = 0
        # connections refused at accept (never rows): counted by reactor.io.access
        self.refused_by_address = 0
        self.refused_by_credentials = 0
        # rows removed, by the mark they leave with (see the module docstring): a
        # stream transport's (reactor.io.closes): ORDERLY[0 or 1] (or ORDERLY_STOPPING
        # once begin_stopping swapped the list), or 2: counted by name already; 3 for
        # the other rows (datagram endpoints and requests). Their sum is the rows ever
        # removed, and with the rows in the table, those ever added: add() counts
        # nothing. By name: the closes with a cause, and clients refused at the cap
        # (never rows).
        self._ends_running = [0, 0, 0, 0]
        self._ends_stopping = [0, 0, 0, 0]
        self.ends = self._ends_running
        self.closes: Counter[str] = Counter()

    def add(self, row: Row, slot: int = -1) -> None:
        """Insert a new row; ``slot``, when given, is a number of the row's own that no
        other row can take while it lives (see the module docstring)."""
        if slot < 0:
            self._rows[row] = None
            return
        slots = self._slots
        try:
            old = slots[slot]
        except IndexError:
            slots.extend([None] * (slot + 1 - len(slots) + len(slots) // 4 + 16))
            old = None
        if old is not None:  # its number was reused behind its back: it stays, in the dict
            self._rows[old] = None
        slots[slot] = row

    def unslot(self, row: Row, slot: int) -> None:
        """The number ``row`` was added with may be reused while it lives: keep it in
        the dict from now on (nothing to do when it is there already)."""
        slots = self._slots
        if 0 <= slot < len(slots) and slots[slot] is row:
            slots[slot] = None
            self._rows[row] = None

    def remove(self, row: Row) -> None:
        """Remove a row that is not a stream connection (once); its counters go into
        the running totals."""
        self.leave(row, _OTHER)

    def leave(self, row: Row, mark: int, slot: int = -1) -> None:
        """Remove a row (once), counted by ``mark`` (see the module docstring); its
        counters go into the running totals. What the stream transports call: one
        call for both (under callgrind a call costs hundreds of instructions).
        ``slot``: the number it was added with, if it still has it."""
        slots = self._slots
        try:
            # a negative slot (none) can only find the row if it is there: harmless
            found = slots[slot] is row
        except IndexError:
            found = False
        if found:
            slots[slot] = None
        else:
            try:
                del self._rows[row]
            except KeyError:
                try:  # its number was lost (a slow path), or it is gone already
                    slot = slots.index(row)
                except ValueError:
                    return
                slots[slot] = None
        self._bytes_in += row.bytes_in
        self._bytes_out += row.bytes_out
        self.ends[mark] += 1

    def begin_stopping(self) -> None:
        """The server that owns the table is stopping (a graceful stop, a facade's
        ``server_close``, the reactor's close): orderly closes from now on, but those
        after the peer's end of stream, count as ``shutdown``."""
        self.ends = self._ends_stopping

    @property
    def stopping(self) -> bool:
        """Whether :meth:`begin_stopping` was called."""
        return self.ends is self._ends_stopping

    def close_counts(self) -> dict[str, int]:
        """Stream connections closed over the table's life, by reason (only reasons
        counted), sorted by name."""
        counts = Counter(self.closes)
        for names, numbers in ((ORDERLY, self._ends_running),
                               (ORDERLY_STOPPING, self._ends_stopping)):
            for name, n in zip(names, numbers, strict=False):  # the rest: not by mark
                counts[name] += n
        return {name: n for name, n in sorted(counts.items()) if n}

    def note_discarded(self, size: int) -> None:
        """Count ``size`` bytes a row dropped unsent from its write queue."""
        self._discarded += size

    @property
    def discarded(self) -> int:
        """Bytes dropped unsent from write queues over the table's life."""
        return self._discarded

    def __len__(self) -> int:
        slots = self._slots
        return len(self._rows) + len(slots) - slots.count(None)

    def _all(self) -> list[Row]:
        rows = list(self._rows)
        rows += [row for row in self._slots if row is not None]
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self._all())

    def __contains__(self, row: object) -> bool:
        return row in self._rows or row in self._slots

    def in_state(self, *states: ConnState) -> list[Row]:
        """The rows currently in any of ``states``."""
        wanted = set(states)
        return [row for row in self._all() if row.state in wanted]

    def counts(self) -> dict[str, int]:
        """Rows per state name."""
        return dict(Counter(row.state.name for row in self._all()))

    def statistics(self) -> TableStatistics:
        """An immutable snapshot: counts by state and kind, totals, buffered bytes."""
        rows = self._all()
        closed = sum(self._ends_running) + sum(self._ends_stopping)
        live_in = sum(r.bytes_in for r in rows)
        live_out = sum(r.bytes_out for r in rows)
        return TableStatistics(
            open=len(rows),
            by_state=MappingProxyType(dict(Counter(r.state.name for r in rows))),
            by_kind=MappingProxyType(dict(Counter(r.kind for r in rows))),
            opened_total=closed + len(rows),
            closed_total=closed,
            bytes_in=self._bytes_in + live_in,
            bytes_out=self._bytes_out + live_out,
            write_buffered=sum(r.write_buffer_size for r in rows),
            discarded=self._discarded,
            refused_by_address=self.refused_by_address,
            refused_by_credentials=self.refused_by_credentials,
            closes=MappingProxyType(self.close_counts()),
        )

    def format(self, limit: int = 50) -> str:
        """The table as text, one row per line (at most ``limit`` rows)."""
        lines = [f"{'kind':<5} {'state':<18} {'peer':<28} {'in':>10} {'out':>10} {'queued':>8}"]
        rows = self._all()
        for n, row in enumerate(rows):
            if n == limit:
                lines.append(f"... and {len(rows) - limit} more")
                break
            lines.append(
                f"{row.kind:<5} {row.state.name:<18} {row.peername!s:<28} "
                f"{row.bytes_in:>10} {row.bytes_out:>10} {row.write_buffer_size:>8}"
            )
        return "\n".join(lines)
