"""Listeners and connectors over real sockets: accept batches, the connection cap,
resource errors on accept (simulated, and one real RLIMIT_NOFILE child), Unix socket
paths, bind failures, inherited sockets, datagram endpoints, outgoing connections.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from netkit import WAIT, EchoClients, Net, Recorder, events_of, requires_ipv6

from reactor import ConnState, FakeClock, Reactor
from reactor.io.listeners import ACCEPT_RETRY_DELAY, UNIX_PATH_MAX, Listener

ROOT = Path(__file__).resolve().parent.parent




def num_fds() -> int:
    return psutil.Process().num_fds()


def step(reactor: Reactor, times: int = 3) -> None:
    for _ in range(times):
        reactor.run_once(0)


# -- accepting -------------------------------------------------------------------------------


def test_accepts_in_bounded_batches(reactor: Reactor, net: Net, sockdir: str) -> None:
    # Unix sockets: connect() returns once the connection is in the listener's queue
    listener = net.listen_unix(os.path.join(sockdir, "batch.sock"), accept_batch=3)
    assert listener.accept_batch == 3
    peers = [net.connect(listener.address) for _ in range(10)]  # all in the backlog now
    per_wakeup = []
    while listener.accepted < 10:
        before = listener.accepted
        reactor.run_once(WAIT)
        per_wakeup.append(listener.accepted - before)
    assert max(per_wakeup) == 3
    assert [n for n in per_wakeup if n] == [3, 3, 3, 1]
    net.wait(lambda: len(net.protocols) == 10)
    for i, peer in enumerate(peers):
        peer.send_all(bytes([i]))
    net.wait(lambda: all(len(p.data) == 1 for p in net.protocols))


def test_accept_batch_never_exceeds_the_backlog(reactor: Reactor, net: Net) -> None:
    assert net.listen_tcp(backlog=4, accept_batch=100).accept_batch == 4
    assert net.listen_tcp().accept_batch >= 1


def test_max_connections_leaves_extra_clients_in_the_backlog(reactor: Reactor,
                                                             net: Net) -> None:
    listener = net.listen_tcp(max_connections=2, on_data=lambda p, d: p.transport.write(d))
    assert listener.accepting
    peers = [net.connect(listener.address) for _ in range(4)]  # the kernel completes all
    for i, peer in enumerate(peers):
        peer.send_all(b"hello %d" % i)
    net.wait(lambda: listener.active == 2)
    step(reactor, 10)
    assert listener.active == 2 and listener.accepted == 2
    assert not listener.accepting
    assert events_of(reactor, listener.sock) == 0  # not polled: no spinning at the cap
    net.wait(lambda: peers[0].received == b"hello 0" and peers[1].received == b"hello 1")
    assert peers[2].received == peers[3].received == b""
    # a slot frees: the next client is accepted, and its early bytes are there
    peers[0].close()
    net.wait(lambda: listener.accepted == 3)
    net.wait(lambda: peers[2].received == b"hello 2")
    assert listener.active == 2 and not listener.accepting
    assert peers[3].received == b""
    for peer in peers[1:3]:
        peer.close()
    net.wait(lambda: peers[3].received == b"hello 3")
    assert listener.active == 1 and listener.accepting
    assert events_of(reactor, listener.sock) == selectors.EVENT_READ


def test_max_connections_must_be_positive(reactor: Reactor) -> None:
    with pytest.raises(ValueError):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, max_connections=0)


class FlakyListeningSocket:
    """A real listening socket whose ``_accept`` fails with ``err`` while ``failing``."""

    def __init__(self, err: int) -> None:
        self.real = socket.create_server(("127.0.0.1", 0))
        self.err = err
        self.failing = True
        self.calls = 0

    family = property(lambda self: self.real.family)
    type = property(lambda self: self.real.type)
    proto = property(lambda self: self.real.proto)

    def fileno(self) -> int:
        return self.real.fileno()

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def getsockname(self) -> Any:
        return self.real.getsockname()

    def close(self) -> None:
        self.real.close()

    def _accept(self) -> tuple[int, Any]:
        self.calls += 1
        if self.failing:
            raise OSError(self.err, os.strerror(self.err))
        return self.real._accept()  # type: ignore[attr-defined,no-any-return]


LIMIT_WORDS = {
    errno.EMFILE: "RLIMIT_NOFILE",
    errno.ENFILE: "system-wide",
    errno.ENOBUFS: "memory",
    errno.ENOMEM: "memory",
}


@pytest.mark.parametrize("err", sorted(LIMIT_WORDS), ids=lambda e: errno.errorcode[e])
def test_resource_errors_on_accept_pause_the_listener(
    backend: type[selectors.BaseSelector], caplog: pytest.LogCaptureFixture, err: int
) -> None:
    caplog.set_level(logging.INFO, logger="reactor")
    clock = FakeClock()
    sock = FlakyListeningSocket(err)
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    clients: list[socket.socket] = []
    with Reactor(selector=backend(), clock=clock) as reactor:
        listener = reactor.listen_tcp(None, 0, factory, sock=sock)  # type: ignore[arg-type]
        delay = listener.accept_retry_delay
        assert delay == ACCEPT_RETRY_DELAY
        try:
            clients.append(socket.create_connection(sock.getsockname(), timeout=WAIT))
            step(reactor, 10)  # a pending client, accept fails: one try, then it steps back
            assert sock.calls == 1
            assert listener.paused and not listener.accepting
            assert events_of(reactor, sock.fileno()) == 0
            # a resource limit is a WARNING (the server waits), once per episode
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            errors = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(errors) == 1
            assert LIMIT_WORDS[err] in errors[0].getMessage()
            assert errno.errorcode[err] in errors[0].getMessage() or os.strerror(err) in (
                errors[0].getMessage())
            # not before the retry delay ...
            clock.advance(delay * 0.9)
            step(reactor, 10)
            assert sock.calls == 1
            # ... then one retry per delay, silently while the episode lasts
            for n in range(2, 5):
                clock.advance(delay * 0.2)
                step(reactor, 10)
                assert sock.calls == n and listener.paused
                clock.advance(delay * 0.8)
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
            # resources come back: the pending client is served, and the log says so
            sock.failing = False
            clock.advance(delay)
            step(reactor, 10)
            assert len(made) == 1 and listener.accepting and not listener.paused
            again = [r for r in caplog.records if "accepting again" in r.getMessage()]
            assert len(again) == 1
            clients[0].sendall(b"x")
            deadline = time.monotonic() + WAIT
            while made[0].data != b"x":
                assert time.monotonic() < deadline
                reactor.run_once(0.01)
            # a second episode is logged again
            sock.failing = True
            clients.append(socket.create_connection(sock.getsockname(), timeout=WAIT))
            step(reactor, 10)
            assert listener.paused
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
        finally:
            for c in clients:
                c.close()


def test_transient_accept_errors_are_retried_at_once(default_reactor: Reactor,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    sock = FlakyListeningSocket(errno.ECONNABORTED)
    real_accept = sock._accept

    def accept_once_failing() -> tuple[int, Any]:
        if sock.calls == 0:
            sock.calls += 1
            raise ConnectionAbortedError(errno.ECONNABORTED, "aborted")
        return real_accept()

    sock.failing = False
    sock._accept = accept_once_failing  # type: ignore[method-assign]
    net = Net(default_reactor)
    listener = default_reactor.listen_tcp(None, 0, net.factory(),
                                          sock=sock)  # type: ignore[arg-type]
    with socket.create_connection(sock.getsockname(), timeout=WAIT):
        net.wait(lambda: len(net.protocols) == 1)
    assert not listener.paused
    assert not caplog.records


def test_an_unexpected_accept_error_pauses_with_one_clear_line(
    default_reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactor")
    sock = FlakyListeningSocket(errno.EINVAL)
    listener = default_reactor.listen_tcp(None, 0, Recorder,
                                          sock=sock)  # type: ignore[arg-type]
    with socket.create_connection(sock.getsockname(), timeout=WAIT):
        step(default_reactor, 10)
    assert sock.calls == 1 and listener.paused
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "Invalid argument" in errors[0]
    assert "ENOBUFS" not in errors[0] and "RLIMIT" not in errors[0]


EMFILE_SERVER = r"""
import asyncio, logging, resource, sys
from reactor import Reactor

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s %(message)s")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

