"""The guest mode's hosts in the embedding conformance kit (tests/embedkit.py).

A guest run (:func:`reactor.embed.guest.start`) is driven through nothing but the host's
"call this soon, from any thread": here a plain queue drained by a thread
(:class:`guestkit.QueueHost`), and Tk's ``after_idle`` under a real X server. Two things
differ from an :class:`~reactor.embed.base.Embedding`, and :class:`GuestDriver` bridges
them without loosening any check:

- a run is started anew to attach again (:func:`~reactor.embed.guest.start` once more);
  the turns of every run are counted together;
- a detach takes effect at the run's next turn, and the host must keep running what it
  is handed until ``done_callback``: so the adapters' ``stop()`` waits for that while a
  run is attached, as a host that honours guest mode does.

An exception handed to ``done_callback`` counts as one that reached the host.
"""

from __future__ import annotations

import abc
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from embedkit import WAIT, Host
from embedkit_hosts import TkHost
from guestkit import QueueHost

from reactor import Reactor
from reactor.embed import guest

T = TypeVar("T")


class GuestDriver:
    """Guest runs of one reactor, seen as one :class:`embedkit.Driver`."""

    def __init__(self, host: GuestHost, reactor: Reactor) -> None:
        self._host = host
        self._reactor = reactor
        self._run: guest.GuestRun | None = None
        self._past_turns = 0

    @property
    def turns(self) -> int:
        return self._past_turns + (self._run.turns if self._run is not None else 0)

    @property
    def attached(self) -> bool:
        return self._run is not None and self._run.attached

    def attach(self) -> None:
        if self._run is not None:
            self._past_turns += self._run.turns
        self._run = guest.start(self._reactor, self._host.run_sync_soon_threadsafe,
                                done_callback=self._done)

    def detach(self) -> None:
        if self._run is not None:
            self._run.detach()

    def abandon(self) -> None:
        """In the host's thread: release the reactor of a run the host gave up on."""
        if self._run is not None:
            self._run.abandon()

    def _done(self, error: BaseException | None) -> None:
        if error is not None:
            self._host.errors.append(error)
        self._host.guest_done()


class GuestHost(Host):
    """What both guest hosts share: the drivers, and a stop that waits for them."""

    def setup(self) -> None:
        self._drivers: list[GuestDriver] = []
        self._stop_when_done = False

    @abc.abstractmethod
    def run_sync_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """The host's "call this soon, in your thread", from any thread."""

    @abc.abstractmethod
    def really_stop(self) -> None:
        """Make :meth:`run` return."""

    def attach(self, reactor: Reactor) -> GuestDriver:
        driver = GuestDriver(self, reactor)
        driver.attach()
        self._drivers.append(driver)
        return driver

    def stop(self) -> None:
        if any(d.attached for d in self._drivers):
            self._stop_when_done = True  # a detach in progress ends in a later turn
        else:
            self.really_stop()

    def guest_done(self) -> None:
        if self._stop_when_done and not any(d.attached for d in self._drivers):
            self._stop_when_done = False
            self.really_stop()

    def abandon_all(self) -> None:
        """In the host's thread, after a run that timed out: release every reactor."""
        for driver in self._drivers:
            driver.abandon()


class QueueGuestHost(GuestHost):
    """The queue-and-thread host of tests/guestkit.py: its own thread runs the turns
    and the checks' host code; the main thread waits in :meth:`run`, doing only what
    :meth:`in_main_thread` hands it."""

    name = "guest-queue"

    def setup(self) -> None:
        super().setup()
        self.queue_host = QueueHost()
        self._main: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

    def teardown(self) -> None:
        self.queue_host.close()
        self.errors.extend(self.queue_host.errors)

    @property
    def thread_ident(self) -> int:
        ident = self.queue_host.thread.ident
        assert ident is not None
        return ident

    def run_sync_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self.queue_host.run_sync_soon_threadsafe(fn)

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        while True:  # a stop left from an earlier run
            try:
                self._main.get_nowait()
            except queue.Empty:
                break
        self.queue_host.run_sync_soon_threadsafe(body)
        deadline = time.monotonic() + timeout
        while True:
            try:
                job = self._main.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.queue_host.call(self.abandon_all)
                raise TimeoutError(f"{self.name} host not stopped within {timeout} s") \
                    from None
            if job is None:
                return
            job()

    def really_stop(self) -> None:
        self._main.put(None)

    def in_main_thread(self, fn: Callable[[], T]) -> T:
        result: Future[T] = Future()

        def job() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._main.put(job)
        return result.result(WAIT)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        self.queue_host.call_later(delay, fn)


class TkGuestHost(GuestHost, TkHost):
    """A real Tk interpreter whose only service to the reactor is ``after_idle``,
    called from the guest's helper thread (tkinter hands it to Tk's thread)."""

    name = "guest-tk"

    def setup(self) -> None:
        GuestHost.setup(self)
        TkHost.setup(self)

    def run_sync_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self.root.after_idle(fn)

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        try:
            TkHost.run(self, body, timeout)
        except TimeoutError:
            self.abandon_all()
            raise

    def really_stop(self) -> None:
        TkHost.stop(self)


GUESTS: dict[str, type[Host]] = {
    "guest-queue": QueueGuestHost,
    "guest-tk": TkGuestHost,
}
