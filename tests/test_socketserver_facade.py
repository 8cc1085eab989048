"""The facades keep the standard library's contract, and every request is a row of the
reactor's connection table (issue points 1 and 2)."""

from __future__ import annotations

import io
import os
import socket
import socketserver as std
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from sskit import PYTHON, ROOT, exchange, serving, subprocess_env, wait_for

from reactor import ConnState, socketserver
from reactor.facades.servers import DatagramRequest

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(60)


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


# -- names and defaults -------------------------------------------------------------------


def test_every_standard_name_is_exported() -> None:
    missing = set(std.__all__) - set(socketserver.__all__)
    assert not missing
    for name in ("ForkingUnixStreamServer", "ForkingUnixDatagramServer",
                 "MultiplexingMixIn", "MultiplexingTCPServer", "MultiplexingUDPServer",
                 "MultiplexingUnixStreamServer", "MultiplexingUnixDatagramServer",
                 "HTTPRequestBuffer"):
        assert name in socketserver.__all__


def test_nothing_of_the_standard_module_is_used() -> None:
    code = ("import sys, reactor.socketserver as s\n"
            "print('socketserver' in sys.modules)\n"
            "print(all('socketserver' != c.__module__ for n in s.__all__ "
            "for c in getattr(getattr(s, n), '__mro__', ())))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True,
                         env=subprocess_env(), cwd=ROOT, timeout=30).stdout.split()
    assert out == ["False", "True"]


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("BaseServer", ["timeout"]),
        ("TCPServer", ["timeout", "address_family", "socket_type", "request_queue_size",
                       "allow_reuse_address", "allow_reuse_port"]),
        ("UDPServer", ["socket_type", "max_packet_size", "allow_reuse_address",
                       "allow_reuse_port"]),
        ("UnixStreamServer", ["address_family", "socket_type"]),
        ("UnixDatagramServer", ["address_family", "socket_type"]),
        ("ThreadingMixIn", ["daemon_threads", "block_on_close"]),
        ("ForkingMixIn", ["timeout", "active_children", "max_children", "block_on_close"]),
        ("StreamRequestHandler", ["rbufsize", "wbufsize", "timeout",
                                  "disable_nagle_algorithm"]),
    ],
)
def test_defaults_match_the_standard_library(name: str, attrs: list[str]) -> None:
    for attr in attrs:
        assert getattr(getattr(socketserver, name), attr) == getattr(getattr(std, name), attr), (
            name, attr)


def test_methods_of_the_standard_library_exist() -> None:
    for name in std.__all__:
        theirs, ours = getattr(std, name), getattr(socketserver, name)
        public = {m for m in vars(theirs) if not m.startswith("_") or m in (
            "__init__", "__enter__", "__exit__", "_handle_request_noblock")}
        for method in public:
            assert hasattr(ours, method), (name, method)


# -- the hooks, in the standard library's order -------------------------------------------


def recording(base: type, handler_base: type) -> tuple[type, type, list[str]]:
    calls: list[str] = []

    class Server(base):  # type: ignore[misc, valid-type]
        def get_request(self) -> Any:
            calls.append("get_request")
            return super().get_request()

        def verify_request(self, request: Any, client_address: Any) -> bool:
            calls.append("verify_request")
            return bool(super().verify_request(request, client_address))

        def process_request(self, request: Any, client_address: Any) -> None:
            calls.append("process_request")
            super().process_request(request, client_address)

        def finish_request(self, request: Any, client_address: Any) -> None:
            calls.append("finish_request")
            super().finish_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            calls.append("shutdown_request")
            super().shutdown_request(request)

        def close_request(self, request: Any) -> None:
            calls.append("close_request")
            super().close_request(request)

    class Handler(handler_base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            calls.append("setup")
            super().setup()

        def handle(self) -> None:
            calls.append("handle")
            self.wfile.write(self.rfile.readline())

        def finish(self) -> None:
            calls.append("finish")
            super().finish()

    return Server, Handler, calls


@pytest.mark.parametrize("kind", ["TCPServer", "ThreadingTCPServer", "UDPServer"])
def test_hooks_run_in_the_standard_order(kind: str) -> None:
    sequences = []
    for module in (std, socketserver):
        stream = kind != "UDPServer"
        handler = module.StreamRequestHandler if stream else module.DatagramRequestHandler
        server_cls, handler_cls, calls = recording(getattr(module, kind), handler)
        with server_cls((HOST, 0), handler_cls) as server:
            family_type = socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, family_type) as client:
                client.settimeout(10)
                if stream:
                    client.connect(server.server_address)
                    client.sendall(b"hi\n")
                else:
                    client.sendto(b"hi\n", server.server_address)
                server.handle_request()
                reply = client.recv(100)
                assert reply == b"hi\n"
            wait_for(lambda calls=calls: "close_request" in calls)
        sequences.append(calls)
    assert sequences[0] == sequences[1]