reactor = Reactor()
listener = reactor.listen_tcp("127.0.0.1", 0, Echo, backlog=512)
print(listener.port, flush=True)
reactor.run()
"""


@pytest.mark.timeout(90)
def test_real_fd_exhaustion_does_not_busy_loop(tmp_path: Path) -> None:
    """A child with RLIMIT_NOFILE=64 and 100 clients: it stays idle while clients wait,
    keeps echoing for the ones it has, and serves the others once some leave."""
    log = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "wb") as errfile:
        child = subprocess.Popen([sys.executable, "-c", EMFILE_SERVER, "64"], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=errfile)
    clients: EchoClients | None = None
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        clients = EchoClients(port, 100)
        for i in range(100):
            clients.send(i, b"hello")
        c = clients
        proc = psutil.Process(child.pid)
        # the child runs out of descriptors: it says so, and its connections echo
        c.pump(lambda: "RLIMIT_NOFILE" in log.read_text(), WAIT)
        assert "RLIMIT_NOFILE" in log.read_text()
        accepted = len([x for x in proc.net_connections("tcp")
                        if x.status == psutil.CONN_ESTABLISHED])
        c.pump(lambda: len(c.served(b"hello")) == accepted, WAIT)
        assert len(c.served(b"hello")) == accepted
        # the measurement window: the child has hit its limit and clients wait. Nothing
        # frees a descriptor, so none of them may be served meanwhile either.
        served = c.served(b"hello")
        waiting = set(range(100)) - served
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        c.pump(lambda: bool(c.served(b"hello") & waiting), 2.0)
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.10, f"the server used {cpu:.0%} of a core while clients waited"
        assert c.served(b"hello") == served
        assert 40 <= len(served) < 64
        assert len(waiting) >= 36
        # the connections it has keep echoing
        first = sorted(served)[:5]
        for i in first:
            c.send(i, b"<again>")
        c.pump(lambda: all(b"<again>" in c.got[i] for i in first), WAIT)
        assert all(b"<again>" in c.got[i] for i in first), "old connections stopped"
        text = log.read_text()
        limit_lines = [ln for ln in text.splitlines() if "RLIMIT_NOFILE" in ln]
        assert len(limit_lines) == 1, text
        # ten leave: as many waiting clients get served, without any other nudge
        for i in sorted(served)[:10]:
            c.close(i)
        c.pump(lambda: len(c.served(b"hello") & waiting) >= 5, WAIT)
        assert len(c.served(b"hello") & waiting) >= 5
        assert "accepting again" in log.read_text()
        # and the old ones still echo
        rest = sorted(served)[10:15]
        for i in rest:
            c.send(i, b"<end>")
        c.pump(lambda: all(b"<end>" in c.got[i] for i in rest), WAIT)
        assert all(b"<end>" in c.got[i] for i in rest)
    finally:
        child.terminate()
        child.wait(WAIT)
        if child.stdout is not None:
            child.stdout.close()
        if clients is not None:
            clients.close_all()


# -- Unix stream paths -----------------------------------------------------------------------


def test_listen_unix_removes_a_stale_socket(reactor: Reactor, net: Net, sockdir: str) -> None:
    path = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays: a crashed server's leftover
    assert os.path.exists(path)
    listener = net.listen_unix(path)
    peer, proto = net.accept(listener)
    peer.send_all(b"fresh")
    net.wait(lambda: proto.data == b"fresh")


def test_listen_unix_refuses_a_live_servers_path(reactor: Reactor, net: Net,
                                                 sockdir: str) -> None:
    path = os.path.join(sockdir, "live.sock")
    listener = net.listen_unix(path)
    before = num_fds()
    with pytest.raises(OSError) as info:
        reactor.listen_unix(path, Recorder)
    assert info.value.errno == errno.EADDRINUSE
    assert path in str(info.value)
    assert num_fds() == before
    # the running server is untouched (it may see the probe that found it alive)
    peer = net.connect(path)
    peer.send_all(b"still mine")
    net.wait(lambda: any(p.data == b"still mine" for p in net.protocols))
    assert os.path.exists(path) and listener.accepting


@pytest.mark.timeout(30)
def test_listen_unix_refuses_a_live_server_with_a_full_backlog(reactor: Reactor,
                                                               sockdir: str) -> None:
    """The liveness probe must not block on a server too busy to accept it."""
    path = os.path.join(sockdir, "busy.sock")
    fillers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(path)
        busy.listen(0)
        try:
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                fillers.append(s)
                if s.connect_ex(path) == errno.EAGAIN:
                    break
            start = time.monotonic()
            with pytest.raises(OSError) as info:
                reactor.listen_unix(path, Recorder)
            assert info.value.errno == errno.EADDRINUSE
            assert time.monotonic() - start < 5
            assert os.path.exists(path)
        finally:
            for s in fillers:
                s.close()


@pytest.mark.parametrize("mine", ["stream", "datagram"])
def test_a_live_datagram_servers_path_is_not_taken_over(reactor: Reactor, sockdir: str,
                                                        mine: str) -> None:
    path = os.path.join(sockdir, "dgram.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as live:
        live.bind(path)
        live.settimeout(WAIT)
        with pytest.raises(OSError) as info:
            if mine == "stream":
                reactor.listen_unix(path, Recorder)
            else:
                reactor.listen_unix_datagram(path, asyncio.DatagramProtocol)
        assert info.value.errno == errno.EADDRINUSE
        # the path still leads to the live server
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"still yours", path)
        assert live.recv(100) == b"still yours"
    assert len(reactor.connections) == 0 and reactor.listeners == []


def test_listen_unix_datagram_removes_a_stale_socket(reactor: Reactor, sockdir: str) -> None:
    path = os.path.join(sockdir, "stale.dg")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(path)
    dead.close()
    proto = DgramRecorder()
    tr = reactor.listen_unix_datagram(path, lambda: proto)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"new owner", path)
    reactor.run_until(lambda: bool(proto.datagrams), WAIT)
    tr.close()


@pytest.mark.parametrize("what", ["file", "directory"])
def test_listen_unix_never_removes_what_is_not_a_socket(reactor: Reactor, sockdir: str,
                                                        what: str) -> None:
    path = os.path.join(sockdir, "precious")
    if what == "file":
        Path(path).write_text("data")
    else:
        os.mkdir(path)
    before = num_fds()
    with pytest.raises(FileExistsError, match="not a socket"):
        reactor.listen_unix(path, Recorder)
    assert num_fds() == before
    if what == "file":
        assert Path(path).read_text() == "data"
    else:
        assert os.path.isdir(path)
    assert reactor.listeners == []


def test_listen_unix_rejects_an_overlong_path(reactor: Reactor, sockdir: str) -> None:
    path = os.path.join(sockdir, "x" * (UNIX_PATH_MAX + 1 - len(sockdir) - 1))
    assert len(path) == UNIX_PATH_MAX + 1
    before = num_fds()
    with pytest.raises(ValueError, match=str(UNIX_PATH_MAX)):
        reactor.listen_unix(path, Recorder)
    with pytest.raises(ValueError):
        reactor.listen_unix_datagram(path, asyncio.DatagramProtocol)
    assert num_fds() == before
    assert not os.path.exists(path)
    assert reactor.listeners == [] and len(reactor.connections) == 0


def test_listen_unix_accepts_the_longest_path(reactor: Reactor, net: Net,
                                              sockdir: str) -> None:
    path = os.path.join(sockdir, "y" * (UNIX_PATH_MAX - len(sockdir) - 1))
    assert len(path) == UNIX_PATH_MAX
    listener = net.listen_unix(path)
    peer, proto = net.accept(listener)
    peer.send_all(b"long")
    net.wait(lambda: proto.data == b"long")


def test_listen_unix_removes_its_path_on_close(reactor: Reactor, sockdir: str) -> None:
    path = os.path.join(sockdir, "mine.sock")
    listener = reactor.listen_unix(path, Recorder)
    assert os.path.exists(path)
    assert listener.address == path
    listener.close()
    assert not os.path.exists(path)
    listener.close()  # twice is harmless
    assert reactor.listeners == []


@pytest.mark.parametrize("replacement", ["file", "socket"])
def test_listen_unix_leaves_a_replaced_path_alone(reactor: Reactor, sockdir: str,
                                                  replacement: str) -> None:
    path = os.path.join(sockdir, "shared.sock")
    listener = reactor.listen_unix(path, Recorder)
    os.unlink(path)
    newcomer = None
    if replacement == "file":
        Path(path).write_text("someone else's")
    else:
        newcomer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        newcomer.bind(path)
        newcomer.listen()
    try:
        listener.close()
        assert os.path.exists(path)
        if replacement == "file":
            assert Path(path).read_text() == "someone else's"
    finally:
        if newcomer is not None:
            newcomer.close()


# -- bind failures and inherited sockets --------------------------------------------------


@pytest.mark.parametrize("reuse_port", [False, True])
def test_tcp_bind_failure_is_clear_and_leaks_nothing(reactor: Reactor,
                                                     reuse_port: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        before = num_fds()
        for _ in range(3):
            with pytest.raises(OSError) as info:
                reactor.listen_tcp("127.0.0.1", port, Recorder, reuse_port=reuse_port)
            assert info.value.errno == errno.EADDRINUSE
            assert str(port) in str(info.value)
        assert num_fds() == before
    assert reactor.listeners == []


def test_udp_and_unix_bind_failures_leak_nothing(reactor: Reactor, sockdir: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        before = num_fds()
        with pytest.raises(OSError) as info:
            reactor.listen_udp("127.0.0.1", port, asyncio.DatagramProtocol)
        assert info.value.errno == errno.EADDRINUSE
        missing_dir = os.path.join(sockdir, "no-such-dir", "s.sock")
        with pytest.raises(FileNotFoundError):
            reactor.listen_unix(missing_dir, Recorder)
        with pytest.raises(FileNotFoundError):
            reactor.listen_unix_datagram(missing_dir, asyncio.DatagramProtocol)
        assert num_fds() == before
    assert len(reactor.connections) == 0


def test_listen_on_an_inherited_tcp_socket(reactor: Reactor, net: Net) -> None:
    original = socket.create_server(("127.0.0.1", 0))
    address = original.getsockname()
    fd = os.dup(original.fileno())  # as a parent process or systemd would pass it
    original.close()
    inherited = socket.socket(fileno=fd)
    listener = reactor.listen_tcp(None, 0, net.factory(), sock=inherited)
    net.listeners.append(listener)
    assert listener.address == address and listener.port == address[1]
    peer, proto = net.accept(listener)
    peer.send_all(b"inherited")
    net.wait(lambda: proto.data == b"inherited")
    listener.close()
    assert inherited.fileno() == -1


def test_listen_on_an_inherited_unix_socket_keeps_its_path(reactor: Reactor, net: Net,
                                                           sockdir: str) -> None:
    path = os.path.join(sockdir, "given.sock")
    given = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    given.bind(path)
    given.listen()
    listener = reactor.listen_unix(path, net.factory(), sock=given)
    peer, proto = net.accept(listener)
    peer.send_all(b"ok")
    net.wait(lambda: proto.data == b"ok")
    listener.close()
    assert os.path.exists(path)  # we did not create it: not ours to remove


def test_listener_close_keeps_accepted_connections(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(on_data=lambda p, d: p.transport.write(d))
    peer, _proto = net.accept(listener)
    listener.close()
    assert listener.address is None and not listener.accepting
    peer.send_all(b"after")
    net.wait(lambda: peer.received == b"after")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", peer.sock.getpeername()[1]), timeout=WAIT)


def test_a_raising_protocol_factory_closes_only_that_client(
    reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")
    calls = [0]
    good = Recorder()

    def factory() -> Recorder:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("factory bug")
        return good

    listener = reactor.listen_tcp("127.0.0.1", 0, factory)
    net.listeners.append(listener)
    first = net.connect(listener.address)
    net.wait(lambda: first.eof or first.error is not None)
    assert len([r for r in caplog.records if "factory" in r.getMessage()]) == 1
    second = net.connect(listener.address)
    second.send_all(b"ok")
    net.wait(lambda: good.data == b"ok")
    assert listener.active == 1 and len(reactor.connections) == 1


def test_listen_needs_a_protocol_factory(reactor: Reactor) -> None:
    with pytest.raises(TypeError):
        reactor.listen_tcp("127.0.0.1", 0)
    with pytest.raises(TypeError):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, options=object(), idle_timeout=1)


def test_on_accept_gets_the_raw_socket(reactor: Reactor, net: Net) -> None:
    got: list[tuple[Any, Any]] = []

    def on_accept(listener: Any, conn: Any, addr: Any) -> None:
        got.append((conn, addr))
        conn.sendall(b"raw hello")
        conn.close()
        listener.release_slot()

    listener = reactor.listen_tcp("127.0.0.1", 0, on_accept=on_accept)
    net.listeners.append(listener)
    peer = net.connect(listener.address)
    net.wait(lambda: peer.eof)
    assert peer.received == b"raw hello"
    conn, addr = got[0]
    assert addr == peer.sock.getsockname()
    assert conn.gettimeout() == 0.0  # handed over non-blocking


def test_a_connection_factory_makes_the_accepted_socket(reactor: Reactor, net: Net) -> None:
    made: list[tuple[int, int, int, int]] = []
    got: list[Any] = []

    def factory(family: int, type_: int, proto: int, fd: int) -> socket.socket:
        made.append((family, type_, proto, fd))
        return socket.socket(family, type_, proto, fd)

    def on_accept(listener: Any, conn: Any, addr: Any) -> None:
        got.append((conn, conn.gettimeout(), conn.fileno()))
        conn.sendall(b"made")
        conn.close()
        listener.release_slot()

    sock = socket.create_server(("127.0.0.1", 0))
    listener = Listener(reactor, sock, on_accept, connection_factory=factory)
    net.listeners.append(listener)
    peer = net.connect(listener.address)
    net.wait(lambda: peer.eof)
    assert peer.received == b"made"
    (conn, timeout, fd), = got
    assert type(conn) is socket.socket
    assert timeout is None  # left as the factory made it: no setblocking(False)
    assert made == [(socket.AF_INET, socket.SOCK_STREAM, sock.proto, fd)]
    assert listener.active == 0 and listener.accepted == 1


def test_a_failing_connection_factory_closes_that_connection_only(
        reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    served: list[Any] = []

    def factory(family: int, type_: int, proto: int, fd: int) -> socket.socket:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "refused by the factory")
        return socket.socket(family, type_, proto, fd)

    def on_accept(listener: Any, conn: Any, addr: Any) -> None:
        served.append(addr)
        conn.sendall(b"second")
        conn.close()
        listener.release_slot()

    sock = socket.create_server(("127.0.0.1", 0))
    listener = Listener(reactor, sock, on_accept, connection_factory=factory)
    net.listeners.append(listener)
    with caplog.at_level(logging.ERROR):
        first = net.connect(listener.address)
        net.wait(lambda: first.eof)  # its descriptor was closed, not leaked
        second = net.connect(listener.address)
        net.wait(lambda: second.eof)
    assert first.received == b"" and second.received == b"second"
    assert len(served) == 1 and listener.active == 0
    assert "refused by the factory" in caplog.text


# -- datagram endpoints ----------------------------------------------------------------------


class DgramRecorder(asyncio.DatagramProtocol):
    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: Any = None
        self.datagrams: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))
        if self.echo:
            self.transport.sendto(data.upper(), addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def test_udp_endpoint(reactor: Reactor) -> None:
    proto = DgramRecorder(echo=True)
    tr = reactor.listen_udp("127.0.0.1", 0, lambda: proto)
    address = tr.get_extra_info("sockname")
    assert tr.kind == "udp" and tr in reactor.connections
    assert tr.state is ConnState.OPEN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(WAIT)
        client.sendto(b"ping", address)
        reactor.run_until(lambda: proto.datagrams, WAIT)
        assert proto.datagrams == [(b"ping", client.getsockname())]
        assert client.recvfrom(100) == (b"PING", address)
        tr.sendto(b"direct", client.getsockname())
        assert client.recv(100) == b"direct"
        assert tr.bytes_in == 4 and tr.bytes_out == 10
    tr.close()
    tr.close()
    reactor.run_until(lambda: proto.lost, WAIT)
    assert proto.lost == [None] and tr not in reactor.connections
    assert tr.get_extra_info("socket") is None


def test_connected_udp_endpoint_sends_without_an_address(reactor: Reactor) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(WAIT)
        proto = DgramRecorder()
        tr = reactor.listen_udp("127.0.0.1", 0, lambda: proto, remote=client.getsockname())
        assert tr.get_extra_info("peername") == client.getsockname()
        tr.sendto(b"no address needed")
        assert client.recv(100) == b"no address needed"
        client.sendto(b"back", tr.get_extra_info("sockname"))
        reactor.run_until(lambda: proto.datagrams, WAIT)
        assert proto.datagrams[0][0] == b"back"
        tr.abort()
        reactor.run_until(lambda: proto.lost, WAIT)


def test_udp_icmp_errors_go_to_error_received(reactor: Reactor) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        closed_port = gone.getsockname()[1]
    proto = DgramRecorder()
    tr = reactor.listen_udp("127.0.0.1", 0, lambda: proto, remote=("127.0.0.1", closed_port))
    tr.sendto(b"anyone?")
    reactor.run_until(lambda: proto.errors, WAIT)
    assert isinstance(proto.errors[0], ConnectionRefusedError)
    assert proto.lost == [] and not tr.is_closing()  # not fatal
    tr.close()


@pytest.mark.parametrize("family", ["udp", "unix"])
def test_oversized_datagram_is_reported_not_truncated(
    reactor: Reactor, sockdir: str, caplog: pytest.LogCaptureFixture, family: str
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    proto = DgramRecorder()
    client: socket.socket
    if family == "udp":
        tr = reactor.listen_udp("127.0.0.1", 0, lambda: proto, max_datagram_size=1000)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        tr = reactor.listen_unix_datagram(os.path.join(sockdir, "d.sock"), lambda: proto,
                                          max_datagram_size=1000)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = tr.get_extra_info("sockname")
    with client:
        client.sendto(b"a" * 1001, address)
        client.sendto(b"b" * 1000, address)
        reactor.run_until(lambda: proto.datagrams, WAIT)
    assert proto.datagrams[0][0] == b"b" * 1000  # the whole next one
    assert len(proto.datagrams) == 1
    assert len(proto.errors) == 1
    assert isinstance(proto.errors[0], OSError) and proto.errors[0].errno == errno.EMSGSIZE
    assert "1000" in str(proto.errors[0])
    assert tr.dropped == 1
    assert len([r for r in caplog.records if "larger than" in r.getMessage()]) == 1
    assert proto.lost == []


def test_unix_datagram_endpoint(reactor: Reactor, sockdir: str) -> None:
    path = os.path.join(sockdir, "server.dg")
    proto = DgramRecorder(echo=True)
    tr = reactor.listen_unix_datagram(path, lambda: proto)
    assert tr.kind == "unixdg"
    client_path = os.path.join(sockdir, "client.dg")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.bind(client_path)
        client.settimeout(WAIT)
        client.sendto(b"hi", path)
        reactor.run_until(lambda: proto.datagrams, WAIT)
        assert proto.datagrams == [(b"hi", client_path)]
        assert client.recv(100) == b"HI"
    # sending to a socket that is gone: reported, not fatal
    tr.sendto(b"lost", client_path)
    assert len(proto.errors) == 1 and isinstance(proto.errors[0], OSError)
    assert not tr.is_closing()
    tr.close()
    reactor.run_until(lambda: proto.lost, WAIT)
    assert not os.path.exists(path)


def iterations_during(reactor: Reactor, seconds: float) -> int:
    """Loop iterations while the reactor waits ``seconds`` on a timer of its own."""
    before = reactor.statistics().iterations
    fired: list[bool] = []
    reactor.call_later(seconds, fired.append, True)
    reactor.run_until(lambda: bool(fired), WAIT)
    return reactor.statistics().iterations - before


def test_unix_datagram_to_a_peer_that_does_not_read_does_not_spin(reactor: Reactor,
                                                                  sockdir: str) -> None:
    """An unconnected Unix datagram socket stays writable while one receiver's queue is
    full, so a datagram queued for it would make the selector report it ready forever.
    """
    proto = DgramRecorder()
    tr = reactor.listen_unix_datagram(os.path.join(sockdir, "srv.dg"), lambda: proto)
    slow_path = os.path.join(sockdir, "slow.dg")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as slow:
        slow.bind(slow_path)
        sent = 0
        while not proto.errors and tr.get_write_buffer_size() == 0 and sent < 100_000:
            tr.sendto(b"%d" % sent, slow_path)
            sent += 1
        assert iterations_during(reactor, 0.3) < 100
        # the one that did not fit is reported, not silently kept or lost
        assert [e.errno for e in proto.errors] == [errno.EAGAIN]  # type: ignore[attr-defined]
        assert tr.get_write_buffer_size() == 0 and not tr.is_closing()
        # the receiver catches up: the datagrams it holds are intact, new ones get through
        slow.settimeout(WAIT)
        got = [slow.recv(100) for _ in range(sent - 1)]
        assert got == [b"%d" % i for i in range(sent - 1)]
        tr.sendto(b"again", slow_path)
        assert slow.recv(100) == b"again"
    tr.close()


def test_connected_unix_datagram_endpoint(reactor: Reactor, sockdir: str) -> None:
    server_path = os.path.join(sockdir, "srv.dg")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(server_path)
        server.settimeout(WAIT)
        proto = DgramRecorder()
        tr = reactor.listen_unix_datagram(None, lambda: proto, remote=server_path)
        tr.sendto(b"to the one I know")
        assert server.recv(100) == b"to the one I know"
        tr.close()
        reactor.run_until(lambda: proto.lost, WAIT)


def test_datagram_protocol_errors_are_logged_not_fatal(reactor: Reactor,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="reactor")

    class Buggy(DgramRecorder):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            super().datagram_received(data, addr)
            if data == b"bug":
                raise RuntimeError("handler bug")

    proto = Buggy()
    tr = reactor.listen_udp("127.0.0.1", 0, lambda: proto)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"bug", tr.get_extra_info("sockname"))
        client.sendto(b"fine", tr.get_extra_info("sockname"))
        reactor.run_until(lambda: len(proto.datagrams) == 2, WAIT)
    assert len([r for r in caplog.records if "datagram_received raised" in r.getMessage()]) == 1
    tr.close()


# -- outgoing connections --------------------------------------------------------------------


def connecting_rows(reactor: Reactor) -> list[Any]:
    return [r for r in reactor.connections if r.state is ConnState.CONNECTING]


def test_connect_tcp(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(on_data=lambda p, d: p.transport.write(d[::-1]))
    client = Recorder()
    fut = reactor.connect_tcp("127.0.0.1", listener.port, lambda: client, timeout=WAIT)
    assert len(connecting_rows(reactor)) == 1
    tr, proto = reactor.run_until_complete(fut, WAIT)
    assert proto is client and client.transport is tr
    assert tr.state is ConnState.OPEN and tr in reactor.connections
    assert tr.get_extra_info("peername") == ("127.0.0.1", listener.port)
    assert connecting_rows(reactor) == []
    assert reactor.statistics().pending_timers == 0  # the connect timeout was cancelled
    tr.write(b"stressed")
    net.wait(lambda: client.data == b"desserts")
    tr.close()
    net.wait(lambda: client.closed)
    assert client.lost == [None]


@requires_ipv6
def test_connect_tcp_ipv6(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp("::1")
    fut = reactor.connect_tcp("::1", listener.port, Recorder)
    tr, _ = reactor.run_until_complete(fut, WAIT)
    assert tr.get_extra_info("peername")[:2] == ("::1", listener.port)
    tr.write(b"six")
    net.wait(lambda: bool(net.protocols) and net.protocols[0].data == b"six")


def test_connect_tcp_tries_every_resolved_address(reactor: Reactor, net: Net,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    listener = net.listen_tcp()
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        bad = refusing.getsockname()
        infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", bad),
                 (socket.AF_INET, socket.SOCK_STREAM, 6, "", listener.address)]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: infos)
        fut = reactor.connect_tcp("two-addresses.test", 1, Recorder, timeout=WAIT)
        tr, _ = reactor.run_until_complete(fut, WAIT)
    assert tr.get_extra_info("peername") == listener.address
    assert len(connecting_rows(reactor)) == 0
    assert reactor.statistics().pending_timers == 0


def test_connect_tcp_refused(reactor: Reactor) -> None:
    with socket.socket() as bound:  # bound, never listening: the port refuses
        bound.bind(("127.0.0.1", 0))
        before = num_fds()
        fut = reactor.connect_tcp("127.0.0.1", bound.getsockname()[1], Recorder, timeout=WAIT)
        with pytest.raises(ConnectionRefusedError):
            reactor.run_until_complete(fut, WAIT)
        assert len(reactor.connections) == 0
        assert reactor.statistics().pending_timers == 0
        assert num_fds() == before


def test_connect_tcp_timeout(reactor: Reactor) -> None:
    """A listener whose accept queue is full drops new SYNs: the connect hangs in
    SYN_SENT on loopback, so the timeout is what ends it."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        try:
            for _ in range(3):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(full.getsockname())
                fillers.append(s)
            before = num_fds()
            made: list[Recorder] = []
            start = time.monotonic()
            fut = reactor.connect_tcp("127.0.0.1", full.getsockname()[1],
                                      lambda: made.append(Recorder()) or made[-1],
                                      timeout=0.3)
            with pytest.raises(TimeoutError, match="timed out"):
                reactor.run_until_complete(fut, WAIT)
            assert 0.25 <= time.monotonic() - start < WAIT
            assert made == []
            assert len(reactor.connections) == 0
            assert reactor.statistics().pending_timers == 0
            assert num_fds() == before
        finally:
            for s in fillers:
                s.close()


