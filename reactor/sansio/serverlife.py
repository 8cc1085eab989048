"""A socketserver facade's own lifecycle, as a state machine.

Theory of operation
-------------------
A server is serving or not, stopping or not, closed or not, or a forked child that
serves one request and exits. Those facts used to be separate flags read in a careful
order by several threads (``shutdown()`` comes from anywhere, ``server_close()`` may be
called from inside a handler); here they are one :class:`ServerPhase`, moved only
through :data:`SERVER_LIFECYCLE`, so a combination that cannot happen cannot be
represented::

    IDLE --SERVE--> SERVING --RETURN--> IDLE
    IDLE, SERVING --SHUTDOWN--> STOPPING --RETURN--> IDLE
                                STOPPING --SERVE--> STOPPING (serve_forever returns at once)
    IDLE, STOPPING --CLOSE--> CLOSED
    IDLE, SERVING, STOPPING --CLOSE_RUNNING--> CLOSING --RETURN--> CLOSED
    any phase but CHILD --FORK--> CHILD (serves one request, then exits; a closing
                                  forking server forks for requests still waiting)

SERVING is ``serve_forever`` running; STOPPING means a ``shutdown()`` was asked for and
``serve_forever`` returns (at once, if it was not running yet); CLOSING means
``server_close()`` ran while the server's reactor was running (serving, or handling one
request): the run returns and the server finishes closing. ``handle_request`` is not a
phase: it serves one request in whatever phase the server is in, as in the standard
library. The facades take the server's lock around every move that another thread can
make, and read the phase, never a flag, to decide.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from .machine import TransitionTable

__all__ = ["SERVER_LIFECYCLE", "ServerEvent", "ServerPhase"]


class ServerPhase(Enum):
    """Where a server is in its life."""

    IDLE = "idle"  # constructed (or between runs); nothing runs its reactor for it
    SERVING = "serving"  # serve_forever runs
    STOPPING = "stopping"  # shutdown() asked: serve_forever returns (at once, if not begun)
    CLOSING = "closing"  # server_close() while the reactor ran: finished when the run returns
    CLOSED = "closed"  # server_close() done
    CHILD = "child"  # a forked child serving one request; it exits when done

    __hash__ = object.__hash__  # identity hashing, as ConnState


class ServerEvent(Enum):
    """What can happen to a server."""

    SERVE = "serve"  # serve_forever begins
    SHUTDOWN = "shutdown"  # shutdown() was called
    RETURN = "return"  # serve_forever returned, or a run of a closing server did
    CLOSE = "close"  # server_close() was called, the reactor not running
    CLOSE_RUNNING = "close-running"  # server_close() was called while the reactor runs
    FORK = "fork"  # this process is a forked child of the server

    __hash__ = object.__hash__


_P = ServerPhase
_E = ServerEvent

SERVER_LIFECYCLE: Final[TransitionTable[ServerPhase, ServerEvent]] = TransitionTable(
    "server",
    {
        _P.IDLE: {_E.SERVE: _P.SERVING, _E.SHUTDOWN: _P.STOPPING, _E.CLOSE: _P.CLOSED,
                  _E.CLOSE_RUNNING: _P.CLOSING, _E.FORK: _P.CHILD},
        _P.SERVING: {_E.SHUTDOWN: _P.STOPPING, _E.RETURN: _P.IDLE,
                     _E.CLOSE_RUNNING: _P.CLOSING, _E.FORK: _P.CHILD},
        # a serve_forever that begins after a shutdown() returns at once (SERVE is a
        # self-move, then RETURN)
        _P.STOPPING: {_E.SERVE: _P.STOPPING, _E.SHUTDOWN: _P.STOPPING, _E.RETURN: _P.IDLE,
                      _E.CLOSE: _P.CLOSED, _E.CLOSE_RUNNING: _P.CLOSING, _E.FORK: _P.CHILD},
        _P.CLOSING: {_E.SHUTDOWN: _P.CLOSING, _E.RETURN: _P.CLOSED, _E.FORK: _P.CHILD},
        _P.CLOSED: {_E.SHUTDOWN: _P.CLOSED, _E.FORK: _P.CHILD},
        # the child serves its request and exits; what it calls on the server is moot
        _P.CHILD: {_E.SHUTDOWN: _P.CHILD, _E.CLOSE: _P.CHILD, _E.CLOSE_RUNNING: _P.CHILD,
                   _E.RETURN: _P.CHILD},
    },
)
"""Every legal move of a server's lifecycle."""
