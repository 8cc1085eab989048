"""One worker process under the supervisor: its graceful server and its link.

A worker is a forked child of :class:`~reactor.cli.supervisor.Supervisor`. It runs
one :class:`~reactor.cli.graceful.Server` (made by the supervisor's factory, with a
reactor of its own) on the addresses it was given, and keeps one *link* to the
supervisor: its end of a socketpair, served on its own reactor as a connection with
the :class:`WorkerLink` protocol. Messages are JSON objects, one per line:

* worker to supervisor: ``{"ready": [addresses]}`` once its listeners are bound;
  ``{"stats": {...}}`` in answer to ``{"stats": true}``; ``{"recycle": N}`` when it
  has accepted its ``--max-requests`` connections (the supervisor starts a replacement,
  then drains this worker with SIGTERM, as on a reload); ``{"alive": true}``, the
  heartbeat, every ``--worker-timeout`` / 4 seconds once ready (any message counts as
  a sign of life; see :class:`~reactor.sansio.workerlife.WorkerDeadlines`).
* supervisor to worker: ``{"stats": true}``.

Why a socketpair and not a pipe: the link goes both ways (statistics are asked for and
answered), and either side closing is news to the other. The supervisor's end of every
link is closed in every worker, so when the supervisor dies (even by SIGKILL) the
kernel closes the last copy and the worker reads EOF (or, if the supervisor died before
the worker said it was ready, that message fails with EPIPE): it stops gracefully,
leaving no orphan serving on its own. That works on every Unix, unlike Linux's
``PR_SET_PDEATHSIG``, and it arrives through the worker's reactor like any other event.

Stopping is left to the graceful server's own signal handlers: SIGTERM drains, a
second SIGINT aborts. A "request" counted for ``--max-requests`` is an accepted
connection (the reactor cannot know where a user's protocol's requests begin).

Part of the command line layer; never imports ``handlers``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

from ..io.loop import Reactor
from ..io.stream import StreamTransport
from .graceful import Server

__all__ = ["JsonLines", "WorkerLink", "encode", "statistics_of"]

logger = logging.getLogger("reactor.workers")

HEARTBEAT = b'{"alive":true}\n'  # encode({"alive": True}), made once
STAT_FIELDS = ("open", "opened_total", "closed_total", "bytes_in", "bytes_out",
               "write_buffered")


def encode(message: dict[str, Any]) -> bytes:
    """One message on a link: a JSON object and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def statistics_of(reactor: Reactor, link: Any) -> dict[str, int]:
    """A worker's figures for the supervisor, the ``link`` transport's own not counted
    (it is a connection of the worker's reactor too)."""
    stats = reactor.statistics()
    figures = {name: int(getattr(stats, name)) for name in STAT_FIELDS}
    figures["open"] -= 1
    figures["opened_total"] -= 1
    figures["bytes_in"] -= link.bytes_in
    figures["bytes_out"] -= link.bytes_out
    return figures


class JsonLines(asyncio.Protocol):
    """Either end of a link: JSON objects, one per line, each handed to
    :meth:`message_received`; :meth:`send` writes one (dropped once the link is gone)."""

    peer = "the other end"  # for the log

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                self.message_received(message)
            else:
                logger.warning("unreadable message from %s: %r", self.peer, line[:80])

    def message_received(self, message: dict[str, Any]) -> None:
        """One message arrived."""

    def send(self, message: dict[str, Any]) -> None:
        """Send one message."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class WorkerLink(JsonLines):
    """The worker's end of its link to the supervisor (see the module docstring).

    Args:
        server: the worker's graceful server (not yet started).
        max_requests: recycle after this many accepted connections (None: never);
            ``jitter`` adds a random 0..jitter to it, so workers started together do
            not all recycle at once.
    """

    peer = "the supervisor"

    def __init__(self, server: Server, max_requests: int | None = None,
                 jitter: int = 0) -> None:
        super().__init__()
        self.server = server
        self.accepted = 0
        self.limit = None if max_requests is None else max_requests + random.randint(0, jitter)
        self.recycling = False
        if self.limit is not None:
            server.protocol_factory = self._counting(server.protocol_factory)

    def _counting(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        def counted() -> Any:
            self.accepted += 1
            if self.limit is not None and self.accepted >= self.limit and not self.recycling:
                self.recycling = True
                logger.info("served %d connections (--max-requests): asking to be "
                            "replaced", self.accepted)
                self.send({"recycle": self.accepted})
            return factory()
        return counted

    def message_received(self, message: dict[str, Any]) -> None:
        if message.get("stats"):
            self.send({"stats": statistics_of(self.server.reactor, self.transport)})

    def beat_every(self, interval: float) -> None:
        """Send a heartbeat every ``interval`` seconds while the link is open: a timer
        of the worker's reactor, so a loop that is blocked sends none."""
        def beat() -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(HEARTBEAT)
                self.server.reactor.call_later(interval, beat)
        self.server.reactor.call_later(interval, beat)

    def eof_received(self) -> bool | None:
        self._orphaned("EOF")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # a supervisor that died before "ready" was sent: the write fails (EPIPE) and
        # no EOF is ever read, yet the worker must not serve on, orphaned
        self._orphaned(f"{type(exc).__name__}: {exc}" if exc else "closed")

    def _orphaned(self, how: str) -> None:
        if not self.server.stopping:
            logger.warning("the supervisor is gone (link %s): stopping", how)
            self.server.stop(reason="the supervisor exited")


def run_worker(server: Server, link_sock: Any, max_requests: int | None = None,
               jitter: int = 0, heartbeat: float | None = None) -> int:
    """Serve ``server`` as a worker with ``link_sock`` its end of the link, sending a
    heartbeat every ``heartbeat`` seconds once ready (None: none).

    Returns:
        The server's exit status.
    """
    link = WorkerLink(server, max_requests, jitter)
    StreamTransport(server.reactor, link_sock, "supervisor").attach(link)
    addresses = server.start()

    def ready() -> None:  # from the loop: serve() has installed its SIGTERM handler, so
        link.send({"ready": addresses})  # a worker drained at once stops gracefully
        if heartbeat is not None:
            link.beat_every(heartbeat)
    server.reactor.call_soon(ready)
    return server.serve()
