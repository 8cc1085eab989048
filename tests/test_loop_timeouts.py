"""Waits the loop hands to the selector: far, infinite, zero, negative and NaN timeouts.

epoll and poll take at most INT_MAX milliseconds (24.8 days); the loop clamps every
wait to :data:`reactor.io.loop.MAX_WAIT` so a far timer costs a spurious wake-up a day,
never an ``OverflowError``. The contract of ``call_later``: NaN is refused, ``inf``
never fires, zero and negative run as soon as possible, any finite delay fires when due.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from netkit import WAIT, Net
from redis_tools import redis_tool
from servekit import serve

from reactor import FakeClock, Reactor
from reactor.io.loop import MAX_WAIT
from reactor.testing import FakeSelector

DAY = 86400.0
FAR = [30 * DAY, 365 * DAY, sys.float_info.max, math.inf]
FAR_IDS = ["30d", "1y", "float_max", "inf"]


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture
def watchdog(reactor: Reactor) -> Iterator[None]:
    """Stops a blocked reactor from another thread after WAIT s (so an unfixed loop
    fails the test instead of hanging it)."""
    timer = threading.Timer(WAIT, reactor.stop)
    timer.start()
    yield
    timer.cancel()


def echo_once(reactor: Reactor, port: int, timeout: float | None = None) -> bytes:
    """One echo exchange, the reactor stepped with blocking ``run_once(timeout)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
        client.sendall(b"ping")
        client.setblocking(False)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            reactor.run_once(timeout)
            try:
                return client.recv(100)
            except BlockingIOError:
                continue
    raise AssertionError("no echo")


@pytest.mark.parametrize("delay", FAR, ids=FAR_IDS)
def test_a_far_timer_does_not_stop_the_loop(reactor: Reactor, watchdog: None,
                                            delay: float) -> None:
    fired: list[float] = []
    timer = reactor.call_later(delay, fired.append, 1.0)
    listener = reactor.listen_tcp("127.0.0.1", 0, Echo)
    started = time.monotonic()
    for _ in range(3):  # each blocking wait is computed from the far timer
        assert echo_once(reactor, listener.port) == b"ping"
    assert time.monotonic() - started < WAIT, "the watchdog had to wake the loop"
    assert not fired and not timer.cancelled()
    assert reactor.statistics().pending_timers == 1
    assert 0 < reactor.next_timeout() <= MAX_WAIT  # type: ignore[operator]


@pytest.mark.parametrize("timeout", [1e12, sys.float_info.max, math.inf])
def test_a_huge_caller_timeout_is_clamped(reactor: Reactor, watchdog: None,
                                          timeout: float) -> None:
    listener = reactor.listen_tcp("127.0.0.1", 0, Echo)
    assert echo_once(reactor, listener.port, timeout) == b"ping"
    reactor.call_later(timeout, lambda: None)  # and with a timer further than the limit
    assert echo_once(reactor, listener.port, timeout) == b"ping"


def test_a_negative_caller_timeout_means_do_not_block(reactor: Reactor, watchdog: None) -> None:
    started = time.monotonic()
    reactor.run_once(-1.0)  # epoll reads a negative timeout as "for ever"
    reactor.run_once(-math.inf)
    assert time.monotonic() - started < WAIT / 2


def test_a_nan_timeout_is_refused(default_reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="NaN"):
        default_reactor.call_later(math.nan, lambda: None)
    with pytest.raises(ValueError, match="NaN"):
        default_reactor.call_at(math.nan, lambda: None)
    assert default_reactor.statistics().pending_timers == 0
    with pytest.raises(ValueError, match="NaN"):
        default_reactor.run_once(math.nan)
    default_reactor.run_once(0)  # the refused calls left nothing behind


def test_zero_and_negative_delays_run_at_the_next_iteration_in_due_order() -> None:
    clock = FakeClock()
    r = Reactor(selector=FakeSelector(clock), clock=clock)
    try:
        ran: list[str] = []
        r.call_later(0, ran.append, "zero")
        r.call_later(-5, ran.append, "minus five")
        r.call_later(-math.inf, ran.append, "minus inf")
        r.run_once()
        assert ran == ["minus inf", "minus five", "zero"]
        assert r._selector.timeouts == [0.0]  # type: ignore[attr-defined]
    finally:
        r.close()


