"""The conformance kit every embedding of the reactor passes, whatever its host.

One small adapter per host (:class:`Host`) gives the checks what they need from a host
loop: run it on this thread until told to stop, stop it, run a host timer, attach a
reactor, and serve the host's own echo clients the host's way. The checks
(:data:`CHECKS`) are written once against that interface, like trio's
``check_two_way_stream``:

- serve: the reactor serves real clients while the host serves its own and keeps its
  timer;
- detach and reattach: a detached reactor gets no turns, keeps its connections and
  queued work, runs by itself, and serves again once attached again;
- timers on time: the reactor's timers fire in order, never early, never much late;
- cross-thread wake-up: ``call_soon_threadsafe`` from another thread wakes the idle
  host at once, and the callback runs on the host's thread;
- a protocol's exception is logged by the reactor, closes that connection only, and
  never reaches the host's loop;
- detach leaves the host's loop whole: its own timer and its own clients go on, and the
  reactor gets no more turns;
- signals stay the host's: attaching and driving the reactor installs no signal handler
  and no wake-up descriptor, unless the user hands a signal to the reactor
  (``add_signal_handler``), which then delivers it in the host's thread and gives it
  back as it was;
- and around each check: no descriptor or thread left behind.

What a host's ``attach`` returns is a :class:`Driver`: an
:class:`~reactor.embed.base.Embedding` is one; a guest run
(:mod:`reactor.embed.guest`) or a host loop that calls ``run_once(0)`` itself is
wrapped in one by its adapter. The adapters live in tests/embedkit_hosts.py and
tests/embedkit_guests.py (:data:`~embedkit_hosts.HOSTS`); tests/test_embed_conformance.py
runs every check against every entry.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from reactor import Reactor

T = TypeVar("T")

WAIT = 10.0  # seconds any one run of a host may take before the check fails


class Echo(asyncio.Protocol):
    """Echoes every chunk; ``b"boom"`` raises instead (a bug in a protocol)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("a bug in data_received")
        self.transport.write(data)


def echo_rounds(sock: socket.socket, rounds: int, tag: bytes = b"") -> None:
    """``rounds`` request/reply exchanges over a blocking ``sock``; raise on a wrong
    reply."""
    for i in range(rounds):
        message = b"%s%d." % (tag, i)
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(len(message) - len(got))
            if not chunk:
                raise ConnectionError(f"closed after {got!r}")
            got += chunk
        assert got == message, (got, message)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


class Driver(Protocol):
    """What drives the reactor from a host: an
    :class:`~reactor.embed.base.Embedding`, or an adapter's wrapper that behaves as one
    (attach again, detach, count the turns)."""

    turns: int

    @property
    def attached(self) -> bool:
        """Whether the host drives the reactor now (False once a detach took effect)."""

    def attach(self) -> None:
        """Drive the reactor again after a detach."""

    def detach(self) -> None:
        """Stop driving the reactor (at once, or at the host's next turn)."""


class Host(abc.ABC):
    """One host loop, run from the calling (main) thread.

    Attributes:
        name: the host's name in test ids.
        errors: what the host's own loop reported as errors (exceptions that reached
            it); every check ends with this empty.
        needs_display: whether the host needs an X server (tests/xvfb.py).
    """

    name = "?"
    needs_display = False

    def __init__(self) -> None:
        self.errors: list[object] = []
        self._main_thread = threading.get_ident()

    @property
    def thread_ident(self) -> int:
        """The thread the host's loop runs its callbacks in (by default the calling
        thread, which :meth:`run` drives)."""
        return self._main_thread

    def in_main_thread(self, fn: Callable[[], T]) -> T:
        """From the host's thread during a run: ``fn()`` run in the main thread, where
        the process's signal state may be read (a host with a thread of its own
        overrides this)."""
        assert threading.get_ident() == threading.main_thread().ident
        return fn()

    def warm_up(self) -> None:  # noqa: B027 (most hosts keep nothing)
        """Create what the host keeps for the whole process once made (before the check
        counts descriptors)."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Create the host loop."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Close the host loop and what it served."""

    @abc.abstractmethod
    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        """Run the host loop; call ``body()`` on its thread once it runs; return after
        :meth:`stop`.

        Raises:
            TimeoutError: :meth:`stop` was not called within ``timeout`` seconds.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Make :meth:`run` return (called on the host's thread)."""

    @abc.abstractmethod
    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on the host's thread after ``delay`` seconds, by a host timer."""

    @abc.abstractmethod
    def attach(self, reactor: Reactor) -> Driver:
        """Attach ``reactor`` to this host (called on the host's thread, in a run)."""

    def listen_echo(self) -> int | None:
        """Serve echo the host's own way (from :meth:`setup` on); its port, or None."""
        return None


