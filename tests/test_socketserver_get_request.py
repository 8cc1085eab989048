"""Servers whose ``get_request()`` is overridden, side by side with the standard library.

Programs (and the standard library's own test servers) override ``get_request()`` to
call ``self.socket.accept()`` themselves -- to make the accepted socket blocking, to
wrap it in TLS -- and serve with ``handle_request()`` loops, often with a timeout on the
listening socket. Every test body here runs twice: on the standard library's
``socketserver`` and on ``reactor.socketserver`` (with ``http.server``,
``xmlrpc.server``, ``wsgiref.simple_server`` and ``logging.config`` loaded on each, see
``stdlib_twins``), with the standard library's own clients.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import logging.handlers
import pickle
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sskit import wait_for
from stdlib_twins import FLAVOURS, modules

import reactor.socketserver as ours

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0


def in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``target`` in a daemon thread; what it raises is collected."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def joined(thread: threading.Thread, errors: list[BaseException], timeout: float = 20) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), "the serving loop did not finish"
    assert not errors, errors


class TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transport with a socket timeout, so no test can hang on it."""

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = IO_TIMEOUT
        return conn


# -- xmlrpc.server: CPython's own test server -------------------------------------------


@pytest.mark.parametrize("how", ["accept", "super"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_xmlrpc_server_with_get_request_override_and_handle_request_loop(
    flavour: str, how: str
) -> None:
    m = modules(flavour)

    class MyXMLRPCServer(m.xmlrpc_server.SimpleXMLRPCServer):  # type: ignore[misc]
        def get_request(self) -> Any:
            # as test_xmlrpc does: make sure the accepted socket is blocking
            if how == "accept":
                s, port = self.socket.accept()
            else:
                s, port = super().get_request()
            s.setblocking(True)
            return s, port

    serv = MyXMLRPCServer((HOST, 0), logRequests=False, bind_and_activate=False)
    try:
        serv.server_bind()
        serv.server_activate()
        serv.socket.settimeout(3)
        serv.register_function(pow)
        port = serv.server_address[1]
        requests = 4

        def loop() -> None:
            for _ in range(requests):
                serv.handle_request()

        thread, errors = in_thread(loop)
        with xmlrpc.client.ServerProxy(f"http://{HOST}:{port}",
                                       transport=TimeoutTransport()) as proxy:
            answers = [proxy.pow(2, i) for i in range(requests)]
        joined(thread, errors)
        assert answers == [1, 2, 4, 8]
        assert serv.socket.gettimeout() == 3
    finally:
        serv.server_close()


# -- http.server: TLS done in get_request -----------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (make test installs it)")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=localhost", "-addext", f"subjectAltName=IP:{HOST}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_http_server_wrapping_connections_in_tls_in_get_request(
    flavour: str, certificate: tuple[Path, Path]
) -> None:
    m = modules(flavour)
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    class Hello(m.http_server.BaseHTTPRequestHandler):  # type: ignore[misc]
        def do_GET(self) -> None:
            body = f"hello {self.path} over {self.request.version()}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class TLSServer(m.http_server.HTTPServer):  # type: ignore[misc]
        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            sock.settimeout(IO_TIMEOUT)
            return server_ctx.wrap_socket(sock, server_side=True), addr

    server = TLSServer((HOST, 0), Hello)
    try:
        server.socket.settimeout(5)
        port = server.server_address[1]
        thread, errors = in_thread(lambda: [server.handle_request() for _ in range(3)] and None)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        bodies = []
        for i in range(3):
            conn = http.client.HTTPSConnection(HOST, port, timeout=IO_TIMEOUT,
                                               context=client_ctx)
            conn.request("GET", f"/{i}")
            response = conn.getresponse()
            bodies.append((response.status, response.read()))
            conn.close()
        joined(thread, errors)
        assert [status for status, _ in bodies] == [200, 200, 200]
        assert [body.split(b" over ")[0] for _, body in bodies] == [b"hello /0", b"hello /1",
                                                                   b"hello /2"]
        assert all(body.split(b" over ")[1].startswith(b"TLS") for _, body in bodies)
    finally:
        server.server_close()


# -- wsgiref ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_wsgiref_server_with_get_request_override(flavour: str) -> None:
    m = modules(flavour)
    peers: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()]

    class Quiet(m.wsgiref_simple_server.WSGIRequestHandler):  # type: ignore[misc]
        def log_message(self, *args: Any) -> None:
            pass

    class Server(m.wsgiref_simple_server.WSGIServer):  # type: ignore[misc]
        def get_request(self) -> Any:
            sock, addr = super().get_request()
            peers.append(addr)
            return sock, addr

    server = m.wsgiref_simple_server.make_server(HOST, 0, app, server_class=Server,
                                                 handler_class=Quiet)
    try:
        server.socket.settimeout(4)
        port = server.server_address[1]
        thread, errors = in_thread(lambda: [server.handle_request() for _ in range(2)] and None)
        got = []
        for path in ("/a", "/b"):
            conn = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT)
            conn.request("GET", path)
            got.append(conn.getresponse().read())
            conn.close()
        joined(thread, errors)
        assert got == [b"GET /a", b"GET /b"]
        assert len(peers) == 2 and all(peer[0] == HOST for peer in peers)
    finally:
        server.server_close()


