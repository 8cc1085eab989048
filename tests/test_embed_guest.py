"""Guest mode (reactor/embed/guest.py): a host that can only "call this soon".

The hosts: a plain queue drained by a thread (``QueueHost``, tests/guestkit.py), and Tk's
``after_idle`` under a real X server (Xvfb). The reactor serves real clients over
loopback while the test records the thread of every protocol callback, every change
to the connection table and every state change of a row: all must be the host's
thread, while the blocking waits run in the helper thread. Ending the run leaves the
reactor reusable and no thread behind.
"""

from __future__ import annotations

import logging
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
import xvfb
from guestkit import (
    WAIT,
    Done,
    Echo,
    QueueHost,
    RecordingTable,
    Threads,
    client,
    echo_factory,
    echo_rounds,
    guest_threads,
    note_row_changes,
    note_waits,
    start_in,
)

from reactor import ClosedError, LocalProtocolError, Reactor
from reactor.embed import guest


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Threads:
    """Every state change of every row, noted with its thread."""
    return note_row_changes(monkeypatch)


@pytest.fixture
def host() -> Iterator[QueueHost]:
    h = QueueHost()
    yield h
    h.close()


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor(selector=selectors.DefaultSelector())
    yield r
    if not r.is_running():
        r.close()


# -- the queue-and-thread host -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_everything_runs_in_the_host_thread_and_only_the_wait_in_the_helper(
    host: QueueHost, reactor: Reactor, threads: Threads,
) -> None:
    reactor.connections = RecordingTable(threads)
    waits = note_waits(reactor)
    done = Done()
    run = start_in(host, reactor, done)
    listener = host.call(reactor.listen_tcp, "127.0.0.1", 0, echo_factory(threads))
    timer_fired = threading.Event()

    def timer() -> None:
        threads.note("timer")
        timer_fired.set()

    host.call(reactor.call_later, 0.01, timer)
    reactor.call_soon_threadsafe(threads.note, "threadsafe")

    def one_client(tag: bytes) -> None:
        with client(listener.port) as sock:
            echo_rounds(sock, 30, tag)
            sock.shutdown(socket.SHUT_WR)  # the peer's EOF: eof_received, then a close
            assert sock.recv(10) == b""

    workers = [threading.Thread(target=one_client, args=(b"c%d-" % i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
        assert not w.is_alive()
    # the last connection_lost runs after its client saw the close: wait for the table
    deadline = time.monotonic() + WAIT
    while host.call(len, reactor.connections) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert timer_fired.wait(WAIT)
    helper = run.thread
    assert helper is not None and helper.is_alive()
    run.detach()
    done.wait()

    host_ident = host.thread.ident
    assert threads.where() == {host_ident}, threads.seen
    assert {"table.add", "table.remove", "row._init_row", "row.on_attach", "row.on_eof",
            "protocol.connection_made", "protocol.data_received", "protocol.eof_received",
            "protocol.connection_lost", "timer", "threadsafe"} <= threads.kinds()
    assert done.thread == host_ident and done.error is None
    assert helper.ident in waits.where(), "no wait ran in the helper thread"
    assert host.errors == []
    assert not helper.is_alive() and run.thread is None and guest_threads() == []
    assert not reactor.is_running() and not run.attached


@pytest.mark.timeout(60)
def test_detach_leaves_the_reactor_reusable(host: QueueHost, reactor: Reactor) -> None:
    done = Done()
    run = start_in(host, reactor, done)
    listener = host.call(reactor.listen_tcp, "127.0.0.1", 0, echo_factory(None))
    with client(listener.port) as kept:
        echo_rounds(kept, 3, b"guest-")
        run.detach()
        done.wait()
        assert guest_threads() == [] and not reactor.is_running()
        assert len(reactor.connections) == 1  # the connection outlives the run

        # the same reactor runs by itself, the same connection still served
        kept.sendall(b"alone")
        received = bytearray()

        def got_it() -> bool:
            if select.select([kept], [], [], 0)[0]:
                received.extend(kept.recv(100))
            return bytes(received) == b"alone"

        reactor.run_until(got_it, timeout=WAIT)

        # and as a guest again
        again = Done()
        run = start_in(host, reactor, again)
        echo_rounds(kept, 3, b"again-")
        with client(listener.port) as fresh:
            echo_rounds(fresh, 3, b"fresh-")
        run.detach()
        again.wait()
    assert again.error is None and guest_threads() == [] and host.errors == []


@pytest.mark.timeout(60)
def test_reactor_stop_from_a_callback_ends_the_run_and_leaves_no_stop_pending(
    host: QueueHost, reactor: Reactor,
) -> None:
    done = Done()
    run = start_in(host, reactor, done)
    host.call(reactor.call_soon, reactor.stop)
    done.wait()
    assert done.error is None and not run.attached and not reactor.is_running()
    # a stop left pending would end the next run at its first turn
    again = Done()
    run = start_in(host, reactor, again)
    fired = threading.Event()
    host.call(reactor.call_later, 0.05, fired.set)
    assert fired.wait(WAIT) and run.attached
    run.detach()
    again.wait()


@pytest.mark.timeout(60)
def test_the_hosts_own_calls_between_turns_wake_the_wait(
    host: QueueHost, reactor: Reactor,
) -> None:
    """An idle reactor waits with no timeout; a timer or a callback the host's code adds
    between turns must end that wait (no polling interval)."""
    done = Done()
    run = start_in(host, reactor, done)
    fired: Future[float] = Future()
    began = host.call(lambda: (reactor.call_later(0.2, lambda: fired.set_result(
        time.monotonic())), time.monotonic())[1])
    assert fired.result(WAIT) - began >= 0.2  # never early
    soon: Future[int] = Future()
    host.call(reactor.call_soon, lambda: soon.set_result(threading.get_ident()))
    assert soon.result(WAIT) == host.thread.ident
    run.detach()
    done.wait()
    assert host.errors == []


@pytest.mark.timeout(60)
def test_a_busy_reactor_turns_without_a_thread_hop(host: QueueHost, reactor: Reactor) -> None:
    """With work ready at once, the host's thread polls without blocking and schedules
    the next turn itself: the helper thread waits only when there is nothing to do."""
    waits = note_waits(reactor)
    done = Done()
    run = start_in(host, reactor, done)
    finished: Future[None] = Future()

    def chain(n: int) -> None:
        if n:
            reactor.call_soon(chain, n - 1)
        else:
            finished.set_result(None)

    host.call(reactor.call_soon, chain, 300)
    finished.result(WAIT)
    run.detach()
    done.wait()
    in_host = sum(1 for _, t in waits.seen if t == host.thread.ident)
    assert in_host >= 300 and len(waits.seen) - in_host < 10, (in_host, len(waits.seen))


@pytest.mark.timeout(60)
def test_a_protocol_bug_is_the_reactors_to_handle(
    host: QueueHost, reactor: Reactor, caplog: pytest.LogCaptureFixture,
) -> None:
    done = Done()
    run = start_in(host, reactor, done)
    listener = host.call(reactor.listen_tcp, "127.0.0.1", 0, echo_factory(None))
    with caplog.at_level(logging.ERROR, logger="reactor"), client(listener.port) as buggy, \
            client(listener.port) as good:
        echo_rounds(good, 2, b"before-")
        buggy.sendall(b"boom")
        assert buggy.recv(10) == b""  # that connection, closed
        echo_rounds(good, 2, b"after-")
    assert "a bug in data_received" in caplog.text
    assert run.attached and host.errors == []
    run.detach()
    done.wait()
    assert done.error is None


@pytest.mark.timeout(60)
def test_keyboard_interrupt_ends_the_run_and_is_handed_to_done_callback(
    host: QueueHost, reactor: Reactor,
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    done = Done()
    run = start_in(host, reactor, done)
    host.call(reactor.call_soon, interrupt)
    done.wait()
    assert isinstance(done.error, KeyboardInterrupt)
    assert host.errors == [] and not run.attached and guest_threads() == []
    assert not reactor.is_running()

    # without a done_callback it reaches the host, as it would leave run()
    run = start_in(host, reactor, None)
    host.call(reactor.call_soon, interrupt)
    deadline = time.monotonic() + WAIT
    while not host.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [type(e) for e in host.errors] == [KeyboardInterrupt]
    assert not run.attached and not reactor.is_running()


@pytest.mark.timeout(60)
def test_start_refuses_what_it_cannot_drive(host: QueueHost) -> None:
    for name in ("SelectSelector", "PollSelector"):
        with Reactor(selector=getattr(selectors, name)()) as r, \
                pytest.raises(LocalProtocolError, match="epoll, kqueue or devpoll"):
            start_in(host, r)
    with Reactor() as r:
        done = Done()
        run = start_in(host, r, done)
        with pytest.raises(LocalProtocolError, match="already running"):
            start_in(host, r)
        run.detach()
        done.wait()
    r = Reactor()
    r.close()
    with pytest.raises(ClosedError):
        start_in(host, r)
    assert guest_threads() == [] and host.errors == []


@pytest.mark.timeout(60)
def test_a_host_that_runs_turns_in_another_thread_is_refused(reactor: Reactor) -> None:
    """The turns must run in the thread that started the run (the reactor's thread);
    a host that runs them elsewhere ends the run with a clear error."""
    done = Done()

    def elsewhere(fn: Callable[[], object]) -> None:
        threading.Thread(target=fn).start()

    guest.start(reactor, elsewhere, done_callback=done)
    reactor.call_soon_threadsafe(lambda: None)  # the idle wait ends: a first turn
    done.wait()
    assert isinstance(done.error, LocalProtocolError)
    assert "which started the run" in str(done.error)
    assert not reactor.is_running()


@pytest.mark.timeout(60)
def test_abandon_releases_a_reactor_whose_host_quit(reactor: Reactor) -> None:
    dropped: list[Callable[[], object]] = []
    run = guest.start(reactor, dropped.append)  # a host that never runs anything again
    reactor.call_soon_threadsafe(lambda: None)
    deadline = time.monotonic() + WAIT
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.01)
    helper = run.thread
    assert helper is not None
    run.abandon()
    helper.join(WAIT)
    assert not helper.is_alive() and not reactor.is_running()
    fired: list[str] = []
    reactor.call_soon(fired.append, "by itself")
    reactor.run_once(0)
    assert fired == ["by itself"]


# -- Tk's after_idle, under a real X server ---------------------------------------------


@pytest.fixture
def x_display() -> str:
    """The session's X server (tests/xvfb.py): it outlives every Tk made here, which
    stay referenced until the exit (below), so none is left talking to a dead server."""
    return xvfb.x_display()


# Tcl aborts the process when an interpreter is freed by another thread than its own,
# and a reference cycle holding a Tk object may be collected in any thread (the next
# test's host thread, say): every Tk made here stays referenced until the exit.
_TK_KEPT: list[Any] = []


@pytest.mark.timeout(60)
def test_tk_after_idle_as_the_host(x_display: str, reactor: Reactor, threads: Threads) -> None:
    tkinter = pytest.importorskip("tkinter")
    try:
        root = tkinter.Tk(screenName=x_display)
    except tkinter.TclError as exc:
        pytest.skip(f"Tk cannot open {x_display}: {exc}")
    _TK_KEPT.append(root)
    try:
        reactor.connections = RecordingTable(threads)
        received = tkinter.Label(root, text="0")  # a widget, fed by the protocol
        received.pack()

        class Counting(Echo):
            def data_received(self, data: bytes) -> None:
                # Tk from a protocol method, without a lock: it is Tk's thread
                received["text"] = str(int(received["text"]) + len(data))
                super().data_received(data)

        def make() -> Echo:
            protocol = Counting()
            protocol.threads = threads
            return protocol

        done = Done()
        errors: list[BaseException] = []
        root.report_callback_exception = lambda *info: errors.append(info[1])

        def finished(error: BaseException | None) -> None:
            done(error)
            root.quit()

        run = guest.start(reactor, root.after_idle, done_callback=finished)
        listener = reactor.listen_tcp("127.0.0.1", 0, make)

        def clients() -> None:
            try:
                with client(listener.port) as a, client(listener.port) as b:
                    echo_rounds(a, 20, b"a")
                    echo_rounds(b, 20, b"b")
            finally:
                run.detach()  # from this thread: ends the run at the next turn

        worker = threading.Thread(target=clients)
        worker.start()
        watchdog = root.after(int(WAIT * 1000), root.quit)
        root.mainloop()
        root.after_cancel(watchdog)
        worker.join(WAIT)
        done.wait()
        main = threading.get_ident()
        assert threads.where() == {main}, threads.seen
        assert "protocol.data_received" in threads.kinds()
        assert int(received["text"]) == sum(len(b"a%d." % i) + len(b"b%d." % i) for i in range(20))
        assert done.error is None and errors == [] and guest_threads() == []
        assert not reactor.is_running()
    finally:
        root.destroy()


@pytest.mark.timeout(60)
def test_debug_mode_checks_other_threads_against_the_host_thread(host: QueueHost) -> None:
    with Reactor(debug=True) as r:
        done = Done()
        run = start_in(host, r, done)
        assert r.running_thread_id == host.thread.ident
        with pytest.raises(RuntimeError, match=r"Reactor\.call_later\(\) called from thread"):
            r.call_later(1.0, lambda: None)
        listener = host.call(r.listen_tcp, "127.0.0.1", 0, echo_factory(None))
        with client(listener.port) as sock:
            echo_rounds(sock, 3)
        run.detach()
        done.wait()
        assert done.error is None and host.errors == []
