"""TLS on the socketserver facades (``TLSMixIn``, ``ssl_context``): the handshake runs
in the reactor, without blocking, under a deadline; only a connection whose handshake
completed reaches ``verify_request`` and the handler, as a blocking ``SSLSocket``.

Real sockets, throwaway certificates (trustme, tests/tlskit.py), real clients: Python's
``ssl``, ``urllib.request`` and ``openssl s_client``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proxykit import v1, v2_inet
from sskit import serving, wait_for
from stdlib_twins import modules
from tlskit import Certs, run_s_client, tls_messages

import reactor.socketserver as ours
from reactor.io.tlsaccept import proxy_header_bytes
from reactor.sansio.tls import TLSState

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
WAIT = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls-facade"))


def tls_connect(address: Any, certs: Certs, family: int = socket.AF_INET) -> ssl.SSLSocket:
    """A client connection with its handshake done."""
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(WAIT)
    raw.connect(address)
    return certs.client_context().wrap_socket(raw, server_hostname="localhost")


def ask(address: Any, certs: Certs, line: bytes = b"hello",
        family: int = socket.AF_INET) -> bytes:
    """Send one line over TLS; the reply line."""
    with tls_connect(address, certs, family) as sock:
        sock.sendall(line + b"\n")
        return sock.makefile("rb").readline()


class Who(ours.StreamRequestHandler):
    """Answers a line with what the handler saw: the line, the client's address, the
    socket's class and timeout, the process and the row's TLS session."""

    def handle(self) -> None:
        line = self.rfile.readline().strip()
        request = self.request
        sessions = [row.meta["tls"] for row in self.server.connections
                    if row.meta and "tls" in row.meta
                    and row.get_extra_info("socket") is request]  # type: ignore[attr-defined]
        state = sessions[0].state.value if sessions else "-"
        host = self.client_address[0] if isinstance(self.client_address, tuple) else "unix"
        reply = (f"{line.decode()} {host} {type(request).__name__} "
                 f"{isinstance(request, ssl.SSLSocket)} {request.gettimeout()} "
                 f"{os.getpid()} {state} {request.version()}\n")
        self.wfile.write(reply.encode())


class Counting:
    """verify_request calls and handler runs, kept by the server."""

    verified: list[Any]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.verified.append(client_address)
        return True


class ThreadingTLS(Counting, ours.TLSMixIn, ours.ThreadingTCPServer):
    daemon_threads = True


class InlineTLS(Counting, ours.TLSMixIn, ours.TCPServer):
    pass


def make(cls: type, certs: Certs, handler: type = Who, **kwargs: Any) -> Any:
    server = cls((HOST, 0), handler, ssl_context=certs.server_context(), **kwargs)
    server.verified = []
    return server


# -- the handshake never blocks -------------------------------------------------------------


@pytest.mark.parametrize("cls", [InlineTLS, ThreadingTLS])
def test_a_silent_client_blocks_neither_accepting_nor_others_nor_shutdown(
        cls: type, certs: Certs) -> None:
    server = make(cls, certs)
    with serving(server):
        silent = socket.create_connection(server.server_address, timeout=WAIT)
        half = socket.create_connection(server.server_address, timeout=WAIT)
        half.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a record, no more
        try:
            wait_for(lambda: server.statistics().accepted == 0 and len(
                [r for r in server.connections if r.meta and "tls" in r.meta]) == 2,
                what="two handshakes under way")
            rows = [r for r in server.connections if r.meta and "tls" in r.meta]
            assert {r.meta["tls"].state for r in rows} == {TLSState.HANDSHAKING}
            assert {r.state.name for r in rows} == {"ACCEPTED"}
            for n in range(3):
                reply = ask(server.server_address, certs, f"client{n}".encode()).split()
                assert reply[0] == f"client{n}".encode()
                assert reply[2:5] == [b"TLSRequestSocket", b"True", b"None"]
                assert reply[6] == b"established"
            assert [addr[0] for addr in server.verified] == [HOST] * 3  # clients only
            started = time.monotonic()
            server.shutdown()
            assert time.monotonic() - started < 2.0
        finally:
            silent.close()
            half.close()
    assert server.statistics().tls_failed == 0


def test_the_old_way_blocks_the_loop_on_a_silent_client(certs: Certs) -> None:
    """Why the mix-in exists: a listening socket wrapped by the program makes each
    accepted connection's handshake a blocking call on the serving thread."""

    class Wrapped(ours.TCPServer):
        pass

    server = Wrapped((HOST, 0), Who)
    server.socket = certs.server_context().wrap_socket(server.socket, server_side=True)
    with serving(server):
        silent = socket.create_connection(server.server_address, timeout=WAIT)
        gone = threading.Timer(1.0, silent.close)  # ends the blocked handshake
        started = time.monotonic()
        gone.start()
        try:
            assert ask(server.server_address, certs).startswith(b"hello")
        finally:
            gone.join()
        assert time.monotonic() - started >= 0.9  # waited for the silent one


