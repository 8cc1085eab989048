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
- and around each check: no descriptor or thread left behind.

A new host (the guest mode, say) is one more :class:`Host` subclass added to
:data:`HOSTS`; tests/test_embed_conformance.py runs every check against every entry.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from reactor import Reactor
from reactor.embed.base import Embedding

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


class Host(abc.ABC):
    """One host loop, driven on the calling (main) thread.

    Attributes:
        name: the host's name in test ids.
        errors: what the host's own loop reported as errors (exceptions that reached
            it); every check ends with this empty.
    """

    name = "?"

    def __init__(self) -> None:
        self.errors: list[object] = []

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
    def attach(self, reactor: Reactor) -> Embedding:
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
                linger: float = 0.0) -> Embedding:
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
    embedding: Embedding = state["embedding"]
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
    state: dict[str, Embedding] = {}

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
    assert seen["thread"] == threading.get_ident(), "the callback ran off the host thread"
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


CHECKS: dict[str, Callable[[Host, Reactor], None]] = {
    "serves": check_serves,
    "detach_reattach": check_detach_and_reattach,
    "timers_on_time": check_timers_on_time,
    "cross_thread_wakeup": check_cross_thread_wakeup,
    "protocol_exception": check_protocol_exception_stays_in_the_reactor,
}


# -- the hosts ------------------------------------------------------------------------


class AsyncioHost(Host):
    name = "asyncio"

    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self._server: asyncio.Server | None = None
        self._conns: list[asyncio.Transport] = []

    def teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in self._conns:
                transport.abort()
            self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        timed_out: list[bool] = []
        self.loop.call_soon(body)
        guard = self.loop.call_later(timeout, lambda: (timed_out.append(True), self.stop()))
        self.loop.run_forever()
        guard.cancel()
        if timed_out:
            raise TimeoutError(f"{self.name} host not stopped within {timeout} s")

    def stop(self) -> None:
        self.loop.stop()

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        self.loop.call_later(delay, fn)

    def attach(self, reactor: Reactor) -> Embedding:
        from reactor.embed import asyncio as embed_asyncio

        return embed_asyncio.attach(reactor, self.loop)

    def listen_echo(self) -> int | None:
        conns = self._conns

        class Tracked(Echo):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                conns.append(self.transport)

        self._server = self.loop.run_until_complete(
            self.loop.create_server(Tracked, "127.0.0.1", 0))
        port: int = self._server.sockets[0].getsockname()[1]
        return port


