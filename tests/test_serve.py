"""reactor.cli.graceful in-process: bind addresses, the graceful stop, signals and statistics.

The server runs on the test's main thread (signals need it); clients run in threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servekit import WAIT, read_lines, read_until_closed

from reactor import StreamTransport
from reactor.cli.graceful import (
    EXIT_FORCED,
    EXIT_OK,
    BindAddress,
    Server,
    format_listener,
    parse_bind,
)
from reactor.io.transports import TransportOptions

# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8888", BindAddress("tcp", host="127.0.0.1", port=8888)),
        ("localhost:0", BindAddress("tcp", host="localhost", port=0)),
        (":80", BindAddress("tcp", host=None, port=80)),
        ("*:65535", BindAddress("tcp", host=None, port=65535)),
        ("[::1]:9000", BindAddress("tcp", host="::1", port=9000)),
        ("[::]:0", BindAddress("tcp", host="::", port=0)),
        ("[fe80::1%lo]:7", BindAddress("tcp", host="fe80::1%lo", port=7)),
        ("unix:/run/app.sock", BindAddress("unix", path="/run/app.sock")),
        ("unix:relative.sock", BindAddress("unix", path="relative.sock")),
        ("unix:@hidden", BindAddress("unix", path="\0hidden")),
        ("fd://3", BindAddress("fd", fd=3)),
    ],
)
def test_parse_bind(text: str, expected: BindAddress) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    "text", ["127.0.0.1:8888", "[::1]:9000", "unix:/run/app.sock", "unix:@hidden", "fd://3"]
)
def test_bind_addresses_print_as_they_parse(text: str) -> None:
    assert str(parse_bind(text)) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected HOST:PORT"),
        ("8888", "expected HOST:PORT"),
        ("localhost", "expected HOST:PORT"),
        ("host:", "port must be a number"),
        ("host:http", "port must be a number"),
        ("host:-1", "port must be a number"),
        ("host:65536", "0 to 65535"),
        ("::1:80", "brackets"),
        ("[::1]", "expected [IPV6]:PORT"),
        ("[::1:80", "expected [IPV6]:PORT"),
        ("[nothex]:80", "not an IPv6 address"),
        ("unix:", "needs a path"),
        ("fd://", "descriptor number"),
        ("fd://-1", "descriptor number"),
    ],
)
def test_parse_bind_rejects_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_bind(text)
    assert reason in str(info.value)


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Server(Line, [])
    with pytest.raises(ValueError, match="graceful_timeout"):
        Server(Line, graceful_timeout=-1)
    with pytest.raises(ValueError, match="stats_interval"):
        Server(Line, stats_interval=0)
    with pytest.raises(ValueError, match="max_connections"):
        Server(Line, max_connections=0)
    with pytest.raises(ValueError, match="expected"):
        Server(Line, ["nonsense"])


# -- protocols -----------------------------------------------------------------------------


class Line(asyncio.Protocol):
    """Answers each line ``L`` with ``L ok``; ``big N`` with N bytes; records callbacks."""

    instances: list[Line] = []

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.lost: list[BaseException | None] = []
        self.eof = False
        Line.instances.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if line.startswith(b"big "):
                self.transport.write(b"z" * int(line[4:]))
            else:
                self.transport.write(line + b" ok\n")

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.buffer:  # an unterminated last request, answered at EOF
            self.transport.write(bytes(self.buffer) + b" ok-at-eof\n")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Finisher(Line):
    """Takes charge of its own close at shutdown (``begin_shutdown`` returns True)."""

    delay: float | None = 0.2  # None: never closes

    def __init__(self) -> None:
        super().__init__()
        self.shutdown_calls = 0

    def begin_shutdown(self) -> bool:
        self.shutdown_calls += 1
        if self.delay is not None:
            reactor = self.transport.get_extra_info("connection").reactor
            reactor.call_later(self.delay, self._finish)
        return True

    def _finish(self) -> None:
        self.transport.write(b"finished\n")
        self.transport.close()


class Never(Finisher):
    delay = None


class Advisory(Line):
    """Has the hook but leaves the closing to the server (returns None)."""

    def __init__(self) -> None:
        super().__init__()
        self.shutdown_calls = 0

    def begin_shutdown(self) -> None:
        self.shutdown_calls += 1


@pytest.fixture(autouse=True)
def _forget_instances() -> None:
    Line.instances = []


def make_server(factory: Callable[[], Any] = Line, **kwargs: Any) -> Server:
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("graceful_timeout", 20.0)
    return Server(factory, kwargs.pop("binds", ["127.0.0.1:0"]), **kwargs)


def tcp_port(server: Server) -> int:
    return server.listeners[0].port


class Client(threading.Thread):
    """Runs ``script(sock)`` in a thread on a connection made beforehand."""

    def __init__(self, sock: socket.socket, script: Callable[[socket.socket], Any]) -> None:
        super().__init__(daemon=True)
        self.sock, self.script = sock, script
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.script(self.sock)
        except BaseException as exc:
            self.error = exc
        finally:
            self.sock.close()

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the client thread hung"
        if self.error is not None:
            raise self.error
        return self.result


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", tcp_port(server)), timeout=WAIT)


# -- binding -------------------------------------------------------------------------------


def test_start_binds_every_kind_and_reports_real_addresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inherited = socket.create_server(("127.0.0.1", 0))
    inherited_port = inherited.getsockname()[1]
    fd = os.dup(inherited.fileno())
    inherited.close()
    path = tmp_path / "a.sock"
    binds = ["127.0.0.1:0", f"unix:{path}", f"fd://{fd}"]
    if socket.has_ipv6 and socket.has_dualstack_ipv6():
        binds.append("[::1]:0")
    server = make_server(binds=binds)
    caplog.set_level(logging.INFO, logger="reactor.serve")
    try:
        addresses = server.start()
        assert addresses[0].startswith("127.0.0.1:") and not addresses[0].endswith(":0")
        assert addresses[1] == f"unix:{path}"
        assert addresses[2] == f"127.0.0.1:{inherited_port}"
        if len(binds) == 4:
            assert addresses[3].startswith("[::1]:")
        for address in addresses:
            assert f"listening on {address}" in caplog.text
        assert [format_listener(listener) for listener in server.listeners] == addresses
    finally:
        server.stop(force=True)
        server.reactor.close()
    assert not path.exists()


def test_a_failed_bind_leaves_nothing_bound(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = tmp_path / "first.sock"
        server = make_server(binds=[f"unix:{path}", f"127.0.0.1:{port}"])
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: address "
                                          "already in use"):
            server.serve()
    assert server.listeners == []
    assert not path.exists()
    assert server.reactor.is_closed()


def test_an_inherited_descriptor_must_be_a_listening_stream_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as idle:
        for sock, reason in ((udp, "not a stream socket"), (idle, "not listening")):
            server = make_server(binds=[f"fd://{sock.fileno()}"])
            with pytest.raises(ValueError, match=reason):
                server.start()
            assert sock.fileno() != -1  # not closed: it was not ours
            server.reactor.close()


# -- the graceful stop -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_requests_in_the_backlog_and_the_kernel_buffer_are_answered() -> None:
    """The stop request comes before the reactor has seen the connection at all: the
    client is still in the listen backlog and its requests in the kernel's buffer."""
    server = make_server()
    server.start()
    sock = connect(server)
    sock.sendall(b"first\nsecond\nthird-without-newline")
    sock.shutdown(socket.SHUT_WR)  # even the EOF waits in the kernel
    server.stop()
    assert len(server.reactor.connections) == 1  # the final accept pass took it
    client = Client(sock, read_until_closed)
    client.start()
    assert server.serve() == EXIT_OK
    assert client.outcome() == b"first ok\nsecond ok\nthird-without-newline ok-at-eof\n"
    (protocol,) = Line.instances
    assert protocol.eof and protocol.lost == [None]


