"""A client connection of a replicating kv server: writes wait for the peers.

Role: :class:`ReplicatingProtocol`, the :class:`~.connection.KVProtocol` a
:class:`~.server.KVServer` with replication makes (a server without it makes plain
ones, which pay nothing for this). It

* refuses a write with ``NOREPLICAS`` (unapplied) while fewer than ``min_replicas``
  peers are live, as Redis's ``min-replicas-to-write``;
* applies a write, sends it to the live peers (:meth:`~.peers.Replication.replicate`)
  and holds its reply back until ``min_replicas`` of them acknowledged it (if too few
  do, the reply becomes the ``NOREPLICAS`` error that says the write was applied here);
  a held reply holds back the replies after it on the connection
  (:class:`~.holdback.ReplyQueue`); a write that fails here (``WRONGTYPE`` ...) is not
  sent;
* sends a transaction's writes as they ran in EXEC (each with the database it ran in)
  in one ``REPLEXEC``, which peers apply together, and holds EXEC's reply until it is
  acknowledged;
* answers ``REPLLINK``, ``REPLWRITE`` and ``REPLEXEC`` (:mod:`.replwire`) from its
  peers' links, and never replicates what a link writes.

Expiry
------
A write goes to the peers as the client sent it, so expiry times travel as given: a
relative one (``SET EX``, ``EXPIRE``, ``PEXPIRE``) is counted from each host's own clock
when the host applies it (a peer's deadline is later by the time the write took to
reach it, at most the replication timeout, and never off by a clock difference); an
absolute one (``EXAT``, ``PXAT``) is compared with each host's wall clock, so hosts whose
clocks differ expire it that much apart. At the extremes the hosts agree: a time in the
past or a TTL of zero or less deletes the key everywhere; a TTL so large that now plus
it overflows 64-bit Unix milliseconds (some 290 million years) is refused everywhere,
except in the few milliseconds' window where the origin accepted it and a peer, later,
refuses it: the peer answers with the error, the origin counts it as an answer and logs
it (the stores then differ on that key).

Must not import ``socket``, ``selectors``, ``threading`` or ``os``.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Final, cast

from handlers.framers.resp import OK, encode_error

from .connection import KVProtocol
from .holdback import ReplyQueue, Ticket
from .replwire import (
    NOREPLICAS,
    NOREPLICAS_AFTER,
    REPLEXEC,
    REPLLINK,
    REPLWRITE,
    ReplicationInputError,
    parse_replexec,
    parse_replwrite,
)
from .session_commands import _exec
from .table import COMMANDS, Command, CommandError

if TYPE_CHECKING:
    import asyncio

    from .peers import Replication
    from .server import KVServer

__all__ = ["MAX_HELD", "ReplicatingProtocol"]

logger = logging.getLogger("handlers.kv.replication")

MAX_HELD: Final = 10_000  # replies held on one connection before it stops reading
EXECABORT_NOREPLICAS: Final = encode_error(
    "EXECABORT Transaction discarded because of: NOREPLICAS Not enough good replicas "
    "to write.")
NOT_A_LINK: Final = encode_error("REPLERR REPLWRITE and REPLEXEC are for replication "
                                 "links (REPLLINK)")

_RECORDERS: dict[str, Command] = {}


def _recorder(command: Command) -> Command:
    """``command`` with a handler that also notes each write that succeeded, with its
    database, on the connection (for EXEC, which runs the queued handlers itself)."""
    found = _RECORDERS.get(command.name)
    if found is None:
        inner = command.handler

        def handler(c: KVProtocol, a: list[bytes]) -> bytes:
            reply = inner(c, a)
            if reply[:1] != b"-":
                cast(ReplicatingProtocol, c).recorded.append((c.db, a))
            return reply

        found = _RECORDERS[command.name] = replace(command, handler=handler)
    return found


class ReplicatingProtocol(KVProtocol):
    """One client connection (or one peer's replication link) of a replicating server.

    Attributes:
        link: whether the connection authenticated as a replication link.
        recorded: the writes EXEC ran, with their databases (empty between commands).
    """

    __slots__ = ("_flushing", "_held", "_hold_paused", "_replication", "link", "recorded")

    def __init__(self, server: KVServer) -> None:
        super().__init__(server)
        replication = server.replication
        assert replication is not None
        self._replication: Replication = replication
        self._held = ReplyQueue()
        self._hold_paused = False
        self._flushing = False
        self.link = False
        self.recorded: list[tuple[int, list[bytes]]] = []

    def execute(self, args: list[bytes]) -> bytes:
        command = COMMANDS.get(args[0]) or COMMANDS.get(args[0].lower())
        ticket: Ticket | None = None
        if command is None:
            name = args[0].upper()
            if name in (REPLWRITE, REPLEXEC):
                reply = self._replicated(args, name)
            elif name == REPLLINK:
                reply = self._repllink(args)
            else:
                reply = KVProtocol.execute(self, args)
        elif self.link or not self._replication.links:
            reply = KVProtocol.execute(self, args)
        elif command.write and self._multi is None:
            reply, ticket = self._write(command, args)
        elif command.handler is _exec and self._multi is not None:
            reply, ticket = self._exec(args)
        else:
            reply = KVProtocol.execute(self, args)
        held = self._held
        if ticket is not None and not ticket.done:
            held.add(reply, ticket)
            if len(held) > MAX_HELD and not self._hold_paused and self._transport is not None:
                self._hold_paused = True  # a client pipelining far ahead: stop reading
                self._transport.pause_reading()
            return b""
        if ticket is not None and ticket.failed:
            reply = NOREPLICAS_AFTER  # a peer went down as the write was sent
        if held:
            held.add(reply)
            return b""
        return reply

    # -- writes from clients ------------------------------------------------------------

    def _write(self, command: Command, args: list[bytes]) -> tuple[bytes, Ticket | None]:
        replication = self._replication
        arity = command.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            return KVProtocol.execute(self, args), None
        self._server.commands_processed += 1
        if replication.live < replication.min_replicas:
            return NOREPLICAS, None
        try:  # what KVProtocol.execute does for a write outside MULTI
            reply = command.handler(self, args)
        except CommandError as exc:
            return exc.reply, None  # refused here (WRONGTYPE ...): nothing to send
        if reply[:1] == b"-":
            return reply, None
        return reply, replication.replicate([(self.db, args)], self)

    def _exec(self, args: list[bytes]) -> tuple[bytes, Ticket | None]:
        queued = self._multi
        assert queued is not None
        if len(args) != 1 or not any(command.write for command, _ in queued):
            return KVProtocol.execute(self, args), None
        replication = self._replication
        if replication.live < replication.min_replicas:
            self._server.commands_processed += 1
            self._multi = None
            self.unwatch()
            return EXECABORT_NOREPLICAS, None
        self._multi = [(_recorder(command) if command.write else command, words)
                       for command, words in queued]
        recorded: list[tuple[int, list[bytes]]] = []
        self.recorded = recorded
        try:
            reply = KVProtocol.execute(self, args)
        finally:
            self.recorded = []
        if not recorded:
            return reply, None
        return reply, replication.replicate(recorded, self)

    def ticket_done(self) -> None:
        """A held write is settled: write what may go, on the next loop turn (never
        inside a chunk's commands, whose earlier replies are not written yet)."""
        if not self._flushing and self._transport is not None:
            self._flushing = True
            self._replication.loop.call_soon(self._flush_held)

    def _flush_held(self) -> None:
        self._flushing = False
        transport = self._transport
        if transport is None:
            return
        held = self._held
        data = held.ready()
        if data:
            transport.write(data)
        if held:
            return
        if self._closing:
            transport.close()
        elif self._hold_paused:
            self._hold_paused = False
            if not self._write_paused:
                transport.resume_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._hold_paused and self._transport is not None:
            self._transport.pause_reading()  # still too many replies held

    def _finish(self, transport: asyncio.Transport) -> None:
        if not self._held:
            transport.close()
        # else _flush_held closes once the held replies are written

    def begin_shutdown(self) -> bool | None:
        """The graceful stop of ``reactor serve``: a peer's link is closed now (its
        peer marks this host down and stops sending here: the host is leaving); a
        client with replies held back runs no further command and is closed once they
        are written; any other connection drains as usual (None)."""
        transport = self._transport
        if transport is None or not (self.link or self._held):
            return None
        self._closing = True
        if self.link:
            transport.close()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._held.clear()

    # -- the links of peers -------------------------------------------------------------

    def _repllink(self, args: list[bytes]) -> bytes:
        self._server.commands_processed += 1
        secret = self._replication.secret
        if len(args) != 2 or not hmac.compare_digest(args[1], secret):
            logger.warning("kv client %s: REPLLINK refused: wrong replication secret; "
                           "closing", self.address)
            self._closing = True
            return ReplicationInputError("wrong replication secret").reply
        self.link = True
        self.authenticated = True
        logger.info("kv client %s: a replication link", self.address)
        return OK

    def _replicated(self, args: list[bytes], name: bytes) -> bytes:
        """Apply a peer's REPLWRITE or REPLEXEC (checked whole first); ``+OK`` or the
        first command error."""
        self._server.commands_processed += 1
        if not self.link:
            return NOT_A_LINK
        try:
            writes = [parse_replwrite(args)] if name == REPLWRITE else parse_replexec(args)
        except ReplicationInputError as exc:
            logger.info("kv replication link %s: %s; closing", self.address, exc)
            self._closing = True
            return exc.reply
        reply = OK
        for db, command, words in writes:
            if db != self.db:
                self.select(db)
            try:
                command.handler(self, words)
            except CommandError as exc:
                if reply is OK:
                    reply = exc.reply
        return reply
