"""The selector refuses a connection's socket (epoll's ENOSPC or ENOMEM on ``register``).

epoll_ctl(ADD) fails with ENOSPC once ``fs.epoll.max_user_watches`` descriptors are
watched, and with ENOMEM when the kernel is short of memory. A fake selector refuses the
registrations of connections (never of listeners or the wake-up channel) with those
errors, while the sockets are real. Whatever refuses it, the connection must not linger:
its row leaves the table, its socket is closed, its listener's slot is freed (so
``max_connections`` stays exact), an outgoing connect's future fails with the error,
and the reason is logged. A protocol never given ``connection_made`` gets no
``connection_lost`` (asyncio's rule); one that had it gets exactly one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from reactor import Reactor
from reactor.io.connect import _Connector
from reactor.io.datagram import DatagramTransport
from reactor.io.listeners import Listener
from reactor.io.stream import StreamTransport
from reactor.sansio.connection import ConnState
from reactor.testing import FakeSelector

TIMEOUT = 10.0
REFUSALS = [errno.ENOSPC, errno.ENOMEM]


class RefusingSelector(FakeSelector):
    """A :class:`FakeSelector` that refuses the next registrations whose data is one of
    ``kinds`` with ``refusals`` (a list of errnos, used up one per refusal)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[int] = []
        self.kinds: tuple[type, ...] = (StreamTransport, DatagramTransport, _Connector)
        self.refused = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any:
        if self.refusals and isinstance(data, self.kinds):
            err = self.refusals.pop(0)
            self.refused += 1
            raise OSError(err, os.strerror(err))
        return super().register(fileobj, events, data)


class Recorder(asyncio.Protocol):
    """Records its callbacks in the shared ``log``."""

    log: list[tuple[str, Any]] = []

    def __init__(self) -> None:
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.log.append(("made", transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.append(("lost", exc))


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, Any]]]:
    Recorder.log = []
    yield Recorder.log
    Recorder.log = []


@pytest.fixture
def selector() -> RefusingSelector:
    return RefusingSelector()


@pytest.fixture
def reactor(selector: RefusingSelector) -> Iterator[Reactor]:
    with Reactor(selector=selector) as r:
        yield r


def spin(reactor: Reactor, until: Callable[[], bool], rounds: int = 20) -> None:
    for _ in range(rounds):
        if until():
            return
        reactor.run_once(0)
    assert until(), "condition not met"


def closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed its end: EOF or a reset, within the socket timeout."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def listen(reactor: Reactor, family: str, tmp_path: Path, **kwargs: Any) -> Any:
    if family == "tcp":
        return reactor.listen_tcp("127.0.0.1", 0, Recorder, **kwargs)
    return reactor.listen_unix(str(tmp_path / "s.sock"), Recorder, **kwargs)


def client_for(listener: Any) -> socket.socket:
    family = listener.sock.family
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(listener.address)
    return sock


@pytest.mark.parametrize("err", REFUSALS, ids=errno.errorcode.get)
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_a_refused_accepted_connection_leaves_the_table_and_frees_its_slot(
    reactor: Reactor, selector: RefusingSelector, recorded: list[tuple[str, Any]],
    tmp_path: Path, caplog: pytest.LogCaptureFixture, family: str, err: int,
) -> None:
    listener = listen(reactor, family, tmp_path, max_connections=2)
    selector.refusals = [err]
    first = client_for(listener)
    selector.set_ready(listener.sock, 1)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.run_once(0)
    assert selector.refused == 1
    assert len(reactor.connections) == 0, reactor.connections.format()
    assert listener.active == 0
    assert recorded == []  # never made, so never lost
    assert closed_by_server(first)
    assert reactor.connections.statistics().closed_total == 1
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in message and os.strerror(err) in message, message
    if err == errno.ENOSPC:
        assert "max_user_watches" in message

    # the cap is exact afterwards: two are served, the third waits in the backlog
    clients = [client_for(listener) for _ in range(3)]
    selector.set_ready(listener.sock, 1)
    spin(reactor, lambda: len(recorded) == 2)
    reactor.run_once(0)
    assert listener.active == 2 and len(reactor.connections) == 2
    assert not listener.accepting
    made = [t for event, t in recorded if event == "made"]
    made[0].abort()
    spin(reactor, lambda: listener.accepting)
    selector.set_ready(listener.sock, 1)
    spin(reactor, lambda: len([e for e, _ in recorded if e == "made"]) == 3)
    assert listener.active == 2 and len(reactor.connections) == 2
    assert [e for e, _ in recorded] == ["made", "made", "lost", "made"]
    for sock in [first, *clients]:
        sock.close()


