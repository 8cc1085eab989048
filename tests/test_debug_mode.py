"""Scenario 23: debug mode catches loop-thread-only calls made from another thread.

``Reactor(debug=True)``, or any reactor made while Python runs in development mode
(``-X dev``, ``PYTHONDEVMODE=1``): calling a loop-only method of the reactor or of one
of its transports from a thread other than the one in :meth:`Reactor.run` raises
``RuntimeError`` naming the method and pointing at ``call_soon_threadsafe``. Without
debug mode the methods are the plain ones (no wrapper, no extra branch).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netkit import WAIT, Net

from reactor import Reactor
from reactor.io.loop import LOOP_ONLY_METHODS, TRANSPORT_LOOP_ONLY_METHODS
from reactor.io.stream import StreamTransport


class Running:
    """A reactor running in a thread of its own, stopped and joined at the end."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        started = threading.Event()
        reactor.call_soon(started.set)  # runs in the first iteration, inside run()
        self.thread = threading.Thread(target=reactor.run, daemon=True)
        self.thread.start()
        assert started.wait(WAIT), "the reactor thread did not start"

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the reactor's thread and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def call() -> None:
            try:
                box.append(fn())
            except BaseException as exc:  # handed to the test thread
                box.append(exc)
            done.set()

        self.reactor.call_soon_threadsafe(call)
        assert done.wait(WAIT), "the reactor did not run the call"
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stop(self) -> None:
        self.reactor.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def debug_reactor() -> Iterator[Reactor]:
    r = Reactor(debug=True)
    yield r
    if r.is_running():
        r.stop()
    r.close()


def reactor_calls(r: Reactor) -> dict[str, Callable[[], object]]:
    """One call of each loop-only reactor method (harmless if it ran)."""
    def noop() -> None:
        pass

    return {
        "call_soon": lambda: r.call_soon(noop),
        "call_later": lambda: r.call_later(1.0, noop),
        "call_at": lambda: r.call_at(r.time() + 1.0, noop),
        "run_once": lambda: r.run_once(0),
        "run_until": lambda: r.run_until(lambda: True),
        "run_until_complete": lambda: r.run_until_complete(None),  # type: ignore[arg-type]
        "listen_tcp": lambda: r.listen_tcp("127.0.0.1", 0, noop),
        "listen_unix": lambda: r.listen_unix("\0sr-debug-test", noop),
        "listen_udp": lambda: r.listen_udp("127.0.0.1", 0, noop),
        "listen_unix_datagram": lambda: r.listen_unix_datagram(None, noop),
        "connect_tcp": lambda: r.connect_tcp("127.0.0.1", 9, noop),
        "connect_unix": lambda: r.connect_unix("\0sr-debug-none", noop),
        "add_signal_handler": lambda: r.add_signal_handler(10, noop),
        "remove_signal_handler": lambda: r.remove_signal_handler(10),
    }


def test_every_loop_only_reactor_method_is_covered(debug_reactor: Reactor) -> None:
    assert set(reactor_calls(debug_reactor)) == set(LOOP_ONLY_METHODS)


@pytest.mark.parametrize("name", LOOP_ONLY_METHODS)
def test_a_reactor_method_from_another_thread_raises(debug_reactor: Reactor, name: str) -> None:
    call = reactor_calls(debug_reactor)[name]
    running = Running(debug_reactor)
    try:
        with pytest.raises(RuntimeError) as info:
            call()
        message = str(info.value)
        assert f"Reactor.{name}()" in message
        assert "call_soon_threadsafe" in message
        assert debug_reactor.statistics().listeners == 0  # nothing was done
        assert debug_reactor.statistics().pending_timers == 0
    finally:
        running.stop()


def test_the_reactor_thread_itself_may_call_them(debug_reactor: Reactor) -> None:
    running = Running(debug_reactor)
    try:
        ran: list[str] = []
        listener = running.on_loop(lambda: debug_reactor.listen_tcp("127.0.0.1", 0, _Quiet))
        running.on_loop(lambda: debug_reactor.call_soon(ran.append, "soon"))
        running.on_loop(lambda: debug_reactor.call_later(0, ran.append, "later"))
        running.on_loop(lambda: None)  # one more turn
        running.on_loop(lambda: None)
        assert ran == ["soon", "later"]
        running.on_loop(listener.close)
    finally:
        running.stop()
    # not running: any thread may set the reactor up or step it
    debug_reactor.call_soon(lambda: None)
    debug_reactor.run_once(0)