def test_shutdown_request_is_called_when_verify_refuses() -> None:
    shut = []

    class Server(socketserver.TCPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            return False

        def shutdown_request(self, request: Any) -> None:
            shut.append(request)
            super().shutdown_request(request)

    with Server((HOST, 0), Echo) as server, socket.create_connection(
            server.server_address, timeout=10) as client:
        server.handle_request()
        assert client.recv(10) == b""  # closed without a handler
        assert len(shut) == 1
        stats = server.statistics()
        assert stats.accepted == 1 and stats.rejected == 1
        assert len(server.connections) == 0


@pytest.mark.parametrize("default_timeout", [None, 7.0])
@pytest.mark.parametrize("server", ["TCPServer", "ThreadingTCPServer"])
@pytest.mark.parametrize("module", [std, socketserver], ids=["stdlib", "reactor"])
def test_a_handler_gets_the_socket_accept_would_give(
        module: Any, server: str, default_timeout: float | None) -> None:
    """A plain socket.socket, blocking -- or with the default timeout, when
    socket.setdefaulttimeout() set one, as the standard library's accept() leaves it."""
    seen: list[tuple[type, float | None]] = []

    class Handler(module.BaseRequestHandler):  # type: ignore[misc]
        def handle(self) -> None:
            seen.append((type(self.request), self.request.gettimeout()))

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(default_timeout)
    try:
        with getattr(module, server)((HOST, 0), Handler) as srv:
            worker = threading.Thread(target=srv.handle_request)
            worker.start()
            socket.create_connection(srv.server_address, timeout=10).close()
            worker.join(20)
            assert not worker.is_alive()
            wait_for(lambda: len(seen) == 1)
    finally:
        socket.setdefaulttimeout(old)
    assert seen == [(socket.socket, default_timeout)]


# -- the connection table -----------------------------------------------------------------


def test_an_inline_request_is_a_row_dispatched_inline() -> None:
    seen: list[tuple[str, str]] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for row in self.server.connections:
                seen.append((row.state.name, row.kind))
            self.wfile.write(self.rfile.readline())

    with socketserver.TCPServer((HOST, 0), Handler) as server, serving(server, close=False):
        assert exchange(server.server_address, b"one\n") == b"one\n"
        wait_for(lambda: len(server.connections) == 0)
        stats = server.statistics()
    assert seen == [("DISPATCHED_INLINE", "tcp")]
    assert stats.accepted == 1 and stats.dispatched_inline == 1 and stats.finished == 1
    assert stats.reactor is not None and stats.reactor.closed_total == 1


def test_threaded_requests_are_rows_dispatched_to_threads() -> None:
    release = threading.Event()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            release.wait(20)
            self.wfile.write(self.rfile.readline())

    server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
    with serving(server):
        clients = [socket.create_connection(server.server_address, timeout=10)
                   for _ in range(3)]
        # a row is marked before its thread starts and the thread counted as it starts:
        # from this thread the two can be seen a moment apart, so wait for both
        wait_for(lambda: (stats := server.statistics()).by_state.get(
            "DISPATCHED_THREAD") == 3 and stats.threads == 3)
        text = server.connections.format()
        assert text.count("DISPATCHED_THREAD") == 3
        release.set()
        for c in clients:
            c.sendall(b"x\n")
            assert c.makefile("rb").readline() == b"x\n"
            c.close()
        wait_for(lambda: len(server.connections) == 0)
        stats = server.statistics()
        assert stats.dispatched_thread == 3 and stats.finished == 3
        assert stats.in_flight == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_requests_stay_rows_until_their_child_is_reaped(tmp_path: Path) -> None:
    server = socketserver.ForkingTCPServer((HOST, 0), Echo)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=10) as client:
            # the row is marked before the fork and the child counted after it: from
            # this thread the two can be seen a moment apart, so wait for both
            wait_for(lambda: (stats := server.statistics()).by_state.get(
                "DISPATCHED_CHILD") == 1 and stats.children == 1)
            client.sendall(b"hello\n")
            assert client.makefile("rb").readline() == b"hello\n"
        wait_for(lambda: server.statistics().children == 0)
        wait_for(lambda: len(server.connections) == 0)
        stats = server.statistics()
        assert stats.dispatched_child == 1 and stats.finished == 1


