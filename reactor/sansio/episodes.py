"""Once-per-episode logging for the events that refuse, pause or drop something.

A flood (ten thousand slowloris clients closed at their request deadline, a listener
reaching its connection cap again and again) must not become ten thousand log lines,
yet the first event must be seen at once and the end must be told. An
:class:`Episode` does both:

* an *episode* is a run of like events with no gap longer than ``quiet`` seconds
  between two of them; a state that lasts (a listener at its cap) is *held*
  (:meth:`Episode.hold`) and the quiet time counts from its :meth:`Episode.release`;
* its first event is logged at the episode's level (INFO or WARNING) with that event's
  own details; the others go to DEBUG only, so ``--log-level debug`` still shows each;
* when the episode ends, one INFO line from ``summary(count, seconds)`` says how many
  events there were and for how long (from the first event to the last, or to the
  last release); an episode of one event adds no summary unless
  ``always_summarize`` (a pause must say that it ended, a single close need not).

One timer per episode, never per event: it is armed when the episode has something to
summarize (its second event, or its first with ``always_summarize``) and, when it fires
early (events kept coming), re-armed for the last event's quiet end. A lone event leaves
no timer behind; the next event, after ``quiet`` seconds, starts a new episode. While
held, no timer runs at all, so an idle server at its cap makes no wake-ups.

Socket-free: time and timers come from the caller (``clock()`` and
``schedule(delay, callback)``, e.g. a reactor's ``time`` and ``call_later``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["DEFAULT_QUIET", "Cancellable", "Episode"]

DEFAULT_QUIET: Final = 1.0  # seconds without an event that end an episode


class Cancellable(Protocol):
    """What ``schedule`` returns: a timer that can be cancelled."""

    def cancel(self) -> None: ...


class Episode:
    """Logs a run of like events once at its start and once at its end.

    Args:
        logger: where the lines go.
        clock: the current time in seconds (monotonic).
        schedule: ``schedule(delay, callback)`` runs ``callback()`` after ``delay``
            seconds and returns a handle with ``cancel()``.
        summary: ``summary(count, seconds)``, the text of the closing line.
        level: the level of the first event's line (INFO or WARNING).
        quiet: how long without an event ends the episode.
        always_summarize: log the summary also after a single event.

    Attributes:
        count: events in the current episode (0 between episodes).
        episodes: episodes started so far.
    """

    __slots__ = ("_clock", "_held", "_last", "_schedule", "_started", "_summary", "_timer",
                 "always_summarize", "count", "episodes", "level", "logger", "quiet")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        clock: Callable[[], float],
        schedule: Callable[[float, Callable[[], None]], Cancellable | None],
        summary: Callable[[int, float], str],
        level: int = logging.INFO,
        quiet: float = DEFAULT_QUIET,
        always_summarize: bool = False,
    ) -> None:
        self.logger = logger
        self._clock = clock
        self._schedule = schedule
        self._summary = summary
        self.level = level
        self.quiet = quiet
        self._held = False
        self.always_summarize = always_summarize
        self.count = 0
        self.episodes = 0
        self._started = 0.0
        self._last = 0.0
        self._timer: Cancellable | None = None

    @property
    def active(self) -> bool:
        """Whether an episode is under way."""
        return self.count > 0

    def event(self, message: str, *args: object) -> bool:
        """One event: logged at :attr:`level` if it starts an episode, else at DEBUG.

        Returns:
            True when this event started an episode.
        """
        now = self._clock()
        if (self.count == 1 and self._timer is None and not self._held
                and now - self._last > self.quiet):
            self.count = 0  # a lone event, long ago: its episode ended without a word
        self._last = now
        self.count += 1
        if self.count == 1:
            self._started = now
            self.episodes += 1
            self.logger.log(self.level, message, *args)
            if self.always_summarize:
                self._arm(self.quiet)
            return True
        if self._timer is None and not self._held:  # a second event: a summary is due
            self._arm(self.quiet)
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(message, *args)
        return False

    def hold(self) -> None:
        """The state the last event began still holds (a listener at its cap): the
        episode cannot end, and no timer runs, until :meth:`release`."""
        if self.count and not self._held:
            self._held = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def release(self) -> None:
        """The held state ended: the episode ends ``quiet`` seconds from now, unless
        another event comes first."""
        if self._held:
            self._held = False
            self._last = self._clock()
            self._arm(self.quiet)

    def _arm(self, delay: float) -> None:
        self._timer = self._schedule(max(delay, 0.0), self._check)

    def _check(self) -> None:
        self._timer = None
        if not self.count or self._held:
            return
        left = self._last + self.quiet - self._clock()
        if left > 0:
            self._arm(left)
        else:
            self.end()

    def end(self) -> None:
        """End the episode now (logging its summary); nothing happens between episodes."""
        count = self.count
        if not count:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.count = 0
        self._held = False
        if count > 1 or self.always_summarize:
            self.logger.info("%s", self._summary(count, self._last - self._started))

    def cancel(self) -> None:
        """Forget the episode without a summary (its owner is going away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.count = 0
        self._held = False
