"""Replies held back until the peers acknowledged a write, kept in command order.

Role: :class:`Ticket`, one replicated write (or one transaction's writes) waiting for
the acknowledgements of its peers, and :class:`ReplyQueue`, one client connection's
replies from the first held one on: a held reply holds back the replies of every
command after it on that connection (pipelined or not), so a client reads its replies
in the order it sent its commands; while nothing is held, replies are not queued at
all.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: tickets are
counted, not timed (the links time their peers, see :mod:`.peers`).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from .replwire import NOREPLICAS_AFTER

__all__ = ["ReplyQueue", "Ticket", "TicketOwner"]


class TicketOwner(Protocol):
    """Who learns that a ticket is settled (a client connection)."""

    def ticket_done(self) -> None: ...


class Ticket:
    """One write sent to ``outstanding`` peers, acknowledged once ``needed`` of them
    replied.

    Each peer settles its part once: :meth:`ack` (it applied the write) or
    :meth:`fail` (it went down first). The ticket is *done* once ``needed`` peers
    acknowledged (:attr:`failed` False) or once that can no longer happen (:attr:`failed`
    True); the owner's ``ticket_done`` is then called, once. Settlements after that
    are counted and otherwise ignored.

    Args:
        owner: told when the ticket is done (None: nobody).
        needed: acknowledgements wanted (0: done at once).
        outstanding: peers the write was sent to.
    """

    __slots__ = ("acked", "done", "failed", "needed", "outstanding", "owner")

    def __init__(self, owner: TicketOwner | None, needed: int, outstanding: int) -> None:
        self.owner = owner
        self.needed = needed
        self.outstanding = outstanding
        self.acked = 0
        self.done = needed <= 0
        self.failed = False
        if not self.done and outstanding < needed:
            self.done = self.failed = True

    def ack(self) -> None:
        """One peer applied the write."""
        self.acked += 1
        self.outstanding -= 1
        if not self.done and self.acked >= self.needed:
            self._settle(False)

    def fail(self) -> None:
        """One peer will not acknowledge the write (it went down)."""
        self.outstanding -= 1
        if not self.done and self.acked + self.outstanding < self.needed:
            self._settle(True)

    def _settle(self, failed: bool) -> None:
        self.done = True
        self.failed = failed
        if self.owner is not None:
            self.owner.ticket_done()


class ReplyQueue:
    """One connection's replies from its first held reply on, in command order.

    :meth:`add` takes each reply in order, with the ticket it waits for (None: it
    waits only for the replies before it); :meth:`ready` returns the replies that may
    now be written, in order. A reply whose ticket failed is replaced by the
    ``NOREPLICAS`` error that says the write was applied here only.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: deque[tuple[Ticket | None, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, reply: bytes, ticket: Ticket | None = None) -> None:
        """Queue ``reply`` after the others (it waits for ``ticket`` when given)."""
        self._entries.append((ticket, reply))

    def ready(self) -> bytes:
        """The replies at the front whose tickets are done, taken off the queue and
        joined (empty when the first one still waits)."""
        entries = self._entries
        out: list[bytes] = []
        while entries:
            ticket, reply = entries[0]
            if ticket is not None:
                if not ticket.done:
                    break
                if ticket.failed:
                    reply = NOREPLICAS_AFTER
            entries.popleft()
            out.append(reply)
        return b"".join(out)

    def clear(self) -> None:
        """Forget every reply (the connection is gone)."""
        self._entries.clear()