def test_connect_tcp_factory_error_is_reported(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp()

    def factory() -> Recorder:
        raise RuntimeError("no protocol today")

    fut = reactor.connect_tcp("127.0.0.1", listener.port, factory)
    with pytest.raises(RuntimeError, match="no protocol today"):
        reactor.run_until_complete(fut, WAIT)
    net.wait(lambda: net.protocols and net.protocols[0].closed)  # the server sees it go
    assert [r for r in reactor.connections if r.listener is None] == []


def test_connect_tcp_bad_host_fails_the_future(reactor: Reactor) -> None:
    fut = reactor.connect_tcp("no such host.invalid", 80, Recorder)
    with pytest.raises(OSError):
        fut.result(timeout=WAIT)
    assert len(reactor.connections) == 0


def test_connect_unix(reactor: Reactor, net: Net, sockdir: str) -> None:
    path = os.path.join(sockdir, "c.sock")
    listener = net.listen_unix(path, on_data=lambda p, d: p.transport.write(d * 2))
    client = Recorder()
    fut = reactor.connect_unix(path, lambda: client)
    assert len(connecting_rows(reactor)) == 1
    tr, proto = reactor.run_until_complete(fut, WAIT)
    assert proto is client and tr.state is ConnState.OPEN and tr.kind == "unix"
    tr.write(b"ab")
    net.wait(lambda: client.data == b"abab")
    assert listener.active == 1


def test_connect_unix_errors(reactor: Reactor, sockdir: str) -> None:
    stale = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)
    dead.close()
    before = num_fds()
    with pytest.raises(ConnectionRefusedError):
        reactor.run_until_complete(reactor.connect_unix(stale, Recorder, timeout=WAIT), WAIT)
    with pytest.raises(FileNotFoundError):
        reactor.run_until_complete(
            reactor.connect_unix(os.path.join(sockdir, "nothing"), Recorder), WAIT)
    assert len(reactor.connections) == 0
    assert reactor.statistics().pending_timers == 0
    assert num_fds() == before


