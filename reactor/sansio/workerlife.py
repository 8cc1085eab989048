"""A worker process's life under the supervisor, and the start-up backoff.

Theory of operation
-------------------
The supervisor (:mod:`reactor.cli.supervisor`) keeps one :class:`WorkerState` per
worker process, moved only through :data:`WORKER_LIFECYCLE`::

    STARTING --READY--> SERVING          (its listeners are bound; it said so)
    STARTING, SERVING --RETIRE--> RETIRING   (a reload, or --max-requests reached:
                                              it serves on until a replacement is ready)
    STARTING, SERVING, RETIRING --DRAIN--> DRAINING   (SIGTERM sent: its graceful stop)
    any but EXITED --EXIT--> EXITED     (reaped)

A worker that exits while STARTING died at start-up: it is restarted only after
:meth:`StartupBackoff.failed`'s delay, so a worker that cannot start (a module that
fails to import, an address it cannot bind) makes a few restarts a second at first and
then one every :data:`MAX_BACKOFF` seconds, never a fork loop. The first worker that
becomes ready resets the backoff. A worker that dies after it was ready is restarted
at once: that is a crash, not a broken start.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from .machine import TransitionTable

__all__ = ["MAX_BACKOFF", "MIN_BACKOFF", "WORKER_LIFECYCLE", "StartupBackoff",
           "WorkerEvent", "WorkerState"]

MIN_BACKOFF: Final = 0.1  # seconds before the restart after the first start-up death
MAX_BACKOFF: Final = 5.0  # the longest wait between two restarts


class WorkerState(Enum):
    """Where a worker process is in its life."""

    STARTING = "starting"  # forked; not yet listening
    SERVING = "serving"  # listening and serving
    RETIRING = "retiring"  # to be replaced: serving until its replacement is ready
    DRAINING = "draining"  # told to stop (SIGTERM): finishing its connections
    EXITED = "exited"  # reaped

    __hash__ = object.__hash__


class WorkerEvent(Enum):
    """What can happen to a worker."""

    READY = "ready"  # it bound its listeners and said so over its link
    RETIRE = "retire"  # a reload began, or it served its --max-requests
    DRAIN = "drain"  # the supervisor sent it SIGTERM
    EXIT = "exit"  # the supervisor reaped it

    __hash__ = object.__hash__


_S = WorkerState
_E = WorkerEvent

WORKER_LIFECYCLE: Final[TransitionTable[WorkerState, WorkerEvent]] = TransitionTable(
    "worker",
    {
        _S.STARTING: {_E.READY: _S.SERVING, _E.RETIRE: _S.RETIRING, _E.DRAIN: _S.DRAINING,
                      _E.EXIT: _S.EXITED},
        _S.SERVING: {_E.RETIRE: _S.RETIRING, _E.DRAIN: _S.DRAINING, _E.EXIT: _S.EXITED},
        # a retiring worker that was still starting may yet report ready: it stays retiring
        _S.RETIRING: {_E.READY: _S.RETIRING, _E.RETIRE: _S.RETIRING,
                      _E.DRAIN: _S.DRAINING, _E.EXIT: _S.EXITED},
        _S.DRAINING: {_E.READY: _S.DRAINING, _E.RETIRE: _S.DRAINING,
                      _E.DRAIN: _S.DRAINING, _E.EXIT: _S.EXITED},
        _S.EXITED: {},
    },
)
"""Every legal move of a worker's lifecycle."""


class StartupBackoff:
    """How long to wait before starting a worker again after start-up deaths.

    Args:
        minimum: the wait after the first death.
        maximum: the longest wait; the wait doubles up to it.
    """

    def __init__(self, minimum: float = MIN_BACKOFF, maximum: float = MAX_BACKOFF) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("backoff needs 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.failures = 0  # start-up deaths in a row

    def failed(self) -> float:
        """A worker died at start-up: count it and return the seconds to wait."""
        self.failures += 1
        return min(self.maximum, self.minimum * 2.0 ** (self.failures - 1))

    def succeeded(self) -> None:
        """A worker became ready: the next death starts from the minimum again."""
        self.failures = 0
