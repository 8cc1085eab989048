"""What the guest-mode tests share (tests/test_embed_guest.py): a host made of a queue
and a thread, records of which thread did what, an echo protocol that notes its
callbacks' thread, and loopback clients.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from reactor import ConnectionTable, Reactor, Row
from reactor.embed import guest

WAIT = 10.0


class QueueHost:
    """The simplest host: a thread that runs the functions put in its queue, in order,
    and its own timers (:meth:`call_later`) when they are due.

    Attributes:
        errors: what the functions raised into the host (must stay empty: the guest
            handles its own errors).
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.errors: list[BaseException] = []
        self._timers: list[tuple[float, int, Callable[[], object]]] = []  # host thread only
        self._order = itertools.count()
        self.thread = threading.Thread(target=self._loop, name="host", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            while self._timers and self._timers[0][0] <= time.monotonic():
                self._run(heapq.heappop(self._timers)[2])
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                fn = self.queue.get(timeout=timeout)
            except queue.Empty:
                continue
            if fn is None:
                return
            self._run(fn)

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.errors.append(exc)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in the host's thread ``delay`` seconds from now, by a host timer
        (any thread may call it)."""
        due = time.monotonic() + delay
        entry = (due, next(self._order), fn)
        if threading.get_ident() == self.thread.ident:
            heapq.heappush(self._timers, entry)
        else:
            self.queue.put(lambda: heapq.heappush(self._timers, entry))

    def run_sync_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self.queue.put(fn)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the host's thread; its result."""
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.queue.put(run)
        return future.result(WAIT)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


class Done:
    """A ``done_callback`` that records its argument and its thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: BaseException | None = None
        self.thread: int | None = None

    def __call__(self, error: BaseException | None) -> None:
        self.error = error
        self.thread = threading.get_ident()
        self.event.set()

    def wait(self) -> None:
        assert self.event.wait(WAIT), "the guest run did not end"


class Threads:
    """Where things happened: (what, thread ident) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def note(self, what: str) -> None:
        with self.lock:
            self.seen.append((what, threading.get_ident()))

    def where(self, prefix: str = "") -> set[int]:
        return {t for what, t in self.seen if what.startswith(prefix)}

    def kinds(self) -> set[str]:
        return {what for what, _ in self.seen}


class RecordingTable(ConnectionTable):
    """A connection table that notes the thread of every change."""

    __slots__ = ("threads",)

    def __init__(self, threads: Threads) -> None:
        super().__init__()
        self.threads = threads

    def add(self, row: Row, slot: int = -1) -> None:
        self.threads.note("table.add")
        super().add(row, slot)

    def remove(self, row: Row) -> None:
        self.threads.note("table.remove")
        super().remove(row)

    def leave(self, row: Row, mark: int, slot: int = -1) -> None:  # a stream row's removal
        self.threads.note("table.remove")
        super().leave(row, mark, slot)


ROW_CHANGES = ("_init_row", "advance", "on_attach", "on_eof", "on_close", "on_flushed",
               "on_abort", "lose")


def note_row_changes(monkeypatch: pytest.MonkeyPatch) -> Threads:
    """Note every state change of every row with its thread (for one test)."""
    seen = Threads()
    for name in ROW_CHANGES:
        original = getattr(Row, name)

        def noting(self: Row, *args: Any, __name: str = name, __original: Any = original) -> Any:
            seen.note(f"row.{__name}")
            return __original(self, *args)

        monkeypatch.setattr(Row, name, functools.wraps(original)(noting))
    return seen


class Echo(asyncio.Protocol):
    """Echoes; notes the thread of every callback; ``b"boom"`` raises (a bug)."""

    threads: Threads | None = None

    def _note(self, what: str) -> None:
        if self.threads is not None:
            self.threads.note(f"protocol.{what}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._note("connection_made")
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._note("data_received")
        if data == b"boom":
            raise RuntimeError("a bug in data_received")
        self.transport.write(data)

    def eof_received(self) -> bool:
        self._note("eof_received")
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._note("connection_lost")


def echo_factory(threads: Threads | None) -> Callable[[], Echo]:
    def make() -> Echo:
        protocol = Echo()
        protocol.threads = threads
        return protocol
    return make


def echo_rounds(sock: socket.socket, rounds: int, tag: bytes = b"") -> None:
    for i in range(rounds):
        message = b"%s%d." % (tag, i)
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(len(message) - len(got))
            assert chunk, f"closed after {got!r}"
            got += chunk
        assert got == message


def client(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def guest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reactor guest wait"]


def note_waits(reactor: Reactor) -> Threads:
    """Note the thread of every wait of ``reactor`` (before a guest run starts)."""
    waits = Threads()
    plain_wait = reactor.wait_for_events

    def noting_wait(timeout: float | None) -> Any:
        waits.note("wait")
        return plain_wait(timeout)

    reactor.wait_for_events = noting_wait  # type: ignore[method-assign]
    return waits


def start_in(host: QueueHost, reactor: Reactor, done: Done | None = None) -> guest.GuestRun:
    run: guest.GuestRun = host.call(
        lambda: guest.start(reactor, host.run_sync_soon_threadsafe, done_callback=done))
    return run