@pytest.mark.parametrize("days", [25, 365])
def test_a_far_timer_fires_exactly_when_due_after_clamped_waits(days: int) -> None:
    clock = FakeClock()
    selector = FakeSelector(clock)
    r = Reactor(selector=selector, clock=clock)
    try:
        due = clock() + days * DAY
        fired: list[float] = []
        r.call_at(due, lambda: fired.append(r.time()))
        iterations = 0
        while not fired:
            r.run_once()
            iterations += 1
            assert iterations <= days + 1
        assert fired == [due]
        assert all(t is not None and 0 <= t <= MAX_WAIT for t in selector.timeouts)
        assert len(selector.timeouts) == math.ceil(days * DAY / MAX_WAIT)
        assert r.statistics().pending_timers == 0
    finally:
        r.close()


@pytest.mark.parametrize("delay", [sys.float_info.max, math.inf], ids=["float_max", "inf"])
def test_a_never_timer_never_fires_and_a_later_near_one_does(delay: float) -> None:
    clock = FakeClock()
    selector = FakeSelector(clock)
    r = Reactor(selector=selector, clock=clock)
    try:
        never: list[float] = []
        handle = r.call_later(delay, never.append, 1.0)
        for _ in range(1000):
            r.run_once()
        assert selector.timeouts == [MAX_WAIT] * 1000
        assert not never and r.statistics().pending_timers == 1
        near: list[float] = []
        due = clock() + 10.0
        r.call_later(10.0, lambda: near.append(r.time()))
        r.run_once()
        assert near == [due] and not never
        handle.cancel()
        assert r.statistics().pending_timers == 0
        r.run_once(0)
    finally:
        r.close()


def test_embedders_are_told_at_most_max_wait() -> None:
    r = Reactor()
    try:
        assert r.next_timeout() is None
        r.call_later(math.inf, lambda: None)
        assert r.next_timeout() == MAX_WAIT
        r.call_later(30 * DAY, lambda: None)
        assert r.next_timeout() == MAX_WAIT
        r.call_later(2.0, lambda: None)
        assert 0 < r.next_timeout() <= 2.0  # type: ignore[operator]
    finally:
        r.close()


def test_an_asyncio_host_serves_with_a_far_timer() -> None:
    from reactor.embed import attach

    r = Reactor()

    async def main() -> bytes:
        embedding = attach(r)
        try:
            r.call_later(365 * DAY, lambda: None)
            listener = r.listen_tcp("127.0.0.1", 0, Echo)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"ping")
            data = await asyncio.wait_for(reader.readexactly(4), WAIT)
            writer.close()
            return data
        finally:
            embedding.detach()

    try:
        assert asyncio.run(main()) == b"ping"
    finally:
        r.close()


# -- through the real service, with the real client -----------------------------------


def redis_cli(cli: str, port: int, *command: str) -> str:
    done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *command],
                          capture_output=True, text=True, timeout=WAIT, check=False)
    return done.stdout.strip()


def test_kv_survives_far_expiries_set_by_redis_cli() -> None:
    cli = redis_tool("redis-cli")
    with serve("kv", "--bind", "127.0.0.1:0") as srv:
        port = srv.tcp_address()[1]
        assert redis_cli(cli, port, "SET", "k", "v", "EX", "2592000") == "OK"
        assert redis_cli(cli, port, "PING") == "PONG"
        assert redis_cli(cli, port, "SET", "k2", "v", "PX", "99999999999") == "OK"
        assert redis_cli(cli, port, "PING") == "PONG"
        assert redis_cli(cli, port, "GET", "k2") == "v"
        assert 0 < int(redis_cli(cli, port, "TTL", "k")) <= 2592000
        # the extremes a client can send: accepted or refused, the server stays up
        for command in (["SET", "k3", "v", "EX", "9223372036854775807"],
                        ["SET", "k4", "v", "PX", "9223372036854775807"],
                        ["EXPIRE", "k", "9223372036854775807"],
                        ["SET", "k5", "v", "EX", "0"], ["SET", "k6", "v", "PX", "-1"]):
            redis_cli(cli, port, *command)
            assert redis_cli(cli, port, "PING") == "PONG", (command, srv.log)
        assert srv.proc.poll() is None, srv.log
        assert "Traceback" not in srv.log, srv.log


