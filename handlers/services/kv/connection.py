"""One client connection of the key-value service: RESP in, replies out.

Role: :class:`KVProtocol`, an :class:`asyncio.Protocol` that feeds a
:class:`~handlers.framers.resp.RespParser`, runs every complete command of a chunk
through :data:`~handlers.services.kv.table.COMMANDS` and writes all their replies in one
``write``.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: the protocol only
sees its transport, and time and timers come from the loop it is bound to.

Request deadline
----------------
``KVServer(request_timeout=S)`` gives every command an absolute deadline against
slowloris clients: once the first bytes of a command are buffered, the whole command
must arrive within S seconds, or the connection is closed with a logged reason. The
deadline is armed when a chunk leaves a partial command, moved when a later chunk
completes commands and leaves the start of another, removed when nothing partial is
left, and suspended while the protocol is paused for writing (then the commands waiting
are the server's backlog, not the client's slowness). On the reactor it is the
transport's deadline; on asyncio a ``loop.call_later`` timer.

Flow control
------------
Callbacks arrive as ``connection_made [data_received* | pause_writing resume_writing]*
[eof_received] connection_lost``. When the transport's write buffer passes its high water
mark (``pause_writing``), the protocol stops running commands and pauses reading; the
commands already received stay in the parser. ``resume_writing`` runs them and resumes
reading. A client that never reads therefore costs at most the high water mark, about one
flush (:data:`FLUSH_SIZE`) and one received chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final, cast

from handlers.base import start_request_deadline, stop_request_deadline
from handlers.framers.resp import (
    NULL_BULK,
    NULL_RESP3,
    QUEUED,
    RespProtocolError,
    encode_error,
)

from .auth import EXECABORT_NOAUTH, NOAUTH
from .session_commands import _exec
from .store import KVStore, Scheduler
from .table import COMMANDS as _COMMANDS
from .table import Command, CommandError, _arity_error, _unknown_command
from .watch import Watch

if TYPE_CHECKING:
    from .server import KVServer

__all__ = ["FLUSH_SIZE", "KVProtocol"]

# the logger keeps the name it had when the service was one module, handlers.kv
logger = logging.getLogger("handlers.kv")

FLUSH_SIZE: Final = 64 * 1024  # replies are written once this much is pending

# Bound by assignment, not by the import above, on purpose: CPython 3.11 compiles
# ``NAME.get(...)`` for a NAME bound by an import as an attribute load and a call (it
# takes NAME for a module), which makes a bound method on every command; for an
# assigned NAME it compiles a method call, as when the table lived in this module.
COMMANDS: Final = _COMMANDS


def _loop_of(transport: asyncio.BaseTransport) -> Scheduler | None:
    """The loop a transport runs on: the reactor of a reactor transport, else the
    running asyncio loop."""
    row = transport.get_extra_info("connection")
    reactor = getattr(row, "reactor", None)
    if reactor is not None:
        return reactor  # type: ignore[no-any-return]
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class KVProtocol(asyncio.Protocol):
    """One client connection of a :class:`KVServer`.

    Callback order: ``connection_made [data_received* | pause_writing resume_writing]*
    [eof_received] connection_lost``.

    Attributes:
        authenticated: False while the server has a password this connection has not
            given yet (AUTH or HELLO AUTH); see :mod:`.auth`.
        requests: the commands run for this client so far (counted once per chunk of
            input, from the server's ``commands_processed``): what ``reactor serve
            --access-log`` reports as the connection's requests.
    """

    __slots__ = (
        "_closing",
        "_deadline",
        "_multi",
        "_multi_dirty",
        "_parser",
        "_server",
        "_transport",
        "_watch",
        "_write_paused",
        "authenticated",
        "client_id",
        "db",
        "lib_name",
        "lib_ver",
        "name",
        "null",
        "peer",
        "requests",
        "resp3",
        "store",
    )

    def __init__(self, server: KVServer) -> None:
        self._server = server
        self.store = server.store
        self._parser = server.new_parser()
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        self._closing = False
        self._deadline: object | None = None  # see handlers.base.start_request_deadline
        self._multi: list[tuple[Command, list[bytes]]] | None = None
        self._multi_dirty = False
        self._watch: Watch | None = None  # see .watch; None until the first WATCH
        self.db = 0  # the index of the selected database, self.store
        self.client_id = 0
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.peer: Any = None
        self.requests = 0  # commands run for this client (the access log reads it)
        self.resp3 = False
        self.null = NULL_BULK  # the null reply of the protocol version in use
        # without a password every connection is authenticated from the start
        self.authenticated = server.requirepass is None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        if not server.bound:
            loop = _loop_of(transport)
            if loop is not None:
                server.bind(loop, keep_bound=True)
        server.connections_total += 1
        self.client_id = server.connections_total
        server.clients[self.client_id] = self
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        if not self._write_paused and not self._closing:
            if self._server.request_timeout is None:
                self._run_commands()
            else:
                self._run_timed()

    def eof_received(self) -> bool | None:
        self._stop_deadline()  # nothing more can arrive
        return None  # close once the replies are flushed

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_deadline()
        self._server.clients.pop(self.client_id, None)
        self._closing = True
        self._transport = None
        self._multi = None
        self.unwatch()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._stop_deadline()  # the commands waiting now are ours to run, not late
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is None or self._closing:
            return
        if self._server.request_timeout is None:
            self._run_commands()
        else:
            self._run_timed()
        if not self._write_paused and not self._closing and self._transport is not None:
            self._transport.resume_reading()

    # -- the request deadline ---------------------------------------------------------

    def _run_timed(self) -> None:
        """:meth:`_run_commands`, then arm, move or remove the request deadline."""
        server = self._server
        before = server.commands_processed + server.protocol_errors
        self._run_commands()
        if self._closing or self._write_paused or self._transport is None:
            self._stop_deadline()
        elif not self._parser.idle:
            completed = server.commands_processed + server.protocol_errors != before
            if self._deadline is None or completed:
                assert server.request_timeout is not None
                self._deadline = start_request_deadline(
                    self._deadline, self._transport, server.request_timeout,
                    self._request_expired)
        elif self._deadline is not None:
            self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            stop_request_deadline(self._deadline)
            self._deadline = None

    def _request_expired(self) -> None:
        """The deadline passed (asyncio; on the reactor the transport closes)."""
        self._deadline = None
        if self._transport is not None and not self._closing:
            logger.info("kv client %s: closing: request deadline: no complete command "
                        "within %s s", self.address, self._server.request_timeout)
            self._closing = True
            self._transport.abort()

    # -- running commands -------------------------------------------------------------

    def _run_commands(self) -> None:
        """Run every complete command received, writing the replies in one ``write``
        (or in :data:`FLUSH_SIZE` pieces, stopping when the transport pauses us)."""
        parser = self._parser
        transport = self._transport
        assert transport is not None
        out: list[bytes] = []
        pending = 0
        # one test per chunk, none per command: see _execute_unauthenticated
        execute = self.execute if self.authenticated else self._execute_unauthenticated
        counted = self._server.commands_processed  # per chunk, not per command
        while True:
            try:
                args = parser.next_command()
            except RespProtocolError as exc:
                self._server.protocol_errors += 1
                logger.info("kv client %s: %s%s", self.address, exc.message,
                            "; closing" if exc.fatal else "")
                out.append(exc.reply)
                if exc.fatal:
                    self._closing = True
                    break
                continue
            if args is None:
                break
            reply = execute(args)
            out.append(reply)
            if self._closing:  # QUIT
                break
            pending += len(reply)
            if pending >= FLUSH_SIZE:
                transport.write(b"".join(out))
                out.clear()
                pending = 0
                if self._write_paused or self._transport is None:
                    self.requests += self._server.commands_processed - counted
                    return  # the rest waits in the parser for resume_writing
        self.requests += self._server.commands_processed - counted
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._closing:
            self._finish(transport)

    def _finish(self, transport: asyncio.Transport) -> None:
        """Close after the replies written (QUIT, a fatal protocol error); a
        replicating connection waits for the replies it holds back."""
        transport.close()

    def execute(self, args: list[bytes]) -> bytes:
        """Run one command (a non-empty list of bytes) and return its encoded reply."""
        command = COMMANDS.get(args[0])
        if command is None:
            command = COMMANDS.get(args[0].lower())
            if command is None:
                self._server.commands_processed += 1
                if self._multi is not None:
                    self._multi_dirty = True
                return _unknown_command(args)
        self._server.commands_processed += 1
        arity = command.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            if command.handler is _exec:  # a refused EXEC aborts, in MULTI or not (Redis 7)
                self._multi = None
                self.unwatch()
                return encode_error("EXECABORT Transaction discarded because of: wrong "
                                    "number of arguments for 'exec' command")
            if self._multi is not None:
                self._multi_dirty = True
            return _arity_error(command.name)
        if self._multi is not None and not command.immediate:
            self._multi.append((command, args))
            return QUEUED
        try:
            return command.handler(self, args)
        except CommandError as exc:
            return exc.reply

    def _execute_unauthenticated(self, args: list[bytes]) -> bytes:
        """:meth:`execute` for a connection that has not authenticated yet: as Redis 7,
        an unknown command or a wrong number of arguments gets its usual error, a
        command flagged ``no_auth`` (AUTH, HELLO, QUIT) runs, any other gets NOAUTH."""
        if self.authenticated:  # an AUTH earlier in the same chunk
            return self.execute(args)
        command = COMMANDS.get(args[0]) or COMMANDS.get(args[0].lower())
        if command is None or command.no_auth:
            return self.execute(args)
        arity = command.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            return self.execute(args)
        self._server.commands_processed += 1
        return EXECABORT_NOAUTH if command.handler is _exec else NOAUTH

    def close(self) -> None:
        """Close the connection once the pending replies are written."""
        self._closing = True

    def select(self, index: int) -> None:
        """Make database ``index`` (checked by the caller) this connection's."""
        self.store = self._server.databases[index]
        self.db = index

    def watch(self, store: KVStore, key: bytes) -> None:
        """WATCH ``key`` of ``store`` until :meth:`unwatch`."""
        if self._watch is None:
            self._watch = Watch()
        self._watch.add(store, key)

    def unwatch(self) -> None:
        """Forget every watched key (UNWATCH, EXEC, DISCARD, the end)."""
        if self._watch is not None:
            self._watch.clear()

    def watched_key_changed(self) -> bool:
        """Whether a key this connection watches changed since it was watched."""
        return self._watch is not None and self._watch.changed()

    def set_protocol_version(self, version: int) -> None:
        """Encode later replies in RESP2 or RESP3."""
        self.resp3 = version == 3
        self.null = NULL_RESP3 if self.resp3 else NULL_BULK

    @property
    def address(self) -> str:
        """The client's address as people write it: ``host:port``, ``[v6]:port``, a
        Unix socket's path (empty for an unnamed client socket)."""
        peer = self.peer
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = str(peer[0])
            return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        if isinstance(peer, bytes):  # a Linux abstract socket address
            return peer.decode("utf-8", "backslashreplace")
        return str(peer or "")

    def describe(self) -> str:
        """One line in the format of ``CLIENT LIST``."""
        return (
            f"id={self.client_id} addr={self.address} name={self.name.decode('utf-8', 'replace')} "
            f"db={self.db} multi={-1 if self._multi is None else len(self._multi)} "
            f"resp={3 if self.resp3 else 2} lib-name={self.lib_name.decode('utf-8', 'replace')} "
            f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}"
        )
