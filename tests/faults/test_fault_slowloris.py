"""Scenario 3: slowloris, idle and silent clients.

A client sending one byte of a request every 0.3 s is never idle, so only an
*absolute* request deadline stops it: ``--request-timeout`` (chat and kv) closes it
about that long after the request's first byte, while clients that finish each request
in time stay connected for as long as they like, an idle client is closed at
``--idle-timeout`` and a silent one at ``--first-byte-timeout``.

The socket-free tests check the cost promise: the deadline is armed when a request
starts, moved when a new one starts, removed when none is partial -- never touched for
a piece of input that only extends the partial request.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from faultlib import CPU_LIMIT, WAIT, FaultServer, figure
from handlerkit import LineClient, serve_tcp
from servekit import ROOT

from handlers.base import NO_DEADLINE
from handlers.framers.lines import LineHandler
from handlers.services.chat import ChatServer
from handlers.services.kv import KVServer
from reactor.testing import FakeTransport

REQUEST_TIMEOUT = 2.0
IDLE_TIMEOUT = 1.5  # longer than the dribble interval, shorter than the deadline
DRIBBLE = 0.3
SLACK = 4.0  # scheduling on a loaded machine (no TCP retransmits on loopback)
LATE = 0.25  # seconds past the request deadline the last dribbler may be closed ...
TRIES = 3  # ... in the best of this many rounds
LORIS = 20

REQUESTS = {  # service -> (one request, the bytes a dribbler sends forever)
    "chat": (b"/who\n", b"x"),
    "kv": (b"*1\r\n$4\r\nPING\r\n", b"a"),
}


def dribble_until_closed(socks: list[socket.socket], byte: bytes,
                         limit: float) -> list[float | None]:
    """Send ``byte`` on every socket every DRIBBLE seconds; for each, the seconds until
    the server closed it (None if it did not within ``limit``)."""
    start = time.monotonic()
    closed: dict[socket.socket, float] = {}
    for sock in socks:
        sock.setblocking(False)
    while len(closed) < len(socks) and time.monotonic() - start < limit:
        live = [sock for sock in socks if sock not in closed]
        for sock in live:
            try:
                sock.send(byte)
            except OSError:
                closed[sock] = time.monotonic() - start
        tick = time.monotonic() + DRIBBLE
        while (left := tick - time.monotonic()) > 0:
            live = [sock for sock in socks if sock not in closed]
            ready, _, _ = select.select(live, [], [], left) if live else ([], [], [])
            for sock in ready:
                try:
                    if sock.recv(65536) == b"":
                        closed[sock] = time.monotonic() - start
                except BlockingIOError:
                    pass
                except OSError:
                    closed[sock] = time.monotonic() - start
            if not live:
                break
    return [closed.get(sock) for sock in socks]


def closed_after(sock: socket.socket, limit: float = WAIT) -> float:
    """Read and discard until the server closes; the seconds it took."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.mark.timeout(90)
