"""The control socket: look into a running reactor and act on its connections.

::

    control = serve_control(reactor, "/run/app.ctl", on_drain=server.stop)
    ...                     # reactor ctl /run/app.ctl conns --sort idle
    control.close()

A :class:`ControlServer` is a Unix stream listener on the reactor it watches, created
owner-only (mode 0600 through the umask at bind, as ``listen_unix``'s ``mode`` does;
an existing path that is not a socket is refused, a stale socket replaced). Each
client speaks the line protocol of :mod:`reactor.sansio.control` (one command per line,
each reply ending in an empty line); the table's rows are read through
:mod:`reactor.sansio.snapshot`.

Theory of operation
-------------------
*Cost.* Nothing runs until a client sends a command: the listener is one more
registered descriptor, idle in the selector, and no transport or row changes for it.
A command reads the table once, on the reactor's thread, between callbacks, so the
snapshot is consistent.

*Control clients are rows too.* They are accepted by this listener into the same
table, so they are counted in the loop's life totals (opened, closed, bytes); they are
marked with the role ``control``: ``conns`` shows them only with ``--all``, and
``info`` counts them apart (``control_clients``) from the served connections.

*Bounds.* A command line is at most :data:`~reactor.sansio.control.MAX_LINE` bytes; a
longer one gets an error line and the client is closed. At most ``max_clients``
clients are served at once (more wait in the backlog). A client that stops reading
is bounded like any connection: once its queued output passes the high-water mark its
commands wait, unread, in the kernel (reading is paused), so at most one reply beyond
the mark is queued, and after ``write_timeout`` seconds without progress it is
aborted.

*Acting.* ``close ID`` and ``abort ID`` act on rows the reactor owns; a request handed
to a worker thread or child process is refused (its socket is the worker's now).
``drain`` answers first and calls ``on_drain`` from the next iteration, so the reply is
on its way before the stop begins; without ``on_drain`` the command is refused.

Must not import the facades or the command line.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import os
import socket
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..sansio.connection import ConnState, Row
from ..sansio.control import (
    HELP,
    MAX_LINE,
    Command,
    CommandError,
    LineReader,
    LineTooLong,
    encode_error,
    encode_json,
    encode_text,
    parse_command,
    render_info,
)
from ..sansio.snapshot import (
    ConnSnapshot,
    RowIds,
    format_address,
    render_table,
    select_rows,
    snapshot_row,
)
from .transports import TransportOptions

if TYPE_CHECKING:
    from .listeners import Listener
    from .loop import Reactor

__all__ = [
    "DEFAULT_CONTROL_HIGH_WATER",
    "DEFAULT_CONTROL_WRITE_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "ControlServer",
    "close_listener",
    "listener_facts",
    "mark_listener",
    "serve_control",
    "snapshot_table",
]

logger = logging.getLogger("reactor.control")

DEFAULT_MAX_CLIENTS: Final = 8
DEFAULT_CONTROL_WRITE_TIMEOUT: Final = 30.0
DEFAULT_CONTROL_HIGH_WATER: Final = 64 * 1024
# rows whose socket a worker owns: the reactor must not close them
_HANDED_OVER: Final = frozenset({
    ConnState.DISPATCHED_INLINE, ConnState.DISPATCHED_THREAD, ConnState.DISPATCHED_CHILD,
    ConnState.FINISHED,
})
_GONE: Final = frozenset({ConnState.ENDING, ConnState.CLOSED})

# the listeners whose clients are not served connections (control, observe), with
# their role, so that a snapshot can mark their clients (weak: a closed control server
# leaves no trace)
_ROLES: weakref.WeakKeyDictionary[Listener, str] = weakref.WeakKeyDictionary()


def mark_listener(listener: Listener, role: str) -> None:
    """Mark ``listener``'s clients with ``role`` in snapshots (not ``served``)."""
    _ROLES[listener] = role


def close_listener(reactor: Reactor, listener: Listener) -> None:
    """Close ``listener`` and the connections it accepted."""
    for row in reactor.connections:
        if getattr(row, "listener", None) is listener:
            row.close()  # type: ignore[attr-defined]
    listener.close()


def snapshot_table(reactor: Reactor, ids: RowIds,
                   include_control: bool = False) -> list[ConnSnapshot]:
    """Every row of ``reactor``'s table, named by ``ids`` (the rows of control and
    observation listeners only with ``include_control``)."""
    now = reactor.time()
    rows = list(reactor.connections)
    ids.retain(rows)
    out = []
    seen: dict[int, tuple[str, str]] = {}  # per listener: its role and address, once
    for row in rows:
        listener = getattr(row, "listener", None)
        facts = seen.get(id(listener))
        if facts is None:
            facts = seen[id(listener)] = (
                _ROLES.get(listener, "served") if listener is not None else "served",
                format_address(listener.address) if listener is not None else "-")
        role, where = facts
        if role != "served" and not include_control:
            continue
        out.append(snapshot_row(row, ids.of(row), now, role=role, listener=where))
    return out


def _version() -> str:
    package = sys.modules.get("reactor")  # the public face, imported before any layer
    return str(getattr(package, "__version__", "unknown"))


