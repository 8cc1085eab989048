"""Once-per-episode logging (:mod:`reactor.sansio.episodes`), with a fake clock and timers:
a flood of events is one line at its level, the rest at DEBUG, and one summary at the
end; a lone event leaves neither a summary nor a timer."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from reactor.sansio.episodes import Episode

LOGGER = "reactor.test.episodes"


class Timers:
    """A fake clock and ``schedule``: timers run when :meth:`advance` passes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[list[object]] = []  # [when, callback, cancelled]

    def clock(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timers.Handle:
        entry: list[object] = [self.now + delay, callback, False]
        self.pending.append(entry)
        return Timers.Handle(entry)

    class Handle:
        def __init__(self, entry: list[object]) -> None:
            self.entry = entry

        def cancel(self) -> None:
            self.entry[2] = True

    def live(self) -> int:
        return sum(1 for e in self.pending if not e[2])

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [e for e in self.pending if not e[2] and e[0] <= self.now]  # type: ignore[operator]
            if not due:
                return
            for entry in due:
                entry[2] = True
                entry[1]()  # type: ignore[operator]


def summary(count: int, seconds: float) -> str:
    return f"closed {count} in {seconds:.1f} s"


def make(timers: Timers, **options: object) -> Episode:
    return Episode(logging.getLogger(LOGGER), clock=timers.clock, schedule=timers.schedule,
                   summary=summary, **options)  # type: ignore[arg-type]


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == level]


def test_a_flood_is_one_line_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    timers = Timers()
    episode = make(timers)
    for n in range(1000):
        started = episode.event("peer %d: closing: idle timeout", n)
        assert started == (n == 0)
        timers.advance(0.01)
    assert lines(caplog, logging.INFO) == ["peer 0: closing: idle timeout"]
    assert len(lines(caplog, logging.DEBUG)) == 999  # each one, for --log-level debug
    assert timers.live() == 1  # one timer for the episode, not one per event
    timers.advance(0.5)
    assert episode.active  # events came until 0.5 s ago
    timers.advance(1.0)
    assert not episode.active and timers.live() == 0
    assert lines(caplog, logging.INFO) == ["peer 0: closing: idle timeout",
                                           "closed 1000 in 10.0 s"]


def test_a_lone_event_leaves_no_summary_and_no_timer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    timers = Timers()
    episode = make(timers)
    assert episode.event("one")
    assert timers.live() == 0
    timers.advance(5)
    assert episode.event("two, much later: a new episode")
    assert episode.episodes == 2
    assert lines(caplog, logging.INFO) == ["one", "two, much later: a new episode"]


def test_a_held_state_keeps_the_episode_open_without_a_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    timers = Timers()
    episode = make(timers, level=logging.WARNING, always_summarize=True)
    episode.event("at the cap")
    episode.hold()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert timers.live() == 0  # an idle server at its cap: no wake-ups
    timers.advance(10)  # still at the cap: no summary
    assert episode.active and len(caplog.records) == 1
    episode.release()
    timers.advance(0.5)
    episode.event("at the cap again")  # within the quiet second: the same episode
    episode.hold()
    assert timers.live() == 0
    timers.advance(2)
    episode.release()
    timers.advance(0.9)
    assert episode.active
    timers.advance(0.2)
    assert not episode.active and timers.live() == 0
    assert lines(caplog, logging.INFO) == ["closed 2 in 12.5 s"]  # a pause says it ended
    assert episode.episodes == 1


def test_end_and_cancel(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    timers = Timers()
    episode = make(timers)
    episode.event("a")
    episode.event("b")
    episode.end()
    assert timers.live() == 0 and lines(caplog, logging.INFO) == ["a", "closed 2 in 0.0 s"]
    episode.end()  # between episodes: nothing
    episode.event("c")
    episode.event("d")
    episode.cancel()
    assert timers.live() == 0 and not episode.active
    assert lines(caplog, logging.INFO) == ["a", "closed 2 in 0.0 s", "c"]