class TrioHost(Host):
    name = "trio"

    def setup(self) -> None:
        self._listener: socket.socket | None = None

    def teardown(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        import trio

        async def main() -> bool:
            self._stopped = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self._listener is not None:
                    nursery.start_soon(self._serve_echo, self._listener)
                body()
                with trio.move_on_after(timeout) as scope:
                    await self._stopped.wait()
                nursery.cancel_scope.cancel()
            return scope.cancelled_caught

        if trio.run(main):
            raise TimeoutError(f"{self.name} host not stopped within {timeout} s")

    async def _serve_echo(self, listener: socket.socket) -> None:
        import trio

        async def one(conn: trio.socket.SocketType) -> None:
            with conn:
                while data := await conn.recv(65536):
                    await conn.send(data)

        sock = trio.socket.from_stdlib_socket(listener.dup())
        with sock:
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(one, conn)

    def stop(self) -> None:
        self._stopped.set()

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        import trio

        async def later() -> None:
            await trio.sleep(delay)
            fn()

        self.nursery.start_soon(later)

    def attach(self, reactor: Reactor) -> Embedding:
        from reactor.embed import trio as embed_trio

        return embed_trio.attach(reactor)  # a system task: reattaching works in any run

    def listen_echo(self) -> int | None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        port: int = self._listener.getsockname()[1]
        return port


class TwistedHost(Host):
    """A fresh Twisted epoll reactor per check (Twisted's installed reactor cannot run
    twice in one process), stepped the way its ``mainLoop`` steps it."""

    name = "twisted"

    def warm_up(self) -> None:
        # Twisted's listening ports share one descriptor held in reserve for EMFILE,
        # opened at the first listen and kept for the process's life
        self.setup()
        self.listen_echo()
        self.teardown()

    def setup(self) -> None:
        from twisted.internet.epollreactor import EPollReactor
        from twisted.logger import globalLogPublisher

        self.host: Any = EPollReactor()
        self._port: Any = None
        self._publisher = globalLogPublisher
        self._publisher.addObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.errors.append(event["log_failure"])

    def teardown(self) -> None:
        self._publisher.removeObserver(self._observe)
        if self._port is not None:
            self._port.stopListening()  # closes the socket in a delayed call
            self.host.runUntilCurrent()
        self.host.disconnectAll()
        self.host.removeReader(self.host.waker)
        self.host.waker.connectionLost(None)
        self.host._poller.close()  # a fresh reactor per check: close its epoll too

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        self._stopped = False
        timed_out: list[bool] = []
        self.host.callLater(0, body)
        guard = self.host.callLater(timeout, lambda: (timed_out.append(True), self.stop()))
        while not self._stopped:
            self.host.runUntilCurrent()
            self.host.doIteration(0 if self._stopped else self.host.timeout())
        if guard.active():
            guard.cancel()
        if timed_out:
            raise TimeoutError(f"{self.name} host not stopped within {timeout} s")

    def stop(self) -> None:
        self._stopped = True

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        self.host.callLater(delay, fn)

    def attach(self, reactor: Reactor) -> Embedding:
        from reactor.embed import twisted as embed_twisted

        return embed_twisted.attach(reactor, self.host)

    def listen_echo(self) -> int | None:
        from twisted.internet import protocol

        class TwistedEcho(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        self._port = self.host.listenTCP(0, protocol.Factory.forProtocol(TwistedEcho),
                                         interface="127.0.0.1")
        port: int = self._port.getHost().port
        return port


class TkHost(Host):
    """A real Tk interpreter; needs ``DISPLAY`` (tests/xvfb.py starts an X server)."""

    name = "tk"

    def warm_up(self) -> None:
        # Tcl starts its notifier (a thread and a pipe, kept for the process's life) the
        # first time it waits for events: start it before the descriptors are counted
        import tkinter

        root = tkinter.Tk()
        root.after(1, root.quit)
        root.mainloop()
        root.destroy()

    def setup(self) -> None:
        import tkinter

        self.root = tkinter.Tk()
        self.root.withdraw()
        self.root.report_callback_exception = (  # type: ignore[method-assign]
            lambda *exc: self.errors.append(exc))
        self._listener: socket.socket | None = None
        self._conns: dict[int, socket.socket] = {}
        self._pending: set[str] = set()

    def teardown(self) -> None:
        for pending in self._pending:
            self.root.after_cancel(pending)
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self._listener is not None:
            self.root.tk.deletefilehandler(self._listener.fileno())
            self._listener.close()
        self.root.destroy()

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        timed_out: list[bool] = []
        self.root.after_idle(body)
        guard = self.root.after(math.ceil(timeout * 1000),
                                lambda: (timed_out.append(True), self.stop()))
        self.root.mainloop()
        self.root.after_cancel(guard)
        if timed_out:
            raise TimeoutError(f"{self.name} host not stopped within {timeout} s")

    def stop(self) -> None:
        self.root.quit()

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        def run() -> None:
            self._pending.discard(after)
            fn()

        after = self.root.after(math.ceil(delay * 1000), run)
        self._pending.add(after)

    def attach(self, reactor: Reactor) -> Embedding:
        from reactor.embed import tk as embed_tk

        return embed_tk.attach(reactor, self.root)

    def listen_echo(self) -> int | None:
        # Tk's own way of serving: a file handler per socket, in Tk's loop
        import tkinter

        listener = self._listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)

        def accept(fd: int, mask: int) -> None:
            conn, _ = listener.accept()
            conn.setblocking(False)
            self._conns[conn.fileno()] = conn
            self.root.tk.createfilehandler(conn, tkinter.READABLE,
                                           lambda fd, mask: self._echo(conn))

        self.root.tk.createfilehandler(listener, tkinter.READABLE, accept)
        port: int = listener.getsockname()[1]
        return port

    def _echo(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self._drop(conn)
            return
        conn.setblocking(True)  # a test's replies are small: send them whole
        conn.sendall(data)
        conn.setblocking(False)

    def _drop(self, conn: socket.socket) -> None:
        self.root.tk.deletefilehandler(conn)
        self._conns.pop(conn.fileno(), None)
        conn.close()


HOSTS: dict[str, type[Host]] = {
    "asyncio": AsyncioHost,
    "trio": TrioHost,
    "twisted": TwistedHost,
    "tk": TkHost,
}