@pytest.mark.timeout(60)
def test_queued_output_is_flushed_before_the_close() -> None:
    size = 8_000_000
    server = make_server()
    server.start()
    sock = connect(server)
    sock.sendall(b"big %d\n" % size)
    server.reactor.run_until(
        lambda: any(row.write_buffer_size for row in server.reactor.connections), timeout=WAIT)
    server.stop()
    client = Client(sock, read_until_closed)
    client.start()
    assert server.serve() == EXIT_OK
    assert client.outcome() == b"z" * size


@pytest.mark.timeout(60)
def test_input_after_the_drain_point_cannot_reset_the_response_away() -> None:
    """The close is a half-close that waits for the peer's EOF: bytes the client sends
    after its connection was drained are read and dropped, so the kernel never answers
    them with RST while response bytes are still queued in it for the client."""
    size = 32_000_000
    server = make_server()
    server.start()
    sock = socket.socket()
    # a small receive window keeps most of what is in flight queued in the server's kernel
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", tcp_port(server)))
    sock.sendall(b"big %d\n" % size)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    row = Line.instances[0].transport
    flushed, drained = threading.Event(), threading.Event()

    def watch() -> None:
        if row.bytes_out == size and not row.write_buffer_size:
            flushed.set()  # the rest of the response is in the kernel's queues
        if row.state.name != "OPEN":
            drained.set()
        if not drained.is_set():
            server.reactor.call_later(0.002, watch)

    def script(s: socket.socket) -> int:
        received = 0
        s.settimeout(0.05)
        while not flushed.is_set():
            try:
                received += len(s.recv(1 << 20))
            except TimeoutError:
                pass
        assert drained.wait(WAIT)
        s.sendall(b"sent after the drain\n")
        return received + len(read_until_closed(s))

    watch()
    client = Client(sock, script)
    client.start()
    server.stop()
    assert server.serve() == EXIT_OK
    assert client.outcome() == size


