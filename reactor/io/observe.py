"""Metrics and a live status page, served over HTTP by the reactor they describe.

::

    view = serve_observe(reactor, "127.0.0.1", 9100, metrics=True, status=True)
    ...     # curl http://127.0.0.1:9100/metrics ; a browser on http://127.0.0.1:9100/
    view.close()

An :class:`ObserveServer` is a TCP listener on the reactor it watches. It answers
``GET`` (and ``HEAD``) of:

* ``/metrics`` (with ``metrics``): Prometheus's text format (:mod:`.metrics`);
* ``/`` (with ``status``): one self-contained HTML page
  (:mod:`reactor.sansio.statuspage`) that refreshes itself from
* ``/status.json`` (with ``status``): the table's rows, counters, loop health.

Theory of operation
-------------------
*Cost.* Nothing runs until a request arrives: the listener is one more descriptor idle
in the selector. A request reads the table once, on the reactor's thread, between
callbacks. Its clients are rows of the table with the role ``observe``: the page and
``conns`` show only served connections; the loop's totals count them all.

*Bounds.* A request head is at most :data:`~reactor.sansio.httpmini.MAX_HEAD` bytes
(else 431); a malformed one gets 400, another method than GET or HEAD 405, an unknown
path 404, a request with a body 501. One request per connection: the reply closes it.
At most ``max_clients`` clients at once (more wait in the backlog); a client silent or
not reading for ``timeout`` seconds is closed.

Must not import the facades or the command line.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..sansio.httpmini import BadRequest, Request, RequestReader, response
from ..sansio.promtext import CONTENT_TYPE, Family, render
from ..sansio.snapshot import RowIds
from ..sansio.statuspage import PAGE
from .control import close_listener, listener_facts, mark_listener, snapshot_table
from .metrics import reactor_families
from .transports import TransportOptions

if TYPE_CHECKING:
    from .listeners import Listener
    from .loop import Reactor

__all__ = ["DEFAULT_MAX_CLIENTS", "DEFAULT_TIMEOUT", "ObserveServer", "serve_observe"]

logger = logging.getLogger("reactor.observe")

DEFAULT_MAX_CLIENTS: Final = 16
DEFAULT_TIMEOUT: Final = 10.0
_JSON: Final = "application/json"
_HTML: Final = "text/html; charset=utf-8"


class ObserveServer:
    """Metrics and/or the status page on a reactor (made by :func:`serve_observe`).

    Args:
        reactor: the reactor to describe.
        host, port: where to listen (port 0 picks a free one: see :attr:`port`).
        metrics: serve ``/metrics``.
        status: serve ``/`` and ``/status.json``.
        describe: facts about the server above the reactor (its name, its limits ...),
            shown by the page.
        extra: more metric families (a facade's threads and children busy ...).
        max_clients: clients served at once.
        timeout: seconds a client may stay silent or stop reading.

    Attributes:
        listener: its TCP listener.
        started: the reactor clock's reading when it started.
    """

    def __init__(
        self, reactor: Reactor, host: str | None, port: int, *, metrics: bool = True,
        status: bool = False, describe: Callable[[], Mapping[str, Any]] | None = None,
        extra: Callable[[], Iterable[Family]] | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS, timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not metrics and not status:
            raise ValueError("serve metrics, the status page, or both")
        self.reactor = reactor
        self.metrics = metrics
        self.status = status
        self.describe = describe
        self.extra = extra
        self.started = reactor.time()
        self._started_wall = time.time()
        self._ids = RowIds()
        options = TransportOptions(idle_timeout=timeout, first_byte_timeout=timeout,
                                   write_timeout=timeout)
        self.listener: Listener = reactor.listen_tcp(
            host, port, lambda: _ObserveProtocol(self), max_connections=max_clients,
            backlog=max_clients, options=options)
        mark_listener(self.listener, "observe")
        logger.info("%s on http://%s:%d/", self._what(), self.listener.address[0],
                    self.port)

    def _what(self) -> str:
        return " and ".join(name for name, on in (("metrics", self.metrics),
                                                  ("status page", self.status)) if on)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.listener.address[1])

    def close(self) -> None:
        """Stop listening and close its clients."""
        close_listener(self.reactor, self.listener)

    # -- what it serves -----------------------------------------------------------------

    def metrics_text(self) -> bytes:
        """The exposition ``/metrics`` serves."""
        families = list(reactor_families(
            self.reactor, uptime=self.reactor.time() - self.started))
        if self.extra is not None:
            families += self.extra()
        return render(families)

    def status_facts(self) -> dict[str, Any]:
        """What ``/status.json`` serves."""
        reactor = self.reactor
        stats = reactor.statistics()
        rows = snapshot_table(reactor, self._ids)
        by_state = collections.Counter(row.state for row in rows)
        facts: dict[str, Any] = {
            "time": round(time.time(), 3),
            "started": round(self._started_wall, 3),
            "uptime": round(reactor.time() - self.started, 3),
            "pid": os.getpid(),
            "backend": stats.backend,
            "connections": [row.as_dict() for row in rows],
            "by_state": dict(sorted(by_state.items())),
            "totals": {
                "opened": stats.opened_total, "closed": stats.closed_total,
                "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
                "iterations": stats.iterations, "pending_timers": stats.pending_timers,
                "write_buffered": stats.write_buffered,
            },
            "listeners": [listener_facts(listener) for listener in reactor.listeners],
            "health": None if reactor.health is None else reactor.health.facts(),
        }
        facts["close_reasons"] = dict(stats.closes)
        if self.describe is not None:
            try:
                facts["server"] = dict(self.describe())
            except Exception as exc:  # a hook's bug must not cost the page
                logger.exception("the describe hook raised")
                facts["server"] = {"error": repr(exc)}
        return facts

    def answer(self, request: Request) -> bytes:
        """The response to ``request``."""
        head = request.method == "HEAD"
        routes: dict[str, Callable[[], tuple[bytes, str]]] = {}
        if self.metrics:
            routes["/metrics"] = lambda: (self.metrics_text(), CONTENT_TYPE)
        if self.status:
            routes["/"] = lambda: (PAGE, _HTML)
            routes["/status.json"] = lambda: (
                json.dumps(self.status_facts(), separators=(",", ":")).encode(), _JSON)
        route = routes.get(request.path)
        if route is None:
            known = ", ".join(sorted(routes))
            return response(404, f"not found; this server answers {known}\n".encode(),
                            head_only=head)
        if request.method not in ("GET", "HEAD"):
            return response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        try:
            body, content_type = route()
        except Exception:  # a bug here must not cost the server
            logger.exception("answering %s failed", request.path)
            return response(500, b"internal error (logged)\n", head_only=head)
        return response(200, body, content_type, head_only=head)


class _ObserveProtocol(asyncio.Protocol):
    """One HTTP client: one request, one response, then close."""

    def __init__(self, server: ObserveServer) -> None:
        self.server = server
        self.reader = RequestReader()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        try:
            request = self.reader.feed(data)
        except BadRequest as exc:
            logger.debug("bad request: %s", exc)
            transport.write(response(exc.status, f"{exc}\n".encode()))
            transport.close()
            return
        if request is not None:
            transport.write(self.server.answer(request))
            transport.close()

    def eof_received(self) -> bool:
        return False  # close: a request cut short gets no answer


def serve_observe(reactor: Reactor, host: str | None, port: int,
                  **options: Any) -> ObserveServer:
    """Serve metrics and/or the status page for ``reactor`` on ``host:port`` (see the
    module docstring and :class:`ObserveServer` for the options).

    Raises:
        ValueError: neither ``metrics`` nor ``status``.
        OSError: bind failed.
    """
    return ObserveServer(reactor, host, port, **options)
