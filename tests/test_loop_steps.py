"""The loop's iteration cut in steps (reactor/io/steps.py): prepare, wait, process.

``run_once`` keeps its own copy of the poll and dispatch lines; the steps must behave
exactly as it does, on the epoll fast path and on the generic path, for the same
script of readiness, timers and callbacks. Between a wait and its processing, the
driving thread may change registrations: an event made stale by such a change is
dropped, never handed to the descriptor's new owner.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reactor import ClosedError, LocalProtocolError, Reactor
from reactor.io.steps import Polled


class PlainEpoll(selectors.EpollSelector):
    """An epoll selector the fast path does not take (a subclass): the generic path,
    with a descriptor of its own."""


SELECTORS = {"epoll-fast-path": selectors.EpollSelector, "generic-path": PlainEpoll}


class Target:
    """A registered descriptor that records its readiness in the shared trace and
    drains what it reads; ``on_read`` runs after (to act on the reactor)."""

    def __init__(self, name: str, sock: socket.socket, trace: list[Any],
                 on_read: Callable[[], None] | None = None) -> None:
        self.name = name
        self.sock = sock
        self.trace = trace
        self.on_read = on_read

    def _read_ready(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            data = b"(nothing)"
        self.trace.append((self.name, data))
        if self.on_read is not None:
            self.on_read()

    def _write_ready(self) -> None:
        self.trace.append((self.name, "writable"))


def one_iteration_by_steps(reactor: Reactor) -> None:
    """What a driver does: the three steps in a row, in one thread."""
    timeout = reactor.prepare_wait()
    reactor.process_events(reactor.wait_for_events(timeout))


def play(selector_class: type[selectors.BaseSelector],
         iterate: Callable[[Reactor], None]) -> list[Any]:
    """One script of readiness, timers and callbacks; the trace of what ran, in order."""
    trace: list[Any] = []
    pairs = [socket.socketpair() for _ in range(3)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    reactor = Reactor(selector=selector_class())
    try:
        targets = [Target(f"t{i}", a, trace) for i, (a, _) in enumerate(pairs)]

        def drop(index: int) -> Callable[[], None]:
            def dropper() -> None:  # the first of t0 and t2 read drops the other
                if reactor.selector.get_map().get(pairs[index][0]) is not None:
                    reactor.selector.unregister(pairs[index][0])
                    trace.append(f"t{index} dropped")
            return dropper

        targets[0].on_read = drop(2)
        targets[2].on_read = drop(0)
        for target in targets:
            reactor.selector.register(target.sock, selectors.EVENT_READ, target)

        def chain(n: int) -> None:
            trace.append(("chain", n))
            if n:
                reactor.call_soon(chain, n - 1)  # runs in the next iteration

        script: list[Callable[[], None]] = [
            lambda: pairs[1][1].send(b"one"),
            lambda: reactor.call_soon(chain, 2),
            lambda: (pairs[2][1].send(b"two"), pairs[0][1].send(b"zero")),
            lambda: reactor.call_later(0, trace.append, "timer"),
            lambda: reactor.call_soon_threadsafe(trace.append, "threadsafe"),
            lambda: pairs[1][1].send(b"again"),
        ]
        for step in script:
            step()
            iterate(reactor)
            trace.append(("iteration", reactor.statistics().iterations))
        return trace
    finally:
        reactor.close()
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", SELECTORS)
def test_the_steps_do_what_run_once_does(path: str) -> None:
    by_run_once = play(SELECTORS[path], lambda r: r.run_once(5))
    by_steps = play(SELECTORS[path], one_iteration_by_steps)
    assert by_steps == by_run_once
    # the script did exercise what it meant to: both kinds of event, and the drop
    assert ("t1", b"one") in by_run_once and "timer" in by_run_once
    read_first = [e[0] for e in by_run_once if e in (("t0", b"zero"), ("t2", b"two"))]
    assert len(read_first) == 1
    other = "t2" if read_first == ["t0"] else "t0"
    assert f"{other} dropped" in by_run_once


def test_the_fast_path_is_taken_or_not_as_the_test_means() -> None:
    with Reactor(selector=selectors.EpollSelector()) as fast, \
            Reactor(selector=PlainEpoll()) as generic:
        assert fast.epoll_path is not None
        assert generic.epoll_path is None


@pytest.fixture(params=list(SELECTORS))
def stepped(request: pytest.FixtureRequest) -> Iterator[Reactor]:
    r = Reactor(selector=SELECTORS[request.param]())
    yield r
    if r.is_running():
        r.release_thread()
    r.close()


@pytest.mark.timeout(30)
def test_an_event_made_stale_between_wait_and_processing_is_dropped(stepped: Reactor) -> None:
    """The host closes a descriptor between the wait and the processing, and a new one
    takes its number: the old event must not reach the new owner."""
    trace: list[Any] = []
    old_a, old_b = socket.socketpair()
    old_a.setblocking(False)
    stepped.selector.register(old_a, selectors.EVENT_READ, Target("old", old_a, trace))
    old_b.send(b"for the old one")
    fd = old_a.fileno()

    timeout = stepped.prepare_wait()
    polled = stepped.wait_for_events(timeout)
    assert polled.events, "the wait saw the old descriptor readable"

    # the gap: the host's code closes the old connection; a new one gets its number
    stepped.selector.unregister(old_a)
    old_a.close()
    new_a, new_b = socket.socketpair()
    try:
        if new_a.fileno() != fd:  # another thread took the number: take it back
            os.dup2(new_a.fileno(), fd)
            moved = socket.socket(fileno=fd)
            new_a.close()
            new_a = moved
        new_a.setblocking(False)
        stepped.selector.register(new_a, selectors.EVENT_READ, Target("new", new_a, trace))
        stepped.process_events(polled)
        assert trace == [], "a stale event was handed to the descriptor's new owner"

        # the new owner's own readiness is reported by the next wait, as usual
        new_b.send(b"for the new one")
        stepped.process_events(stepped.wait_for_events(stepped.prepare_wait()))
        assert trace == [("new", b"for the new one")]
    finally:
        new_a.close()
        new_b.close()
        old_b.close()


@pytest.mark.timeout(30)
def test_a_registration_changed_back_in_the_gap_keeps_its_event(stepped: Reactor) -> None:
    """Only a change of owner makes an event stale: a descriptor whose interest was
    modified, or unregistered and registered again to the same object, keeps it."""
    trace: list[Any] = []
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        target = Target("same", a, trace)
        stepped.selector.register(a, selectors.EVENT_READ, target)
        b.send(b"hello")
        polled = stepped.wait_for_events(stepped.prepare_wait())
        stepped.selector.unregister(a)
        stepped.selector.register(a, selectors.EVENT_READ, target)
        stepped.process_events(polled)
        assert trace == [("same", b"hello")]


def test_nothing_is_recorded_once_the_events_are_processed() -> None:
    with Reactor(selector=selectors.EpollSelector()) as r:
        assert r.epoll_path is not None
        keys = r.epoll_path.keys
        r.prepare_wait()
        assert keys.batch is not None
        r.process_events(r.wait_for_events(0))
        assert keys.batch is None and not keys.polled and not keys.held
        r.claim_thread()
        r.prepare_wait()
        r.release_thread()  # a wait given up: its recording ends too
        assert keys.batch is None and not keys.polled


def test_process_events_reports_a_stop() -> None:
    with Reactor() as r:
        r.claim_thread()
        try:
            r.call_soon(r.stop)
            assert r.process_events(r.wait_for_events(r.prepare_wait())) is False
        finally:
            r.release_thread()
        # released: no stop is left pending for the next run
        r.call_soon(r.stop)
        r.run()  # returns after the iteration that runs stop, not before
        assert r.statistics().iterations == 2


def test_claim_thread_is_what_run_does_to_the_reactor() -> None:
    with Reactor() as r:
        r.claim_thread()
        try:
            assert r.is_running()
            assert r.running_thread_id == threading.get_ident()
            with pytest.raises(LocalProtocolError, match="already running"):
                r.claim_thread()
            with pytest.raises(LocalProtocolError, match="already running"):
                r.run()
            with pytest.raises(LocalProtocolError, match="cannot close"):
                r.close()
        finally:
            r.release_thread()
        assert not r.is_running() and r.running_thread_id is None


@pytest.mark.parametrize("name", ["SelectSelector", "PollSelector"])
def test_claim_thread_refuses_a_selector_a_waiting_thread_would_not_see(name: str) -> None:
    with Reactor(selector=getattr(selectors, name)()) as r:
        with pytest.raises(LocalProtocolError, match="epoll, kqueue or devpoll"):
            r.claim_thread()
        assert not r.is_running()


def test_a_closed_reactor_refuses_the_steps() -> None:
    r = Reactor()
    r.close()
    with pytest.raises(ClosedError):
        r.claim_thread()
    with pytest.raises(ClosedError):
        r.process_events(Polled(None, []))


@pytest.mark.timeout(30)
def test_the_wait_may_block_in_another_thread_and_is_woken() -> None:
    """The wait alone runs in a helper thread; work queued by the driving thread ends
    it at once (the wake-up channel)."""
    with Reactor() as r:
        r.claim_thread()
        try:
            ran: list[int] = []
            timeout = r.prepare_wait()
            assert timeout is None  # nothing to do: wait for ever
            box: list[Polled] = []
            helper = threading.Thread(target=lambda: box.append(r.wait_for_events(timeout)))
            helper.start()
            r.call_soon(lambda: ran.append(threading.get_ident()))
            helper.join(10)
            assert not helper.is_alive(), "queued work did not end the wait"
            r.process_events(box[0])
            assert ran == [threading.get_ident()]
        finally:
            r.release_thread()
