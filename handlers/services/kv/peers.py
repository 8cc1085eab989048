"""The outbound side of kv replication: one persistent link per peer.

Role: :class:`Replication`, a kv server's peers and its ``min_replicas``, and
:class:`PeerLink`, one outbound connection to one peer (another kv host), made with
the reactor's ``connect_tcp``.

A link's life (:data:`LINK_LIFECYCLE`): DOWN, then CONNECTING; once connected it sends
the optional PROXY header and ``REPLLINK <secret>`` (HANDSHAKE); the peer's ``+OK``
makes it UP, and only UP links count as live and receive writes. Any failure (the
connect, the handshake, the connection lost, a ``-REPLERR`` reply, a reply nobody
waits for, the oldest write unacknowledged after ``timeout`` seconds, more than
``max_pending`` writes or ``max_pending_bytes`` bytes waiting) marks it DOWN: its
connection is aborted, every write waiting for it is failed over as "not replicated to
this peer" (:meth:`~.holdback.Ticket.fail`), and it reconnects after a backoff that
doubles from :data:`FIRST_BACKOFF` to :data:`MAX_BACKOFF` seconds (reset once UP).

A write is sent to every UP link as ``REPLWRITE``, a transaction's writes as one
``REPLEXEC`` (:mod:`.replwire`); each link keeps what it sent in order with the
tickets and settles them one per reply line.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: connections and
timers come from the loop (it must have ``connect_tcp``: a :class:`reactor.Reactor`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from enum import Enum
from typing import Any, Final, cast

from reactor.sansio.machine import TransitionTable

from .holdback import Ticket, TicketOwner
from .replwire import encode_replexec, encode_repllink, encode_replwrite

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_TIMEOUT",
    "LINK_LIFECYCLE",
    "LinkEvent",
    "LinkPhase",
    "PeerLink",
    "Replication",
    "parse_peer",
    "proxy_header",
]

logger = logging.getLogger("handlers.kv.replication")

DEFAULT_TIMEOUT: Final = 2.0  # seconds a peer has to acknowledge a write
DEFAULT_MAX_PENDING: Final = 100_000  # writes waiting for one peer's acknowledgement
DEFAULT_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024  # their encoded bytes
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 2.0
MAX_REPLY_LINE: Final = 64 * 1024  # a longer reply line is bad input: the link goes down

# the PROXY headers a link sends first to peers that serve with --proxy-protocol: the
# LOCAL command of version 2 (no addresses: the peer keeps the real ones), or v1's
# UNKNOWN line
_PROXY_HEADERS: Final = {
    "v2": b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",
    "v1": b"PROXY UNKNOWN\r\n",
}


def proxy_header(version: str | None) -> bytes:
    """The header a link sends first for peers that want PROXY protocol ``version``
    (``v1``, ``v2``, ``any`` which takes v2; None: no header).

    Raises:
        ValueError: another version.
    """
    if version is None:
        return b""
    try:
        return _PROXY_HEADERS["v2" if version == "any" else version]
    except KeyError:
        raise ValueError(f"replication PROXY header: '{version}' is not v1, v2 or any") \
            from None


class LinkPhase(Enum):
    """Where a link is in its life."""

    DOWN = "down"
    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    UP = "up"
    CLOSED = "closed"


class LinkEvent(Enum):
    CONNECT = "connect"
    CONNECTED = "connected"
    ACCEPTED = "accepted"
    FAILED = "failed"
    CLOSE = "close"


_P, _E = LinkPhase, LinkEvent
LINK_LIFECYCLE: Final = TransitionTable[LinkPhase, LinkEvent]("replication link", {
    _P.DOWN: {_E.CONNECT: _P.CONNECTING, _E.FAILED: _P.DOWN, _E.CLOSE: _P.CLOSED},
    _P.CONNECTING: {_E.CONNECTED: _P.HANDSHAKE, _E.FAILED: _P.DOWN, _E.CLOSE: _P.CLOSED},
    _P.HANDSHAKE: {_E.ACCEPTED: _P.UP, _E.FAILED: _P.DOWN, _E.CLOSE: _P.CLOSED},
    _P.UP: {_E.FAILED: _P.DOWN, _E.CLOSE: _P.CLOSED},
    _P.CLOSED: {_E.FAILED: _P.CLOSED, _E.CLOSE: _P.CLOSED},
})


class PeerLink(asyncio.Protocol):
    """One persistent outbound connection to one peer (the protocol of every
    connection it makes).

    Attributes:
        host, port: the peer.
        phase: a :class:`LinkPhase`.
        pending: the writes sent and not yet acknowledged, oldest first:
            ``(sent at, ticket, size)``.
        acked, failed: writes this peer acknowledged, and failed over so far.
    """

    def __init__(self, replication: Replication, host: str, port: int) -> None:
        self.replication = replication
        self.host = host
        self.port = port
        self.phase = LinkPhase.DOWN
        self.pending: deque[tuple[float, Ticket, int]] = deque()
        self.pending_bytes = 0
        self.acked = 0
        self.failed = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._backoff = FIRST_BACKOFF
        self._timer: Any = None  # the acknowledgement deadline's or the reconnect's
        self._warned = False  # a warning said it is down, and it has not come up since
        self._out: list[bytes] = []  # writes of this loop turn, not yet written

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _move(self, event: LinkEvent) -> None:
        self.phase = LINK_LIFECYCLE.next(self.phase, event)

    # -- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        """Start a connect (from DOWN)."""
        self._timer = None
        if self.phase is not LinkPhase.DOWN:
            return
        self._move(LinkEvent.CONNECT)
        loop = self.replication.loop
        try:
            future = loop.connect_tcp(self.host, self.port, lambda: self,
                                      timeout=self.replication.timeout)
        except Exception as exc:  # a closed reactor, say: stay down
            self.down(f"cannot connect: {exc}")
            return
        cast(Future[Any], future).add_done_callback(self._connected)

    def _connected(self, future: Future[Any]) -> None:
        exc = future.exception()
        if exc is not None and self.phase is LinkPhase.CONNECTING:
            self.down(f"connect failed: {exc}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.phase is not LinkPhase.CONNECTING:  # closed meanwhile
            cast(asyncio.Transport, transport).abort()
            return
        self._transport = cast(asyncio.Transport, transport)
        self._buffer = b""
        self._move(LinkEvent.CONNECTED)
        replication = self.replication
        self._transport.write(replication.header + encode_repllink(replication.secret))
        self._arm(replication.loop.time() + replication.timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._transport = None
        if self.phase not in (LinkPhase.HANDSHAKE, LinkPhase.UP):
            return
        is_running = getattr(self.replication.loop, "is_running", None)
        if is_running is not None and not is_running():
            self.close()  # the reactor is closing its connections: this server stops
        else:
            self.down(f"connection lost ({exc})" if exc else "the peer closed the link")

    # -- replies ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while self.phase in (LinkPhase.HANDSHAKE, LinkPhase.UP):
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            self._reply(buffer[start:end])
            start = end + 2
        self._buffer = buffer[start:] if start < len(buffer) else b""
        if len(self._buffer) > MAX_REPLY_LINE and self.phase is not LinkPhase.DOWN:
            self.down(f"a reply line longer than {MAX_REPLY_LINE} bytes")

    def _reply(self, line: bytes) -> None:
        if self.phase is LinkPhase.HANDSHAKE:
            if line != b"+OK":
                self.down(f"the peer refused the link: {_shown(line)}")
                return
            self._move(LinkEvent.ACCEPTED)
            self._backoff = FIRST_BACKOFF
            self._warned = False
            self._cancel_timer()
            self.replication.up.append(self)
            self.replication.live += 1
            logger.info("kv replication: peer %s up", self.name)
            return
        if not self.pending or line.startswith(b"-REPLERR"):
            self.down(f"unexpected reply {_shown(line)}")
            return
        _sent, ticket, size = self.pending.popleft()
        self.pending_bytes -= size
        self.acked += 1
        if line[:1] == b"-":  # the command's own error there: the stores differ
            logger.warning("kv replication: peer %s answered a write with %s",
                           self.name, _shown(line))
        ticket.ack()
        if not self.pending:
            self._cancel_timer()

    # -- writes -------------------------------------------------------------------------

    def send(self, data: bytes, ticket: Ticket, now: float) -> bool:
        """Send one encoded write (UP only); False if that made the link go down.

        The writes of one loop turn go out in one ``write`` (a pipelined client's
        writes make one send to each peer, not one each)."""
        size = len(data)
        self.pending.append((now, ticket, size))
        self.pending_bytes += size
        replication = self.replication
        if (len(self.pending) > replication.max_pending
                or self.pending_bytes > replication.max_pending_bytes):
            self.down(f"more than {replication.max_pending} writes or "
                      f"{replication.max_pending_bytes} bytes wait for it")
            return False
        out = self._out
        out.append(data)
        if len(out) == 1:
            replication.loop.call_soon(self._flush)
        if self._timer is None:
            self._arm(now + replication.timeout)
        return True

    def _flush(self) -> None:
        out = self._out
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _arm(self, when: float) -> None:
        self._cancel_timer()
        self._timer = self.replication.loop.call_at(when, self._deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        """The oldest write's (or the handshake's) time is up, or a later one's is next."""
        self._timer = None
        timeout = self.replication.timeout
        if self.phase is LinkPhase.HANDSHAKE:
            self.down(f"no answer to the handshake within {timeout} s")
        elif self.phase is LinkPhase.UP and self.pending:
            oldest = self.pending[0][0]
            if self.replication.loop.time() >= oldest + timeout:
                self.down(f"a write unacknowledged for {timeout} s")
            else:
                self._arm(oldest + timeout)

    # -- going down ---------------------------------------------------------------------

    def down(self, reason: str) -> None:
        """Mark the peer down: abort the connection, fail what waits, reconnect later."""
        if self.phase in (LinkPhase.DOWN, LinkPhase.CLOSED):
            return
        self._leave(LinkEvent.FAILED, reason)
        self._timer = self.replication.loop.call_later(self._backoff, self.connect)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        """Stop for good (the server closes)."""
        self._leave(LinkEvent.CLOSE, "the server closes")

    def _leave(self, event: LinkEvent, reason: str) -> None:
        was_up = self.phase is LinkPhase.UP
        self._move(event)
        if was_up:
            self.replication.up.remove(self)
            self.replication.live -= 1
        self._cancel_timer()
        self._drop(reason, was_up)

    def _drop(self, reason: str, was_up: bool) -> None:
        pending, self.pending = self.pending, deque()
        self.pending_bytes = 0
        self.failed += len(pending)
        transport, self._transport = self._transport, None
        self._buffer = b""
        self._out.clear()
        # a peer is warned about when it goes away (or first fails to come), then
        # each retry is at debug level until it is up again; failed writes always warn
        quiet = (self._warned or self.phase is LinkPhase.CLOSED) and not pending
        self._warned = True
        log = logger.debug if quiet else logger.warning
        log("kv replication: peer %s down: %s; %d writes not replicated to it",
            self.name, reason, len(pending))
        if transport is not None:
            transport.abort()
        for _sent, ticket, _size in pending:
            ticket.fail()