def listener_facts(listener: Listener) -> dict[str, Any]:
    """What ``info`` and the status page say about a listener."""
    address = listener.address
    family = listener.sock.family if address is not None else None
    if address is None:
        state = "closed"
    elif listener.paused:
        state = "paused"
    elif listener.max_connections is not None and listener.active >= listener.max_connections:
        state = "at-cap"
    else:
        state = "accepting"
    return {
        "address": format_address(address),
        "kind": "unix" if family == getattr(socket, "AF_UNIX", None) else "tcp",
        "role": _ROLES.get(listener, "served"),
        "refused": listener.refused,
        "state": state,
        "active": listener.active,
        "accepted": listener.accepted,
        "max_connections": listener.max_connections,
        "accept_batch": listener.accept_batch,
    }


class ControlServer:
    """A control socket on a reactor (made by :func:`serve_control`).

    Args:
        on_drain: what ``drain`` calls on the reactor's thread (e.g. a graceful stop);
            None refuses ``drain``.
        describe: returns facts about the server for ``info`` (under ``server``).
        mode: the socket file's permissions (default: only the owner may connect).
        max_clients: control clients served at once (more wait in the backlog).
        write_timeout: abort a client whose replies made no progress this long.
        high_water: queued reply bytes past which a client's commands wait.
        max_line: the longest command line, in bytes.

    Attributes:
        reactor: the reactor it watches.
        path: the socket's path.
        listener: its Unix listener.
        started: the reactor clock's reading when it started (``info``'s uptime).
    """

    def __init__(
        self, reactor: Reactor, path: str, *,
        on_drain: Callable[[], object] | None = None,
        describe: Callable[[], Mapping[str, Any]] | None = None,
        mode: int = 0o600,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        write_timeout: float = DEFAULT_CONTROL_WRITE_TIMEOUT,
        high_water: int = DEFAULT_CONTROL_HIGH_WATER,
        max_line: int = MAX_LINE,
    ) -> None:
        if path.startswith(("\0", "@")):
            raise ValueError("a control socket needs a filesystem path: an abstract "
                             "socket has no permissions, any local user could connect")
        self.reactor = reactor
        self.path = path
        self.on_drain = on_drain
        self.describe = describe
        self.max_line = max_line
        self.started = reactor.time()
        self._started_wall = datetime.datetime.now(datetime.timezone.utc)
        self._ids = RowIds()
        options = TransportOptions(write_timeout=write_timeout, high_water=high_water)
        self.listener: Listener = reactor.listen_unix(
            path, lambda: _ControlProtocol(self), mode=mode, max_connections=max_clients,
            backlog=max_clients, options=options)
        mark_listener(self.listener, "control")
        logger.info("control socket on %s", path)

    def close(self) -> None:
        """Stop listening (the path is removed) and close the control clients."""
        close_listener(self.reactor, self.listener)

    # -- reading the table --------------------------------------------------------------

    def snapshot(self, include_control: bool = False) -> list[ConnSnapshot]:
        """Every row of the table (control clients only with ``include_control``)."""
        return snapshot_table(self.reactor, self._ids, include_control)

    def info(self) -> dict[str, Any]:
        """What ``info`` reports, as plain values."""
        stats = self.reactor.statistics()
        served = self.snapshot()
        by_state = collections.Counter(row.state for row in served)
        info: dict[str, Any] = {
            "version": _version(),
            "pid": os.getpid(),
            "python": ".".join(str(n) for n in sys.version_info[:3]),
            "started": self._started_wall.isoformat(timespec="seconds"),
            "uptime": round(self.reactor.time() - self.started, 3),
            "backend": stats.backend,
            "connections": len(served),
            "by_state": dict(sorted(by_state.items())),
            "control_clients": stats.open - len(served),
            "loop": {
                "iterations": stats.iterations, "opened_total": stats.opened_total,
                "closed_total": stats.closed_total, "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out, "write_buffered": stats.write_buffered,
                "discarded": stats.discarded, "pending_timers": stats.pending_timers,
                "timer_heap": stats.timer_heap, "ready_callbacks": stats.ready_callbacks,
            },
            # stream connections closed, by reason (reactor.sansio.closes)
            "closes": dict(stats.closes),
            "listeners": [listener_facts(listener) for listener in self.reactor.listeners],
        }
        if self.reactor.health is not None:
            info["loop_health"] = self.reactor.health.facts()
        if self.describe is not None:
            try:
                info["server"] = dict(self.describe())
            except Exception as exc:  # a hook's bug must not cost the operator the reply
                logger.exception("the describe hook raised")
                info["server"] = {"error": repr(exc)}
        return info

    # -- commands -------------------------------------------------------------------------

    def execute(self, command: Command, client: asyncio.BaseTransport | None = None) -> bytes:
        """Run ``command`` and return its reply (bytes, ending in the empty line)."""
        try:
            return _COMMANDS[command.name](self, command, client)
        except CommandError as exc:
            return encode_error(str(exc), command.json)
        except Exception as exc:  # a bug here must not cost the server, nor this client
            logger.exception("the %s command failed", command.name)
            return encode_error(f"{command.name} failed: {exc!r} (logged)", command.json)

    def _info(self, command: Command, client: Any) -> bytes:
        info = self.info()
        return encode_json(info) if command.json else encode_text(render_info(info))

    def _conns(self, command: Command, client: Any) -> bytes:
        rows = select_rows(self.snapshot(command.all), state=command.state,
                           peer=command.peer, sort=command.sort)
        shown = rows if command.limit is None else rows[:command.limit]
        dicts = [row.as_dict() for row in shown]
        if command.json:
            return encode_json({"connections": dicts, "total": len(rows)})
        lines = render_table(dicts)
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more (--limit {command.limit})")
        return encode_text(lines)

    def _find(self, ident: int) -> Row:
        row = self._ids.find(ident)
        if row is None or row not in self.reactor.connections or row.state in _GONE:
            raise CommandError(f"no connection {ident} (ids come from conns)")
        if row.state in _HANDED_OVER:
            raise CommandError(f"connection {ident} is {row.state.value}: a worker owns "
                               "its socket, the reactor cannot close it")
        return row

    def _close(self, command: Command, client: Any) -> bytes:
        assert command.target is not None
        row = self._find(command.target)
        act = getattr(row, command.name, None)
        if not callable(act):
            raise CommandError(f"connection {command.target} cannot be closed from here")
        peer = format_address(row.peername)
        logger.info("%s connection %d (%s) [%s]", command.name, command.target,
                    peer, row.state.name)
        act()
        done = "closing" if command.name == "close" else "aborted"
        return _ok(command, f"{done} {command.target} ({peer})", id=command.target)

    def _drain(self, command: Command, client: Any) -> bytes:
        if self.on_drain is None:
            raise CommandError("drain is not available here: no stop hook was given")
        logger.info("drain requested")
        self.reactor.call_soon(self.on_drain)
        return _ok(command, "draining: no longer accepting; exiting when connections end")

    def _loglevel(self, command: Command, client: Any) -> bytes:
        root = logging.getLogger()
        was = logging.getLevelName(root.getEffectiveLevel())
        if command.level is None:
            return _ok(command, f"log level {was.lower()}", level=was)
        root.setLevel(command.level)
        logger.info("log level %s (was %s)", command.level.lower(), was.lower())
        return _ok(command, f"log level {command.level.lower()} (was {was.lower()})",
                   level=command.level, was=was)

    def _help(self, command: Command, client: Any) -> bytes:
        return encode_json({"help": list(HELP)}) if command.json else encode_text(HELP)

    def _quit(self, command: Command, client: Any) -> bytes:
        if client is not None:
            self.reactor.call_soon(client.close)
        return _ok(command, "bye")


