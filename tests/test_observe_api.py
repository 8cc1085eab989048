"""Metrics, the status data and loop health on an embedded reactor
(``reactor.serve_observe``, ``Reactor.enable_health``) and on a facade server
(``reactor.socketserver.serve_observe``), over real sockets."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from observekit import http, scrape, status_json, value
from redis_tools import install_package
from servekit import WAIT
from sskit import serving, wait_for

from reactor import Reactor, serve_observe, socketserver

pytestmark = pytest.mark.timeout(60)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"slow"):
            time.sleep(0.15)  # holds the loop
        self.transport.write(data)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    try:
        yield reactor
    finally:
        if reactor.is_running():
            reactor.stop()
            wait_for(lambda: not reactor.is_running(), what="the reactor stopped")
        reactor.close()


def run(reactor: Reactor) -> None:
    threading.Thread(target=reactor.run, daemon=True).start()
    wait_for(reactor.is_running)


def on_loop(reactor: Reactor, fn: Any) -> Any:
    """Run ``fn`` on the reactor's thread; return its result."""
    done = threading.Event()
    box: list[Any] = []
    reactor.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
    assert done.wait(WAIT)
    return box[0]


def echo(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk
        got += chunk


def test_metrics_count_what_the_reactor_did(reactor: Reactor) -> None:
    served = reactor.listen_tcp("127.0.0.1", 0, Echo, max_connections=2, at_cap="refuse")
    view = serve_observe(reactor, "127.0.0.1", 0)
    run(reactor)
    where = f"127.0.0.1:{served.address[1]}"
    clients = [socket.create_connection(served.address, timeout=WAIT) for _ in range(2)]
    for client in clients:
        echo(client, b"x" * 100)
    refused = socket.create_connection(served.address, timeout=WAIT)  # over the cap
    assert refused.recv(10) == b""
    on_loop(reactor, lambda: served.accept_failed(OSError(errno.EMFILE, "too many")))
    samples = scrape(view.port)
    assert value(samples, "reactor_connections", state="open") == 3  # 2 + the scrape
    assert value(samples, "reactor_listener_connections", listener=where) == 2
    assert value(samples, "reactor_listener_accepted_total", listener=where) == 2
    assert value(samples, "reactor_listener_refused_total", listener=where, reason="cap") == 1
    assert value(samples, "reactor_listener_paused_total", listener=where,
                 reason="EMFILE") == 1
    assert value(samples, "reactor_received_bytes_total") >= 200
    assert value(samples, "reactor_sent_bytes_total") >= 200
    assert value(samples, "reactor_loop_iterations_total") > 0
    assert value(samples, "reactor_errors_total", kind="callback") == 0
    assert ("reactor_loop_lag_seconds", ()) not in samples  # health was not enabled
    for client in [*clients, refused]:
        client.close()


def test_errors_and_deadline_closes_are_counted(reactor: Reactor) -> None:
    served = reactor.listen_tcp("127.0.0.1", 0, Echo, idle_timeout=0.05)
    view = serve_observe(reactor, "127.0.0.1", 0)
    reactor.call_soon(lambda: 1 / 0)
    run(reactor)
    idle = socket.create_connection(served.address, timeout=WAIT)
    assert idle.recv(10) == b""  # closed at the idle deadline
    wait_for(lambda: value(scrape(view.port), "reactor_connection_closes_total",
                           reason="idle-timeout") == 1, what="the idle close counted")
    assert value(scrape(view.port), "reactor_errors_total", kind="callback") == 1
    assert value(scrape(view.port), "reactor_errors_total", kind="protocol") == 0
    idle.close()


class Faulty(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        raise ValueError("a protocol bug")


def test_a_protocol_that_raises_is_counted(reactor: Reactor) -> None:
    served = reactor.listen_tcp("127.0.0.1", 0, Faulty)
    view = serve_observe(reactor, "127.0.0.1", 0)
    run(reactor)
    with socket.create_connection(served.address, timeout=WAIT) as client:
        client.sendall(b"x")
        assert client.recv(10) == b""  # the bug closed the connection
    wait_for(lambda: value(scrape(view.port), "reactor_errors_total",
                           kind="protocol") == 1, what="the protocol's error counted")
    assert value(scrape(view.port), "reactor_errors_total", kind="callback") == 0


def test_http_errors_are_clear(reactor: Reactor) -> None:
    view = serve_observe(reactor, "127.0.0.1", 0)
    run(reactor)
    status, _, body = http(view.port, "GET /nothing")
    assert status == 404 and b"/metrics" in body
    status, headers, _ = http(view.port, "DELETE /metrics")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert http(view.port, b"nonsense\r\n\r\n")[0] == 400
    assert http(view.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")[0] == 431
    assert http(view.port, "GET /")[0] == 404  # the page was not asked for
    status, headers, body = http(view.port, "HEAD /metrics")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_status_data_lists_served_connections(reactor: Reactor) -> None:
    served = reactor.listen_tcp("127.0.0.1", 0, Echo)
    view = serve_observe(reactor, "127.0.0.1", 0, metrics=False, status=True,
                         describe=lambda: {"service": "test"})
    run(reactor)
    client = socket.create_connection(served.address, timeout=WAIT)
    echo(client, b"hello")
    data = status_json(view.port)
    assert [(row["state"], row["bytes_in"]) for row in data["connections"]] == [("open", 5)]
    assert data["server"] == {"service": "test"} and data["by_state"] == {"open": 1}
    status, headers, page = http(view.port, "GET /")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert page.startswith(b"<!DOCTYPE html>")
    assert http(view.port, "GET /metrics")[0] == 404
    client.close()


def test_slow_callbacks_warn_once_a_second_and_lag_is_measured(
        reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactor.health")
    health = reactor.enable_health(0.1, lag_interval=0.05)
    served = reactor.listen_tcp("127.0.0.1", 0, Echo)
    view = serve_observe(reactor, "127.0.0.1", 0, status=True)
    run(reactor)
    client = socket.create_connection(served.address, timeout=WAIT)
    echo(client, b"slow 1")
    echo(client, b"slow 2")
    wait_for(lambda: health.slow_callbacks == 2, what="two slow callbacks")
    warnings = [r.getMessage() for r in caplog.records if r.name == "reactor.health"]
    assert len(warnings) == 1, warnings  # the second within the second: counted only
    assert "Echo via StreamTransport._read_ready held the loop" in warnings[0]
    assert f"('127.0.0.1', {client.getsockname()[1]})" in warnings[0]  # the connection
    reactor.call_soon_threadsafe(time.sleep, 0.3)  # a ready callback holding the loop
    wait_for(lambda: health.slow_callbacks == 3, what="the slow ready callback")
    wait_for(lambda: health.lag_max >= 0.2, what="the lag seen")
    samples = scrape(view.port)
    assert value(samples, "reactor_slow_callbacks_total") == 3
    assert value(samples, "reactor_loop_lag_max_seconds") >= 0.2
    assert value(samples, "reactor_slow_callback_threshold_seconds") == 0.1
    assert status_json(view.port)["health"]["slow_callbacks"] == 3
    client.close()


def test_health_on_a_select_selector_times_ready_callbacks() -> None:
    import selectors

    with Reactor(selector=selectors.SelectSelector()) as reactor:
        health = reactor.enable_health(0.05)
        reactor.call_soon(time.sleep, 0.06)
        reactor.call_soon(reactor.stop)
        reactor.run()
        assert health.slow_callbacks == 1 and health.slowest >= 0.05
    with pytest.raises(ValueError):
        Reactor().enable_health(-1)


def test_promtool_accepts_the_exposition(reactor: Reactor, tmp_path: Any) -> None:
    if shutil.which("promtool") is None:
        reason = install_package("prometheus")
        if reason or shutil.which("promtool") is None:
            pytest.skip(reason or "promtool is missing after installing prometheus")
    reactor.enable_health(0.1)
    reactor.listen_tcp("127.0.0.1", 0, Echo)
    view = serve_observe(reactor, "127.0.0.1", 0)
    run(reactor)
    _, _, body = http(view.port, "GET /metrics")
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=WAIT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == b"", done.stdout + done.stderr  # no lint warnings


class Blocking(socketserver.StreamRequestHandler):
    release = threading.Event()

    def handle(self) -> None:
        self.rfile.readline()
        self.release.wait(WAIT)


def test_a_facade_server_reports_threads_busy() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Blocking)
    view = socketserver.serve_observe(server, "127.0.0.1", 0, status=True)
    with serving(server):
        client = socket.create_connection(server.server_address, timeout=WAIT)
        client.sendall(b"go\n")
        wait_for(lambda: value(scrape(view.port), "reactor_server_threads_busy") == 1,
                 what="one thread busy")
        samples = scrape(view.port)
        assert value(samples, "reactor_server_requests_total", outcome="dispatched-thread") == 1
        assert value(samples, "reactor_server_children_busy") == 0
        assert ("reactor_loop_lag_seconds", ()) in samples
        data = status_json(view.port)
        assert data["server"]["threads"] == 1
        assert [row["state"] for row in data["connections"]] == ["dispatched-thread"]
        Blocking.release.set()
        client.close()
        wait_for(lambda: value(scrape(view.port), "reactor_server_threads_busy") == 0,
                 what="the thread done")
