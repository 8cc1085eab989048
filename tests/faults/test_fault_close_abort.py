"""Scenario 6: close() versus abort() with output pending.

faultkit's Streamer writes 16 MiB in one write, then calls ``close()`` (or ``abort()``)
twice. close delivers every queued byte, then FIN; abort drops the queue at once. Each
ends the connection exactly once (one ``connection_lost``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, assert_idle, log_lines

SIZE = 16 * 2**20


def request(srv: FaultServer, line: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(WAIT)
    sock.connect(srv.tcp_address())
    sock.sendall(line)
    return sock


def drain(sock: socket.socket) -> tuple[int, str]:
    """Bytes received until the end, and how it ended ("eof" or "reset")."""
    total = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return total, "reset"
        if not chunk:
            return total, "eof"
        total += len(chunk)


@pytest.mark.timeout(90)
def test_close_flushes_everything_then_fin_and_abort_drops_the_queue(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Streamer", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    closing = [request(srv, b"close %d\n" % SIZE) for _ in range(3)]
    aborting = [request(srv, b"abort %d\n" % SIZE) for _ in range(3)]
    srv.wait_for(r"lost #1", count=3)  # the aborted ones go at once...
    stats = srv.stats()
    assert stats["open"] == 3  # ...the closing ones wait for their readers
    assert stats["write_buffered"] > 3 * SIZE // 2
    assert_idle(srv, "while 3 closes wait for their readers")
    for sock in closing:
        assert drain(sock) == (SIZE, "eof")
        sock.close()
    for sock in aborting:
        received, _how = drain(sock)
        assert received < SIZE // 2, "abort sent the queued output"
        sock.close()
    srv.wait_for(r"lost #1", count=6)
    srv.wait_back_to(baseline, rss_slack=64 * 2**20)
    assert srv.stats()["write_buffered"] == 0
    assert srv.stop() == 0
    log = srv.log  # complete now that the server exited
    assert "lost #2" not in log
    assert len(log_lines(log, "lost #1")) == 6
    srv.assert_clean_log()
