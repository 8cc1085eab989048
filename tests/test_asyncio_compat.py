"""The protocol interface: protocols written against asyncio alone run unchanged on the
reactor, over real loopback sockets, with the same results as on asyncio's own loop.

The protocols below import nothing from this project: only :mod:`asyncio`.

One known difference: the reactor's transports implement asyncio's transport interface
without inheriting its classes (a table row has ``__slots__`` of its own), so
``isinstance(transport, asyncio.Transport)`` is false on the reactor; these protocols,
like most, use the transport through its methods only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from handlerkit import DEADLINE, HOST, LOOPS, LineClient, serve_tcp, serve_udp

from reactor import Reactor

# -- protocols written against asyncio only -----------------------------------------------


class LineService(asyncio.Protocol):
    """A small line protocol exercising the transport interface.

    ``upper TEXT`` answers TEXT in upper case; ``count`` answers the bytes received so
    far; ``flood N`` sends N bytes; ``info`` answers what get_extra_info says. At the
    client's EOF it keeps the connection open, sends a summary and closes.
    """

    def __init__(self) -> None:
        self.trace: list[str] = []
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.received = 0
        self.lines = 0

    def _log(self, event: str) -> None:
        if not (self.trace and self.trace[-1] == event == "data"):  # chunking may vary
            self.trace.append(event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._log("made")
        self.transport.write(b"ready\n")  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self._log("data")
        assert self.transport is not None
        self.received += len(data)
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines += 1
            self.command(line)

    def command(self, line: bytes) -> None:
        transport = self.transport
        assert transport is not None
        verb, _, arg = line.partition(b" ")
        if verb == b"upper":
            transport.writelines([arg.upper(), b"\n"])
        elif verb == b"count":
            transport.write(b"%d\n" % self.received)
        elif verb == b"flood":
            transport.write(b"f" * int(arg) + b"\n")
        elif verb == b"info":
            peer = transport.get_extra_info("peername")
            local = transport.get_extra_info("sockname")
            sock = transport.get_extra_info("socket")
            transport.write(b"%s %d %s %s %s\n" % (
                peer[0].encode(), local[1], str(sock is not None).encode(),
                str(transport.is_closing()).encode(), str(transport.can_write_eof()).encode()))
        else:
            transport.write(b"?\n")

    def eof_received(self) -> bool:
        self._log("eof")
        assert self.transport is not None
        self.transport.write(b"summary lines=%d bytes=%d\n" % (self.lines, self.received))
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        self._log("pause")

    def resume_writing(self) -> None:
        self._log("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self._log(f"lost {exc!r}")


class Stamp(asyncio.DatagramProtocol):
    """Answers each datagram with a sequence number and the upper-cased payload."""

    def __init__(self) -> None:
        self.trace: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.trace.append("made")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.count += 1
        self.trace.append(f"datagram {len(data)}")
        if data == b"close":
            self.transport.close()
            return
        self.transport.sendto(b"%d:%s" % (self.count, data.upper()), addr)

    def error_received(self, exc: Exception) -> None:
        self.trace.append(f"error {type(exc).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.trace.append(f"lost {exc!r}")


class Fetcher(asyncio.Protocol):
    """A client: sends its lines, half-closes, collects everything until the close."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.trace: list[str] = []
        self.data = bytearray()
        self.done = threading.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.trace.append("made")
        assert hasattr(transport, "write_eof")  # duck typing, see the module docstring
        transport.writelines(line + b"\n" for line in self.lines)
        transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if not self.trace or self.trace[-1] != "data":
            self.trace.append("data")
        self.data += data

    def eof_received(self) -> None:
        self.trace.append("eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.trace.append(f"lost {exc!r}")
        self.done.set()


# -- the same scenarios on both loops -----------------------------------------------------


def stream_scenario(kind: str) -> dict[str, Any]:
    protocols: list[LineService] = []

    def factory() -> LineService:
        protocols.append(LineService())
        return protocols[-1]

    with serve_tcp(kind, factory) as server, LineClient(server.port, rcvbuf=32 * 1024) as c:
        replies = [c.read_line()]
        for line in ("upper hello", "count", "nonsense"):
            c.send_line(line)
            replies.append(c.read_line())
        # flood: do not read until the server's transport has told it to pause
        c.send_line("flood 8000000")
        server.wait_for(lambda: "pause" in protocols[0].trace, what="pause_writing")
        flood = c.read_line()
        replies.append(f"flood of {len(flood)}")
        c.sock.shutdown(socket.SHUT_WR)
        replies.append(c.read_line())
        replies.append(repr(c.read_all()))
        server.wait_for(lambda: protocols[0].trace[-1].startswith("lost"),
                        what="connection_lost")
        return {"replies": replies, "trace": server.call(lambda: list(protocols[0].trace))}


@pytest.mark.timeout(90)
def test_an_asyncio_protocol_behaves_the_same_on_both_loops() -> None:
    results = {kind: stream_scenario(kind) for kind in LOOPS}
    assert results["reactor"] == results["asyncio"]
    assert results["reactor"]["replies"] == [
        "ready", "HELLO", "18", "?", "flood of 8000000", "summary lines=4 bytes=41", "b''"]
    assert results["reactor"]["trace"] == [
        "made", "data", "pause", "resume", "eof", "lost None"]


def test_info_reports_the_listening_port() -> None:
    for kind in LOOPS:
        with serve_tcp(kind, LineService) as server, LineClient(server.port) as c:
            c.read_line()
            c.send_line("info")
            assert c.read_line() == f"127.0.0.1 {server.port} True False True"


def datagram_scenario(kind: str) -> dict[str, Any]:
    protocols: list[Stamp] = []

    def factory() -> Stamp:
        protocols.append(Stamp())
        return protocols[-1]

    with serve_udp(kind, factory) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(DEADLINE)
        replies = []
        for payload in (b"one", b"", b"x" * 1000, b"three"):
            client.sendto(payload, (HOST, server.port))
            data, addr = client.recvfrom(65536)
            assert addr == (HOST, server.port)
            replies.append(data)
        client.sendto(b"close", (HOST, server.port))
        server.wait_for(lambda: protocols[0].trace[-1].startswith("lost"),
                        what="connection_lost")
        return {"replies": replies, "trace": server.call(lambda: list(protocols[0].trace))}


@pytest.mark.timeout(60)
def test_an_asyncio_datagram_protocol_behaves_the_same_on_both_loops() -> None:
    results = {kind: datagram_scenario(kind) for kind in LOOPS}
    assert results["reactor"] == results["asyncio"]
    assert results["reactor"]["replies"] == [b"1:ONE", b"2:", b"3:" + b"X" * 1000, b"4:THREE"]
    assert results["reactor"]["trace"] == [
        "made", "datagram 3", "datagram 0", "datagram 1000", "datagram 5", "datagram 5",
        "lost None"]


@contextmanager
def blocking_echo_server() -> Iterator[int]:
    """A plain socket server (one connection): greets, echoes until EOF, closes."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1)
    listener.settimeout(DEADLINE)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEADLINE)
            conn.sendall(b"hi\n")
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(DEADLINE)
        listener.close()


def run_client(kind: str, port: int, lines: list[bytes]) -> Fetcher:
    fetcher = Fetcher(lines)
    if kind == "reactor":
        reactor = Reactor()
        try:
            future = reactor.connect_tcp(HOST, port, lambda: fetcher, timeout=DEADLINE)
            reactor.run_until_complete(future, timeout=DEADLINE)
            reactor.run_until(fetcher.done.is_set, timeout=DEADLINE)
        finally:
            reactor.close()
    else:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: fetcher, HOST, port)
            await asyncio.wait_for(loop.run_in_executor(None, fetcher.done.wait), DEADLINE)

        asyncio.run(main())
    return fetcher


@pytest.mark.timeout(60)
def test_an_asyncio_client_protocol_behaves_the_same_on_both_loops() -> None:
    lines = [b"alpha", b"beta" * 1000, b"gamma"]
    results = {}
    for kind in LOOPS:
        with blocking_echo_server() as port:
            fetcher = run_client(kind, port, lines)
        results[kind] = (fetcher.trace, bytes(fetcher.data))
    assert results["reactor"] == results["asyncio"]
    assert results["reactor"] == (
        ["made", "data", "eof", "lost None"],
        b"hi\n" + b"".join(line + b"\n" for line in lines),
    )
