"""A control socket for a socketserver facade server.

::

    server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
    control = serve_control(server, "/run/app.ctl")
    server.serve_forever()          # reactor ctl /run/app.ctl conns

The control socket runs on the server's reactor (see :mod:`reactor.io.control`):
``conns`` lists the server's requests as rows of its table, ``info`` adds the server's
own statistics (requests accepted, dispatched, finished, threads and children busy),
and ``drain`` calls the server's ``shutdown()``, so ``serve_forever`` returns once the
request running on the reactor thread, if any, is done; ``server_close`` then waits for
worker threads and children as usual (``block_on_close``).

Forbidden imports: ``handlers``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..io.control import ControlServer
from ..io.control import serve_control as _serve_reactor_control
from ..sansio.snapshot import format_address
from .servers import BaseServer

__all__ = ["describe_server", "serve_control"]


def describe_server(server: BaseServer) -> Mapping[str, Any]:
    """A facade server's statistics as plain facts (``info``, the status page)."""
    stats = server.statistics()
    facts = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)
             if f.name not in ("reactor", "by_state")}
    facts["address"] = format_address(stats.address)
    return facts


def serve_control(server: BaseServer, path: str, **options: Any) -> ControlServer:
    """Serve a control socket at ``path`` for ``server`` (a facade server).

    Args:
        server: any server of :mod:`reactor.socketserver`; its reactor is made now if
            it has none yet.
        path: the socket's path (created owner-only, mode 0600, unless ``mode`` says
            otherwise).
        options: as for :func:`reactor.io.control.serve_control` (``mode``,
            ``max_clients``, ``write_timeout`` ...); ``on_drain`` defaults to
            ``server.shutdown``.

    Raises:
        ValueError, FileExistsError, OSError: as for
            :func:`reactor.io.control.serve_control`.
    """
    options.setdefault("on_drain", server.shutdown)
    options.setdefault("describe", lambda: describe_server(server))
    return _serve_reactor_control(server.reactor, path, **options)
