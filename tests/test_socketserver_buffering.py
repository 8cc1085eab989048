"""Request buffering for blocking handlers (issue point 4): the reactor reads the first
request without blocking and hands the connection over only once it is complete."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import textwrap
import threading
import time
from typing import Any

import psutil
import pytest
from sskit import PYTHON, ROOT, serving, subprocess_env, wait_for

from reactor import socketserver
from reactor.sansio.request_buffer import LineRequestBuffer

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(60)


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def line_server(base: type, handler: type = Echo, **buffer_args: Any) -> Any:
    class Server(base):  # type: ignore[misc, valid-type]
        request_buffer = LineRequestBuffer(**buffer_args)

    return Server((HOST, 0), handler)


@pytest.mark.parametrize("base", ["TCPServer", "ThreadingTCPServer", "ForkingTCPServer"])
def test_the_handler_gets_the_request_only_when_complete(base: str) -> None:
    if base.startswith("Forking") and not hasattr(os, "fork"):
        pytest.skip("needs fork")
    server = line_server(getattr(socketserver, base))
    with serving(server), socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(b"hel")
        wait_for(lambda: server.statistics().by_state.get("BUFFERING") == 1)
        c.sendall(b"lo wor")
        wait_for(lambda: server.statistics().reactor.bytes_in == 9)
        assert server.statistics().dispatched_inline + server.statistics().dispatched_thread \
            + server.statistics().dispatched_child == 0
        c.sendall(b"ld\nsecond line is read by the handler itself\n")
        assert c.makefile("rb").readline() == b"hello world\n"
        wait_for(lambda: server.statistics().finished == 1)
        assert server.statistics().buffered == 1


def test_the_socket_replays_buffered_bytes_to_every_read_method() -> None:
    seen: dict[str, Any] = {}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock = self.request
            seen["peek"] = sock.recv(3, socket.MSG_PEEK)
            seen["recv"] = sock.recv(2)
            buf = bytearray(3)
            seen["recv_into"] = (sock.recv_into(buf), bytes(buf))
            seen["recvfrom"] = sock.recvfrom(2)
            seen["rest"] = sock.makefile("rb").readline()
            sock.sendall(b"ok\n")

    server = line_server(socketserver.TCPServer, Handler)
    with serving(server), socket.create_connection(server.server_address, timeout=10) as c:
        c.sendall(b"abcdefghij\n")
        assert c.recv(10) == b"ok\n"
    assert seen == {"peek": b"abc", "recv": b"ab", "recv_into": (3, b"cde"),
                    "recvfrom": (b"fg", None), "rest": b"hij\n"}


def test_too_large_and_too_late_requests_are_refused() -> None:
    from reactor.sansio.request_buffer import HTTPRequestBuffer

    calls: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            calls.append("handled")

    class Server(socketserver.ThreadingTCPServer):
        request_buffer = HTTPRequestBuffer(max_size=1024, timeout=0.5)

    server = Server((HOST, 0), Handler)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=10) as big:
            big.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
            reply = big.makefile("rb").read()
            assert reply.startswith(b"HTTP/1.1 431 ")
        with socket.create_connection(server.server_address, timeout=10) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\n")
            reply = slow.makefile("rb").read()  # the deadline closes it
            assert reply.startswith(b"HTTP/1.1 408 ")
        wait_for(lambda: len(server.connections) == 0)
        stats = server.statistics()
    assert calls == []
    assert stats.buffer_refused == 1 and stats.buffer_timeouts == 1


def test_a_peer_that_leaves_while_buffering_never_reaches_a_handler() -> None:
    ended: list[Any] = []
    handled: list[bytes] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            handled.append(self.rfile.read())

    class Server(socketserver.ThreadingTCPServer):
        request_buffer = LineRequestBuffer()

        def shutdown_request(self, request: Any) -> None:
            ended.append(request)
            super().shutdown_request(request)

    server = Server((HOST, 0), Handler)
    with serving(server):
        socket.create_connection(server.server_address, timeout=10).close()  # nothing sent
        wait_for(lambda: len(ended) == 1)
        with socket.create_connection(server.server_address, timeout=10) as c:
            c.sendall(b"no newline")
            c.shutdown(socket.SHUT_WR)  # EOF: what arrived is worth a handler
            wait_for(lambda: len(handled) == 1)
        wait_for(lambda: len(server.connections) == 0)
    assert handled == [b"no newline"]
    assert len(ended) == 2


def test_request_buffering_does_not_leak_rows_or_descriptors() -> None:
    server = line_server(socketserver.ThreadingTCPServer)
    me = psutil.Process()
    with serving(server):
        for _ in range(20):  # warm up: threads, logging, the selector
            with socket.create_connection(server.server_address, timeout=10) as c:
                c.sendall(b"x\n")
                c.recv(10)
        wait_for(lambda: len(server.connections) == 0)
        before = me.num_fds()
        for _ in range(200):
            with socket.create_connection(server.server_address, timeout=10) as c:
                c.sendall(b"y\n")
                assert c.recv(10) == b"y\n"
        wait_for(lambda: server.statistics().finished == 220)
        wait_for(lambda: len(server.connections) == 0)
        assert me.num_fds() <= before + 2


# -- 500 slow clients ---------------------------------------------------------------------


SLOW_SERVER = textwrap.dedent(
    """
    import json, sys
    import reactor.socketserver as ours
    ours.install()
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            stats = self.server.statistics()
            body = json.dumps({"by_state": dict(stats.by_state),
                               "buffered": stats.buffered}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024
        request_buffer = ours.HTTPRequestBuffer(timeout=float(sys.argv[1]))

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)