def _ok(command: Command, message: str, **facts: Any) -> bytes:
    if command.json:
        return encode_json({"ok": message, **facts})
    return encode_text([f"ok: {message}"])


_COMMANDS: Final[dict[str, Callable[[ControlServer, Command, Any], bytes]]] = {
    "info": ControlServer._info,
    "conns": ControlServer._conns,
    "close": ControlServer._close,
    "abort": ControlServer._close,
    "drain": ControlServer._drain,
    "loglevel": ControlServer._loglevel,
    "help": ControlServer._help,
    "quit": ControlServer._quit,
}


class _ControlProtocol(asyncio.Protocol):
    """One control client: lines in, replies out; commands wait while writing is
    paused (see the module's bounds)."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.reader = LineReader(server.max_line)
        self.pending: collections.deque[bytes] = collections.deque()
        self.transport: Any = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        logger.debug("client connected")

    def data_received(self, data: bytes) -> None:
        try:
            self.pending.extend(self.reader.feed(data))
        except LineTooLong as exc:
            logger.info("%s; closing that client", exc)
            self.transport.write(encode_error(f"{exc}; closing the connection"))
            self.transport.close()
            return
        self._run()

    def _run(self) -> None:
        transport = self.transport
        while self.pending and not self.paused and not transport.is_closing():
            line = self.pending.popleft()
            try:
                command = parse_command(line)
            except CommandError as exc:
                transport.write(encode_error(str(exc), b"--json" in line.split()))
                continue
            if command is not None:
                transport.write(self.server.execute(command, transport))

    def pause_writing(self) -> None:
        self.paused = True
        self.transport.pause_reading()  # further commands wait in the kernel

    def resume_writing(self) -> None:
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()
            self._run()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.clear()
        if exc is not None:
            logger.info("client lost: %s", exc)


def serve_control(reactor: Reactor, path: str, **options: Any) -> ControlServer:
    """Serve a control socket for ``reactor`` at ``path`` (see the module docstring).

    Args:
        options: the keyword arguments of :class:`ControlServer` (``on_drain``,
            ``describe``, ``mode``, ``max_clients``, ``write_timeout``, ``high_water``,
            ``max_line``).

    Raises:
        ValueError: ``path`` is too long, abstract, or ``mode`` is not permission bits.
        FileExistsError: something that is not a socket exists at ``path``.
        OSError: a running server listens at ``path``, or bind fails.
    """
    return ControlServer(reactor, path, **options)
