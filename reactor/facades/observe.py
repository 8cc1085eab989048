"""Metrics and the status page for a socketserver facade server.

::

    server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
    view = serve_observe(server, "127.0.0.1", 9100, metrics=True, status=True)
    server.serve_forever()      # curl http://127.0.0.1:9100/metrics

The endpoints run on the server's reactor (see :mod:`reactor.io.observe`); beside the
reactor's families, ``/metrics`` gives the server's own: requests by outcome
(``reactor_server_requests_total{outcome}``: accepted, rejected, dispatched inline, to
a thread or a child, finished, errors ...), threads and children busy now, requests
waiting for a worker; the page shows the server's statistics. Loop lag is measured
while the endpoints are open (``enable_health`` with ``slow_callback_duration=None``
unless the reactor's health was enabled already).

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

from typing import Any

from ..io.observe import ObserveServer
from ..io.observe import serve_observe as _serve_reactor_observe
from ..sansio.promtext import Family
from .control import describe_server
from .servers import BaseServer

__all__ = ["serve_observe", "server_families"]

_OUTCOMES = ("accepted", "rejected", "buffered", "buffer_timeouts", "buffer_refused",
             "dispatched_inline", "dispatched_thread", "dispatched_child", "attached",
             "finished", "errors", "get_request_errors", "tls_failed")


def server_families(server: BaseServer) -> list[Family]:
    """The facade server's own metric families (see the module docstring)."""
    stats = server.statistics()
    requests = Family("reactor_server_requests_total", "counter",
                      "The server's requests, by what happened to them.")
    for outcome in _OUTCOMES:
        requests.add(getattr(stats, outcome), outcome=outcome.replace("_", "-"))
    return [
        requests,
        Family("reactor_server_threads_busy", "gauge",
               "Worker threads alive now (each runs one request).").add(stats.threads),
        Family("reactor_server_children_busy", "gauge",
               "Child processes not reaped yet (each runs one request).").add(
                   stats.children),
        Family("reactor_server_requests_waiting", "gauge",
               "Requests ready and waiting for a worker thread or child slot.").add(
                   stats.waiting),
        Family("reactor_server_requests_in_flight", "gauge",
               "The server's requests in the table now.").add(stats.in_flight),
    ]


def serve_observe(server: BaseServer, host: str | None, port: int,
                  **options: Any) -> ObserveServer:
    """Serve metrics (``metrics=True``, the default) and/or the status page
    (``status=True``) for ``server`` on ``host:port``.

    Args:
        server: any server of :mod:`reactor.socketserver`; its reactor is made now if
            it has none yet.
        options: as for :class:`reactor.io.observe.ObserveServer` (``metrics``,
            ``status``, ``max_clients``, ``timeout`` ...).

    Raises:
        ValueError, OSError: as for :func:`reactor.io.observe.serve_observe`.
    """
    reactor = server.reactor
    if reactor.health is None:
        reactor.enable_health(None)
    options.setdefault("describe", lambda: describe_server(server))
    options.setdefault("extra", lambda: server_families(server))
    return _serve_reactor_observe(reactor, host, port, **options)
