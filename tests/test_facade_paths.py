"""The facade's inline path and its general path give the same results.

``RequestPath.serve_request`` runs ``BaseServer.process_request``'s work itself when a
server does not override it (the one specialisation of the request path, kept because
it saves about 3 % of a connection's instructions in the facade's churn; its row is
released by ``end_request`` itself, without ``release_row``, and counted the same: the
statistics below hold both to it). These tests
run the same clients against a server on that path and one whose ``process_request``
override only calls ``super()`` (the general path), and compare everything a program
can observe: the hooks' order, the row's state while the handler runs, the statistics,
the connection table, errors.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sskit import serving, wait_for

from reactor import socketserver

HOST = "127.0.0.1"


def make_servers(handler: type) -> list[tuple[str, Any]]:
    events: dict[str, list[str]] = {"inline": [], "general": []}

    class Recording(socketserver.TCPServer):
        tag = ""

        def verify_request(self, request: Any, client_address: Any) -> bool:
            events[self.tag].append("verify")
            return bool(getattr(self, "allow", True))

        def finish_request(self, request: Any, client_address: Any) -> None:
            row = self._reactor_engine.rows.get(id(request))
            events[self.tag].append(f"finish:{row.state.name if row else None}")
            super().finish_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            events[self.tag].append("shutdown")
            super().shutdown_request(request)

        def close_request(self, request: Any) -> None:
            events[self.tag].append("close")
            super().close_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            events[self.tag].append("error")

    class Inline(Recording):
        tag = "inline"

    class General(Recording):
        tag = "general"

        def process_request(self, request: Any, client_address: Any) -> None:
            events[self.tag].append("process")
            super().process_request(request, client_address)

    servers = [("inline", Inline((HOST, 0), handler)), ("general", General((HOST, 0), handler))]
    for _, server in servers:
        server.events = events[server.tag]
    return servers


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(100)
        if data == b"boom":
            raise RuntimeError("the handler failed")
        self.request.sendall(data)


def exchange(address: Any, payload: bytes) -> bytes:
    """Send ``payload``, then read until the server closes; a refused connection may be
    closed (or reset) before the client's own half-close or read."""
    with socket.create_connection(address, timeout=10) as c:
        chunks = []
        try:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            while chunk := c.recv(100):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
        return b"".join(chunks)


def observed(server: Any) -> dict[str, Any]:
    stats = server.statistics()
    return {
        "events": [e for e in server.events if e != "process"],
        "accepted": stats.accepted, "rejected": stats.rejected,
        "dispatched_inline": stats.dispatched_inline, "finished": stats.finished,
        "errors": stats.errors, "in_flight": stats.in_flight,
        "table": len(server.connections), "rows": len(server._reactor_engine.rows),
    }


@pytest.mark.parametrize("payloads", [[b"one"], [b"one", b"boom", b"two"]],
                         ids=["echo", "with-error"])
def test_both_paths_give_the_same_results(payloads: list[bytes]) -> None:
    results = {}
    for tag, server in make_servers(Echo):
        with serving(server):
            replies = [exchange(server.server_address, p) for p in payloads]
            wait_for(lambda s=server: s.statistics().finished == len(payloads)
                     and s.events.count("close") == len(payloads)
                     and not s._reactor_engine.rows and not len(s.connections))
            results[tag] = (replies, observed(server))
        assert server._reactor_engine.run_inline is (tag == "inline")
    assert results["inline"] == results["general"]
    replies, seen = results["inline"]
    assert replies == [b"" if p == b"boom" else p for p in payloads]
    assert f"finish:{'DISPATCHED_INLINE'}" in seen["events"]
    assert seen["rows"] == seen["table"] == 0


def test_both_paths_refuse_alike() -> None:
    results = {}
    for tag, server in make_servers(Echo):
        server.allow = False
        with serving(server):
            assert exchange(server.server_address, b"x") == b""
            wait_for(lambda s=server: s.statistics().rejected == 1 and "close" in s.events
                     and not s._reactor_engine.rows and not len(s.connections))
            results[tag] = observed(server)
    assert results["inline"] == results["general"]
    assert results["inline"]["events"] == ["verify", "shutdown", "close"]


def test_both_paths_serve_handle_request_alike() -> None:
    results = {}
    for tag, server in make_servers(Echo):
        server.timeout = 10
        with socket.create_connection(server.server_address, timeout=10) as c:
            c.sendall(b"hi")
            server.handle_request()
            assert c.recv(10) == b"hi"
        results[tag] = observed(server)
        server.server_close()
    assert results["inline"] == results["general"]