def test_datagrams_are_rows_too() -> None:
    rows: list[Any] = []

    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            rows.extend(self.server.connections)
            self.wfile.write(self.rfile.read())

    with socketserver.UDPServer((HOST, 0), Handler) as server, serving(server, close=False):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.sendto(b"ping", server.server_address)
            assert c.recv(100) == b"ping"
        wait_for(lambda: server.statistics().finished == 1)
    assert len(rows) == 1 and isinstance(rows[0], DatagramRequest)
    assert rows[0].kind == "udp" and rows[0].bytes_in == 4
    assert rows[0].state is ConnState.CLOSED


def test_an_oversized_datagram_is_cut_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(str(len(self.packet)).encode())

    class Server(socketserver.UDPServer):
        max_packet_size = 100

    with Server((HOST, 0), Handler) as server, socket.socket(
            socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(10)
        c.sendto(b"x" * 500, server.server_address)
        server.handle_request()
        assert c.recv(100) == b"100"
        client = f"{HOST}:{c.getsockname()[1]}"
    # the address as users write it, not a Python tuple
    assert f"datagram from {client} cut to max_packet_size=100" in caplog.text


# -- handle_request and timeouts ----------------------------------------------------------


def test_handle_request_times_out() -> None:
    timeouts = []

    class Server(socketserver.TCPServer):
        timeout = 0.05

        def handle_timeout(self) -> None:
            timeouts.append(1)

    with Server((HOST, 0), Echo) as server:
        server.handle_request()
        assert timeouts == [1]
        server.timeout = None
        server.socket.settimeout(0.05)  # the listening socket's own timeout counts too
        server.handle_request()
        assert timeouts == [1, 1]
        with socket.create_connection(server.server_address, timeout=10) as c:
            c.sendall(b"late\n")
            server.handle_request()
            assert c.recv(100) == b"late\n"
        assert timeouts == [1, 1]


def test_handle_request_serves_exactly_one_of_several_waiting() -> None:
    with socketserver.TCPServer((HOST, 0), Echo) as server:
        clients = [socket.create_connection(server.server_address, timeout=10)
                   for _ in range(3)]
        for c in clients:
            c.sendall(b"q\n")
        for n in range(3):
            server.handle_request()
            assert server.statistics().accepted == n + 1
        for c in clients:
            assert c.recv(10) == b"q\n"
            c.close()


def test_bind_and_activate_false_and_reuse_address() -> None:
    class Server(socketserver.TCPServer):
        allow_reuse_address = True

    server = Server((HOST, 0), Echo, bind_and_activate=False)
    assert server.socket.getsockname()[1] == 0
    server.server_bind()
    server.server_activate()
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with server, serving(server, close=False):
        assert exchange(server.server_address, b"r\n") == b"r\n"
    assert server.socket.fileno() == -1


def test_server_close_from_another_thread_stops_serving_first() -> None:
    server = socketserver.TCPServer((HOST, 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_for(lambda: server.statistics().serving)
    server.server_close()
    thread.join(10)
    assert not thread.is_alive()
    assert server.socket.fileno() == -1


def test_a_get_request_override_that_wraps_the_socket() -> None:
    class Wrapped:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sock, name)

    class Server(socketserver.TCPServer):
        def get_request(self) -> Any:
            sock, addr = super().get_request()
            return Wrapped(sock), addr

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            assert isinstance(self.request, Wrapped)
            self.request.sendall(self.request.recv(100))

    with Server((HOST, 0), Handler) as server, serving(server, close=False):
        assert exchange(server.server_address, b"w\n") == b"w\n"


# -- the classic handlers -----------------------------------------------------------------


def test_stream_handler_files_and_options() -> None:
    report: dict[str, Any] = {}

    class Unbuffered(socketserver.StreamRequestHandler):
        timeout = 7.5
        disable_nagle_algorithm = True

        def handle(self) -> None:
            report["wfile"] = type(self.wfile).__name__
            report["is_buffered_io"] = isinstance(self.wfile, io.BufferedIOBase)
            report["fileno"] = self.wfile.fileno() == self.request.fileno()
            report["timeout"] = self.request.gettimeout()
            report["nodelay"] = self.request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            self.wfile.write(b"now\n")  # sent at once, no flush
            report["line"] = self.rfile.readline()

    with socketserver.TCPServer((HOST, 0), Unbuffered) as server, serving(
            server, close=False), socket.create_connection(server.server_address,
                                                           timeout=10) as c:
        reader = c.makefile("rb")
        assert reader.readline() == b"now\n"
        c.sendall(b"then\n")
        wait_for(lambda: "line" in report)
    assert report == {"wfile": "SocketWriter", "is_buffered_io": True, "fileno": True,
                      "timeout": 7.5, "nodelay": 1, "line": b"then\n"}

    class Buffered(socketserver.StreamRequestHandler):
        wbufsize = 65536
        rbufsize = 0

        def handle(self) -> None:
            report["raw_rfile"] = type(self.rfile).__name__
            self.wfile.write(self.rfile.readline())  # flushed by finish()

    with socketserver.TCPServer((HOST, 0), Buffered) as server, serving(server, close=False):
        assert exchange(server.server_address, b"buffered\n") == b"buffered\n"
    assert report["raw_rfile"] == "SocketIO"


def test_datagram_handler_replies_with_what_was_written() -> None:
    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read().upper())

    with socketserver.ThreadingUDPServer((HOST, 0), Handler) as server, serving(
            server, close=False), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(10)
        c.sendto(b"abc", server.server_address)
        assert c.recv(10) == b"ABC"


def test_unix_stream_and_datagram_servers(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socketserver.ThreadingUnixStreamServer(path, Echo) as server, serving(
            server, close=False):
        assert exchange(path, b"u\n", family=socket.AF_UNIX) == b"u\n"
        assert server.statistics().reactor is not None

    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    dpath, cpath = str(tmp_path / "d.sock"), str(tmp_path / "c.sock")
    with socketserver.UnixDatagramServer(dpath, Handler) as server, serving(
            server, close=False), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.bind(cpath)
        c.settimeout(10)
        c.sendto(b"dg", dpath)
        assert c.recv(10) == b"dg"
        wait_for(lambda: server.statistics().finished == 1)
        rows = [r for r in server.connections]
        assert rows == []


def test_private_names_cannot_collide_with_subclasses_in_the_standard_library() -> None:
    """Servers are subclassed by other code (xmlrpc.server has its own ``_dispatch``):
    every private name the facades add is prefixed ``_reactor_``."""
    import http.server
    import xmlrpc.server

    allowed = {"_handle_request_noblock", "_threads"}  # the standard library's own
    for name in socketserver.__all__:
        cls = getattr(socketserver, name)
        if not isinstance(cls, type) or not issubclass(
                cls, (socketserver.BaseServer, socketserver.ThreadingMixIn,
                      socketserver.ForkingMixIn, socketserver.MultiplexingMixIn)):
            continue
        for klass in cls.__mro__:
            for attr in vars(klass):
                if attr.startswith("_") and not attr.startswith("__"):
                    assert attr.startswith("_reactor_") or attr in allowed, (klass, attr)
    theirs = set()
    for cls in (http.server.HTTPServer, xmlrpc.server.SimpleXMLRPCServer,
                xmlrpc.server.MultiPathXMLRPCServer, xmlrpc.server.DocXMLRPCServer):
        for klass in cls.__mro__:
            theirs.update(a for a in vars(klass) if a.startswith("_reactor_"))
    assert not theirs


def test_a_listening_socket_wrapped_with_ssl_hands_out_ssl_connections() -> None:
    import ssl

    # a self-signed test certificate for CN=localhost, valid until 2126 (made with
    # openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=localhost), so
    # that no tool is needed at test time and the test never skips
    cert = Path(__file__).parent / "data" / "localhost-cert.pem"
    key = Path(__file__).parent / "data" / "localhost-key.pem"
    kinds: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            kinds.append(type(self.request).__name__)
            self.wfile.write(self.rfile.readline())

    server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert))
    client_context.check_hostname = False
    with serving(server), socket.create_connection(server.server_address, timeout=10) as raw, \
            client_context.wrap_socket(raw) as tls:
        tls.sendall(b"secret\n")
        assert tls.makefile("rb").readline() == b"secret\n"
    assert kinds == ["SSLSocket"]


def test_a_server_on_a_reactor_of_your_own() -> None:
    import selectors

    from reactor import Reactor

    reactor = Reactor(selectors.PollSelector())
    server = socketserver.ThreadingTCPServer((HOST, 0), Echo, reactor=reactor)
    assert server.reactor is reactor
    with serving(server):
        assert exchange(server.server_address, b"own\n") == b"own\n"
        stats = server.statistics()
        assert stats.reactor is not None and stats.reactor.backend == "PollSelector"
    assert not reactor.is_closed()  # the server closes only what it made
    assert reactor.listeners == []
    reactor.close()
