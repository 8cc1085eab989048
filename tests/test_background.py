"""A reactor in a daemon thread (reactor/io/background.py, ``Reactor.background()``).

A synchronous program starts the reactor in the background, sets up services through
``call``/``submit`` and talks to them with ordinary blocking clients (a socket, the
``redis`` client); leaving the ``with`` block stops the reactor and joins its thread,
and the reactor can run again. While it runs there, the reactor methods a synchronous
program would call refuse other threads at once, debug mode or not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_debug_mode import reactor_calls  # one call of each loop-only method

from handlers import EchoHandler, KVServer
from reactor import ClosedError, LocalProtocolError, Reactor
from reactor.io.background import CHECKED_METHODS, Background
from reactor.io.loop import LOOP_ONLY_METHODS

WAIT = 10.0


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    if not r.is_running():
        r.close()


def reactor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reactor"]


def echo_once(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


@pytest.mark.timeout(60)
def test_a_synchronous_program_serves_real_clients(reactor: Reactor) -> None:
    before = threading.active_count()
    with reactor.background() as loop:
        assert loop.running and reactor.is_running()
        assert loop.thread is not None and loop.thread.daemon
        listener = loop.call(reactor.listen_tcp, "127.0.0.1", 0, EchoHandler)
        assert echo_once(listener.port, b"hello from a script") == b"hello from a script"
        # the table read in the reactor's thread, from here
        assert loop.call(lambda: reactor.statistics().closed_total) >= 0
    assert not loop.running and not reactor.is_running()
    assert not loop.thread.is_alive() and threading.active_count() == before


@pytest.mark.timeout(60)
def test_the_redis_client_against_the_kv_service_in_the_background(reactor: Reactor) -> None:
    redis = pytest.importorskip("redis")
    with reactor.background() as loop:
        listener = loop.call(reactor.listen_tcp, "127.0.0.1", 0, KVServer(reactor))
        client = redis.Redis(host="127.0.0.1", port=listener.port, socket_timeout=WAIT)
        try:
            assert client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
            assert client.incr("visits") == 1
        finally:
            client.close()


@pytest.mark.timeout(60)
def test_call_returns_the_result_or_raises_the_exception(reactor: Reactor) -> None:
    with reactor.background() as loop:
        ident = loop.call(threading.get_ident)
        assert loop.thread is not None and ident == loop.thread.ident != threading.get_ident()
        assert loop.call(divmod, 17, 5) == (3, 2)
        with pytest.raises(ZeroDivisionError):
            loop.call(divmod, 1, 0)

        # from the reactor's own thread, call runs the function at once (no deadlock)
        assert loop.call(lambda: loop.call(lambda: "nested")) == "nested"


@pytest.mark.timeout(60)
def test_submit_returns_a_future(reactor: Reactor) -> None:
    with reactor.background() as loop:
        future = loop.submit(pow, 2, 10)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(WAIT) == 1024
        failing = loop.submit(int, "not a number")
        assert isinstance(failing.exception(WAIT), ValueError)


@pytest.mark.timeout(60)
def test_an_outgoing_connection_from_the_callers_thread(reactor: Reactor) -> None:
    """``connect_tcp`` returns a future: call() hands it over, and the caller waits on
    it in its own thread."""
    with reactor.background() as loop:
        listener = loop.call(reactor.listen_tcp, "127.0.0.1", 0, EchoHandler)
        got: concurrent.futures.Future[bytes] = concurrent.futures.Future()

        class Client(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                got.set_result(data)

        connecting = loop.call(reactor.connect_tcp, "127.0.0.1", listener.port, Client)
        transport, _ = connecting.result(WAIT)
        loop.call(transport.write, b"ping")
        assert got.result(WAIT) == b"ping"
        loop.call(transport.close)


def test_the_checked_methods_are_loop_only_methods() -> None:
    assert set(CHECKED_METHODS) <= set(LOOP_ONLY_METHODS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CHECKED_METHODS)
def test_a_loop_only_method_from_another_thread_raises_at_once(
    reactor: Reactor, name: str,
) -> None:
    with reactor.background() as loop:
        with pytest.raises(RuntimeError, match=rf"Reactor\.{name}\(\) called from thread") as err:
            reactor_calls(reactor)[name]()
        assert "call(fn, ...) or submit(fn, ...) of its reactor.background()" in str(err.value)
        assert loop.running  # the refused call changed nothing
    assert not reactor.is_running()


@pytest.mark.timeout(60)
def test_the_checks_exist_only_while_running_in_the_background(reactor: Reactor) -> None:
    """Outside a background run the reactor has its plain methods (nothing added to any
    path), and a debug-mode reactor keeps its own checks afterwards."""
    assert not set(CHECKED_METHODS) & set(vars(reactor))
    with reactor.background():
        assert set(CHECKED_METHODS) <= set(vars(reactor))
    assert not set(CHECKED_METHODS) & set(vars(reactor))

    with Reactor(debug=True) as debugged:
        shadowed = {n: vars(debugged)[n] for n in CHECKED_METHODS}
        with debugged.background():
            pass
        assert {n: vars(debugged)[n] for n in CHECKED_METHODS} == shadowed


@pytest.mark.timeout(60)
def test_exit_stops_cleanly_and_the_reactor_runs_again(reactor: Reactor) -> None:
    with reactor.background() as loop:
        listener = loop.call(reactor.listen_tcp, "127.0.0.1", 0, EchoHandler)
        kept = socket.create_connection(("127.0.0.1", listener.port), timeout=WAIT)
        kept.sendall(b"one")
        assert kept.recv(10) == b"one"
    try:
        assert reactor_threads() == [] and not reactor.is_running()
        assert len(reactor.connections) == 1  # the connection outlived the run
        with reactor.background() as again:
            kept.sendall(b"two")
            assert kept.recv(10) == b"two"
            assert again.call(len, reactor.connections) == 1
    finally:
        kept.close()
    assert reactor_threads() == []


@pytest.mark.timeout(60)
def test_calls_not_run_when_the_reactor_stops_are_cancelled(reactor: Reactor) -> None:
    inside, go = threading.Event(), threading.Event()

    def block_then_stop() -> None:
        inside.set()
        go.wait(WAIT)
        reactor.stop()

    with reactor.background() as loop:
        blocking = loop.submit(block_then_stop)
        assert inside.wait(WAIT)
        late = loop.submit(lambda: "never")  # queued behind the iteration that stops
        go.set()
        assert blocking.result(WAIT) is None
        with pytest.raises(concurrent.futures.CancelledError):
            late.result(WAIT)
        assert loop.thread is not None
        loop.thread.join(WAIT)
        assert not loop.running
        with pytest.raises(LocalProtocolError, match="does not run in the background"):
            loop.submit(lambda: None)


@pytest.mark.timeout(60)
def test_what_ended_the_run_is_raised_by_stop(reactor: Reactor) -> None:
    def exit_now() -> None:
        raise SystemExit(3)

    loop = reactor.background().start()
    reactor.call_soon_threadsafe(exit_now)
    assert loop.thread is not None
    loop.thread.join(WAIT)
    with pytest.raises(SystemExit) as err:
        loop.stop()
    assert err.value.code == 3
    loop.stop()  # raised once; stopping again is harmless
    assert not reactor.is_running()


@pytest.mark.timeout(60)
def test_start_and_stop_refuse_misuse(reactor: Reactor) -> None:
    loop = reactor.background()
    with loop:
        with pytest.raises(LocalProtocolError, match="already running"):
            reactor.background().start()
        with pytest.raises(LocalProtocolError, match="started already"):
            loop.start()
        with pytest.raises(LocalProtocolError, match="own thread"):
            loop.call(loop.stop)
    closed = Reactor()
    closed.close()
    with pytest.raises(ClosedError):
        closed.background().start()
    assert reactor_threads() == []


@pytest.mark.timeout(60)
def test_a_stop_pending_before_start_is_reported(reactor: Reactor) -> None:
    reactor.stop()  # asked while idle: the next run ends before its first turn
    with pytest.raises(LocalProtocolError, match="before its first turn"):
        reactor.background().start()
    assert reactor_threads() == [] and not set(CHECKED_METHODS) & set(vars(reactor))


def test_repr_says_what_it_does(reactor: Reactor) -> None:
    loop: Background = reactor.background(name="reactor")
    assert "new" in repr(loop)
    with loop:
        assert "running" in repr(loop)
    assert "stopped" in repr(loop)


def test_run_is_what_the_thread_runs(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread runs the reactor's own loop, nothing else: run() as a program calls it."""
    calls: list[Any] = []
    plain_run = Reactor.run

    def noting_run(self: Reactor) -> None:
        calls.append(threading.current_thread().name)
        plain_run(self)

    monkeypatch.setattr(Reactor, "run", noting_run)
    with reactor.background(name="my reactor"):
        pass
    assert calls == ["my reactor"]