def transport_calls(t: StreamTransport) -> dict[str, Callable[[], object]]:
    return {
        "write": lambda: t.write(b"x"),
        "writelines": lambda: t.writelines([b"x"]),
        "write_eof": t.write_eof,
        "close": t.close,
        "abort": t.abort,
        "pause_reading": t.pause_reading,
        "resume_reading": t.resume_reading,
        "set_write_buffer_limits": lambda: t.set_write_buffer_limits(100),
        "set_protocol": lambda: t.set_protocol(t.get_protocol()),
        "set_deadline": lambda: t.set_deadline(5.0),
    }


@pytest.mark.parametrize("name", sorted(set(TRANSPORT_LOOP_ONLY_METHODS) - {"sendto"}))
def test_a_transport_method_from_another_thread_raises(debug_reactor: Reactor,
                                                       name: str) -> None:
    net = Net(debug_reactor)
    peer, transport, _ = net.pair()
    assert type(transport) is not StreamTransport and isinstance(transport, StreamTransport)
    assert type(transport).__name__ == "StreamTransport"
    running = Running(debug_reactor)
    try:
        with pytest.raises(RuntimeError) as info:
            transport_calls(transport)[name]()
        assert f"StreamTransport.{name}()" in str(info.value)
        assert "call_soon_threadsafe" in str(info.value)
        assert not transport.is_closing() and transport.get_write_buffer_size() == 0
        # the same call on the reactor's thread goes through
        running.on_loop(lambda: transport.write(b"from the loop"))
        running.on_loop(lambda: None)
    finally:
        running.stop()
    debug_reactor.run_until(lambda: bytes(peer.received) == b"from the loop", WAIT)
    net.close()


def test_a_datagram_sendto_from_another_thread_raises(debug_reactor: Reactor) -> None:
    endpoint = debug_reactor.listen_udp("127.0.0.1", 0, lambda: _Quiet())
    running = Running(debug_reactor)
    try:
        with pytest.raises(RuntimeError, match=r"DatagramTransport\.sendto\(\)"):
            endpoint.sendto(b"x", ("127.0.0.1", 9))
    finally:
        running.stop()
    endpoint.close()


class _Quiet:
    def connection_made(self, transport: object) -> None:
        pass

    def datagram_received(self, data: bytes, addr: object) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def test_without_debug_mode_the_methods_are_the_plain_ones() -> None:
    r = Reactor(debug=False)
    net = Net(r)
    try:
        assert r.debug is False
        for name in LOOP_ONLY_METHODS:
            assert name not in vars(r)
            assert getattr(r, name).__func__ is getattr(Reactor, name)
        _, transport, _ = net.pair()
        assert type(transport) is StreamTransport
        running = Running(r)
        try:
            r.call_later(3600, lambda: None).cancel()  # unchecked (and racy): no error
        finally:
            running.stop()
    finally:
        net.close()
        r.close()


DEV_SCRIPT = textwrap.dedent("""
    import threading
    from reactor import Reactor

    r = Reactor()
    print("debug", r.debug)
    started = threading.Event()
    r.call_soon(started.set)
    thread = threading.Thread(target=r.run)
    thread.start()
    started.wait(10)
    try:
        r.call_soon(print, "late")
    except RuntimeError as exc:
        print("raised", exc)
    else:
        print("no error")
    r.stop()
    thread.join(10)
    r.close()
""")


@pytest.mark.parametrize(
    ("args", "env", "debug"),
    [(["-X", "dev"], {}, True), ([], {"PYTHONDEVMODE": "1"}, True), ([], {}, False)],
    ids=["-X dev", "PYTHONDEVMODE", "normal"],
)
def test_development_mode_turns_debug_on(args: list[str], env: dict[str, str],
                                         debug: bool) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDEVMODE"}
    environ.update(env)
    done = subprocess.run([sys.executable, *args, "-c", DEV_SCRIPT], capture_output=True,
                          text=True, timeout=WAIT * 3, check=False, env=environ)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"debug {debug}"
    if debug:
        assert lines[1].startswith("raised Reactor.call_soon() called from thread"), lines
        assert "call_soon_threadsafe" in lines[1]
    else:
        assert lines[1] == "no error"
