"""Test helpers for the handler tests.

Splitting input: ``three_ways(data, cuts)`` gives the same bytes whole, byte by byte and
cut at (hypothesis-chosen) points, for the framers' "same records however split" tests.

Loopback: serve a protocol factory on the reactor or on asyncio, in a thread.

``serve_tcp(kind, factory)`` and ``serve_udp(kind, factory)`` are context managers that
start a loop of the given kind ("reactor" or "asyncio") in a background thread, listen
on 127.0.0.1 port 0 and yield a :class:`Server` (``.port``, ``.call(fn)`` to run code on
the loop thread). :class:`LineClient` is a blocking socket client with deadlines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from handlers.base import FramingError
from reactor import Reactor

LOOPS = ["reactor", "asyncio"]
HOST = "127.0.0.1"
DEADLINE = 20.0  # generous: other helpers load the machine too

T = TypeVar("T")


def run_framer(framer: Any, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Feed ``chunks`` to a record framer; return its records and whether it failed."""
    got: list[bytes] = []
    for chunk in chunks:
        framer.feed(chunk)
        while True:
            try:
                record = framer.next_record()
            except FramingError:
                return got, True
            if record is None:
                break
            got.append(record)
    return got, False


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length + 1)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


def three_ways(data: bytes, cuts: list[int]) -> list[list[bytes]]:
    """The same input whole, byte by byte, and split at ``cuts``."""
    return [[data], [data[i:i + 1] for i in range(len(data))], split_at(data, cuts)]


class Server:
    """A loop running in a background thread, serving on ``port``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = 0
        self.endpoint: Any = None  # the reactor Listener/DatagramTransport or asyncio server
        self.reactor: Reactor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], T], timeout: float = DEADLINE) -> T:
        """Run ``fn()`` on the loop thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        if self.reactor is not None:
            self.reactor.call_soon_threadsafe(run)
        else:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def wait_for(self, condition: Callable[[], bool], timeout: float = DEADLINE,
                 what: str = "condition") -> None:
        """Poll ``condition`` on the loop thread until true (deadline, not a sleep order)."""
        deadline = time.monotonic() + timeout
        while not self.call(condition):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)


@contextmanager
def _run_reactor(server: Server, setup: Callable[[Reactor], Any]) -> Iterator[Server]:
    reactor = Reactor()
    server.reactor = reactor
    server.endpoint = setup(reactor)
    thread = threading.Thread(target=reactor.run, name="reactor", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        reactor.stop()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the reactor did not stop"
        reactor.close()


@contextmanager
def _run_asyncio(server: Server, setup: Callable[[asyncio.AbstractEventLoop], Any]
                 ) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    server.loop = loop
    server.endpoint = loop.run_until_complete(setup(loop))
    thread = threading.Thread(target=loop.run_forever, name="asyncio", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        async def shutdown() -> None:
            endpoint = server.endpoint
            if isinstance(endpoint, asyncio.AbstractServer):
                endpoint.close()
            else:
                endpoint.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(DEADLINE)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the asyncio loop did not stop"
        loop.close()


@contextmanager
def serve_tcp(kind: str, factory: Callable[[], Any], **options: Any) -> Iterator[Server]:
    """Serve ``factory`` over TCP on 127.0.0.1, port 0, on a ``kind`` loop in a thread."""
    server = Server(kind)
    if kind == "reactor":
        def setup_reactor(reactor: Reactor) -> Any:
            listener = reactor.listen_tcp(HOST, 0, factory, **options)
            server.port = listener.port
            return listener

        with _run_reactor(server, setup_reactor) as running:
            yield running
    else:
        async def setup_asyncio(loop: asyncio.AbstractEventLoop) -> Any:
            srv = await loop.create_server(factory, HOST, 0, **options)
            server.port = srv.sockets[0].getsockname()[1]
            return srv

        with _run_asyncio(server, setup_asyncio) as running:
            yield running


@contextmanager
def serve_udp(kind: str, factory: Callable[[], Any]) -> Iterator[Server]:
    """Serve a datagram protocol on UDP 127.0.0.1, port 0, on a ``kind`` loop."""
    server = Server(kind)
    if kind == "reactor":
        def setup_reactor(reactor: Reactor) -> Any:
            transport = reactor.listen_udp(HOST, 0, factory)
            server.port = transport.sockname[1]
            return transport

        with _run_reactor(server, setup_reactor) as running:
            yield running
    else:
        async def setup_asyncio(loop: asyncio.AbstractEventLoop) -> Any:
            transport, _ = await loop.create_datagram_endpoint(factory, local_addr=(HOST, 0))
            server.port = transport.get_extra_info("sockname")[1]
            return transport

        with _run_asyncio(server, setup_asyncio) as running:
            yield running


class LineClient:
    """A blocking TCP client reading ``\\n``-terminated lines, every call with a deadline."""

    def __init__(self, port: int, *, rcvbuf: int | None = None,
                 timeout: float = DEADLINE) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def read_line(self) -> str:
        """The next line (without ``\\n``); raises EOFError at end of stream."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line.decode("utf-8", "replace")
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data

    def read_until(self, predicate: Callable[[str], bool]) -> list[str]:
        """Read lines up to and including the first for which ``predicate`` is true."""
        lines: list[str] = []
        while True:
            line = self.read_line()
            lines.append(line)
            if predicate(line):
                return lines

    def read_all(self) -> bytes:
        """Everything until the server closes the connection."""
        chunks = [bytes(self.buf)]
        self.buf.clear()
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