@pytest.mark.parametrize("service", sorted(REQUESTS))
def test_a_dribbling_client_is_closed_at_the_request_deadline(
    start_server: Callable[..., FaultServer], service: str,
) -> None:
    request, byte = REQUESTS[service]
    srv = start_server(service, "--bind", "127.0.0.1:0",
                       "--request-timeout", str(REQUEST_TIMEOUT),
                       "--idle-timeout", str(IDLE_TIMEOUT), "--first-byte-timeout", "1",
                       "--log-level", "debug",  # each close's line (INFO: once per episode)
                       app_dir=False)
    baseline = srv.usage()
    idle = srv.connect()
    idle.sendall(request)
    rounds: list[tuple[float, float]] = []  # (latest close, server CPU) of each round
    while len(rounds) < TRIES and min(rounds, default=(LATE + 1, 0))[0] > LATE:
        loris = [srv.connect() for _ in range(LORIS)]
        cpu0 = srv.sampler.cpu_seconds()
        times = dribble_until_closed(loris, byte, REQUEST_TIMEOUT + SLACK)
        assert None not in times, "a slowloris client outlived the request deadline"
        closes = [elapsed for elapsed in times if elapsed is not None]
        # the deadline runs from the first byte's arrival, after the clock was read
        assert min(closes) >= REQUEST_TIMEOUT - 0.01, f"closed early: {closes}"
        rounds.append((max(closes) - REQUEST_TIMEOUT,
                       (srv.sampler.cpu_seconds() - cpu0) / max(closes)))
        for sock in loris:
            sock.close()
    late, cpu = min(rounds)
    figure(f"slowloris ({service}): 20 dribblers closed after (request timeout 2 s)",
           REQUEST_TIMEOUT + late, "s (latest)")
    figure(f"slowloris ({service}): server CPU while 20 clients dribble", cpu * 100,
           "% of a core")
    assert late <= LATE, f"closed up to {late:.3f} s late in each of {TRIES} rounds"
    assert cpu < CPU_LIMIT, f"{cpu:.0%} of a core while 20 clients dribbled"
    assert closed_after(idle) < REQUEST_TIMEOUT  # the idle timer closed it before
    idle.close()

    # a client finishing every request in time stays as long as it likes: each request
    # arrives in two pieces 0.3 s apart, for longer than the request deadline
    steady = srv.connect()
    half = len(request) // 2
    cpu0 = srv.sampler.cpu_seconds()
    t0 = time.monotonic()
    while time.monotonic() - t0 < REQUEST_TIMEOUT * 2:
        steady.sendall(request[:half])
        time.sleep(DRIBBLE)  # pacing the client, not ordering events
        steady.sendall(request[half:])
        assert steady.recv(65536), "a client sending whole requests in time was closed"
    cpu = (srv.sampler.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    assert cpu < CPU_LIMIT
    steady.close()

    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    log = srv.log  # complete now that the server exited
    assert log.count("closing: request deadline") == LORIS * len(rounds)
    assert "closing: idle timeout" in log
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_a_silent_client_is_closed_at_the_first_byte_timeout(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("kv", "--bind", "127.0.0.1:0", "--first-byte-timeout", "1",
                       "--request-timeout", "30", app_dir=False)
    with srv.connect() as silent:
        assert 0.7 < closed_after(silent) < 1 + SLACK
    assert srv.stop() == 0
    assert "no data received" in srv.log


def test_request_timeout_is_refused_for_services_without_requests() -> None:
    for service in ("echo", "faultkit:Lines"):
        result = subprocess.run(
            [sys.executable, "-m", "reactor", "serve", service, "--request-timeout", "1",
             "--app-dir", str(ROOT / "tests" / "faults")],
            cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
        assert result.returncode == 2
        assert "--request-timeout" in result.stderr and "chat, kv" in result.stderr
    result = subprocess.run([sys.executable, "-m", "reactor", "serve", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=WAIT)
    assert "--request-timeout" in result.stdout and "slowloris" in result.stdout


# -- socket-free: when the deadline is armed, moved and removed -------------------------------


class StubRow:
    """Stands for the reactor's row: records every ``set_deadline`` call."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []

    def set_deadline(self, seconds: float | None) -> None:
        self.calls.append(seconds)


class Echo(LineHandler):
    __slots__ = ()

    def line_received(self, line: bytes) -> None:
        self.send_line(line)


def on_stub(protocol: Any) -> tuple[FakeTransport, StubRow]:
    row = StubRow()
    return FakeTransport(protocol, extra={"connection": row}), row


def test_line_deadline_is_armed_once_per_request_not_per_piece() -> None:
    transport, row = on_stub(Echo(request_timeout=5))
    transport.feed(b"GET")
    assert row.calls == [5]
    for _ in range(1000):  # a dribbler: no timer work at all
        transport.feed(b"x")
    assert row.calls == [5]
    transport.feed(b"\n")
    assert row.calls == [5, None]
    transport.feed(b"one\ntwo\nthr")  # lines done, a new one started: moved
    assert row.calls == [5, None, 5]
    transport.feed(b"ee\nfo")
    assert row.calls == [5, None, 5, 5]
    transport.feed(b"ur\n")
    assert row.calls == [5, None, 5, 5, None]
    transport.feed(b"whole\nlines\n")  # the common case: nothing to do
    assert row.calls == [5, None, 5, 5, None]
    assert transport.take() == b"GET" + b"x" * 1000 + b"\none\ntwo\nthree\nfour\nwhole\nlines\n"


def test_a_long_line_being_discarded_is_still_a_request_in_progress() -> None:
    chat = ChatServer(max_line_length=16, request_timeout=5)
    transport, row = on_stub(chat())
    transport.take()
    transport.feed(b"y" * 100)  # too long: skipped, yet the deadline keeps running
    assert row.calls == [5]
    transport.feed(b"y" * 100)
    assert row.calls == [5]
    transport.feed(b"\n")
    assert row.calls == [5, None]
    assert b"line too long" in transport.take()


def test_no_request_timeout_no_deadline_calls() -> None:
    transport, row = on_stub(Echo())
    transport.feed(b"partial")
    transport.feed(b" line\n")
    assert row.calls == []


def test_kv_deadline_is_armed_once_per_command_and_suspended_while_paused() -> None:
    server = KVServer(request_timeout=5)
    protocol = server()
    row = StubRow()
    transport = FakeTransport(protocol, extra={"connection": row}, high_water=64)
    transport.feed(b"*1\r\n$4\r\nPI")
    assert row.calls == [5]
    transport.feed(b"N")
    assert row.calls == [5]
    transport.feed(b"G\r\n*1\r\n")  # PING done, the next command started
    assert row.calls == [5, 5]
    transport.feed(b"$4\r\nPING\r\n")
    assert row.calls == [5, 5, None]
    assert transport.take() == b"+PONG\r\n+PONG\r\n"
    # replies pile up (the client does not read): paused, no deadline on our backlog
    transport.feed(b"ECHO " + b"e" * 100 + b"\r\n" + b"PING\r\n" * 3)
    assert row.calls == [5, 5, None]
    assert protocol._write_paused
    transport.take()
    assert row.calls == [5, 5, None]


def test_request_timeout_must_be_positive() -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="request_timeout"):
            Echo(request_timeout=bad)
        with pytest.raises(ValueError, match="request_timeout"):
            KVServer(request_timeout=bad)
        with pytest.raises(ValueError, match="request_timeout"):
            ChatServer(request_timeout=bad)


# -- on asyncio: the call_later fallback ------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["asyncio", "reactor"])
@pytest.mark.parametrize("service", ["lines", "kv"])
def test_request_deadline_on_both_loops(kind: str, service: str) -> None:
    factory: Callable[[], Any]
    if service == "lines":
        factory, partial, rest, answer = (lambda: Echo(request_timeout=0.5)), b"hel", \
            b"lo\n", "hello"
    else:
        factory, partial, rest, answer = KVServer(request_timeout=0.5), b"PI", b"NG\r\n", \
            "+PONG\r"
    with serve_tcp(kind, factory) as server:
        with LineClient(server.port) as steady, LineClient(server.port) as loris:
            started = time.monotonic()
            loris.send(partial)  # and never the rest
            steady.send(partial)
            steady.send(rest)
            assert steady.read_line() == answer
            with pytest.raises((EOFError, ConnectionResetError)):
                loris.read_line()
            assert 0.4 < time.monotonic() - started < 0.5 + SLACK
            steady.send(partial + rest)
            assert steady.read_line() == answer
        if kind == "asyncio":  # no timer left behind by the closed connections
            assert server.loop is not None
            server.call(lambda: None)
            handles = server.call(lambda: list(server.loop._scheduled))  # type: ignore[union-attr]
            assert not [h for h in handles if not h.cancelled()]


def test_without_a_row_or_a_running_loop_nothing_is_armed() -> None:
    protocol = Echo(request_timeout=1)
    transport = FakeTransport(protocol)  # no row, no running asyncio loop
    transport.feed(b"partial")
    assert protocol._deadline is NO_DEADLINE
    transport.feed(b" line\n")
    assert protocol._deadline is None
    assert transport.take() == b"partial line\n"
