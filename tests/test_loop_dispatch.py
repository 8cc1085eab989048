"""The loop's dispatch step, fed literal event lists, on both paths.

The generic path (``selector.select()`` pairs, :meth:`Reactor._dispatch`) and the epoll
fast path (``epoll.poll`` pairs, :meth:`Reactor._dispatch_epoll`) run the same
scenarios with fake objects implementing :class:`reactor.io.loop.ReadyTarget`, and
must agree, the stale-key rule included: an event for a descriptor unregistered, or
registered to another object, earlier in the same batch is dropped; one registered
again to the same object gets its current interest mask. No sockets: the generic path
runs on a :class:`FakeSelector` with integer descriptors, the epoll path on pipes.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
from collections.abc import Callable, Iterator

import pytest

from reactor import Reactor
from reactor.io.loop import ReadyTarget
from reactor.sansio.timers import TimerHandle, TimerHeap
from reactor.testing import FakeClock, FakeSelector

EPOLLIN = getattr(select, "EPOLLIN", 0x001)
EPOLLOUT = getattr(select, "EPOLLOUT", 0x004)
EPOLLERR = getattr(select, "EPOLLERR", 0x008)
EPOLLHUP = getattr(select, "EPOLLHUP", 0x010)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Fake:
    """A dispatch target that records its calls and may act on the loop."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls
        self.on_read: Callable[[], None] | None = None
        self.fail: BaseException | None = None
        self.force_closed: list[BaseException] = []

    def _read_ready(self) -> None:
        self.calls.append(f"{self.name} read")
        if self.fail is not None:
            raise self.fail
        if self.on_read is not None:
            self.on_read()

    def _write_ready(self) -> None:
        self.calls.append(f"{self.name} write")

    def describe(self) -> str:
        return f"fake {self.name}"

    def _force_close(self, exc: BaseException) -> None:
        self.force_closed.append(exc)


class Harness:
    """One reactor and named descriptors; ``dispatch`` takes ``[(name, epoll mask)]``."""

    def __init__(self, reactor: Reactor, fds: list[int], epoll: bool) -> None:
        self.reactor = reactor
        self.epoll = epoll
        self.fds = dict(zip("abcd", fds, strict=True))
        self.calls: list[str] = []

    def fake(self, name: str) -> Fake:
        return Fake(name, self.calls)

    def register(self, name: str, mask: int, target: ReadyTarget) -> None:
        self.reactor.selector.register(self.fds[name], mask, target)

    def unregister(self, name: str) -> None:
        self.reactor.selector.unregister(self.fds[name])

    def modify(self, name: str, mask: int, target: ReadyTarget) -> None:
        self.reactor.selector.modify(self.fds[name], mask, target)

    def dispatch(self, events: list[tuple[str, int]]) -> list[str]:
        raw = [(self.fds[name], mask) for name, mask in events]
        if self.epoll:
            self.reactor._dispatch_epoll(raw)
        else:  # as selectors.EpollSelector.select maps them, with the keys at poll time
            current = self.reactor.selector.get_map()
            pairs = []
            for fd, mask in raw:
                key = current[fd]
                mapped = (READ if mask & ~EPOLLOUT else 0) | (WRITE if mask & ~EPOLLIN else 0)
                pairs.append((key, mapped & key.events))
            self.reactor._dispatch(pairs)
        return self.calls


def _generic() -> Iterator[Harness]:
    with Reactor(selector=FakeSelector(), clock=FakeClock()) as reactor:
        yield Harness(reactor, [100, 101, 102, 103], epoll=False)


def _epoll(timed: bool = False) -> Iterator[Harness]:
    if not hasattr(selectors, "EpollSelector"):
        pytest.skip("no epoll here")
    pipes = [os.pipe() for _ in range(4)]
    try:
        with Reactor(selector=selectors.EpollSelector(), clock=FakeClock()) as reactor:
            assert reactor._epoll is not None  # the fast path is taken
            if timed:  # --loop-health's timed copy of the epoll dispatch step
                reactor.enable_health(slow_callback_duration=0.1)
                assert type(reactor.epoll_path).__name__ == "TimedEpollPath"
            yield Harness(reactor, [r for r, _ in pipes], epoll=True)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


