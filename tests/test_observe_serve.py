"""``reactor serve --metrics --status --loop-health`` over real sockets: the close
reasons of the access log as metrics, the page's data, a flag's bad value."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from observekit import http, scrape, status_json, value
from servekit import ROOT, WAIT, ServerProcess

pytestmark = pytest.mark.timeout(90)


def endpoint(server: ServerProcess, what: str) -> int:
    server.wait_for(rf"{what} on http://127\.0\.0\.1:\d+/")
    return int(re.findall(rf"{what} on http://127\.0\.0\.1:(\d+)/", server.log)[0])


@pytest.fixture
def served() -> Iterator[tuple[ServerProcess, int, int]]:
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                           "--status", "127.0.0.1:0", "--loop-health",
                           "--idle-timeout", "30", "--access-log")
    try:
        server.addresses()
        yield server, endpoint(server, "metrics"), endpoint(server, "status page")
    finally:
        server.close()


def test_metrics_and_page_of_a_served_process(served: tuple[ServerProcess, int, int]) -> None:
    server, metrics, status = served
    clients = [server.connect() for _ in range(3)]
    for client in clients:
        client.sendall(b"ping\n")
        assert client.recv(10) == b"ping\n"
    data = status_json(status)
    assert [row["state"] for row in data["connections"]] == ["open"] * 3
    assert data["server"]["service"] == "echo" and data["health"]["slow_callbacks"] == 0
    clients[0].shutdown(socket.SHUT_WR)  # the client closes first: client-eof
    assert clients[0].recv(10) == b""
    clients[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    clients[1].close()  # a reset
    for _ in range(100):
        samples = scrape(metrics)
        if value(samples, "reactor_connection_closes_total", reason="client-eof") == 1 and \
                ("reactor_connection_closes_total", (("reason", "reset"),)) in samples:
            break
    assert value(samples, "reactor_connection_closes_total", reason="reset") == 1
    assert value(samples, "reactor_slow_callback_threshold_seconds") == 0.1
    assert value(samples, "reactor_loop_lag_seconds") >= 0
    assert len(status_json(status)["connections"]) == 1
    assert http(status, "GET /metrics")[0] == 404  # two addresses: two sets of paths
    clients[0].close()
    clients[2].close()


def test_without_the_access_log_deadline_closes_are_counted() -> None:
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                           "--idle-timeout", "0.2")
    try:
        server.addresses()
        port = endpoint(server, "metrics")
        client = server.connect()
        assert client.recv(10) == b""  # closed at the idle deadline
        client.close()
        samples = scrape(port)
        assert value(samples, "reactor_connection_closes_total", reason="idle-timeout") == 1
        assert ("reactor_connection_closes_total", (("reason", "client-eof"),)) not in samples
        assert value(samples, "reactor_loop_lag_seconds") >= 0  # the lag probe alone
        assert ("reactor_slow_callbacks_total", ()) not in samples
    finally:
        server.close()


@pytest.mark.parametrize("bad", ["unix:/tmp/x", "8080", "localhost"])
def test_a_bad_address_is_a_usage_error(bad: str) -> None:
    done = subprocess.run([sys.executable, "-m", "reactor", "serve", "echo", "--metrics", bad],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 2 and "--metrics" in done.stderr