# -- failed handshakes ------------------------------------------------------------------------


def read_to_end(sock: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.parametrize("sent", [b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x02\x00\x01"],
                         ids=["garbage", "vanishes-mid-hello"])
def test_garbage_or_a_vanishing_client_instead_of_a_client_hello(
        certs: Certs, caplog: pytest.LogCaptureFixture, sent: bytes) -> None:
    server = make(ThreadingTLS, certs)
    caplog.set_level(logging.INFO, logger="reactor.tls")
    with serving(server):
        with socket.create_connection(server.server_address, timeout=WAIT) as sock:
            port = sock.getsockname()[1]
            sock.sendall(sent)
            if sent.startswith(b"\x16"):
                sock.shutdown(socket.SHUT_WR)  # half a ClientHello, then gone
            answer = read_to_end(sock)  # closed (an alert at most), not served
        assert b"HTTP" not in answer
        wait_for(lambda: server.statistics().tls_failed == 1, what="the failure counted")
        wait_for(lambda: server.statistics().in_flight == 0, what="the row released")
        stats = server.statistics()
        assert server.verified == []
        assert stats.dispatched_thread == 0 and stats.threads == 0
    lines = tls_messages(caplog)
    assert len(lines) == 1, lines
    assert str(port) in lines[0] and "handshake failed" in lines[0], lines


def test_a_stalled_handshake_is_closed_at_its_deadline(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    server = make(ThreadingTLS, certs, ssl_handshake_timeout=0.5)
    caplog.set_level(logging.INFO, logger="reactor.tls")
    with serving(server):
        with socket.create_connection(server.server_address, timeout=WAIT) as sock:
            port = sock.getsockname()[1]
            started = time.monotonic()
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # half a ClientHello's header
            assert read_to_end(sock) == b""
            took = time.monotonic() - started
        assert 0.4 <= took < 5.0
        wait_for(lambda: server.statistics().tls_failed == 1, what="the stall counted")
        wait_for(lambda: server.statistics().in_flight == 0, what="the row released")
        assert server.verified == []
        assert server.statistics().threads == 0
    lines = tls_messages(caplog)
    assert len(lines) == 1 and str(port) in lines[0], lines
    assert "handshake timed out after 0.5 s" in lines[0]


def test_a_refused_client_certificate_never_reaches_a_worker(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingTLS((HOST, 0), Who, ssl_context=certs.server_context(
        require_client=True))
    server.verified = []
    caplog.set_level(logging.INFO, logger="reactor.tls")
    with serving(server):
        with pytest.raises((ssl.SSLError, ConnectionError)), tls_connect(
                server.server_address, certs) as sock:  # no certificate
            sock.sendall(b"hello\n")
            if not sock.recv(100):  # TLS 1.3: the refusal comes after the hello
                raise ConnectionResetError("closed")
        wait_for(lambda: server.statistics().tls_failed == 1, what="the refusal counted")
        raw = socket.create_connection(server.server_address, timeout=WAIT)
        context = certs.client_context(with_cert=True)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"mutual\n")
            assert sock.makefile("rb").readline().startswith(b"mutual")
    assert len(server.verified) == 1
    assert any("certificate" in line for line in tls_messages(caplog))


def test_server_close_closes_a_handshake_under_way(certs: Certs) -> None:
    server = make(ThreadingTLS, certs)
    with serving(server, close=False):
        silent = socket.create_connection(server.server_address, timeout=WAIT)
        wait_for(lambda: any(r.meta and "tls" in r.meta for r in server.connections),
                 what="the handshake under way")
    server.server_close()
    try:
        assert read_to_end(silent) == b""
    finally:
        silent.close()


# -- where handlers run ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_forking_server_over_tls(certs: Certs) -> None:
    class ForkingTLS(Counting, ours.TLSMixIn, ours.ForkingTCPServer):
        pass

    server = make(ForkingTLS, certs)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=WAIT) as bad:
            bad.sendall(b"not a hello\r\n")
            read_to_end(bad)
        wait_for(lambda: server.statistics().tls_failed == 1, what="the failure counted")
        replies = [ask(server.server_address, certs, f"c{n}".encode()).split()
                   for n in range(3)]
        wait_for(lambda: server.statistics().children == 0, what="children reaped")
    for n, reply in enumerate(replies):
        assert reply[0] == f"c{n}".encode()
        assert reply[3:5] == [b"True", b"None"]
        assert int(reply[5]) != os.getpid()
    assert server.statistics().dispatched_child == 3  # none for the failed handshake


def test_threading_server_with_a_pool_over_tls(certs: Certs) -> None:
    server = make(ThreadingTLS, certs)
    server.max_threads = 2
    with serving(server):
        results: list[bytes] = []

        def client(n: int) -> None:
            results.append(ask(server.server_address, certs, f"p{n}".encode()))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert sorted(r.split()[0] for r in results) == [f"p{n}".encode() for n in range(6)]


def test_handle_request_serves_one_tls_request(certs: Certs) -> None:
    server = make(InlineTLS, certs)
    server.timeout = WAIT
    try:
        reply: list[bytes] = []
        client = threading.Thread(target=lambda: reply.append(
            ask(server.server_address, certs)))
        client.start()
        server.handle_request()
        client.join(WAIT)
        assert reply and reply[0].startswith(b"hello 127.0.0.1 TLSRequestSocket")
    finally:
        server.server_close()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_stream_server_over_tls(certs: Certs, tmp_path: Path) -> None:
    class UnixTLS(ours.TLSMixIn, ours.ThreadingUnixStreamServer):
        daemon_threads = True

    path = str(tmp_path / "tls.sock")
    server = UnixTLS(path, Who, ssl_context=certs.server_context())
    with serving(server):
        reply = ask(path, certs, b"unix", socket.AF_UNIX).split()
    assert reply[:5] == [b"unix", b"unix", b"TLSRequestSocket", b"True", b"None"]


def test_the_default_timeout_is_the_handlers_as_without_tls(certs: Certs) -> None:
    server = make(ThreadingTLS, certs)
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(7.0)
    try:
        with serving(server):
            reply = ask(server.server_address, certs).split()
    finally:
        socket.setdefaulttimeout(before)
    assert reply[4] == b"7.0"


def test_a_contexts_own_socket_class_is_kept(certs: Certs) -> None:
    class Mine(ssl.SSLSocket):
        pass

    context = certs.server_context()
    context.sslsocket_class = Mine
    server = ThreadingTLS((HOST, 0), Who, ssl_context=context)
    server.verified = []
    with serving(server):
        reply = ask(server.server_address, certs).split()
    assert reply[2] == b"Mine[replay]"


# -- with the PROXY protocol and request buffering -------------------------------------------


class ProxiedTLS(ours.ProxyProtocolMixIn, ThreadingTLS):
    proxy_allow_from = [HOST]


def proxied_exchange(address: Any, certs: Certs, header: bytes, line: bytes) -> bytes:
    """The PROXY header and the ClientHello in one send (one segment), then the rest of
    the handshake and one line over a memory-BIO client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    engine = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(address, timeout=WAIT) as sock:
        try:
            engine.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(header + outgoing.read())
        while True:
            try:
                engine.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        engine.write(line + b"\n")
        sock.sendall(outgoing.read())
        reply = b""
        while not reply.endswith(b"\n"):
            try:
                reply += engine.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                assert data, "closed before the reply"
                incoming.write(data)
        return reply


@pytest.mark.parametrize("header", [v1(src="192.0.2.7", sport=40001),
                                    v2_inet(src="192.0.2.7", sport=40001)],
                         ids=["v1", "v2"])
def test_proxy_header_first_then_the_handshake(certs: Certs, header: bytes) -> None:
    server = make(ProxiedTLS, certs)
    with serving(server):
        reply = proxied_exchange(server.server_address, certs, header, b"behind").split()
    assert reply[:2] == [b"behind", b"192.0.2.7"]
    assert server.verified == [("192.0.2.7", 40001)]


def test_a_bad_proxy_header_closes_before_any_handshake(certs: Certs) -> None:
    server = make(ProxiedTLS, certs)
    with serving(server):
        with socket.create_connection(server.server_address, timeout=WAIT) as sock:
            sock.sendall(b"PROXY TCP4 nonsense\r\n\x16\x03\x01")
            assert read_to_end(sock) == b""
        wait_for(lambda: server.statistics().in_flight == 0, what="closed")
        assert server.statistics().tls_failed == 0 and server.verified == []


def test_proxy_header_bytes_never_reads_past_the_header() -> None:
    after = b"\x16\x03\x01\x02\x00"  # a ClientHello's record header
    for header in (v1(), v1("UNKNOWN"), v2_inet(), v2_inet() + b""):
        stream = header + after
        head, taken = b"", 0
        while taken < len(header):  # one byte arrives at a time, then all the rest
            for peeked in (stream[taken:taken + 1], stream[taken:]):
                size = proxy_header_bytes(head, taken, peeked)
                assert 1 <= size <= len(peeked)
                assert taken + size <= len(header), (header, taken, size)
            size = proxy_header_bytes(head, taken, stream[taken:])
            head = (head + stream[taken:taken + size])[:16]
            taken += size
        assert taken == len(header)


class Slow(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"got " + self.rfile.readline())


def test_request_buffering_reads_decrypted_bytes_without_a_thread(certs: Certs) -> None:
    class Buffered(ThreadingTLS):
        request_buffer = ours.LineRequestBuffer(timeout=WAIT)

    server = make(Buffered, certs, handler=Slow)
    with serving(server), tls_connect(server.server_address, certs) as sock:
        sock.sendall(b"slow ")
        wait_for(lambda: server.statistics().buffered == 1, what="buffering")
        for part in (b"and ", b"steady"):
            sock.sendall(part)
        wait_for(lambda: sum(r.bytes_in for r in server.connections) >= 15,
                 what="the reactor read it")
        stats = server.statistics()
        assert stats.dispatched_thread == 0 and stats.threads == 0
        sock.sendall(b"\n")
        assert sock.makefile("rb").readline() == b"got slow and steady\n"
    assert server.statistics().dispatched_thread == 1


# -- http.server over HTTPS -----------------------------------------------------------------


@pytest.fixture
def https_server(certs: Certs, tmp_path: Path) -> Iterator[Any]:
    http_server = modules("reactor").http_server
    (tmp_path / "hello.txt").write_text("hello over https\n")

    class HTTPSServer(ours.TLSMixIn, http_server.ThreadingHTTPServer):  # type: ignore[misc]
        request_buffer = ours.HTTPRequestBuffer(timeout=WAIT)

    class Quiet(http_server.SimpleHTTPRequestHandler):  # type: ignore[misc]
        def log_message(self, *args: Any) -> None:
            pass

    handler: Callable[..., Any] = functools.partial(Quiet, directory=str(tmp_path))
    server = HTTPSServer((HOST, 0), handler, ssl_context=certs.server_context())
    with serving(server):
        yield server


def test_http_server_over_https_with_urllib(https_server: Any, certs: Certs) -> None:
    port = https_server.server_address[1]
    with urllib.request.urlopen(f"https://localhost:{port}/hello.txt", timeout=WAIT,
                                context=certs.client_context()) as response:
        assert response.status == 200
        assert response.read() == b"hello over https\n"
    assert https_server.statistics().buffered == 1


def test_http_server_over_https_with_openssl_s_client(https_server: Any,
                                                      certs: Certs) -> None:
    address = (HOST, https_server.server_address[1])
    status, output = run_s_client(address, certs,
                                  b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n",
                                  b"hello over https")
    assert b"HTTP/1.0 200" in output and b"hello over https" in output, output
    assert status == 0


# -- what is refused, what keeps working -------------------------------------------------------


def test_what_cannot_be_combined(certs: Certs) -> None:
    class NoContext(ours.TLSMixIn, ours.TCPServer):
        pass

    class Multiplexed(ours.TLSMixIn, ours.MultiplexingTCPServer):
        pass

    class OwnAccept(ours.TLSMixIn, ours.TCPServer):
        def get_request(self) -> tuple[Any, Any]:
            return self.socket.accept()

    cases: list[tuple[Any, str]] = [
        (NoContext((HOST, 0), Who), "needs an ssl_context"),
        (Multiplexed((HOST, 0), Who, ssl_context=certs.server_context()), "multiplexing"),
        (OwnAccept((HOST, 0), Who, ssl_context=certs.server_context()), "get_request"),
    ]
    wrapped = ours.TCPServer((HOST, 0), Who)
    wrapped.ssl_context = certs.server_context()  # type: ignore[attr-defined]
    wrapped.socket = certs.server_context().wrap_socket(wrapped.socket, server_side=True)
    cases.append((wrapped, "wrapped already"))
    for server, words in cases:
        try:
            with pytest.raises(TypeError, match=words):
                server.handle_request()
        finally:
            server.server_close()
    server = make(InlineTLS, certs, ssl_handshake_timeout=0)
    try:
        with pytest.raises(ValueError, match="positive"):
            server.handle_request()
    finally:
        server.server_close()


def test_an_override_that_wraps_for_itself_still_works(certs: Certs) -> None:
    """A standard-library program's own TLS: get_request wraps (a blocking handshake,
    the program's choice), unchanged."""
    context = certs.server_context()

    class OwnTLS(ours.ThreadingTCPServer):
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            sock, addr = self.socket.accept()
            return context.wrap_socket(sock, server_side=True), addr

    server = OwnTLS((HOST, 0), Who)
    with serving(server):
        reply = ask(server.server_address, certs, b"own").split()
    assert reply[:5] == [b"own", b"127.0.0.1", b"SSLSocket", b"True", b"None"]
