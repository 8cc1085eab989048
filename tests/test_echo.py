"""handlers.services.echo.EchoHandler: in memory, over loopback on both loops, its memory cost."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import tracemalloc

import pytest
from handlerkit import DEADLINE, HOST, LOOPS, LineClient, serve_tcp

from handlers.services.echo import EchoHandler
from reactor.testing import ProtocolPair


class Collector(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


class PeakEcho(EchoHandler):
    """EchoHandler that remembers its largest write buffer and whether it paused."""

    __slots__ = ("paused_once", "peak")

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0
        self.paused_once = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.peak = max(self.peak, self.write_buffer_size)

    def pause_writing(self) -> None:
        self.paused_once = True
        super().pause_writing()


# -- in memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 1000])
def test_echoes_everything(chunk_size: int | None) -> None:
    client = Collector()
    pair = ProtocolPair(client, EchoHandler())
    payload = bytes(range(256)) * 20
    pair.client_transport.write(payload)
    pair.pump(chunk_size=chunk_size)
    assert bytes(client.data) == payload


def test_eof_flushes_then_closes() -> None:
    client = Collector()
    server = EchoHandler()
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"last")
    pair.client_transport.write_eof()
    pair.pump()
    assert bytes(client.data) == b"last"
    assert server.lost and pair.client_transport.eof_fed


def test_a_client_that_does_not_read_is_throttled_not_buffered() -> None:
    client = Collector()
    server = EchoHandler()
    pair = ProtocolPair(client, server, high_water=1000)
    pair.client_transport.pause_reading()
    pair.client_transport.write(b"z" * 50_000)
    pair.pump(chunk_size=100)
    # the server stopped reading once its own buffer passed the high-water mark:
    # the rest waits on the client's side, as in the kernel's buffers
    assert server.writing_paused
    assert pair.server_transport.get_write_buffer_size() <= 1000 + 100
    assert not pair.server_transport.is_reading()
    assert pair.client_transport.get_write_buffer_size() > 40_000
    pair.client_transport.resume_reading()
    pair.pump(chunk_size=100)
    assert bytes(client.data) == b"z" * 50_000
    assert not server.writing_paused


# -- over loopback ------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", LOOPS)
def test_echo_over_loopback(kind: str) -> None:
    payload = os.urandom(300_000)
    with serve_tcp(kind, EchoHandler) as server, LineClient(server.port) as client:
        client.send(b"ping\n")
        assert client.read_line() == "ping"
        sender = threading.Thread(target=client.sock.sendall, args=(payload,))
        sender.start()
        got = bytearray()
        while len(got) < len(payload):
            got += client.sock.recv(65536)
        sender.join(DEADLINE)
        assert bytes(got) == payload
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read_all() == b""  # the server closes after our EOF


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", LOOPS)
def test_a_client_that_sends_without_reading_does_not_grow_server_memory(kind: str) -> None:
    handlers: list[PeakEcho] = []

    def factory() -> PeakEcho:
        handlers.append(PeakEcho())
        return handlers[-1]

    total = 16 * 1024 * 1024
    with serve_tcp(kind, factory) as server, \
            LineClient(server.port, rcvbuf=64 * 1024) as client:
        errors: list[BaseException] = []

        def send() -> None:
            try:
                client.sock.sendall(b"q" * total)
                client.sock.shutdown(socket.SHUT_WR)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        # nobody reads yet: the kernel buffers fill, then the server must pause
        server.wait_for(lambda: bool(handlers) and handlers[0].paused_once,
                        what="the server to pause")
        received = len(client.read_all())
        sender.join(DEADLINE)
        assert not errors
        assert received == total
        # one read (256 KiB) on top of the 64 KiB high-water mark, never the 16 MiB
        assert handlers[0].peak <= 64 * 1024 + 256 * 1024


@pytest.mark.timeout(120)
def test_an_idle_echo_connection_costs_at_most_600_bytes_on_the_reactor() -> None:
    """The project's promise: <= 600 bytes of Python heap per idle echo connection
    (row/transport, socket object, selector key, table entry, handler)."""
    count = 300
    watched = [tracemalloc.Filter(True, f"*{os.sep}{part}{os.sep}*", all_frames=True)
               for part in ("reactor", "handlers")]
    watched.append(tracemalloc.Filter(True, "*selectors.py", all_frames=True))
    with serve_tcp("reactor", EchoHandler) as server:
        reactor = server.reactor
        assert reactor is not None
        warm = [socket.create_connection((HOST, server.port)) for _ in range(20)]
        server.wait_for(lambda: len(reactor.connections) == 20)
        for sock in warm:
            sock.close()
        server.wait_for(lambda: len(reactor.connections) == 0)
        gc.collect()
        tracemalloc.start(25)
        clients: list[socket.socket] = []
        try:
            before = tracemalloc.take_snapshot().filter_traces(watched)
            clients = [socket.create_connection((HOST, server.port)) for _ in range(count)]
            server.wait_for(lambda: len(reactor.connections) == count)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(watched)
        finally:
            tracemalloc.stop()
            for sock in clients:
                sock.close()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        per_connection = grown / count
        assert 0 < per_connection <= 600, f"{per_connection:.0f} bytes per idle connection"
