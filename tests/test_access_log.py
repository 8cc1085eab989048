"""``reactor serve --access-log``: one line per connection as it closes, with why.

A real ``reactor serve`` child; its JSON lines are parsed and each kind of close is
checked by content: client EOF, reset (SO_LINGER 0), the idle, first-byte and request
deadlines, the server's shutdown (SIGTERM); the kv service counts its commands. In
process: the wrapper forwards every callback and hook (BufferedProtocol, eof_received's
value, begin_shutdown's value).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import struct
import threading
from typing import Any

import pytest
from servekit import (
    WAIT,
    access_records,
    json_records,
    json_tcp_address,
    read_until_closed,
    serve,
)

from reactor.cli.access import BufferedLogged, Logged, close_reason, format_address
from reactor.cli.graceful import Server
from reactor.sansio.errors import DeadlineExceeded

pytestmark = pytest.mark.timeout(60)


records = json_records
address = json_tcp_address
wait_access = access_records


def name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_each_kind_of_close_has_its_reason() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--access-log", "--log-format", "json",
               "--idle-timeout", "1.5") as srv:
        where = address(srv)
        local = f"{where[0]}:{where[1]}"
        # the client closes first
        eof = socket.create_connection(where, timeout=WAIT)
        eof.sendall(b"hello")
        assert eof.recv(5) == b"hello"
        eof_name = name(eof)
        eof.shutdown(socket.SHUT_WR)
        assert read_until_closed(eof) == b""
        eof.close()
        # the client resets
        reset = socket.create_connection(where, timeout=WAIT)
        reset.sendall(b"abc")
        assert reset.recv(3) == b"abc"
        reset_name = name(reset)
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        # the client goes quiet: the idle deadline
        idle = socket.create_connection(where, timeout=WAIT)
        idle.sendall(b"x")
        assert idle.recv(1) == b"x"
        idle_name = name(idle)
        assert read_until_closed(idle) == b""
        idle.close()
        wait_access(srv, 3)
        # the server stops while a client is connected
        late = socket.create_connection(where, timeout=WAIT)
        late.sendall(b"zz")
        assert late.recv(2) == b"zz"
        late_name = name(late)
        srv.signal(signal.SIGTERM)
        assert read_until_closed(late) == b""  # drained, then EOF
        late.close()
        assert srv.wait() == 0
        lines = {r["peer"]: r for r in records(srv, "reactor.access")}
    assert set(lines) == {eof_name, reset_name, idle_name, late_name}
    for record in lines.values():
        assert record["local"] == local and record["level"] == "INFO"
        assert record["requests"] is None  # echo does not count requests
        assert record["duration"] >= 0
    first = lines[eof_name]
    assert (first["reason"], first["bytes_in"], first["bytes_out"]) == ("client-eof", 5, 5)
    assert first["error"] is None
    assert lines[reset_name]["reason"] == "reset"
    assert "ConnectionResetError" in lines[reset_name]["error"]
    assert (lines[idle_name]["reason"], lines[idle_name]["bytes_in"]) == ("idle-timeout", 1)
    assert lines[idle_name]["duration"] >= 1.4
    assert (lines[late_name]["reason"], lines[late_name]["bytes_out"]) == ("shutdown", 2)
    assert f"{eof_name} on {local}: client-eof after" in first["message"]
    assert "5 bytes in, 5 out" in first["message"]


def test_kv_counts_its_commands_and_its_deadlines_are_named() -> None:
    with serve("kv", "--bind", "127.0.0.1:0", "--access-log", "--log-format", "json",
               "--first-byte-timeout", "1", "--request-timeout", "1") as srv:
        where = address(srv)
        with socket.create_connection(where, timeout=WAIT) as client:
            client.sendall(b"*1\r\n$4\r\nPING\r\n" * 3
                           + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            reply = b""
            while reply.count(b"\r\n") < 4:
                chunk = client.recv(100)
                assert chunk
                reply += chunk
            counted = name(client)
            client.shutdown(socket.SHUT_WR)
            read_until_closed(client)
        with socket.create_connection(where, timeout=WAIT) as silent:
            silent_name = name(silent)
            read_until_closed(silent)
        with socket.create_connection(where, timeout=WAIT) as slow:
            slow.sendall(b"*2\r\n$3\r\nGET\r\n")  # never finished
            slow_name = name(slow)
            read_until_closed(slow)
        lines = {r["peer"]: r for r in wait_access(srv, 3)}
        assert srv.stop() == 0
    assert (lines[counted]["requests"], lines[counted]["reason"]) == (4, "client-eof")
    assert "4 requests" in lines[counted]["message"]
    assert lines[silent_name]["reason"] == "first-byte-timeout"
    assert (lines[slow_name]["reason"], lines[slow_name]["requests"]) == ("request-timeout", 0)


def test_debug_level_shows_accepts_and_closes_without_the_access_log() -> None:
    with serve("kv", "--bind", "127.0.0.1:0", "--log-level", "debug") as srv:
        where = srv.tcp_address()
        with socket.create_connection(where, timeout=WAIT) as client:
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert client.recv(100) == b"+PONG\r\n"
            peer = name(client)
        srv.wait_for(rf"DEBUG reactor.serve: {re.escape(peer)} on .*: client-eof after .*"
                     r", 1 request$")
        assert re.search(rf"DEBUG reactor.serve: accepted {re.escape(peer)} on "
                         rf"{re.escape(where[0])}:{where[1]}", srv.log)
        assert "reactor.access" not in srv.log
        assert srv.stop() == 0


def test_without_the_flags_nothing_is_wrapped() -> None:
    server = Server(asyncio.Protocol, ["127.0.0.1:0"], handle_signals=False)
    try:
        server.start()
        with socket.create_connection(("127.0.0.1", server.listeners[0].port), timeout=WAIT):
            for _ in range(50):
                server.reactor.run_once(0.05)
                rows = list(server.reactor.connections)
                if rows:
                    break
            assert type(rows[0].get_protocol()) is asyncio.Protocol  # no wrapper: no cost
    finally:
        server._cleanup()
        server.reactor.close()


# -- the wrapper forwards everything ----------------------------------------------------------


class Buffered(asyncio.BufferedProtocol):
    """Reads into its own buffer; on EOF keeps writing (returns True), says goodbye,
    closes; ``begin_shutdown`` answers True and closes by itself."""

    def __init__(self) -> None:
        self.buf = bytearray(64)
        self.got = b""
        self.transport: Any = None
        self.calls: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append("made")

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += bytes(self.buf[:nbytes])
        self.transport.write(b"got " + bytes(self.buf[:nbytes]))

    def eof_received(self) -> bool:
        self.calls.append("eof")
        self.transport.write(b" bye")
        self.transport.close()
        return True

    def begin_shutdown(self) -> bool:
        self.calls.append("shutdown")
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")


def test_the_wrapper_forwards_buffered_reads_eof_and_begin_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reactor.access")
    made: list[Buffered] = []

    def factory() -> Buffered:
        made.append(Buffered())
        return made[-1]

    server = Server(factory, ["127.0.0.1:0"], handle_signals=False, access_log=True,
                    graceful_timeout=5)
    server.start()
    port = server.listeners[0].port
    runner = threading.Thread(target=server.serve)
    runner.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as half:
            half.sendall(b"hi")
            assert half.recv(10) == b"got hi"
            half.shutdown(socket.SHUT_WR)  # eof_received returns True: we still read
            assert read_until_closed(half) == b" bye"
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as kept:
            kept.sendall(b"yo")
            assert kept.recv(10) == b"got yo"
            server.stop_threadsafe()
            assert read_until_closed(kept) == b""
    finally:
        server.stop_threadsafe()
        runner.join(WAIT)
    assert made[0].got == b"hi" and made[0].calls == ["made", "eof", "lost"]
    assert made[1].calls == ["made", "shutdown", "lost"]
    reasons = [r.reason for r in caplog.records if r.name == "reactor.access"]  # type: ignore[attr-defined]
    assert reasons == ["client-eof", "shutdown"]


def test_close_reasons_and_addresses() -> None:
    assert close_reason(DeadlineExceeded("write stalled"), False, False) == "write-timeout"
    assert close_reason(DeadlineExceeded("no data received"), True, True) == (
        "first-byte-timeout")
    assert close_reason(BrokenPipeError(), False, False) == "reset"
    assert close_reason(OSError(5, "EIO"), False, False) == "error"
    assert close_reason(None, True, True) == "client-eof"
    assert close_reason(None, False, True) == "shutdown"
    assert close_reason(None, False, False) == "server-close"
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"
    assert format_address(("10.0.0.1", 80)) == "10.0.0.1:80"
    assert format_address("/run/x.sock") == "unix:/run/x.sock"
    assert format_address("") == "unix:(unnamed)"
    assert format_address(b"\0name") == "unix:@name"
    assert issubclass(BufferedLogged, asyncio.BufferedProtocol)
    assert not issubclass(Logged, asyncio.BufferedProtocol)
