"""The PROXY protocol on the socketserver facades: the reactor reads the header before
any hook runs, and ``client_address`` is the client the header names."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
from sskit import serving, wait_for

from reactor import socketserver
from reactor.sansio.request_buffer import LineRequestBuffer
from tests import proxykit as pk

HOST = "127.0.0.1"
CLIENT = ("192.0.2.7", 40000)
pytestmark = pytest.mark.timeout(60)


class Tell(socketserver.StreamRequestHandler):
    """Answers each line with the client's address as the handler sees it."""

    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(f"{self.client_address!r} {line.decode().strip()}\n".encode())


def make(base: type, handler: type = Tell, **attributes: Any) -> Any:
    seen: list[Any] = []

    class Server(socketserver.ProxyProtocolMixIn, base):  # type: ignore[misc, valid-type]
        def verify_request(self, request: Any, client_address: Any) -> bool:
            seen.append(client_address)
            return True

    for name, value in attributes.items():
        setattr(Server, name, value)
    server = Server((HOST, 0), handler)
    server.seen = seen
    return server


def ask(server: Any, data: bytes, eof: bool = False) -> bytes:
    with socket.create_connection(server.server_address, timeout=10) as client:
        client.sendall(data)
        if eof:
            client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").readline()


def refused(server: Any, data: bytes) -> None:
    with socket.create_connection(server.server_address, timeout=10) as client:
        client.sendall(data)
        try:
            assert client.recv(100) == b""
        except ConnectionResetError:
            pass


BASES = ["TCPServer", "ThreadingTCPServer", "ForkingTCPServer"]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("header", [pk.v1(), pk.v2_inet()], ids=["v1", "v2"])
def test_client_address_is_the_client_behind_the_proxy(base: str, header: bytes) -> None:
    if base.startswith("Forking") and not hasattr(os, "fork"):
        pytest.skip("needs fork")
    server = make(getattr(socketserver, base))
    with serving(server):
        assert ask(server, header + b"hello\n") == f"{CLIENT!r} hello\n".encode()
        assert ask(server, header, eof=True) == f"{CLIENT!r} \n".encode()  # header, EOF
        wait_for(lambda: server.statistics().finished == 2)
    assert server.seen == [CLIENT, CLIENT]  # verify_request saw the client too


def test_the_header_split_across_reads_and_the_state_on_the_way() -> None:
    server = make(socketserver.ThreadingTCPServer, proxy_protocol="v2")
    header = pk.v2_inet6()
    with serving(server), socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(header[:17])
        wait_for(lambda: server.statistics().by_state.get("PROXY_HEADER") == 1)
        assert server.seen == []  # no hook has run yet
        c.sendall(header[17:] + b"x\n")
        assert c.makefile("rb").readline() == b"('2001:db8::7', 40000, 0, 0) x\n"


def test_with_a_request_buffer() -> None:
    server = make(socketserver.TCPServer, request_buffer=LineRequestBuffer())
    with serving(server), socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(pk.v1() + b"in one")  # the rest of the request comes later
        wait_for(lambda: server.statistics().by_state.get("BUFFERING") == 1)
        c.sendall(b" go\n")
        assert c.makefile("rb").readline() == f"{CLIENT!r} in one go\n".encode()
    assert server.statistics().buffered == 1


def test_with_a_request_buffer_and_the_request_in_the_headers_segment() -> None:
    server = make(socketserver.TCPServer, request_buffer=LineRequestBuffer())
    with serving(server):
        assert ask(server, pk.v2_inet() + b"whole\n") == f"{CLIENT!r} whole\n".encode()


class Peer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.transport.get_extra_info("peername")
        self.transport.write(f"{peer!r} {data.decode().strip()}\n".encode())


def test_multiplexed_handlers_see_the_client_and_the_bytes_after_the_header() -> None:
    server = make(socketserver.MultiplexingTCPServer, Peer)
    with serving(server):
        assert ask(server, pk.v1() + b"mux\n") == f"{CLIENT!r} mux\n".encode()
    assert server.seen == [CLIENT]


@pytest.mark.parametrize("data", [b"GET / HTTP/1.0\r\n\r\n", pk.v2(1, 0x11, b"\x00" * 3),
                                  b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"])
def test_a_bad_header_never_reaches_a_hook(data: bytes) -> None:
    server = make(socketserver.ThreadingTCPServer)
    with serving(server):
        refused(server, data)
        wait_for(lambda: not server.statistics().in_flight)
    assert server.seen == []
    assert server.statistics().dispatched_thread == 0


def test_an_untrusted_peer_is_rejected_unread() -> None:
    server = make(socketserver.ThreadingTCPServer, proxy_allow_from=["10.0.0.0/8"])
    with serving(server):
        refused(server, pk.v1() + b"spoof\n")
        wait_for(lambda: server.statistics().rejected == 1)
        assert server.statistics().reactor.bytes_in == 0
    assert server.seen == []


def test_a_late_header_is_closed_and_server_close_ends_headers_in_progress() -> None:
    server = make(socketserver.ThreadingTCPServer, proxy_timeout=0.2)
    with serving(server, close=False):
        refused(server, b"PROXY TCP4 ")
        c = socket.create_connection(server.server_address, timeout=10)
        c.sendall(pk.v2_inet()[:5])
        wait_for(lambda: server.statistics().by_state.get("PROXY_HEADER") == 1)
    with c:
        server.proxy_timeout = 60.0  # for the next run; this one is being closed
        server.server_close()
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:
            pass
    assert server.seen == []


def test_handle_request_takes_one_proxied_request() -> None:
    server = make(socketserver.TCPServer)
    server.timeout = 10
    with server, socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(pk.v1() + b"one\n")
        server.handle_request()
        assert c.makefile("rb").readline() == f"{CLIENT!r} one\n".encode()


def test_a_plain_class_attribute_turns_it_on_and_an_override_is_refused() -> None:
    class Server(socketserver.TCPServer):
        proxy_protocol = "v1"

    with Server((HOST, 0), Tell) as server, serving(server, close=False):
        assert ask(server, pk.v1() + b"a\n") == f"{CLIENT!r} a\n".encode()

    class OwnAccept(socketserver.TCPServer):
        proxy_protocol = "v1"

        def get_request(self) -> Any:
            return super().get_request()

    with OwnAccept((HOST, 0), Tell) as server, pytest.raises(TypeError, match="overridden"):
        server.handle_request()