def _shown(line: bytes) -> str:
    return "'" + line[:120].decode("utf-8", "backslashreplace") + "'"


class Replication:
    """A kv server's peers: where its writes go, and how many must acknowledge each.

    Args:
        peers: ``(host, port)`` of each peer.
        secret: what the links send in ``REPLLINK`` (the peers must have the same).
        min_replicas: acknowledgements a write waits for (None: 1 with peers, else 0);
            with fewer live peers a write is refused, unapplied, with ``NOREPLICAS``.
        timeout: seconds a peer has to connect, accept the link and acknowledge each
            write before it is marked down.
        max_pending, max_pending_bytes: writes (and their bytes) that may wait for one
            peer; past either the peer is marked down.
        header: bytes each link sends first (see :func:`proxy_header`).

    Raises:
        ValueError: ``min_replicas`` below 0 or above the number of peers, a timeout
            or bound that is not positive.
    """

    def __init__(
        self,
        peers: Sequence[tuple[str, int]],
        secret: bytes,
        *,
        min_replicas: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        header: bytes = b"",
    ) -> None:
        if min_replicas is None:
            min_replicas = 1 if peers else 0
        if not 0 <= min_replicas <= len(peers):
            raise ValueError(f"min_replicas must be from 0 to the number of peers "
                             f"({len(peers)}), not {min_replicas}")
        if not timeout > 0 or max_pending < 1 or max_pending_bytes < 1:
            raise ValueError("the replication timeout and bounds must be positive")
        self.secret = secret
        self.min_replicas = min_replicas
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.header = header
        self.live = 0  # links UP
        self.up: list[PeerLink] = []  # those links, in the order they came up
        self.loop: Any = None
        self.links = [PeerLink(self, host, port) for host, port in peers]

    def start(self, loop: Any) -> None:
        """Connect every link, on ``loop`` (a reactor: it needs ``connect_tcp``).

        Raises:
            TypeError: the loop cannot connect out.
        """
        if self.loop is not None:
            return
        if not self.links:
            self.loop = loop
            return
        if not callable(getattr(loop, "connect_tcp", None)):
            raise TypeError("kv replication needs a reactor (its connect_tcp) to reach "
                            "its peers")
        self.loop = loop
        for link in self.links:
            link.connect()

    def replicate(self, writes: list[tuple[int, list[bytes]]],
                  owner: TicketOwner | None) -> Ticket:
        """Send ``writes`` (database, arguments; several: one transaction's) to every
        live peer; the ticket is done once ``min_replicas`` of them acknowledged."""
        up = self.up
        ticket = Ticket(owner, self.min_replicas, len(up))
        if not up:
            return ticket
        data = encode_replwrite(*writes[0]) if len(writes) == 1 else encode_replexec(writes)
        now = self.loop.time()
        for link in list(up) if len(up) > 1 else up:  # a send may take a link out
            link.send(data, ticket, now)  # a link that goes down fails its part
        return ticket

    def close(self) -> None:
        """Close every link for good."""
        for link in self.links:
            link.close()

    def describe(self) -> list[dict[str, object]]:
        """Each peer's state, for logs and tests."""
        return [{"peer": link.name, "phase": link.phase.value, "pending": len(link.pending),
                 "acked": link.acked, "failed": link.failed} for link in self.links]


def parse_peer(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as ``(host, port)``.

    Raises:
        ValueError: not of that form, or a port out of 1-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not HOST:PORT with a port from 1 to 65535")
    return host.removeprefix("[").removesuffix("]"), int(port)

