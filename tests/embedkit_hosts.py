"""The hosts of the embedding conformance kit (tests/embedkit.py): one adapter each.

Each adapter drives its host's loop on the calling thread and does what
:class:`embedkit.Host` asks; :data:`HOSTS` is what tests/test_embed_conformance.py runs
every check against. Add a host here, as one more subclass and one more entry (the
guest mode's hosts are in tests/embedkit_guests.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from embedkit import WAIT, Echo, Host

from reactor import Reactor
from reactor.embed.base import Embedding

# Tcl aborts the process when an interpreter is freed by another thread than its own,
# and a reference cycle holding a Tk object may be collected in any thread (a guest's
# helper, a queue host's thread): every Tk made here stays referenced until the exit.
TK_KEPT: list[Any] = []


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
    needs_display = True

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
        TK_KEPT.append(self.root)
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


class _SelectTurns:
    """The reactor in a :class:`SelectHost`'s loop: whether the loop drives it, and how
    many turns it gave (what an :class:`~reactor.embed.base.Embedding` tells)."""

    def __init__(self) -> None:
        self.turns = 0
        self.attached = False

    def attach(self) -> None:
        self.attached = True

    def detach(self) -> None:
        self.attached = False


class SelectHost(Host):
    """A program's own ``select`` loop, as examples/select_host.py writes it: no
    embedding module, only ``fileno()``, ``next_timeout()`` and ``run_once(0)`` each
    time round, beside the host's own timers and sockets."""

    name = "select"

    def setup(self) -> None:
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._readers: dict[int, Callable[[], None]] = {}
        self._socks: list[socket.socket] = []
        self._reactor: Reactor | None = None
        self._driven: _SelectTurns | None = None

    def teardown(self) -> None:
        for sock in self._socks:
            sock.close()

    def run(self, body: Callable[[], None], timeout: float = WAIT) -> None:
        self._stopped = False
        self.call_later(0, body)
        deadline = time.monotonic() + timeout
        while not self._stopped:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"{self.name} host not stopped within {timeout} s")
            waits = [deadline - now]
            if self._timers:
                waits.append(self._timers[0][0] - now)
            fds = list(self._readers)
            driven = self._driven is not None and self._driven.attached
            if driven:
                assert self._reactor is not None
                fds.append(self._reactor.fileno())
                reactor_wait = self._reactor.next_timeout()
                if reactor_wait is not None:
                    waits.append(reactor_wait)
            readable, _, _ = select.select(fds, [], [], max(0.0, min(waits)))
            for fd in readable:
                if fd in self._readers:
                    self._guard(self._readers[fd])
            while self._timers and self._timers[0][0] <= time.monotonic():
                self._guard(heapq.heappop(self._timers)[2])
            if driven and self._driven is not None and self._driven.attached:
                assert self._reactor is not None
                self._driven.turns += 1
                self._guard(lambda: self._reactor.run_once(0))  # type: ignore[union-attr]

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # it reached the host's loop
            self.errors.append(exc)

    def stop(self) -> None:
        self._stopped = True

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), fn))

    def attach(self, reactor: Reactor) -> _SelectTurns:
        self._reactor = reactor
        self._driven = _SelectTurns()
        self._driven.attach()
        return self._driven

    def listen_echo(self) -> int | None:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        self._socks.append(listener)

        def accept() -> None:
            conn, _ = listener.accept()
            self._socks.append(conn)
            self._readers[conn.fileno()] = lambda: self._echo(conn)

        self._readers[listener.fileno()] = accept
        port: int = listener.getsockname()[1]
        return port

    def _echo(self, conn: socket.socket) -> None:
        data = conn.recv(65536)
        if data:
            conn.sendall(data)  # blocking: a test's replies are small
        else:
            del self._readers[conn.fileno()]
            self._socks.remove(conn)
            conn.close()


HOSTS: dict[str, type[Host]] = {
    "asyncio": AsyncioHost,
    "select": SelectHost,
    "trio": TrioHost,
    "twisted": TwistedHost,
    "tk": TkHost,
}