SLOW_REQUEST = b"GET /slow HTTP/1.1\r\nHost: localhost\r\nUser-Agent: one-byte-a-second\r\n\r\n"


def drip(port: int, count: int, stop: threading.Event, replies: dict[int, bytes]) -> None:
    """Keep ``count`` clients sending one byte a second until the server closes them."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        s = socket.create_connection((HOST, port), timeout=20)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, len(socks))
        socks.append(s)
    sent = 0
    next_byte = time.monotonic()
    while not stop.is_set() and len(replies) < count:
        now = time.monotonic()
        if now >= next_byte and sent < len(SLOW_REQUEST):
            for i, s in enumerate(socks):
                if i not in replies:
                    try:
                        s.send(SLOW_REQUEST[sent:sent + 1])
                    except OSError:
                        pass
            sent += 1
            next_byte = now + 1.0
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except OSError:
                data = b""
            replies[key.data] = replies.get(key.data, b"") + data
            if not data:
                sel.unregister(s)
    for s in socks:
        s.close()
    sel.close()


@pytest.mark.timeout(90)
def test_500_slow_clients_hold_no_thread_and_a_fast_one_is_served_at_once() -> None:
    deadline = 4.0
    proc = subprocess.Popen([PYTHON, "-c", SLOW_SERVER, str(deadline)], stdout=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd=ROOT)
    stop = threading.Event()
    replies: dict[int, bytes] = {}
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        server = psutil.Process(proc.pid)
        dripper = threading.Thread(target=drip, args=(port, 500, stop, replies))
        started = time.monotonic()
        dripper.start()
        conns = getattr(server, "net_connections", None) or server.connections
        wait_for(lambda: len(conns("tcp")) >= 501, timeout=30)
        threads_under_load = server.num_threads()
        begin = time.monotonic()
        with socket.create_connection((HOST, port), timeout=10) as fast:
            fast.sendall(b"GET /stats HTTP/1.0\r\nHost: localhost\r\n\r\n")
            answer = fast.makefile("rb").read()
        fast_latency = time.monotonic() - begin
        head, _, body = answer.partition(b"\r\n\r\n")
        stats = json.loads(body)
        assert head.startswith(b"HTTP/1.0 200")
        assert stats["by_state"].get("BUFFERING") == 500
        assert threads_under_load <= 2, threads_under_load  # the loop, no worker
        assert fast_latency < 2.0
        # every slow client is closed once its deadline passed, with a 408
        wait_for(lambda: len(replies) == 500, timeout=deadline + 30)
        assert time.monotonic() - started >= deadline - 0.5
        assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies.values())
        assert server.num_threads() <= 2
    finally:
        stop.set()
        proc.kill()
        proc.wait(10)
