"""Urgent data for the facades' blocking handlers (reactor.facades.urgent).

A handler with ``handle_urgent(byte)`` is called from its own reads, in its own thread
or child, before the bytes after the mark; it answers over the connection, so the test
reads what the handler saw whatever process it runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sskit import serving

from reactor import socketserver as ss
from reactor.facades.urgent import UrgentRequestSocket

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


class Reporting(ss.StreamRequestHandler):
    """Answers ``line:<line>`` for each line and ``urgent:<byte>`` for each urgent byte."""

    def handle(self) -> None:
        assert isinstance(self.request, UrgentRequestSocket)
        # until "bye": a forked child holds a copy of the client's socket too, so the
        # client's close is no end of stream for it
        for line in self.rfile:
            if line == b"bye\n":
                return
            self.wfile.write(b"line:" + line)

    def handle_urgent(self, byte: bytes) -> None:
        self.wfile.write(b"urgent:" + byte + b"\n")


class ReportingWithTimeout(Reporting):
    timeout = WAIT  # a socket with a timeout: Python waits to be readable before a recv


class Client:
    def __init__(self, address: Any) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes, urgent: bool = False) -> None:
        self.sock.send(data, socket.MSG_OOB if urgent else 0)

    def line(self) -> bytes:
        return self.file.readline()

    def close(self) -> None:
        try:
            self.send(b"bye\n")
        except OSError:
            pass
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def connected(address: Any) -> Iterator[Client]:
    client = Client(address)
    try:
        yield client
    finally:
        client.close()


def line_then_urgent(server: Any, line: bytes, byte: bytes) -> None:
    """Serve, send ``line`` and read its answer, then ``byte`` as urgent data."""
    with serving(server), connected(server.server_address) as client:
        client.send(line)
        assert client.line() == b"line:" + line
        client.send(byte, urgent=True)
        assert client.line() == b"urgent:" + byte + b"\n"


SERVERS = [ss.TCPServer, ss.ThreadingTCPServer]
if hasattr(ss, "ForkingTCPServer"):
    SERVERS.append(ss.ForkingTCPServer)


@pytest.mark.parametrize("handler", [Reporting, ReportingWithTimeout],
                         ids=["blocking", "timeout"])
@pytest.mark.parametrize("server_class", SERVERS, ids=lambda c: c.__name__)
def test_a_blocking_handler_gets_urgent_bytes_in_its_reads(
    server_class: Any, handler: Any
) -> None:
    server = server_class(("127.0.0.1", 0), handler)
    with serving(server), connected(server.server_address) as client:
        client.send(b"one\n")
        assert client.line() == b"line:one\n"
        # the handler is blocked reading: an urgent byte alone wakes it
        client.send(b"!", urgent=True)
        assert client.line() == b"urgent:!\n"
        # the bytes before the mark were read first (they wait in rfile)
        client.send(b"two")
        client.send(b"#", urgent=True)
        client.send(b"\n")
        assert client.line() == b"urgent:#\n"
        assert client.line() == b"line:two\n"
        client.send(b"three\n")
        assert client.line() == b"line:three\n"


def test_a_handler_without_handle_urgent_gets_a_plain_socket() -> None:
    seen: list[type] = []

    class Plain(ss.StreamRequestHandler):
        def handle(self) -> None:
            seen.append(type(self.request))
            for line in self.rfile:
                self.wfile.write(line)

    server = ss.ThreadingTCPServer(("127.0.0.1", 0), Plain)
    with serving(server), connected(server.server_address) as client:
        client.send(b"ab")
        client.send(b"!", urgent=True)
        client.send(b"c\n")
        assert client.line() == b"abc\n"  # the urgent byte is out of the stream
    assert seen == [socket.socket]


def test_urgent_bytes_with_request_buffering() -> None:
    class Server(ss.ThreadingTCPServer):
        request_buffer = ss.LineRequestBuffer()

    line_then_urgent(Server(("127.0.0.1", 0), Reporting), b"first\n", b"?")


def test_an_overridden_finish_request_still_reaches_handle_urgent() -> None:
    class Server(ss.ThreadingTCPServer):
        def finish_request(self, request: Any, client_address: Any) -> None:
            Reporting(request, client_address, self)  # makes the handler itself

    line_then_urgent(Server(("127.0.0.1", 0), Reporting), b"x\n", b"!")


def test_a_multiplexed_handler_is_a_protocol_and_takes_urgent_data_received() -> None:
    class Multiplexed(asyncio.Protocol):
        def __init__(self, *args: Any) -> None:
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"line:" + data)

        def urgent_data_received(self, byte: bytes) -> None:
            self.transport.write(b"urgent:" + byte + b"\n")

    line_then_urgent(ss.MultiplexingTCPServer(("127.0.0.1", 0), Multiplexed), b"m\n", b"%")


README = Path(__file__).resolve().parent.parent / "README.md"


def urgent_snippets() -> list[str]:
    """The README's examples of out-of-band data (they send MSG_OOB)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if "MSG_OOB" in b]


@pytest.mark.parametrize("index", range(2))
def test_the_readme_examples_run_as_written(index: int, tmp_path: Path) -> None:
    snippets = urgent_snippets()
    assert len(snippets) == 2, "a protocol example and a blocking handler example"
    script = tmp_path / "urgent.py"
    script.write_text(snippets[index])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=50)
    assert done.returncode == 0, done.stderr
    expected = [
        "[('data', b'abc'), ('urgent', b'!'), ('data', b'def')]\n",
        "b'line hello\\n'\nb'urgent !\\n'\n",
    ]
    assert done.stdout == expected[index]
