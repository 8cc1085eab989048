"""The connection row and its lifecycle state machine.

Theory of operation
-------------------
Every connection the reactor knows (accepted, connected out, or a datagram endpoint) is
one row of the connection table, and the row *is* the transport object: transports
inherit :class:`Row` and store :data:`ROW_SLOTS`, so keeping the table costs no extra
object per connection.

A row's lifecycle is an explicit :class:`ConnState`, moved only through
:data:`LIFECYCLE`, the one table of legal transitions; an illegal move raises
:class:`~reactor.sansio.errors.IllegalTransition`. Stream services walk the middle column,
the socketserver facades the right one::

    CONNECTING --ATTACH--+        ACCEPTED --VERIFY--> VERIFIED --BUFFER--> BUFFERING
                         v            |ATTACH            |         DISPATCH_*  |
                       OPEN <---------+------------------+ATTACH              v
          EOF /        |        \\ WRITE_EOF           DISPATCHED_{INLINE,THREAD,CHILD}
     READ_CLOSED  CLOSE|    WRITE_CLOSED                      | FINISH
          \\ WRITE_EOF  v  EOF /                               v
           +------> CLOSING <--+                           FINISHED
                       | FLUSHED                              |
                       v                                      |
                     ENDING <----- ABORT from every state     |
                       | LOST      but ENDING and CLOSED      | LOST
                       v                                      v
                     CLOSED  <----- LOST from every state ----+

A listener that expects the PROXY protocol (:mod:`reactor.sansio.proxy`) first reads
the header, in PROXY_HEADER, off the diagram: ACCEPTED --PROXY_HEADER--> PROXY_HEADER
--PROXIED--> ACCEPTED, now as from the client the header named (or ABORT, on a bad
header).

The end of a connection is three states, and no transport keeps a flag that repeats
them: CLOSING is an orderly close that still flushes queued output (``close()``, or
both halves closed); ENDING means the teardown is scheduled: no more I/O, writes are
dropped, and ``connection_lost`` follows from the loop, never from inside another
callback. An orderly close reaches ENDING when its output is flushed (FLUSHED);
``abort()``, a socket error, a refused registration, a deadline or a failing callback
reach it at once from any earlier state (ABORT), dropping what was queued. CLOSED: the
row is gone. A transport's ``is_closing()`` is true in all three. A protocol attached to a
row already ENDING (a connect completing as its row is aborted) leaves it ENDING and
gets ``connection_made`` and then ``connection_lost``.

Counters (bytes in and out) and times (creation, last activity) are plain attributes
that the I/O layer updates on its hot path; the times it stores are the reactor's
per-iteration clock reading, shared by every row touched in that iteration.

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from .machine import TransitionTable

__all__ = ["LIFECYCLE", "ROW_SLOTS", "ConnEvent", "ConnState", "Connection", "Row"]


class ConnState(Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"  # outgoing connect in progress
    ACCEPTED = "accepted"  # accepted, no handler yet
    PROXY_HEADER = "proxy-header"  # the reactor reads a PROXY protocol header first
    VERIFIED = "verified"  # a facade's verify_request said yes
    BUFFERING = "buffering"  # the reactor reads the first request for a blocking handler
    DISPATCHED_INLINE = "dispatched-inline"  # a blocking handler runs on the reactor thread
    DISPATCHED_THREAD = "dispatched-thread"  # ... in a worker thread
    DISPATCHED_CHILD = "dispatched-child"  # ... in a forked child process
    FINISHED = "finished"  # the blocking handler returned
    OPEN = "open"  # a non-blocking protocol is attached, both directions open
    READ_CLOSED = "read-closed"  # the peer sent EOF; we may still write
    WRITE_CLOSED = "write-closed"  # we sent EOF; the peer may still write
    CLOSING = "closing"  # flushing queued output before the close
    ENDING = "ending"  # teardown scheduled: no more I/O; connection_lost follows
    CLOSED = "closed"  # gone; connection_lost was called

    # members are singletons: hash by identity in C, not by name in Python (Enum's
    # default), since every lifecycle move looks two members up in LIFECYCLE
    __hash__ = object.__hash__


class ConnEvent(Enum):
    """What can happen to a connection."""

    ATTACH = "attach"  # a protocol was attached (connection_made)
    PROXY_HEADER = "proxy-header"  # a PROXY header is expected: read it first
    PROXIED = "proxied"  # the PROXY header was read: accepted as from its client
    VERIFY = "verify"
    BUFFER = "buffer"
    DISPATCH_INLINE = "dispatch-inline"
    DISPATCH_THREAD = "dispatch-thread"
    DISPATCH_CHILD = "dispatch-child"
    FINISH = "finish"
    EOF = "eof"  # the peer finished writing
    WRITE_EOF = "write-eof"  # we finished writing
    CLOSE = "close"  # an orderly close began
    FLUSHED = "flushed"  # an orderly close sent all it had queued
    ABORT = "abort"  # close at once, dropping queued output (abort, error, deadline)
    LOST = "lost"  # the connection is gone

    __hash__ = object.__hash__  # see ConnState


_S = ConnState
_E = ConnEvent
_DISPATCH: Final = {
    _E.DISPATCH_INLINE: _S.DISPATCHED_INLINE,
    _E.DISPATCH_THREAD: _S.DISPATCHED_THREAD,
    _E.DISPATCH_CHILD: _S.DISPATCHED_CHILD,
}
_GONE: Final = {_E.ABORT: _S.ENDING, _E.LOST: _S.CLOSED}
_END: Final = {_E.CLOSE: _S.CLOSING, **_GONE}

LIFECYCLE: Final[TransitionTable[ConnState, ConnEvent]] = TransitionTable(
    "connection",
    {
        _S.CONNECTING: {_E.ATTACH: _S.OPEN, **_END},
        _S.ACCEPTED: {_E.ATTACH: _S.OPEN, _E.VERIFY: _S.VERIFIED,
                      _E.PROXY_HEADER: _S.PROXY_HEADER, **_END},
        # the PROXY header read, the connection is accepted again, from its real client
        _S.PROXY_HEADER: {_E.PROXIED: _S.ACCEPTED, _E.EOF: _S.PROXY_HEADER, **_END},
        _S.VERIFIED: {_E.ATTACH: _S.OPEN, _E.BUFFER: _S.BUFFERING, **_DISPATCH, **_END},
        # EOF while buffering: the facade decides (dispatch what arrived, or close)
        _S.BUFFERING: {_E.EOF: _S.BUFFERING, **_DISPATCH, **_END},
        _S.DISPATCHED_INLINE: {_E.FINISH: _S.FINISHED, **_GONE},
        _S.DISPATCHED_THREAD: {_E.FINISH: _S.FINISHED, **_GONE},
        _S.DISPATCHED_CHILD: {_E.FINISH: _S.FINISHED, **_GONE},
        _S.FINISHED: {**_GONE},
        _S.OPEN: {_E.EOF: _S.READ_CLOSED, _E.WRITE_EOF: _S.WRITE_CLOSED, **_END},
        _S.READ_CLOSED: {_E.WRITE_EOF: _S.CLOSING, **_END},
        _S.WRITE_CLOSED: {_E.EOF: _S.CLOSING, **_END},
        _S.CLOSING: {_E.FLUSHED: _S.ENDING, **_GONE},
        # a connect completing as its row is aborted: connection_made, connection_lost
        _S.ENDING: {_E.ATTACH: _S.ENDING, _E.LOST: _S.CLOSED},
        _S.CLOSED: {},
    },
)


# LIFECYCLE as nested dicts, derived from it once: Row.advance looks a move up here in
# one frame (two dict lookups) and asks LIFECYCLE only to raise for an illegal one
_MOVES: Final[dict[ConnState, dict[ConnEvent, ConnState]]] = {state: {} for state in _S}
for _state, _event, _target in LIFECYCLE.edges():
    _MOVES[_state][_event] = _target
del _state, _event, _target


# the named fast transitions' states (see Row.verify), read from the table
_ACCEPTED: Final = _S.ACCEPTED
_VERIFIED: Final = _S.VERIFIED
_CLOSED: Final = _S.CLOSED
_VERIFIED_FROM_ACCEPTED: Final = LIFECYCLE.next(_S.ACCEPTED, _E.VERIFY)
_INLINE_FROM_VERIFIED: Final = LIFECYCLE.next(_S.VERIFIED, _E.DISPATCH_INLINE)
_INLINE_FROM_ACCEPTED: Final = LIFECYCLE.next(_VERIFIED_FROM_ACCEPTED, _E.DISPATCH_INLINE)
_OPEN: Final = _S.OPEN
_READ_CLOSED: Final = _S.READ_CLOSED
_CLOSING: Final = _S.CLOSING
_OPEN_FROM_ACCEPTED: Final = LIFECYCLE.next(_S.ACCEPTED, _E.ATTACH)
_READ_CLOSED_FROM_OPEN: Final = LIFECYCLE.next(_S.OPEN, _E.EOF)
_CLOSING_FROM_OPEN: Final = LIFECYCLE.next(_S.OPEN, _E.CLOSE)
_CLOSING_FROM_READ_CLOSED: Final = LIFECYCLE.next(_S.READ_CLOSED, _E.CLOSE)
_ENDING_FROM_CLOSING: Final = LIFECYCLE.next(_S.CLOSING, _E.FLUSHED)
_ENDING_FROM_OPEN: Final = LIFECYCLE.next(_S.OPEN, _E.ABORT)
_ENDING_FROM_READ_CLOSED: Final = LIFECYCLE.next(_S.READ_CLOSED, _E.ABORT)


ROW_SLOTS: Final = (
    "bytes_in",
    "bytes_out",
    "created",
    "last_activity",
    "meta",
    "peername",
    "state",
)
"""The attributes every row stores; classes that are rows declare them as slots (the
stream transport stores ``peername`` and ``meta`` in one slot of its own instead, and
makes them properties: ``reactor.io.compactrow``)."""


class Row:
    """The behaviour of a connection-table row, with no storage of its own.

    A row class inherits this and declares :data:`ROW_SLOTS` in its own ``__slots__``
    (as :class:`Connection` does), which lets a transport be a row and still subclass
    :class:`asyncio.Transport`, whose layout has a slot of its own.

    Attributes:
        state: the lifecycle state; change it only through :meth:`advance` (or a
            named fast transition: :meth:`verify`, :meth:`dispatch_inline`,
            :meth:`lose`).
        peername: the peer's address, as the socket layer reported it (or None).
        created: the reactor clock's reading when the row was made.
        last_activity: the clock's reading when bytes last moved either way.
        bytes_in: bytes received so far.
        bytes_out: bytes handed to the kernel so far.
        meta: per-connection metadata for layers above (e.g. the real client
            address behind a proxy, a TLS session); None until first used.
    """

    if not TYPE_CHECKING:  # mypy would check the row's assignments against ()
        __slots__ = ()

    state: ConnState
    peername: Any
    created: float
    last_activity: float
    bytes_in: int
    bytes_out: int
    meta: dict[str, Any] | None

    def _init_row(self, state: ConnState, peername: Any, now: float) -> None:
        self.state = state
        self.created = now
        self.last_activity = now
        self.bytes_in = 0
        self.bytes_out = 0
        self._store_peer(peername)

    def _store_peer(self, peername: Any) -> None:
        """Store a new row's peer address, and no metadata (a row class that stores
        them otherwise overrides this: ``reactor.io.compactrow``)."""
        self.peername = peername
        self.meta = None

    def advance(self, event: ConnEvent) -> ConnState:
        """Apply ``event`` to the lifecycle and return the new state.

        Raises:
            IllegalTransition: the lifecycle table forbids ``event`` in this state.
        """
        try:
            self.state = state = _MOVES[self.state][event]
        except KeyError:
            LIFECYCLE.next(self.state, event)  # raises IllegalTransition
            raise
        return state

    # Named fast transitions: the moves that every facade request and every stream
    # connection make, defined beside LIFECYCLE and taken from it (the targets
    # below are looked up in the table once). Each does exactly what advance() does
    # from the move's usual source state, without the table lookups (about 500
    # instructions of the 940 an advance() costs under callgrind); from any other
    # state it is advance() itself. tests/test_connection.py holds each to advance()
    # for every state.

    def verify(self) -> None:
        """``advance(VERIFY)``: a facade's ``verify_request`` said yes."""
        if self.state is _ACCEPTED:
            self.state = _VERIFIED_FROM_ACCEPTED
        else:
            self.advance(_E.VERIFY)

    def dispatch_inline(self) -> None:
        """``advance(DISPATCH_INLINE)``: a facade runs the request on the loop's thread."""
        if self.state is _VERIFIED:
            self.state = _INLINE_FROM_VERIFIED
        else:
            self.advance(_E.DISPATCH_INLINE)

    def on_attach(self) -> None:
        """``advance(ATTACH)``: an accepted connection got its protocol."""
        if self.state is _ACCEPTED:
            self.state = _OPEN_FROM_ACCEPTED
        else:
            self.advance(_E.ATTACH)

    def on_eof(self) -> None:
        """``advance(EOF)``: the peer finished sending."""
        if self.state is _OPEN:
            self.state = _READ_CLOSED_FROM_OPEN
        else:
            self.advance(_E.EOF)

    def on_close(self) -> None:
        """``advance(CLOSE)``: an orderly close began."""
        state = self.state
        if state is _READ_CLOSED:
            self.state = _CLOSING_FROM_READ_CLOSED
        elif state is _OPEN:
            self.state = _CLOSING_FROM_OPEN
        else:
            self.advance(_E.CLOSE)

    def on_flushed(self) -> None:
        """``advance(FLUSHED)``: a closing connection sent all it had."""
        if self.state is _CLOSING:
            self.state = _ENDING_FROM_CLOSING
        else:
            self.advance(_E.FLUSHED)

    def on_abort(self) -> None:
        """``advance(ABORT)``: close at once (an abort, a socket error, a deadline)."""
        state = self.state
        if state is _OPEN:
            self.state = _ENDING_FROM_OPEN
        elif state is _READ_CLOSED:
            self.state = _ENDING_FROM_READ_CLOSED
        else:
            self.advance(_E.ABORT)

    def verify_inline(self) -> None:
        """:meth:`verify` then :meth:`dispatch_inline`, in one call: a facade's
        ``verify_request`` said yes and the request runs on the loop's thread at once
        (nothing can look at the row between the two moves)."""
        if self.state is _ACCEPTED:
            self.state = _INLINE_FROM_ACCEPTED
        else:
            self.advance(_E.VERIFY)
            self.advance(_E.DISPATCH_INLINE)

    def lose(self) -> None:
        """``advance(LOST)``: the connection is gone (every state but CLOSED leads there)."""
        if self.state is not _CLOSED:
            self.state = _CLOSED
        else:
            self.advance(_E.LOST)  # raises IllegalTransition

    @property
    def sockname(self) -> Any:
        """The local address (None when unknown or closed)."""
        return None

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued and not yet handed to the kernel."""
        return 0

    @property
    def discarded(self) -> int:
        """Bytes dropped unsent from the write queue by an abort or a forced close."""
        return 0

    @property
    def kind(self) -> str:
        """A short name for the transport kind ("tcp", "unix", "udp", ...)."""
        return "connection"

    def set_meta(self, key: str, value: Any) -> None:
        """Attach a piece of per-connection metadata."""
        if self.meta is None:
            self.meta = {}
        self.meta[key] = value

    def describe(self) -> str:
        """A one-line description for logs: kind, peer (with a Unix peer's credentials,
        when they were read: ``meta["peercred"]``) and state."""
        meta = self.meta
        credentials = meta.get("peercred") if meta is not None else None
        peer = f"{self.peername!r} ({credentials})" if credentials is not None else (
            repr(self.peername))
        return f"{self.kind} {peer} [{self.state.name}]"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class Connection(Row):
    """A plain row: for connections that are not transports (e.g. a facade's
    datagram request)."""

    __slots__ = ROW_SLOTS

    def __init__(self, state: ConnState, peername: Any, now: float) -> None:
        self._init_row(state, peername, now)