def test_connect_unix_to_a_full_backlog_fails_promptly(reactor: Reactor, sockdir: str) -> None:
    path = os.path.join(sockdir, "busy.sock")
    fillers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(path)
        busy.listen(0)
        try:
            while True:  # fill the backlog: the kernel refuses once it is full
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                fillers.append(s)
                if s.connect_ex(path) == errno.EAGAIN:
                    break
            before = num_fds()
            fut = reactor.connect_unix(path, Recorder, timeout=WAIT)
            start = time.monotonic()
            with pytest.raises(OSError) as info:
                reactor.run_until_complete(fut, WAIT)
            assert time.monotonic() - start < WAIT / 2
            assert path in str(info.value)
            assert len(reactor.connections) == 0
            assert reactor.statistics().pending_timers == 0
            assert num_fds() == before
        finally:
            for s in fillers:
                s.close()


def test_connect_unix_overlong_path_leaks_nothing(reactor: Reactor) -> None:
    before = num_fds()
    with pytest.raises((OSError, ValueError)):
        fut = reactor.connect_unix("/tmp/" + "z" * 200, Recorder, timeout=WAIT)
        fut.result(timeout=0)
    assert num_fds() == before
    assert len(reactor.connections) == 0
    assert reactor.statistics().pending_timers == 0