class Ticker:
    """The host's own periodic work: a host timer every ``period`` seconds, recording
    when it ran."""

    def __init__(self, host: Host, period: float = 0.01) -> None:
        self.host = host
        self.period = period
        self.times: list[float] = []
        self.running = False

    def start(self) -> None:
        self.running = True
        self._tick()

    def _tick(self) -> None:
        if self.running:
            self.times.append(time.monotonic())
            self.host.call_later(self.period, self._tick)


class Worker:
    """A client thread that, when done (or failed), wakes the host through the
    reactor's ``call_soon_threadsafe`` and runs ``then`` on the host's thread."""

    def __init__(self, reactor: Reactor, fn: Callable[[], object],
                 then: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self._reactor, self._fn, self._then = reactor, fn, then
        self.thread = threading.Thread(target=self._main, name="embedkit client")

    def start(self) -> Worker:
        self.thread.start()
        return self

    def _main(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self._reactor.call_soon_threadsafe(self._then)

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def run_clients(host: Host, reactor: Reactor, clients: Callable[[], object], ticker: Ticker,
                linger: float = 0.0) -> Driver:
    """Attach, start the host's ticker and ``clients`` in a thread; once they are done
    (and ``linger`` seconds more), stop the ticker, detach and stop the host. Returns
    the (detached) embedding; raises what the clients raised."""
    state: dict[str, Any] = {}

    def finish() -> None:
        ticker.running = False
        state["embedding"].detach()
        host.stop()

    def body() -> None:
        state["embedding"] = host.attach(reactor)
        ticker.start()
        state["worker"] = Worker(reactor, clients, lambda: host.call_later(linger, finish))
        state["worker"].start()

    host.run(body)
    state["worker"].join()
    embedding: Driver = state["embedding"]
    return embedding


# -- the checks -----------------------------------------------------------------------


def check_serves(host: Host, reactor: Reactor) -> None:
    """The reactor serves real clients while the host serves its own and ticks."""
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port
    host_port = host.listen_echo()
    ticker = Ticker(host)

    def clients() -> None:
        # interleaved, both loops busy at once, until the host's timer has run a while
        with connect(port) as ours:
            theirs = connect(host_port) if host_port is not None else None
            try:
                i = 0
                while i < 50 or len(ticker.times) < 5:
                    echo_rounds(ours, 2, b"r%d-" % i)
                    if theirs is not None:
                        echo_rounds(theirs, 2, b"h%d-" % i)
                    i += 1
            finally:
                if theirs is not None:
                    theirs.close()

    embedding = run_clients(host, reactor, clients, ticker)
    assert not embedding.attached and embedding.turns > 0
    assert len(ticker.times) >= 5, "the host's own timer did not run"


def check_detach_and_reattach(host: Host, reactor: Reactor) -> None:
    """Detach leaves the reactor whole: no turns while detached, connections and queued
    work kept, ``run`` by itself, then attached again."""
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port
    client = connect(port)
    state: dict[str, Any] = {}
    try:
        def first() -> None:
            state["embedding"] = host.attach(reactor)
            state["worker"] = Worker(reactor, lambda: echo_rounds(client, 20, b"a"),
                                     lambda: host.call_later(0, detach_outside_a_turn))

        def detach_outside_a_turn() -> None:
            state["embedding"].detach()
            host.stop()

        host.run(lambda: (first(), state["worker"].start()))
        state["worker"].join()
        embedding = state["embedding"]
        turns = embedding.turns
        assert not embedding.attached

        ran: list[str] = []

        def while_detached() -> None:
            reactor.call_soon(ran.append, "queued while detached")  # wakes the descriptor
            host.call_later(0.05, host.stop)

        host.run(while_detached)
        assert ran == [] and embedding.turns == turns, "a detached reactor was driven"

        reactor.run_until(lambda: bool(ran), timeout=WAIT)  # reusable by itself
        assert ran == ["queued while detached"]

        def again() -> None:
            embedding.attach()
            state["worker"] = Worker(reactor, lambda: echo_rounds(client, 20, b"b"), finish)
            state["worker"].start()

        def finish() -> None:
            embedding.detach()
            host.stop()

        host.run(again)
        state["worker"].join()  # the connection made before the detach still echoes
        assert embedding.turns > turns
    finally:
        client.close()


def check_timers_on_time(host: Host, reactor: Reactor) -> None:
    """Reactor timers set from host code fire in order, never early, and on time."""
    delays = [0.02 * i for i in range(1, 11)]
    fired: list[tuple[int, float, float]] = []
    state: dict[str, Driver] = {}

    def fire(i: int, due: float) -> None:
        fired.append((i, due, reactor.time()))
        if len(fired) == len(delays):
            state["embedding"].detach()
            host.stop()

    def body() -> None:
        state["embedding"] = host.attach(reactor)
        now = reactor.time()
        for i, delay in enumerate(delays):
            reactor.call_at(now + delay, fire, i, now + delay)

    host.run(body)
    assert [i for i, _, _ in fired] == list(range(len(delays)))
    late = [at - due for _, due, at in fired]
    assert min(late) >= 0, f"a timer fired early: {late}"
    # the machine may be busy: on time means within a quarter second, not a frame
    assert max(late) < 0.25, f"timers late by {late}"


def check_cross_thread_wakeup(host: Host, reactor: Reactor) -> None:
    """``call_soon_threadsafe`` from another thread wakes the idle host at once; the
    callback runs on the host's thread."""
    seen: dict[str, Any] = {}
    idle = threading.Event()

    def from_elsewhere() -> None:
        idle.wait(WAIT)
        seen["sent"] = time.monotonic()
        reactor.call_soon_threadsafe(arrived)

    def arrived() -> None:
        seen["arrived"] = time.monotonic()
        seen["thread"] = threading.get_ident()
        seen["embedding"].detach()
        host.stop()

    thread = threading.Thread(target=from_elsewhere)

    def body() -> None:
        seen["embedding"] = host.attach(reactor)
        thread.start()
        host.call_later(0.02, idle.set)  # the host has slept with nothing to do

    try:
        host.run(body)
    finally:
        idle.set()
        thread.join(WAIT)
    assert seen["thread"] == host.thread_ident, "the callback ran off the host thread"
    assert seen["arrived"] - seen["sent"] < 1.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def check_protocol_exception_stays_in_the_reactor(host: Host, reactor: Reactor) -> None:
    """A protocol's exception is logged by the reactor, closes that connection, and
    never reaches the host: the host keeps ticking and the other clients are served."""
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port
    ticker = Ticker(host)
    state: dict[str, Any] = {}
    records = _Records()

    def clients() -> None:
        with connect(port) as good, connect(port) as bad:
            echo_rounds(good, 5, b"g")
            bad.sendall(b"boom")
            try:
                assert bad.recv(100) == b""
            except ConnectionResetError:
                pass
            echo_rounds(good, 5, b"h")
            state["ticks_before"] = len(ticker.times)

    logger = logging.getLogger("reactor")
    logger.addHandler(records)
    try:  # the host's timer must run on after the exception: linger a little
        run_clients(host, reactor, clients, ticker, linger=0.05)
    finally:
        logger.removeHandler(records)
    assert len(ticker.times) > state["ticks_before"]
    assert any("a bug in data_received" in str(r.exc_info and r.exc_info[1])
               for r in records.records), records.records


def _when(host: Host, condition: Callable[[], bool], then: Callable[[], object]) -> None:
    """Run ``then()`` on the host's thread once ``condition()`` holds, polled by the
    host's own timer (the reactor's wake-up cannot serve a detached reactor)."""
    def poll() -> None:
        if condition():
            then()
        else:
            host.call_later(0.005, poll)
    poll()


def check_host_runs_on_after_detach(host: Host, reactor: Reactor) -> None:
    """Detach leaves the host's loop whole: its timer keeps ticking and its own clients
    are served after the reactor stopped being driven, which gets no more turns."""
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port
    host_port = host.listen_echo()
    ticker = Ticker(host)
    state: dict[str, Any] = {}
    served = threading.Event()
    host_served = threading.Event()

    def reactor_clients() -> None:
        with connect(port) as sock:
            echo_rounds(sock, 10, b"r")
        served.set()

    def host_clients() -> None:
        # the host's own clients, once the reactor is detached, until the timer ran on
        try:
            if host_port is not None:
                with connect(host_port) as sock:
                    echo_rounds(sock, 10, b"h")
            deadline = time.monotonic() + WAIT
            while len(ticker.times) < state["ticks"] + 5 and time.monotonic() < deadline:
                time.sleep(0.005)
        except BaseException as exc:
            state["error"] = exc
        finally:
            host_served.set()

    def body() -> None:
        state["embedding"] = host.attach(reactor)
        ticker.start()
        state["clients"] = threading.Thread(target=reactor_clients, name="embedkit client")
        state["clients"].start()
        _when(host, served.is_set, detach)

    def detach() -> None:
        embedding = state["embedding"]
        embedding.detach()
        _when(host, lambda: not embedding.attached, detached)

    def detached() -> None:
        state["turns"] = state["embedding"].turns
        state["ticks"] = len(ticker.times)
        reactor.call_soon(state.setdefault, "driven", True)  # work the host must not run
        state["thread"] = threading.Thread(target=host_clients, name="embedkit client")
        state["thread"].start()
        _when(host, host_served.is_set, finish)

    def finish() -> None:
        ticker.running = False
        host.stop()

    host.run(body)
    state["clients"].join(WAIT)
    state["thread"].join(WAIT)
    if "error" in state:
        raise state["error"]
    assert state["embedding"].turns == state["turns"], "a detached reactor was driven"
    assert "driven" not in state, "a detached reactor ran its callbacks"
    assert len(ticker.times) >= state["ticks"] + 5, "the host's timer stopped at the detach"
    reactor.run_once(0)  # and the reactor, whole, runs what was queued
    assert state["driven"] is True


SignalState = tuple[dict[int, object], int]


def signal_state() -> SignalState:
    """Every signal's Python-level handler, and the C handler's wake-up descriptor
    (read, then put back; only the main thread may)."""
    handlers = {int(sig): signal.getsignal(sig) for sig in signal.valid_signals()}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    return handlers, wakeup_fd


def check_signals_stay_the_hosts(host: Host, reactor: Reactor) -> None:
    """Attaching and driving the reactor (serving, timers, a cross-thread wake-up)
    leaves every signal handler and the wake-up descriptor as the host has them; so
    does detaching."""
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port
    before = signal_state()
    state: dict[str, Any] = {}

    def clients() -> None:
        with connect(port) as sock:
            echo_rounds(sock, 5)

    def body() -> None:
        state["host"] = host.in_main_thread(signal_state)  # the host's own, running
        state["embedding"] = host.attach(reactor)
        state["worker"] = Worker(reactor, clients, attached)
        reactor.call_later(0.01, state["worker"].start)

    def attached() -> None:
        state["attached"] = host.in_main_thread(signal_state)
        state["embedding"].detach()
        _when(host, lambda: not state["embedding"].attached, detached)

    def detached() -> None:
        state["detached"] = host.in_main_thread(signal_state)
        host.stop()

    host.run(body)
    state["worker"].join()
    assert state["embedding"].turns > 0
    assert state["attached"] == state["host"], "attaching changed the signal handling"
    assert state["detached"] == state["host"], "detaching changed the signal handling"
    assert signal_state() == before, "the run left the signal handling changed"


def check_signals_handed_to_the_reactor(host: Host, reactor: Reactor) -> None:
    """A signal the user hands to the embedded reactor (``add_signal_handler``, in the
    main thread) is delivered by a turn in the host's thread; taking it back restores
    the host's signal handling as it was."""
    state: dict[str, Any] = {}

    def body() -> None:
        state["embedding"] = host.attach(reactor)
        state["host"] = host.in_main_thread(signal_state)
        host.in_main_thread(lambda: reactor.add_signal_handler(signal.SIGUSR1, got))
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGUSR1)

    def got() -> None:
        state["thread"] = threading.get_ident()
        host.in_main_thread(lambda: reactor.remove_signal_handler(signal.SIGUSR1))
        state["after"] = host.in_main_thread(signal_state)
        state["embedding"].detach()
        host.stop()

    try:
        host.run(body)
    finally:
        reactor.remove_signal_handler(signal.SIGUSR1)
    assert state["thread"] == host.thread_ident, "the signal's callback ran off the host"
    assert state["after"] == state["host"], "the host's signal handling was not restored"


CHECKS: dict[str, Callable[[Host, Reactor], None]] = {
    "serves": check_serves,
    "detach_reattach": check_detach_and_reattach,
    "timers_on_time": check_timers_on_time,
    "cross_thread_wakeup": check_cross_thread_wakeup,
    "protocol_exception": check_protocol_exception_stays_in_the_reactor,
    "host_runs_on_after_detach": check_host_runs_on_after_detach,
    "signals_stay_the_hosts": check_signals_stay_the_hosts,
    "signals_handed_to_the_reactor": check_signals_handed_to_the_reactor,
}