@pytest.mark.timeout(60)
def test_idle_connections_close_promptly_and_the_protocol_sees_one_connection_lost() -> None:
    server = make_server(graceful_timeout=30)
    server.start()
    socks = [connect(server) for _ in range(5)]
    server.reactor.run_until(lambda: len(Line.instances) == 5, timeout=WAIT)
    clients = [Client(sock, read_until_closed) for sock in socks]
    for client in clients:
        client.start()
    server.stop()
    started = server.reactor.time()
    assert server.serve() == EXIT_OK
    assert server.reactor.is_closed()
    assert all(client.outcome() == b"" for client in clients)
    assert [p.lost for p in Line.instances] == [[None]] * 5
    assert server.reactor.time() - started < 10  # far from the 30 s grace period


@pytest.mark.timeout(60)
def test_a_protocol_that_takes_charge_closes_itself() -> None:
    server = make_server(Finisher)
    server.start()
    sock = connect(server)
    sock.sendall(b"hello\n")
    server.reactor.run_until(lambda: bool(Line.instances) and Line.instances[0].transport
                             .get_extra_info("connection").bytes_out > 0, timeout=WAIT)
    client = Client(sock, read_until_closed)
    client.start()
    server.stop()
    server.stop()  # a second request changes nothing
    assert server.serve() == EXIT_OK
    assert client.outcome() == b"hello ok\nfinished\n"
    (protocol,) = Line.instances
    assert isinstance(protocol, Finisher)
    assert protocol.shutdown_calls == 1 and protocol.lost == [None]


@pytest.mark.timeout(60)
def test_a_hook_returning_none_leaves_the_close_to_the_server() -> None:
    server = make_server(Advisory)
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    sock.sendall(b"late\n")
    server.stop()
    client = Client(sock, read_until_closed)
    client.start()
    assert server.serve() == EXIT_OK
    assert client.outcome() == b"late ok\n"
    (protocol,) = Line.instances
    assert isinstance(protocol, Advisory)
    assert protocol.shutdown_calls == 1 and protocol.lost == [None]


@pytest.mark.timeout(60)
def test_the_grace_deadline_aborts_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reactor.serve")
    server = make_server(Never, graceful_timeout=0.3)
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    client = Client(sock, read_until_closed)
    client.start()
    server.stop()
    assert server.serve() == EXIT_OK
    assert client.outcome() == b""
    assert Line.instances[0].lost == [None]
    assert "graceful timeout (0.3 s): aborting 1 connection\n" in caplog.text
    assert "1 aborted at the deadline" in caplog.text


@pytest.mark.timeout(60)
def test_a_lingering_peer_that_never_closes_is_closed_after_the_linger_timeout() -> None:
    server = make_server(linger_timeout=0.2, graceful_timeout=20)
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    server.stop()
    started = server.reactor.time()
    assert server.serve() == EXIT_OK  # the client never closes its side
    assert server.reactor.time() - started < 10
    sock.settimeout(WAIT)
    assert sock.recv(10) == b""
    sock.close()


