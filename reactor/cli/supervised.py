"""One worker process as the supervisor sees it: its link, its state, its deadline.

:class:`Worker` is the protocol of the supervisor's end of a worker's link (JSON lines,
see :mod:`.workers`). It keeps the worker's
:class:`~reactor.sansio.workerlife.WorkerState`, moved only through the table, and one
timer of the supervisor's reactor for the deadline of that state
(:class:`~reactor.sansio.workerlife.WorkerDeadlines`): the start-up deadline while it
starts, the liveness deadline while it serves, SIGKILL while it drains or is stuck.

A heartbeat costs the supervisor no timer operation: each message only records when it
came, and the liveness timer, when it fires early, is set again from that time. So a
worker that beats four times per ``--worker-timeout`` wakes the supervisor about once
per timeout. What to do when a deadline passes is the supervisor's decision
(``on_overdue``).

Part of the command line layer; never imports ``handlers``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..io.loop import Reactor
from ..sansio.timers import TimerHandle
from ..sansio.workerlife import WORKER_LIFECYCLE, WorkerDeadlines, WorkerEvent, WorkerState
from .workers import JsonLines

__all__ = ["Worker"]


class Worker(JsonLines):
    """One worker process, as the supervisor sees it (the protocol of its link).

    Args:
        number, pid: which worker (the number counts the workers started).
        sock: the supervisor's end of the link.
        reactor: the supervisor's reactor (its clock and timers).
        deadlines: how long each state may last.
        on_message: called with each message the worker sends.
        on_overdue: called when the worker missed its state's deadline.
    """

    def __init__(self, number: int, pid: int, sock: socket.socket, *, reactor: Reactor,
                 deadlines: WorkerDeadlines,
                 on_message: Callable[[Worker, dict[str, Any]], object],
                 on_overdue: Callable[[Worker], object]) -> None:
        super().__init__()
        self.peer = f"worker {number} (pid {pid})"
        self.sock = sock
        self.number = number
        self.pid = pid
        self.reactor = reactor
        self.deadlines = deadlines
        self.on_message = on_message
        self.on_overdue = on_overdue
        self.life = WorkerState.STARTING
        self.entered = self.heard = reactor.time()  # entered its state; last message
        self.deadline: TimerHandle | None = None
        self.stats: dict[str, int] | None = None
        self._arm()

    def name(self) -> str:
        return self.peer

    def move(self, event: WorkerEvent) -> None:
        """Change state through :data:`WORKER_LIFECYCLE`, and set the new deadline."""
        self.life = WORKER_LIFECYCLE.next(self.life, event)
        self.entered = self.reactor.time()
        self._arm()

    def message_received(self, message: dict[str, Any]) -> None:
        self.heard = self.reactor.time()
        self.on_message(self, message)

    def _arm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        due = self.deadlines.due(self.life, self.entered, self.heard)
        if due is not None:
            self.deadline = self.reactor.call_at(due, self._check)

    def _check(self) -> None:
        self.deadline = None
        due = self.deadlines.due(self.life, self.entered, self.heard)
        if due is None:
            return
        if self.reactor.time() < due:  # heard from since the timer was set
            self.deadline = self.reactor.call_at(due, self._check)
            return
        self.on_overdue(self)
