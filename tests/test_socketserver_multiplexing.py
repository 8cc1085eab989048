"""The multiplexing servers (issue point 3): non-blocking handlers inside the reactor,
with no thread or process per client, behind the usual server API."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from sskit import serving, wait_for

from handlers.services.echo import EchoHandler
from reactor import socketserver

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(60)


class EchoProtocol(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        type(self).made += 1
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def test_many_clients_no_thread_per_client() -> None:
    class Server(socketserver.MultiplexingTCPServer):
        request_queue_size = 128  # 100 clients connect at once

    server = Server((HOST, 0), EchoProtocol)
    with serving(server):
        base = threading.active_count()
        clients = [socket.create_connection(server.server_address, timeout=10)
                   for _ in range(100)]
        wait_for(lambda: server.statistics().by_state.get("OPEN") == 100)
        for n, c in enumerate(clients):
            c.sendall(b"%d\n" % n)
        for n, c in enumerate(clients):
            assert c.makefile("rb").readline() == b"%d\n" % n
        assert threading.active_count() == base
        stats = server.statistics()
        assert stats.attached == 100 and stats.threads == 0 and stats.children == 0
        for c in clients:
            c.close()
        wait_for(lambda: len(server.connections) == 0)


def test_verify_request_refuses_without_making_a_handler() -> None:
    refused: list[Any] = []

    class Counting(EchoProtocol):
        made = 0

    class Server(socketserver.MultiplexingTCPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            refused.append(client_address)
            return len(refused) > 1  # refuse the first client only

    server = Server((HOST, 0), Counting)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=10) as first:
            assert first.recv(10) == b""
        with socket.create_connection(server.server_address, timeout=10) as second:
            second.sendall(b"ok\n")
            assert second.recv(10) == b"ok\n"
    assert Counting.made == 1
    assert server.statistics().rejected == 1


def test_server_close_closes_every_connection() -> None:
    server = socketserver.MultiplexingTCPServer((HOST, 0), EchoProtocol)
    with server, serving(server, close=False):
        clients = [socket.create_connection(server.server_address, timeout=10)
                   for _ in range(5)]
        wait_for(lambda: server.statistics().by_state.get("OPEN") == 5)
    for c in clients:  # the with block closed the server
        assert c.recv(10) == b""
        c.close()
    assert server.socket.fileno() == -1


def test_handle_request_attaches_one_connection() -> None:
    with socketserver.MultiplexingTCPServer((HOST, 0), EchoProtocol) as server, \
            socket.create_connection(server.server_address, timeout=10) as c:
        server.handle_request()
        assert server.statistics().attached == 1
        c.sendall(b"later\n")
        server.timeout = 0.2
        server.handle_request()  # no new connection: the reactor runs (the echo) ...
        assert c.recv(10) == b"later\n"  # ... until the timeout


def test_handle_request_waits_for_a_connection_with_timeout() -> None:
    class Server(socketserver.MultiplexingTCPServer):
        timeout = 0.05
        timed_out = 0

        def handle_timeout(self) -> None:
            self.timed_out += 1

    with Server((HOST, 0), EchoProtocol) as server:
        server.handle_request()
        assert server.timed_out == 1


def test_unix_stream(tmp_path: Path) -> None:
    path = str(tmp_path / "m.sock")
    server = socketserver.MultiplexingUnixStreamServer(path, EchoProtocol)
    with serving(server), socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(path)
        c.sendall(b"unix\n")
        assert c.recv(10) == b"unix\n"
        assert server.statistics().by_state.get("OPEN") == 1


def test_the_handlers_package_stream_handler() -> None:
    server = socketserver.MultiplexingTCPServer((HOST, 0), EchoHandler)
    with serving(server), socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(b"handler\n")
        assert c.recv(100) == b"handler\n"


class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data.upper(), addr)


def test_udp_with_verify_request() -> None:
    class Server(socketserver.MultiplexingUDPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            data, sock = request
            assert sock is self.socket
            return not data.startswith(b"x")

    server = Server((HOST, 0), DatagramEcho)
    with serving(server), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(10)
        c.sendto(b"xignored", server.server_address)
        c.sendto(b"abc", server.server_address)
        assert c.recv(10) == b"ABC"
        wait_for(lambda: server.statistics().accepted == 2)
        assert server.statistics().rejected == 1
    assert server.socket.fileno() == -1


def test_unix_datagram(tmp_path: Path) -> None:
    path, client_path = str(tmp_path / "d.sock"), str(tmp_path / "c.sock")
    server = socketserver.MultiplexingUnixDatagramServer(path, DatagramEcho)
    with serving(server), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.bind(client_path)
        c.settimeout(10)
        c.sendto(b"dgram", path)
        assert c.recv(10) == b"DGRAM"