# -- logging's socket receivers -----------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_logging_cookbook_receiver_with_get_request_override(flavour: str) -> None:
    """The logging cookbook's LogRecordSocketReceiver (select, then handle_request),
    with a get_request that sets a timeout on each connection."""
    m = modules(flavour)
    records: list[logging.LogRecord] = []

    class LogRecordStreamHandler(m.socketserver.StreamRequestHandler):  # type: ignore[misc]
        def handle(self) -> None:
            while True:
                chunk = self.connection.recv(4)
                if len(chunk) < 4:
                    break
                size = struct.unpack(">L", chunk)[0]
                chunk = self.connection.recv(size)
                while len(chunk) < size:
                    chunk += self.connection.recv(size - len(chunk))
                records.append(logging.makeLogRecord(pickle.loads(chunk)))

    class LogRecordSocketReceiver(m.socketserver.ThreadingTCPServer):  # type: ignore[misc]
        allow_reuse_address = True

        def __init__(self) -> None:
            super().__init__((HOST, 0), LogRecordStreamHandler)
            self.abort = False
            self.timeout = 1

        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            sock.settimeout(IO_TIMEOUT)
            return sock, addr

        def serve_until_stopped(self) -> None:
            while not self.abort:
                readable, _, _ = select.select([self.socket.fileno()], [], [], 0.05)
                if readable:
                    self.handle_request()

    receiver = LogRecordSocketReceiver()
    thread, errors = in_thread(receiver.serve_until_stopped)
    sender = logging.getLogger(f"twins.cookbook.{flavour}")
    sender.propagate = False
    sender.setLevel(logging.INFO)
    handler = logging.handlers.SocketHandler(HOST, receiver.server_address[1])
    sender.addHandler(handler)
    try:
        for i in range(3):
            sender.info("record %d", i)
        handler.close()
        sender.removeHandler(handler)
        # each connection has its own handler thread: wait for the first's records
        # before the second sends, so that the order below is the order sent
        wait_for(lambda: len(records) == 3, what="three records received")
        second = logging.handlers.SocketHandler(HOST, receiver.server_address[1])
        sender.addHandler(second)
        sender.warning("over a second connection")
        second.close()
        sender.removeHandler(second)
        wait_for(lambda: len(records) == 4, what="four records received")
    finally:
        receiver.abort = True
        joined(thread, errors)
        receiver.server_close()
    assert [r.getMessage() for r in records] == ["record 0", "record 1", "record 2",
                                                 "over a second connection"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_logging_config_listen_receiver(flavour: str) -> None:
    """logging.config.listen(): its receiver serves with its own select/handle_request
    loop and a timeout."""
    m = modules(flavour)
    name = f"twins.config.{flavour}"
    target = logging.getLogger(name)
    target.setLevel(logging.NOTSET)
    listener = m.logging_config.listen(0)
    listener.start()
    try:
        assert listener.ready.wait(IO_TIMEOUT)
        config = json.dumps({"version": 1, "incremental": True,
                             "loggers": {name: {"level": "ERROR"}}}).encode()
        with socket.create_connection((HOST, listener.port), timeout=IO_TIMEOUT) as c:
            c.sendall(struct.pack(">L", len(config)) + config)
        wait_for(lambda: target.level == logging.ERROR, what="the configuration applied")
    finally:
        m.logging_config.stopListening()
        listener.join(IO_TIMEOUT)
    assert not listener.is_alive()


# -- handle_request and the listening socket's timeout ------------------------------------


def _echo_handler(base: Any) -> Any:
    """A handler the same for both flavours: echo one chunk."""

    class EchoOnce(base):  # type: ignore[misc, valid-type]
        def handle(self) -> None:
            self.request.sendall(self.request.recv(100))

    return EchoOnce


def _server_class(m: Any, overridden: bool) -> Any:
    base = m.socketserver.TCPServer
    if not overridden:
        class Plain(base):  # type: ignore[misc, valid-type]
            timeouts = 0

            def handle_timeout(self) -> None:
                self.timeouts += 1

        return Plain

    class Accepting(base):  # type: ignore[misc, valid-type]
        timeouts = 0

        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            sock.setblocking(True)
            return sock, addr

        def handle_timeout(self) -> None:
            self.timeouts += 1

    return Accepting


def echo_once(address: Any, data: bytes = b"ping") -> bytes:
    with socket.create_connection(address, timeout=IO_TIMEOUT) as c:
        c.sendall(data)
        return c.recv(100)


@pytest.mark.parametrize(("socket_timeout", "server_timeout", "expected"),
                         [(0.3, None, 0.3), (5.0, 0.3, 0.3), (0.3, 5.0, 0.3)])
@pytest.mark.parametrize("overridden", [True, False], ids=["override", "plain"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_handle_request_honours_the_listening_socket_timeout(
    flavour: str, overridden: bool, socket_timeout: float, server_timeout: float | None,
    expected: float,
) -> None:
    m = modules(flavour)
    server = _server_class(m, overridden)((HOST, 0), _echo_handler(m.socketserver
                                                                    .BaseRequestHandler))
    try:
        server.socket.settimeout(socket_timeout)
        server.timeout = server_timeout
        took = []
        for _ in range(2):  # the second call: the timeout still holds once served
            start = time.monotonic()
            server.handle_request()
            took.append(time.monotonic() - start)
        assert server.timeouts == 2
        assert all(expected * 0.9 <= t < expected + 2.0 for t in took), took
        # a request is still served after the timeouts, by the same loop
        thread, errors = in_thread(server.handle_request)
        assert echo_once(server.server_address) == b"ping"
        joined(thread, errors)
        assert server.timeouts == 2
        if overridden:  # the override accepts on the socket as the program set it
            assert server.socket.gettimeout() == socket_timeout
    finally:
        server.server_close()


# -- a failed get_request -----------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_oserror_from_get_request_is_silent(
    flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    m = modules(flavour)
    calls: list[str] = []

    class Server(m.socketserver.TCPServer):  # type: ignore[misc]
        failures = 1

        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            if self.failures:
                self.failures -= 1
                sock.close()
                calls.append("failed")
                raise ConnectionAbortedError("the handshake failed")
            calls.append("accepted")
            return sock, addr

        def handle_error(self, request: Any, client_address: Any) -> None:
            calls.append("handle_error")

        def handle_timeout(self) -> None:
            calls.append("handle_timeout")

    server = Server((HOST, 0), _echo_handler(m.socketserver.BaseRequestHandler))
    server.timeout = 10
    try:
        with caplog.at_level(logging.INFO), socket.create_connection(
                server.server_address, timeout=IO_TIMEOUT) as first:
            server.handle_request()  # returns: the failure is not raised
            assert first.recv(10) == b""  # the override closed it
        thread, errors = in_thread(server.handle_request)
        assert echo_once(server.server_address) == b"ping"
        joined(thread, errors)
        assert calls == ["failed", "accepted"]
        assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    finally:
        server.server_close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_exception_from_get_request_propagates_and_the_connection_waits(
    flavour: str,
) -> None:
    """Not an OSError: raised from handle_request, as in the standard library; the
    connection it did not accept is still there for the next call."""
    m = modules(flavour)

    class Server(m.socketserver.TCPServer):  # type: ignore[misc]
        raised = False

        def get_request(self) -> Any:
            if not self.raised:
                self.raised = True
                raise ValueError("a bug in get_request")
            sock, addr = self.socket.accept()
            sock.setblocking(True)
            return sock, addr

    server = Server((HOST, 0), _echo_handler(m.socketserver.BaseRequestHandler))
    server.timeout = 10
    try:
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as client:
            with pytest.raises(ValueError, match="a bug in get_request"):
                server.handle_request()
            client.sendall(b"still here")
            server.handle_request()
            assert client.recv(100) == b"still here"
    finally:
        server.server_close()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failed_get_request_cannot_deadlock_an_http_log_handler_served_by_itself(
    flavour: str,
) -> None:
    """The process logs through an HTTPHandler to an HTTP server it serves itself, in a
    handle_request loop. A get_request that fails must not log on the serving thread:
    the record's POST would wait for the thread that is sending it."""
    m = modules(flavour)
    posted: list[bytes] = []

    class Collector(m.http_server.BaseHTTPRequestHandler):  # type: ignore[misc]
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def do_POST(self) -> None:
            posted.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(m.http_server.HTTPServer):  # type: ignore[misc]
        failures = 1

        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            if self.failures:
                self.failures -= 1
                sock.close()
                raise ConnectionResetError("reset before the request")
            sock.settimeout(IO_TIMEOUT)
            return sock, addr

    server = Server((HOST, 0), Collector)
    server.timeout = 5
    watched = logging.getLogger("reactor")
    old_level = watched.level
    handler = logging.handlers.HTTPHandler(f"{HOST}:{server.server_address[1]}", "/log",
                                           method="POST")
    watched.addHandler(handler)
    watched.setLevel(logging.DEBUG)
    try:
        thread, errors = in_thread(lambda: [server.handle_request() for _ in range(2)] and None)
        with socket.create_connection(server.server_address, timeout=IO_TIMEOUT) as doomed:
            assert doomed.recv(10) == b""
        conn = http.client.HTTPConnection(HOST, server.server_address[1], timeout=IO_TIMEOUT)
        conn.request("GET", "/")
        assert conn.getresponse().status == 204
        conn.close()
        thread.join(10)
        deadlocked = thread.is_alive()
    finally:
        watched.removeHandler(handler)
        watched.setLevel(old_level)
        server.server_close()  # also frees a serving thread stuck in the handler's POST
        handler.close()
    assert not deadlocked, "the serving thread is stuck logging to itself"
    joined(thread, errors)


def test_a_failed_get_request_is_logged_at_debug_where_that_is_safe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With no network log handler in the way: one debug record, and a count."""

    class Server(ours.TCPServer):
        def get_request(self) -> Any:
            sock, _addr = self.socket.accept()
            sock.close()
            raise ConnectionAbortedError("refused by the override")

    with Server((HOST, 0), _echo_handler(ours.BaseRequestHandler)) as server:
        server.timeout = 10
        with caplog.at_level(logging.DEBUG, logger="reactor"), socket.create_connection(
                server.server_address, timeout=IO_TIMEOUT):
            server.handle_request()
        failed = [r for r in caplog.records if "get_request" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.DEBUG
        assert "refused by the override" in failed[0].getMessage()
        assert server.statistics().get_request_errors == 1


# -- mix-ins and serve_forever with an override -------------------------------------------


@pytest.mark.parametrize("mixin", ["Threading", "Forking"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_serve_forever_with_a_get_request_override_in_the_mixins(
    flavour: str, mixin: str
) -> None:
    m = modules(flavour)
    base = getattr(m.socketserver, f"{mixin}TCPServer")

    class Server(base):  # type: ignore[misc, valid-type]
        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            sock.setblocking(True)
            return sock, addr

    server = Server((HOST, 0), _echo_handler(m.socketserver.BaseRequestHandler))
    thread, errors = in_thread(lambda: server.serve_forever(0.05))
    try:
        clients = [socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
                   for _ in range(4)]
        for i, c in enumerate(clients):
            c.sendall(b"c%d" % i)
        assert [c.recv(100) for c in clients] == [b"c0", b"c1", b"c2", b"c3"]
        for c in clients:
            c.close()
    finally:
        server.shutdown()
        joined(thread, errors)
        server.server_close()
    if flavour == "reactor":
        stats = server.statistics()
        assert stats.accepted == 4 and stats.in_flight == 0


def test_multiplexing_server_with_a_get_request_override() -> None:
    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    accepted: list[Any] = []

    class Server(ours.MultiplexingTCPServer):
        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            accepted.append(addr)
            return sock, addr

    server = Server((HOST, 0), EchoProtocol)
    thread, errors = in_thread(server.serve_forever)
    try:
        clients = [socket.create_connection(server.server_address, timeout=IO_TIMEOUT)
                   for _ in range(3)]
        for i, c in enumerate(clients):
            c.sendall(b"m%d" % i)
        assert [c.recv(100) for c in clients] == [b"m0", b"m1", b"m2"]
        assert len(accepted) == 3
        assert server.statistics().by_state.get("OPEN") == 3
        for c in clients:
            c.close()
        wait_for(lambda: server.statistics().in_flight == 0, what="connections closed")
    finally:
        server.shutdown()
        joined(thread, errors)
        server.server_close()


def test_max_connections_holds_with_a_get_request_override() -> None:
    release = threading.Event()

    class Held(ours.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"in")
            release.wait(IO_TIMEOUT)

    class Server(ours.ThreadingTCPServer):
        max_connections = 2

        def get_request(self) -> Any:
            sock, addr = self.socket.accept()
            sock.setblocking(True)
            return sock, addr

    server = Server((HOST, 0), Held)
    thread, errors = in_thread(server.serve_forever)
    clients: list[socket.socket] = []
    try:
        for _ in range(3):
            clients.append(socket.create_connection(server.server_address,
                                                    timeout=IO_TIMEOUT))
        assert clients[0].recv(10) == b"in" and clients[1].recv(10) == b"in"
        clients[2].settimeout(0.3)
        with pytest.raises(TimeoutError):
            clients[2].recv(10)  # the third waits in the backlog
        assert server.statistics().accepted == 2
        release.set()
        clients[2].settimeout(IO_TIMEOUT)
        assert clients[2].recv(10) == b"in"
    finally:
        release.set()
        for c in clients:
            c.close()
        server.shutdown()
        joined(thread, errors)
        server.server_close()
