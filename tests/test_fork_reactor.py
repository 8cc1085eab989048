"""Scenario 21: a forked child that closes or runs its inherited reactor.

The parent must keep serving every connection: epoll's interest list is shared across
``fork()``, so a child's ``unregister`` used to stop the parent's polling, and a child
closing its listener used to unlink the parent's Unix socket path. Real sockets, a
real ``os.fork()``; the child always leaves through ``os._exit``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

import pytest
from netkit import WAIT

from reactor import Reactor
from reactor.io.fork import _live_reactors

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def wait_child(pid: int, timeout: float = WAIT) -> int:
    """The child's exit status, waiting at most ``timeout`` seconds (then kill it)."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"child {pid} did not exit within {timeout} s")
            if pidfd is not None:
                select.select([pidfd], [], [], left)  # readable when the child exits
            else:  # pragma: no cover - no pidfd_open: poll the status
                select.select([], [], [], min(left, 0.01))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def in_child(body: Callable[[], None]) -> int:
    """Fork; run ``body`` in the child and exit 0 (1 on any exception); return the pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, whose coverage is not kept
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def echo(reactor: Reactor, client: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and run the reactor until it comes back (at most WAIT s)."""
    client.sendall(payload)
    client.setblocking(False)
    got = bytearray()

    def arrived() -> bool:
        try:
            got.extend(client.recv(1 << 16))
        except BlockingIOError:
            pass
        return len(got) >= len(payload)

    try:
        reactor.run_until(arrived, WAIT)
    finally:
        client.setblocking(True)
    return bytes(got)


def connect_tcp(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def connect_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(path)
    return sock


def child_closes(r: Reactor) -> None:
    r.close()


def child_runs(r: Reactor) -> None:
    for _ in range(5):
        r.run_once(0)
    r.call_soon_threadsafe(lambda: None)  # its own wake-up channel, not the parent's
    r.run_once(0)
    r.close()


def child_closes_after_fork(r: Reactor) -> None:
    r.close_after_fork()


def child_forks_again(r: Reactor) -> None:
    """A grandchild closes its copy first; then the child runs and closes its own."""
    grandchild = in_child(r.close)
    if wait_child(grandchild) != 0:
        raise AssertionError("the grandchild failed")
    child_runs(r)


@pytest.mark.parametrize(
    "child", [child_closes, child_runs, child_closes_after_fork, child_forks_again],
    ids=["closes", "runs", "close_after_fork", "forks_again"])
def test_a_child_with_the_inherited_reactor_leaves_the_parent_serving(
    reactor: Reactor, sockdir: str, child: Callable[[Reactor], None]
) -> None:
    path = os.path.join(sockdir, "echo.sock")
    tcp = reactor.listen_tcp("127.0.0.1", 0, Echo)
    reactor.listen_unix(path, Echo)
    # connections open before the fork, each served once
    old_tcp, old_unix = connect_tcp(tcp.port), connect_unix(path)
    try:
        assert echo(reactor, old_tcp, b"before tcp") == b"before tcp"
        assert echo(reactor, old_unix, b"before unix") == b"before unix"
        inode = os.stat(path).st_ino

        pid = in_child(lambda: child(reactor))
        assert wait_child(pid) == 0, "the child failed (its traceback is on stderr)"

        assert os.path.exists(path), "the child removed the parent's Unix socket path"
        assert os.stat(path).st_ino == inode
        assert echo(reactor, old_tcp, b"after tcp") == b"after tcp"
        assert echo(reactor, old_unix, b"after unix") == b"after unix"
        with connect_tcp(tcp.port) as new_tcp, connect_unix(path) as new_unix:
            assert echo(reactor, new_tcp, b"new tcp") == b"new tcp"
            assert echo(reactor, new_unix, b"new unix") == b"new unix"
        # a thread's wake-up still reaches the parent (the child drained nothing)
        woken: list[bool] = []
        reactor.call_soon_threadsafe(woken.append, True)
        reactor.run_until(lambda: bool(woken), WAIT)
    finally:
        old_tcp.close()
        old_unix.close()
    reactor.close()
    assert not os.path.exists(path), "the parent, which bound it, removes the path"


def test_the_child_gets_a_selector_and_a_waker_of_its_own(sockdir: str) -> None:
    r = Reactor(selector=selectors.EpollSelector())
    try:
        r.listen_unix(os.path.join(sockdir, "s.sock"), Echo)
        parent_selector, parent_waker = r.selector, r._waker
        registered = len(r.selector.get_map())
        read_end, write_end = os.pipe()

        def body() -> None:
            os.close(read_end)
            fd = r.selector.fileno()  # type: ignore[attr-defined]  # builds it
            answers = [
                r.selector is not parent_selector,  # objects keep their identity in a child
                type(r.selector) is selectors.EpollSelector,
                r._waker is not parent_waker and parent_waker.rsock.fileno() == -1,
                len(r.selector.get_map()) == registered,  # the listener and the new waker
                r._epoll is not None and r._epoll.fileno() == fd,  # the fast path follows
            ]
            os.write(write_end, " ".join(map(str, answers)).encode())
            r.close()

        pid = in_child(body)
        os.close(write_end)
        assert wait_child(pid) == 0
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read().decode().split() == ["True"] * 5
    finally:
        r.close()


def test_the_fork_hook_keeps_no_reactor_alive() -> None:
    r = Reactor()
    assert r in _live_reactors
    r.close()
    assert r not in _live_reactors
    unclosed = Reactor()
    count = len(_live_reactors)
    del unclosed
    gc.collect()
    assert len(_live_reactors) == count - 1


def test_a_child_that_only_drops_the_reactor_builds_no_selector() -> None:
    r = Reactor(selector=selectors.EpollSelector())
    try:
        r.listen_tcp("127.0.0.1", 0, Echo)
        read_end, write_end = os.pipe()

        def body() -> None:
            os.close(read_end)
            before = type(r._selector).__name__
            backend = r.statistics().backend
            r.close_after_fork()
            after = type(r._selector).__name__
            os.write(write_end, f"{before} {backend} {after}".encode())

        pid = in_child(body)
        os.close(write_end)
        assert wait_child(pid) == 0
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read().decode().split() == [
                "_AfterForkSelector", "EpollSelector", "_AfterForkSelector"]
        assert type(r._selector) is selectors.EpollSelector  # the parent's is untouched
    finally:
        r.close()


def test_signals_wake_the_childs_reactor_through_its_own_waker() -> None:
    r = Reactor()
    try:
        parent_got: list[int] = []
        r.add_signal_handler(signal.SIGUSR1, parent_got.append, 1)
        parent_wsock = r._waker.wsock.fileno()
        read_end, write_end = os.pipe()

        def body() -> None:
            os.close(read_end)
            current = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(current, warn_on_full_buffer=False)
            os.kill(os.getpid(), signal.SIGUSR1)
            r.run_until(lambda: bool(parent_got), WAIT)  # the child's copy of the list
            own = current == r._waker.wsock.fileno() != parent_wsock
            os.write(write_end, f"{own} {parent_got}".encode())
            r.close()

        pid = in_child(body)
        os.close(write_end)
        assert wait_child(pid) == 0
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read().decode() == "True [1]"
        # the parent's wake-up descriptor and handler are its own still
        current = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(current, warn_on_full_buffer=False)
        assert current == parent_wsock
        os.kill(os.getpid(), signal.SIGUSR1)
        r.run_until(lambda: bool(parent_got), WAIT)
    finally:
        r.close()