def test_echo_survives_month_long_deadlines() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--idle-timeout", "3000000",
               "--write-timeout", "3000000") as srv:
        for _ in range(2):
            with srv.connect() as client:
                client.sendall(b"hello\n")
                got = b""
                while len(got) < 6:
                    chunk = client.recv(100)
                    assert chunk, srv.log
                    got += chunk
                assert got == b"hello\n"
        assert srv.proc.poll() is None, srv.log
        assert "Traceback" not in srv.log, srv.log


# -- exceptions in timers name their owner ----------------------------------------------


def test_a_failing_timer_with_an_owner_names_the_connection(
    default_reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    net = Net(default_reactor)
    try:
        peer, transport, _ = net.pair()

        def boom() -> None:
            raise RuntimeError("boom in a timer")

        default_reactor.call_later(0, boom, owner=transport)
        with caplog.at_level(logging.ERROR, logger="reactor"):
            default_reactor.run_once(0)
        [record] = [r for r in caplog.records if r.exc_info]
        message = record.getMessage()
        assert repr(transport.peername) in message
        assert f"[{transport.state.name}]" in message
        assert "boom" in message
        assert "boom in a timer" in str(record.exc_info[1])  # type: ignore[index]
        assert not transport.is_closing()  # a timer's failure does not close the owner
        del peer
    finally:
        net.close()


def test_a_failing_deadline_timer_names_its_connection(
    default_reactor: Reactor, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = Net(default_reactor)
    try:
        _peer, transport, _ = net.pair()
        armed_at = default_reactor.time()
        transport.set_deadline(0.05)  # the transport's own deadline timer
        state = transport.state.name

        def broken(self: object) -> None:
            raise RuntimeError("deadline check broke")

        monkeypatch.setattr(type(transport), "_next_deadline", broken)
        with caplog.at_level(logging.ERROR, logger="reactor"):
            net.wait(lambda: any(r.exc_info for r in caplog.records))
        record = next(r for r in caplog.records if r.exc_info)
        message = record.getMessage()
        assert repr(transport.peername) in message and f"[{state}]" in message, message
        assert default_reactor.time() >= armed_at + 0.05
    finally:
        monkeypatch.undo()
        net.close()


def test_a_failing_timer_without_an_owner_still_logs(
    default_reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("ownerless")

    default_reactor.call_later(0, boom)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        default_reactor.run_once(0)
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.getMessage().startswith("callback <TimerHandle")


@pytest.mark.parametrize("limit", [None, 0.0, 0.5, 7.0, MAX_WAIT * 2, math.inf],
                         ids=["none", "zero", "half", "seven", "over_max", "inf"])
@pytest.mark.parametrize("setup", ["nothing", "ready", "stopping", "timer", "timer_late",
                                   "cancelled_only"])
def test_run_once_waits_as_compute_timeout_says(setup: str, limit: float | None) -> None:
    """Whatever the state, the wait run_once hands the selector is what
    _compute_timeout (the one computation, also behind next_timeout) gives for it."""
    clock = FakeClock()
    selector = FakeSelector()
    r = Reactor(selector=selector, clock=clock)
    try:
        if setup == "ready":
            r.call_soon(lambda: None)
        elif setup == "stopping":
            r.stop()
        elif setup == "timer":
            r.call_later(3.0, lambda: None)
        elif setup == "timer_late":
            r.call_later(3.0, lambda: None)
            clock.advance(5.0)
        elif setup == "cancelled_only":
            r.call_later(3.0, lambda: None).cancel()
        expected = r._compute_timeout(limit)
        r.run_once(limit)
        assert selector.timeouts[-1] == expected
    finally:
        r.close()