@pytest.fixture(params=["generic", "epoll", "epoll-timed"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Every scenario on the generic path, the epoll fast path, and the fast path's
    timed copy (reactor/io/health.py), which must behave exactly as the plain one."""
    if request.param == "generic":
        yield from _generic()
    else:
        yield from _epoll(timed=request.param == "epoll-timed")


def test_readable(h: Harness) -> None:
    h.register("a", READ, h.fake("a"))
    assert h.dispatch([("a", EPOLLIN)]) == ["a read"]


def test_hang_up_counts_as_both_masked_by_interest(h: Harness) -> None:
    h.register("a", READ, h.fake("a"))
    h.register("b", READ | WRITE, h.fake("b"))
    h.register("c", WRITE, h.fake("c"))
    events = [("a", EPOLLIN | EPOLLHUP), ("b", EPOLLHUP), ("c", EPOLLERR)]
    assert h.dispatch(events) == ["a read", "b read", "b write", "c write"]


def test_writable_only(h: Harness) -> None:
    h.register("a", READ | WRITE, h.fake("a"))
    assert h.dispatch([("a", EPOLLOUT)]) == ["a write"]


def test_an_event_for_a_descriptor_unregistered_earlier_in_the_batch_is_dropped(
    h: Harness,
) -> None:
    a = h.fake("a")
    a.on_read = lambda: h.unregister("b")
    h.register("a", READ, a)
    h.register("b", READ, h.fake("b"))
    assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN | EPOLLHUP)]) == ["a read"]


def test_an_event_for_a_descriptor_reused_by_another_object_is_dropped(h: Harness) -> None:
    # a closes b's connection and connects out; the new socket gets b's number
    connector = h.fake("connector")

    def close_and_connect() -> None:
        h.unregister("b")
        h.register("b", WRITE, connector)

    a = h.fake("a")
    a.on_read = close_and_connect
    h.register("a", READ, a)
    h.register("b", READ, h.fake("b"))
    # b's hang-up must not reach the connector as "writable: connected"
    assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN | EPOLLHUP)]) == ["a read"]
    assert h.reactor.selector.get_map()[h.fds["b"]].data is connector


def test_an_event_for_a_descriptor_modified_to_another_object_is_dropped(h: Harness) -> None:
    a = h.fake("a")
    a.on_read = lambda: h.modify("b", READ | WRITE, h.fake("other"))
    h.register("a", READ, a)
    h.register("b", READ | WRITE, h.fake("b"))
    assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN | EPOLLOUT)]) == ["a read"]


def test_the_same_object_registered_again_gets_its_current_mask(h: Harness) -> None:
    b = h.fake("b")

    def narrow() -> None:
        h.unregister("b")
        h.register("b", READ, b)

    a = h.fake("a")
    a.on_read = narrow
    h.register("a", READ, a)
    h.register("b", READ | WRITE, b)
    assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN | EPOLLOUT)]) == ["a read", "b read"]


def test_back_to_the_object_polled_for_after_a_detour_is_delivered(h: Harness) -> None:
    b = h.fake("b")

    def detour() -> None:
        h.modify("b", READ, h.fake("other"))
        h.modify("b", WRITE, b)

    a = h.fake("a")
    a.on_read = detour
    h.register("a", READ, a)
    h.register("b", READ | WRITE, b)
    assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN | EPOLLOUT)]) == ["a read", "b write"]


def test_the_rule_holds_for_one_batch_only(h: Harness) -> None:
    connector = h.fake("connector")

    def close_and_connect() -> None:
        h.unregister("b")
        h.register("b", WRITE, connector)

    a = h.fake("a")
    a.on_read = close_and_connect
    h.register("a", READ, a)
    h.register("b", READ, h.fake("b"))
    h.dispatch([("a", EPOLLIN), ("b", EPOLLHUP)])
    a.on_read = None
    # the next poll's events for the new registration are its own
    assert h.dispatch([("b", EPOLLOUT)]) == ["a read", "connector write"]


def test_a_callback_that_raises_is_logged_and_closed_and_the_batch_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    a = h.fake("a")
    a.fail = RuntimeError("handler bug")
    h.register("a", READ, a)
    h.register("b", READ, h.fake("b"))
    with caplog.at_level(logging.ERROR, logger="reactor"):
        assert h.dispatch([("a", EPOLLIN), ("b", EPOLLIN)]) == ["a read", "b read"]
    assert a.force_closed == [a.fail]
    assert "fake a" in caplog.text


# -- accessors ---------------------------------------------------------------------


def test_reactor_now_is_the_reading_after_the_last_poll() -> None:
    clock = FakeClock(5.0)
    with Reactor(selector=FakeSelector(), clock=clock) as reactor:
        assert reactor.now == 5.0
        clock.advance(2.0)
        assert reactor.now == 5.0 and reactor.time() == 7.0
        reactor.run_once(0)
        assert reactor.now == 7.0


def test_timer_heap_is_one_list_through_compaction_and_clear() -> None:
    heap = TimerHeap()
    entries = heap.heap
    handles = [heap.push(TimerHandle(float(i), lambda: None, ())) for i in range(200)]
    for handle in handles[:150]:
        handle.cancel()
    assert heap.heap is entries and heap.size < 150  # compacted in place
    assert len(heap) == 50 and heap.next_deadline() == 150.0
    heap.clear()
    assert heap.heap is entries and not entries