@pytest.mark.timeout(60)
def test_stop_with_force_aborts_everything_and_returns_130() -> None:
    server = make_server(Never)
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    client = Client(sock, read_until_closed)
    client.start()
    server.stop()
    server.reactor.call_later(0.1, server.stop, True, "test")
    assert server.serve() == EXIT_FORCED
    assert client.outcome() == b""
    assert Line.instances[0].lost == [None]


@pytest.mark.timeout(60)
def test_a_shared_reactor_is_left_open_and_other_connections_untouched() -> None:
    from reactor import Reactor

    reactor = Reactor()
    try:
        other = reactor.listen_tcp("127.0.0.1", 0, Line)
        server = make_server(reactor=reactor)
        server.start()
        bystander = socket.create_connection(("127.0.0.1", other.port), timeout=WAIT)
        reactor.run_until(lambda: len(reactor.connections) == 1, timeout=WAIT)
        server.stop()
        assert server.serve() == EXIT_OK
        assert not reactor.is_closed()
        assert len(reactor.connections) == 1  # not one of the server's
        assert other in reactor.listeners
        bystander.close()
    finally:
        reactor.close()


# -- signals and statistics ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigterm_and_sigusr1_through_the_reactor(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reactor.serve")
    previous = signal.getsignal(signal.SIGTERM)
    server = make_server(handle_signals=True)
    server.start()
    sock = connect(server)

    def script(s: socket.socket) -> bytes:
        s.sendall(b"one\n")
        assert read_lines(s, 1) == [b"one ok"]  # serving: the handlers are installed
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        return read_until_closed(s)

    client = Client(sock, script)
    client.start()
    assert server.serve() == EXIT_OK
    assert client.outcome() == b""
    assert signal.getsignal(signal.SIGTERM) is previous  # restored
    assert "SIGTERM: stopping gracefully" in caplog.text
    stats = [r.getMessage() for r in caplog.records if "statistics:" in r.getMessage()]
    assert stats and "open=1" in stats[0] and "by state: OPEN=1" in stats[0]


@pytest.mark.timeout(60)
def test_off_the_main_thread_signals_are_not_handled_but_stop_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reactor.serve")
    server = make_server(handle_signals=True)
    server.start()
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(server.serve()), daemon=True)
    thread.start()
    sock = connect(server)
    sock.sendall(b"x\n")
    assert read_lines(sock, 1) == [b"x ok"]
    server.stop_threadsafe()
    assert read_until_closed(sock) == b""
    sock.close()
    thread.join(WAIT)
    assert results == [EXIT_OK]
    assert "not on the main thread" in caplog.text


@pytest.mark.timeout(60)
def test_stats_interval_logs_periodically() -> None:
    server = make_server(stats_interval=0.05)
    server.start()
    seen: list[str] = []

    class Stop(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("statistics:"):
                seen.append(record.getMessage())
                if len(seen) == 3:
                    server.stop()

    handler = Stop()
    logger = logging.getLogger("reactor.serve")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert server.serve() == EXIT_OK
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(seen) == 3
    assert all("listeners=1" in line and "by state: none" in line for line in seen)


@pytest.mark.timeout(60)
def test_deadlines_from_options_still_apply_while_serving() -> None:
    server = make_server(options=TransportOptions(idle_timeout=0.2))
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    server.reactor.run_until(lambda: Line.instances[0].lost != [], timeout=WAIT)
    assert isinstance(Line.instances[0].lost[0], TimeoutError)
    row_left = [r for r in server.reactor.connections if isinstance(r, StreamTransport)]
    assert row_left == []
    server.stop()
    assert server.serve() == EXIT_OK
    sock.close()


@pytest.mark.timeout(60)
def test_a_zero_grace_period_aborts_at_once_and_a_server_serves_once() -> None:
    from reactor import LocalProtocolError

    server = make_server(Never, graceful_timeout=0)
    server.start()
    sock = connect(server)
    server.reactor.run_until(lambda: bool(Line.instances), timeout=WAIT)
    server.stop()
    assert server.serve() == EXIT_OK
    assert Line.instances[0].lost == [None]
    sock.settimeout(WAIT)
    assert sock.recv(100) == b""
    sock.close()
    with pytest.raises(LocalProtocolError, match="served already"):
        server.serve()
