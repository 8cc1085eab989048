"""Request buffering's refusals in a flood (the facades): one INFO line when the run
starts and one count when it ends, each connection at DEBUG; a real server, real
connections."""

from __future__ import annotations

import logging
import socket

import pytest
from sskit import serving, wait_for

from reactor import socketserver
from reactor.sansio.request_buffer import HTTPRequestBuffer

pytestmark = pytest.mark.timeout(60)
CLIENTS = 30


def test_a_flood_of_late_requests_logs_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor.servers")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            raise AssertionError("no request is ever complete")

    class Server(socketserver.ThreadingTCPServer):
        request_buffer = HTTPRequestBuffer(max_size=1024, timeout=0.3)
        request_queue_size = 128  # not 5: no client waits a second for a SYN retry

    server = Server(("127.0.0.1", 0), Handler)
    with serving(server):
        clients = [socket.create_connection(server.server_address, timeout=10)
                   for _ in range(CLIENTS)]
        try:
            for client in clients:
                client.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
            for client in clients:
                assert client.makefile("rb").read().startswith(b"HTTP/1.1 408 ")
        finally:
            for client in clients:
                client.close()

        def summaries() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("request buffering: closed")]

        wait_for(lambda: summaries(), what="the episode's summary")
    info = [r.getMessage() for r in caplog.records
            if r.name == "reactor.servers" and r.levelno == logging.INFO]
    closing = [m for m in info if m.endswith("; closing")]
    assert len(closing) == 1, info
    assert summaries() == [f"request buffering: closed {CLIENTS} connections with a late "
                           f"first request in {summaries()[0].rsplit(' in ', 1)[1]}"]
    debug = [r for r in caplog.records
             if r.levelno == logging.DEBUG and r.getMessage().endswith("; closing")]
    assert len(debug) == CLIENTS - 1  # each of the others, for --log-level debug
    assert server.statistics().buffer_timeouts == CLIENTS
