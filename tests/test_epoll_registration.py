"""Transports register straight with an epoll selector's epoll object and key map (the
fast path of :class:`reactor.io.dispatch.EpollPath`), and a connection whose descriptor
the reactor alone holds is closed without ``epoll_ctl(DEL)``: the close takes it off
the interest list.

What must hold: the selector's map says what the kernel was told (the same
``SelectorKey`` the selector's own ``register`` would store, and the same epoll bits,
read back from ``/proc/self/fdinfo``); the DEL is left out only for a descriptor no
one else can hold (not one handed out by ``get_extra_info("socket")``, not one a
facade gave, not after a fork); a refused registration closes the connection as on
the generic path. Real sockets on loopback, a real fork.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netkit import WAIT, Net, Recorder

from reactor import Reactor
from reactor.io.dispatch import EpollPath
from reactor.io.stream import StreamTransport
from reactor.sansio.connection import ConnState

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="needs epoll")


class EpollSpy:
    """Stands in for the path's ``select.epoll``: records the transports' direct calls,
    passes them on, and refuses the next ``register``/``modify`` when told to."""

    def __init__(self, epoll: Any) -> None:
        self.epoll = epoll
        self.calls: list[tuple[str, int]] = []
        self.refuse: int | None = None  # an errno for the next register or modify

    def _call(self, name: str, fd: int, *args: Any) -> Any:
        self.calls.append((name, fd))
        if self.refuse is not None and name != "unregister":
            err, self.refuse = self.refuse, None
            raise OSError(err, os.strerror(err))
        return getattr(self.epoll, name)(fd, *args)

    def register(self, fd: int, mask: int) -> None:
        self._call("register", fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._call("modify", fd, mask)

    def unregister(self, fd: int) -> None:
        self._call("unregister", fd)

    def poll(self, *args: Any) -> Any:
        return self.epoll.poll(*args)

    def fileno(self) -> int:
        return int(self.epoll.fileno())

    def of(self, fd: int) -> list[str]:
        return [name for name, f in self.calls if f == fd]


@pytest.fixture
def epoll_reactor() -> Iterator[tuple[Reactor, EpollSpy, Net]]:
    reactor = Reactor(selectors.EpollSelector())
    path = reactor.epoll_path
    assert isinstance(path, EpollPath)
    spy = EpollSpy(path.epoll)
    # the selector's own calls go through the spy too (listeners, connectors, and
    # transports wherever they use the selector's API)
    path.epoll = reactor.selector._selector = spy  # type: ignore[attr-defined]
    net = Net(reactor)
    try:
        yield reactor, spy, net
    finally:
        net.close()
        path.epoll = reactor.selector._selector = spy.epoll  # type: ignore[attr-defined]
        reactor.close()


def kernel_events(reactor: Reactor, fd: int) -> int | None:
    """The event mask the kernel holds for ``fd`` in the reactor's epoll (None: not in
    its interest list), read from ``/proc/self/fdinfo``."""
    epfd = reactor.selector.fileno()
    for line in Path(f"/proc/self/fdinfo/{epfd}").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "tfd:" and int(fields[1]) == fd:
            # the kernel adds EPOLLERR and EPOLLHUP to every entry: the asked-for bits
            return int(fields[3], 16) & (select.EPOLLIN | select.EPOLLOUT)
    return None


def server_transport(net: Net, listener: Any) -> tuple[Any, Recorder, StreamTransport]:
    peer, proto = net.accept(listener)
    transport = proto.transport
    assert isinstance(transport, StreamTransport)
    return peer, proto, transport


def test_the_map_and_the_kernel_agree_as_the_mask_changes(
    epoll_reactor: tuple[Reactor, EpollSpy, Net],
) -> None:
    reactor, spy, net = epoll_reactor
    listener = net.listen_tcp(high_water=1 << 30)
    peer, proto, transport = server_transport(net, listener)
    sock = transport.get_extra_info("socket")
    fd = sock.fileno()
    key = reactor.selector.get_key(sock)
    assert type(key) is selectors.SelectorKey
    assert (key.fileobj, key.fd, key.events, key.data) == (sock, fd, selectors.EVENT_READ,
                                                           transport)
    assert kernel_events(reactor, fd) == select.EPOLLIN
    # a write the kernel cannot take at once adds write interest: one modify
    transport.write(b"x" * (64 << 20))
    assert reactor.selector.get_key(sock).events == selectors.EVENT_READ | selectors.EVENT_WRITE
    assert kernel_events(reactor, fd) == select.EPOLLIN | select.EPOLLOUT
    transport.pause_reading()
    assert reactor.selector.get_key(sock).events == selectors.EVENT_WRITE
    assert kernel_events(reactor, fd) == select.EPOLLOUT
    assert spy.of(fd) == ["register", "modify", "modify"]
    peer.reading = True
    net.wait(lambda: not transport.get_write_buffer_size())
    # drained and paused: nothing wanted, so the descriptor leaves the interest list
    # (it stays open: a DEL is the only way out)
    assert fd not in reactor.selector.get_map()
    assert kernel_events(reactor, fd) is None
    assert spy.of(fd)[-1] == "unregister"
    transport.resume_reading()
    assert kernel_events(reactor, fd) == select.EPOLLIN
    assert proto.lost == []


def test_a_connection_the_reactor_alone_holds_closes_without_a_del(
    epoll_reactor: tuple[Reactor, EpollSpy, Net],
) -> None:
    reactor, spy, net = epoll_reactor
    listener = net.listen_tcp()
    for ending in ("eof", "close", "abort"):
        peer, proto, transport = server_transport(net, listener)
        fd = transport._sock.fileno()
        assert spy.of(fd)[-1:] == ["register"]
        del spy.calls[:]
        if ending == "eof":
            peer.sock.shutdown(socket.SHUT_WR)  # eof_received returns None: close
        elif ending == "close":
            transport.close()
        else:
            transport.abort()
        net.wait(lambda p=proto: p.lost)  # type: ignore[misc]
        assert transport.state is ConnState.CLOSED
        assert spy.calls == [], ending  # no epoll_ctl at all: the close did it
        assert fd not in reactor.selector.get_map()
        assert kernel_events(reactor, fd) is None
        peer.close()


def test_a_socket_handed_out_is_unregistered_before_its_close(
    epoll_reactor: tuple[Reactor, EpollSpy, Net],
) -> None:
    """Whoever took the socket from ``get_extra_info`` may have duplicated it: the
    open file would outlive the close and keep its entry in the interest list."""
    reactor, spy, net = epoll_reactor
    listener = net.listen_tcp()
    peer, proto, transport = server_transport(net, listener)
    sock = transport.get_extra_info("socket")
    fd = sock.fileno()
    copy = os.dup(fd)
    try:
        transport.close()
        net.wait(lambda: proto.lost)
        assert spy.of(fd)[-1] == "unregister"
        assert kernel_events(reactor, fd) is None  # not left behind by the dup
        peer.sock.sendall(b"still readable through the copy")
        assert not [fd_ for fd_, _ in spy.epoll.poll(0) if fd_ == fd]
    finally:
        os.close(copy)


def test_a_socket_given_by_other_code_is_unregistered_before_its_close(
    epoll_reactor: tuple[Reactor, EpollSpy, Net],
) -> None:
    reactor, spy, _net = epoll_reactor
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    transport = StreamTransport(reactor, ours, "socketpair")  # the default: may be shared
    proto = Recorder()
    transport.attach(proto)
    fd = ours.fileno()
    try:
        transport.close()
        reactor.run_until(lambda: bool(proto.lost), WAIT)
        assert spy.of(fd) == ["register", "unregister"]
    finally:
        theirs.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_a_fork_every_close_unregisters_first(
    epoll_reactor: tuple[Reactor, EpollSpy, Net],
) -> None:
    """A child holds copies of the descriptors: a connection the parent closes stays
    open in the child, and without the DEL its entry would stay in the parent's
    interest list, reporting readiness for a descriptor number the parent no longer
    has (a busy loop while the child lives, wrong wake-ups once the number is reused).
    """
    reactor, spy, net = epoll_reactor
    listener = net.listen_tcp()
    peer, proto, transport = server_transport(net, listener)
    fd = transport._sock.fileno()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold every inherited descriptor until released
        try:
            os.read(release_r, 1)
        finally:
            os._exit(0)
    try:
        os.close(release_r)
        assert reactor.epoll_path is not None and not reactor.epoll_path.exclusive
        transport.close()
        net.wait(lambda: proto.lost)
        assert spy.of(fd)[-1] == "unregister"
        peer.sock.sendall(b"readable in the child's copy")
        assert kernel_events(reactor, fd) is None
        assert not [fd_ for fd_, _ in spy.epoll.poll(0) if fd_ == fd]
    finally:
        os.write(release_w, b"x")
        os.close(release_w)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("where", ["attach", "write"])
def test_a_refused_registration_closes_the_connection(
    epoll_reactor: tuple[Reactor, EpollSpy, Net], where: str,
) -> None:
    """epoll's ENOSPC on the fast path, as on the generic one: at ``attach`` the row
    leaves at once and the protocol is never called; later, the connection closes
    with the error and ``connection_lost`` follows once."""
    reactor, spy, net = epoll_reactor
    listener = net.listen_tcp(high_water=1 << 30)
    if where == "attach":
        peer = net.connect(listener.address)  # accepted once the reactor runs
        spy.refuse = errno.ENOSPC
        net.wait(lambda: spy.refuse is None)
        assert [proto.events for proto in net.protocols] == [[]]  # never called
        assert listener.active == 0
        peer.reading = True
        net.wait(lambda: peer.eof or peer.error)
        assert len(reactor.connections) == 0
        return
    peer, proto, transport = server_transport(net, listener)
    fd = transport._sock.fileno()
    spy.refuse = errno.ENOSPC
    transport.write(b"x" * (64 << 20))  # blocks: the modify for write interest fails
    net.wait(lambda: proto.lost)
    assert isinstance(proto.lost[0], OSError) and proto.lost[0].errno == errno.ENOSPC
    assert fd not in reactor.selector.get_map()
    assert listener.active == 0
