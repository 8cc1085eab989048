"""A worker process's life under the supervisor, and the start-up backoff.

Theory of operation
-------------------
The supervisor (:mod:`reactor.cli.supervisor`) keeps one :class:`WorkerState` per
worker process, moved only through :data:`WORKER_LIFECYCLE`::

    STARTING --READY--> SERVING          (its listeners are bound; it said so)
    SERVING --RETIRE--> RETIRING         (a reload, or --max-requests reached:
                                          it serves on until a replacement is ready)
    RETIRING --KEEP--> SERVING           (the reload was abandoned: it serves on)
    STARTING, SERVING, RETIRING --DRAIN--> DRAINING   (SIGTERM sent: its graceful stop)
    STARTING --LATE--> STUCK             (not ready within the start-up deadline)
    SERVING, RETIRING --SILENT--> STUCK  (no heartbeat within the liveness deadline)
    any but EXITED --EXIT--> EXITED     (reaped)

A reload drains a worker still STARTING at once (it serves nothing yet), so RETIRING
always means "was ready", and an abandoned reload can put it back to SERVING.

A worker that exits while STARTING died at start-up: it is restarted only after
:meth:`StartupBackoff.failed`'s delay, so a worker that cannot start (a module that
fails to import, an address it cannot bind) makes a few restarts a second at first and
then one every :data:`MAX_BACKOFF` seconds, never a fork loop. The first worker that
becomes ready resets the backoff. A worker that dies after it was ready is restarted
at once: that is a crash, not a broken start.

Deadlines (:class:`WorkerDeadlines`, one timer per worker in the supervisor): a
STARTING worker has ``start`` seconds to report ready, else it is LATE: killed, and
counted as a start-up failure (the same backoff as a death at start-up, so a factory
that always hangs does not make a fork loop either). A SERVING or RETIRING worker sends
a heartbeat every ``silence / HEARTBEATS`` seconds from a timer of its own reactor (so
it beats only while its loop runs); one not heard from for ``silence`` seconds is
SILENT: killed and replaced at once. STUCK means SIGTERM was sent: SIGKILL follows
``kill_grace`` seconds later (a worker whose loop is blocked never runs its SIGTERM
handler). A DRAINING worker gets SIGKILL ``drain`` seconds after it was drained.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Final

from .machine import TransitionTable

__all__ = ["DEFAULT_START_TIMEOUT", "DEFAULT_WORKER_TIMEOUT", "HEARTBEATS", "KILL_GRACE",
           "MAX_BACKOFF", "MAX_DEADLINE", "MIN_BACKOFF", "MIN_WORKER_TIMEOUT",
           "WORKER_LIFECYCLE", "StartupBackoff", "WorkerDeadlines", "WorkerEvent",
           "WorkerState"]

MIN_BACKOFF: Final = 0.1  # seconds before the restart after the first start-up death
MAX_BACKOFF: Final = 5.0  # the longest wait between two restarts
DEFAULT_START_TIMEOUT: Final = 30.0  # --worker-start-timeout
DEFAULT_WORKER_TIMEOUT: Final = 30.0  # --worker-timeout (0: no heartbeat)
MIN_WORKER_TIMEOUT: Final = 1.0  # so a heartbeat is at most HEARTBEATS a second
MAX_DEADLINE: Final = 86400.0  # a day: longer is surely a typo
HEARTBEATS: Final = 4  # heartbeats per --worker-timeout: three may be late
KILL_GRACE: Final = 2.0  # from the SIGTERM to a stuck worker to its SIGKILL


class WorkerState(Enum):
    """Where a worker process is in its life."""

    STARTING = "starting"  # forked; not yet listening
    SERVING = "serving"  # listening and serving
    RETIRING = "retiring"  # to be replaced: serving until its replacement is ready
    DRAINING = "draining"  # told to stop (SIGTERM): finishing its connections
    STUCK = "stuck"  # missed a deadline: SIGTERM sent, SIGKILL to follow
    EXITED = "exited"  # reaped

    __hash__ = object.__hash__


class WorkerEvent(Enum):
    """What can happen to a worker."""

    READY = "ready"  # it bound its listeners and said so over its link
    RETIRE = "retire"  # a reload began, or it served its --max-requests
    KEEP = "keep"  # the reload that retired it was abandoned
    LATE = "late"  # not ready within the start-up deadline
    SILENT = "silent"  # no heartbeat within the liveness deadline
    DRAIN = "drain"  # the supervisor sent it SIGTERM
    EXIT = "exit"  # the supervisor reaped it

    __hash__ = object.__hash__


_S = WorkerState
_E = WorkerEvent

WORKER_LIFECYCLE: Final[TransitionTable[WorkerState, WorkerEvent]] = TransitionTable(
    "worker",
    {
        _S.STARTING: {_E.READY: _S.SERVING, _E.DRAIN: _S.DRAINING, _E.LATE: _S.STUCK,
                      _E.EXIT: _S.EXITED},
        _S.SERVING: {_E.RETIRE: _S.RETIRING, _E.DRAIN: _S.DRAINING, _E.SILENT: _S.STUCK,
                     _E.EXIT: _S.EXITED},
        _S.RETIRING: {_E.RETIRE: _S.RETIRING, _E.KEEP: _S.SERVING, _E.DRAIN: _S.DRAINING,
                      _E.SILENT: _S.STUCK, _E.EXIT: _S.EXITED},
        # drained before it was ready, it may yet report ready: it stays draining
        _S.DRAINING: {_E.READY: _S.DRAINING, _E.RETIRE: _S.DRAINING,
                      _E.DRAIN: _S.DRAINING, _E.EXIT: _S.EXITED},
        # a late "ready" changes nothing: it is being killed
        _S.STUCK: {_E.READY: _S.STUCK, _E.EXIT: _S.EXITED},
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


@dataclass(frozen=True)
class WorkerDeadlines:
    """How long a worker may stay in each state (seconds; see the module docstring).

    Args:
        start: STARTING until ready (``--worker-start-timeout``): more than 0, at most
            :data:`MAX_DEADLINE`.
        silence: SERVING or RETIRING with no message (``--worker-timeout``): 0 for no
            liveness check (and no heartbeat), else :data:`MIN_WORKER_TIMEOUT` to
            :data:`MAX_DEADLINE`.
        drain: DRAINING until SIGKILL (the graceful timeout plus a slack; ``math.inf``:
            never).
        kill_grace: STUCK until SIGKILL.

    Raises:
        ValueError: a value out of its range (NaN and infinities included).
    """

    start: float = DEFAULT_START_TIMEOUT
    silence: float = DEFAULT_WORKER_TIMEOUT
    drain: float = MAX_DEADLINE
    kill_grace: float = KILL_GRACE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and 0 < self.start <= MAX_DEADLINE):
            raise ValueError(f"the start-up timeout must be more than 0 and at most "
                             f"{MAX_DEADLINE:g} seconds, not {self.start!r}")
        if not (self.silence == 0 or MIN_WORKER_TIMEOUT <= self.silence <= MAX_DEADLINE):
            raise ValueError(f"the worker timeout must be 0 (off) or from "
                             f"{MIN_WORKER_TIMEOUT:g} to {MAX_DEADLINE:g} seconds, "
                             f"not {self.silence!r}")
        for value in (self.drain, self.kill_grace):
            if not value >= 0:  # NaN too; math.inf: never
                raise ValueError(f"a deadline must be 0 or more: {value!r}")

    @property
    def heartbeat(self) -> float | None:
        """Seconds between a ready worker's heartbeats (None: it sends none)."""
        return self.silence / HEARTBEATS if self.silence else None

    def due(self, state: WorkerState, entered: float, heard: float) -> float | None:
        """When a worker in ``state`` since ``entered``, last heard from at ``heard``,
        misses its deadline (None: it has none)."""
        if state is WorkerState.STARTING:
            return entered + self.start
        if state is WorkerState.SERVING or state is WorkerState.RETIRING:
            return heard + self.silence if self.silence else None
        if state is WorkerState.DRAINING:
            return entered + self.drain
        if state is WorkerState.STUCK:
            return entered + self.kill_grace
        return None