class FullBacklog:
    """A loopback TCP listener whose accept queue is full: connects to it hang."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(self.sock.getsockname())
            self.fillers.append(s)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


@pytest.fixture
def full_backlog() -> Iterator[FullBacklog]:
    fb = FullBacklog()
    yield fb
    fb.close()


def test_closing_the_reactor_fails_a_pending_connect(backend: type[selectors.BaseSelector],
                                                     full_backlog: FullBacklog) -> None:
    reactor = Reactor(selector=backend())
    fut = reactor.connect_tcp("127.0.0.1", full_backlog.port, Recorder)
    reactor.run_once(0)
    assert not fut.done()
    reactor.close()
    assert fut.done()  # a caller waiting on it is not left hanging
    with pytest.raises(ConnectionAbortedError):
        fut.result()


def test_aborting_a_connecting_row_fails_its_future_and_unregisters(
    reactor: Reactor, net: Net, full_backlog: FullBacklog
) -> None:
    fut = reactor.connect_tcp("127.0.0.1", full_backlog.port, Recorder, timeout=WAIT)
    [row] = connecting_rows(reactor)
    fd = row.get_extra_info("socket").fileno()
    row.abort()
    start = time.monotonic()
    with pytest.raises(ConnectionAbortedError):
        reactor.run_until_complete(fut, WAIT)
    assert time.monotonic() - start < WAIT / 2  # at once, not at the connect timeout
    assert len(reactor.connections) == 0
    assert reactor.statistics().pending_timers == 0
    assert events_of(reactor, fd) == 0  # no stale registration for a reused fd number
    listener = net.listen_tcp()
    peer, proto = net.accept(listener)  # new descriptors, likely the same numbers
    peer.send_all(b"fine")
    net.wait(lambda: proto.data == b"fine")


def test_connect_fails_its_future_when_no_socket_can_be_made(
    reactor: Reactor, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors on the second address: the future fails, nothing hangs."""
    listener = net.listen_tcp()
    real_socket = socket.socket
    made = [0]

    def scarce_socket(*args: Any, **kwargs: Any) -> socket.socket:
        made[0] += 1
        if made[0] > 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_socket(*args, **kwargs)

    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", refusing.getsockname()),
                 (socket.AF_INET, socket.SOCK_STREAM, 6, "", listener.address)]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: infos)
        monkeypatch.setattr(socket, "socket", scarce_socket)
        fut = reactor.connect_tcp("two-addresses.test", 1, Recorder)
        with pytest.raises(OSError) as info:
            reactor.run_until_complete(fut, WAIT)
        monkeypatch.undo()
    assert info.value.errno == errno.EMFILE
    assert len(reactor.connections) == 0