def test_a_refusal_after_connection_made_loses_the_connection_once(
    reactor: Reactor, selector: RefusingSelector, recorded: list[tuple[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = reactor.listen_tcp("127.0.0.1", 0, Recorder, max_connections=1)
    client = client_for(listener)
    selector.set_ready(listener.sock, 1)
    spin(reactor, lambda: len(recorded) == 1)
    transport = recorded[0][1]
    transport.pause_reading()  # unregistered now
    selector.refusals = [errno.ENOSPC]
    with caplog.at_level(logging.ERROR, logger="reactor"):
        transport.resume_reading()  # registers again: refused
        assert transport.is_closing()
        spin(reactor, lambda: len(recorded) == 2)
    for _ in range(3):
        reactor.run_once(0)
    assert [e for e, _ in recorded] == ["made", "lost"]
    lost = recorded[1][1]
    assert isinstance(lost, OSError) and lost.errno == errno.ENOSPC
    assert transport.state is ConnState.CLOSED
    assert len(reactor.connections) == 0 and listener.active == 0 and listener.accepting
    assert transport.get_extra_info("socket") is None
    assert closed_by_server(client)
    assert any("refused" in r.getMessage() for r in caplog.records)
    client.close()


@pytest.mark.parametrize("err", REFUSALS, ids=errno.errorcode.get)
def test_a_refused_outgoing_connection_fails_its_future(
    reactor: Reactor, selector: RefusingSelector, recorded: list[tuple[str, Any]],
    caplog: pytest.LogCaptureFixture, err: int,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        future = reactor.connect_tcp("127.0.0.1", port, Recorder)
        (connecting,) = [k for k in selector.get_map().values() if isinstance(k.data, _Connector)]
        assert len(reactor.connections) == 1
        peer, _ = server.accept()  # the connect completed in the kernel
        peer.settimeout(TIMEOUT)
        selector.kinds = (StreamTransport,)  # refuse the hand-over to the transport
        selector.refusals = [err]
        selector.set_ready(connecting.fileobj, 2)
        with caplog.at_level(logging.ERROR, logger="reactor"):
            spin(reactor, future.done)
        exc = future.exception()
        assert isinstance(exc, OSError) and exc.errno == err, exc
        assert str(port) in str(exc)
        assert selector.refused == 1
        assert len(reactor.connections) == 0
        assert recorded == []
        assert connecting.fileobj.fileno() == -1  # the socket is closed
        assert closed_by_server(peer)
        assert any(os.strerror(err) in r.getMessage() for r in caplog.records)
        peer.close()


def test_an_outgoing_socket_refused_at_once_fails_the_future_and_leaks_nothing(
    reactor: Reactor, selector: RefusingSelector, recorded: list[tuple[str, Any]],
) -> None:
    proc = psutil.Process()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        before = proc.num_fds()
        selector.refusals = [errno.ENOMEM]
        future = reactor.connect_tcp("127.0.0.1", port, Recorder)
        assert future.done()
        exc = future.exception()
        assert isinstance(exc, OSError) and exc.errno == errno.ENOMEM, exc
        assert len(reactor.connections) == 0
        assert proc.num_fds() == before
        assert recorded == []


@pytest.mark.parametrize("err", REFUSALS, ids=errno.errorcode.get)
@pytest.mark.parametrize("family", ["udp", "unix"])
def test_a_refused_datagram_endpoint_raises_and_leaks_nothing(
    reactor: Reactor, selector: RefusingSelector, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, family: str, err: int,
) -> None:
    events: list[str] = []

    class Datagrams(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            events.append("made")

        def connection_lost(self, exc: Exception | None) -> None:
            events.append("lost")

    proc = psutil.Process()
    before = proc.num_fds()
    path = tmp_path / "d.sock"
    selector.refusals = [err]
    with caplog.at_level(logging.ERROR, logger="reactor"), \
            pytest.raises(OSError, match="selector") as raised:
        if family == "udp":
            reactor.listen_udp("127.0.0.1", 0, Datagrams)
        else:
            reactor.listen_unix_datagram(str(path), Datagrams)
    assert raised.value.errno == err
    assert len(reactor.connections) == 0
    assert reactor.connections.statistics().closed_total == 1
    assert proc.num_fds() == before
    assert not path.exists()  # the bound path is removed again
    for _ in range(3):
        reactor.run_once(0)
    assert events == []
    assert any(os.strerror(err) in r.getMessage() for r in caplog.records)


# -- the listening socket itself --------------------------------------------------------


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_a_refused_listener_raises_and_leaks_nothing(
    reactor: Reactor, selector: RefusingSelector, tmp_path: Path, family: str,
) -> None:
    proc = psutil.Process()
    before = proc.num_fds()
    selector.kinds = (Listener,)
    selector.refusals = [errno.ENOSPC]
    with pytest.raises(OSError, match="cannot register the listener") as raised:
        listen(reactor, family, tmp_path)
    assert raised.value.errno == errno.ENOSPC
    assert reactor.listeners == []
    assert proc.num_fds() == before
    assert not (tmp_path / "s.sock").exists()


def test_a_listener_refused_when_it_resumes_retries_until_accepted(
    reactor: Reactor, selector: RefusingSelector, recorded: list[tuple[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = reactor.listen_tcp("127.0.0.1", 0, Recorder, max_connections=1)
    listener.accept_retry_delay = 0.01
    first = client_for(listener)
    selector.set_ready(listener.sock, 1)
    spin(reactor, lambda: len(recorded) == 1)
    assert not listener.accepting  # at the cap
    selector.kinds = (Listener,)
    selector.refusals = [errno.ENOMEM, errno.ENOMEM]  # twice: one log line for both
    with caplog.at_level(logging.ERROR, logger="reactor"):
        recorded[0][1].abort()  # frees the slot: the listener re-registers, refused
        reactor.run_until(lambda: selector.refused == 2 and listener.accepting,
                          timeout=TIMEOUT)
    refusals = [r for r in caplog.records if "refused the listening socket" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    second = client_for(listener)
    selector.set_ready(listener.sock, 1)
    spin(reactor, lambda: len(recorded) == 3)
    assert [e for e, _ in recorded] == ["made", "lost", "made"]
    first.close()
    second.close()


def test_a_datagram_endpoint_refused_write_interest_is_lost_once(
    reactor: Reactor, selector: RefusingSelector, caplog: pytest.LogCaptureFixture,
) -> None:
    """A send that must wait (the peer's queue is full) needs write interest; refused,
    the endpoint closes with the error, and its queued datagram is counted as
    discarded."""
    events: list[Any] = []

    class Datagrams(asyncio.DatagramProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            events.append(exc)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    with theirs:
        while True:  # fill the peer's receive queue: sends now wait
            try:
                ours.send(b"f" * 1024)
            except BlockingIOError:
                break
        endpoint = reactor.listen_unix_datagram(None, Datagrams, sock=ours)
        selector.refusals = [errno.ENOSPC]
        with caplog.at_level(logging.ERROR, logger="reactor"):
            endpoint.sendto(b"queued")
        assert selector.refused == 1 and endpoint.is_closing()
        spin(reactor, lambda: bool(events))
        for _ in range(3):
            reactor.run_once(0)
    assert len(events) == 1 and isinstance(events[0], OSError)
    assert events[0].errno == errno.ENOSPC
    assert endpoint.discarded == len(b"queued")
    assert reactor.statistics().discarded == len(b"queued")
    assert len(reactor.connections) == 0 and ours.fileno() == -1
    assert any("refused the endpoint" in r.getMessage() for r in caplog.records)
