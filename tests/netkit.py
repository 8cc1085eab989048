"""Helpers for the socket tests of the reactor core (not a test module).

* :class:`Recorder` -- an :class:`asyncio.Protocol` that records every callback, notices
  a callback made from inside another one, and runs optional hooks.
* :class:`Peer` -- the far end of a connection: a raw non-blocking socket whose reads
  are driven by the reactor under test (it registers itself with the reactor's
  selector), so ``reactor.run_until(lambda: peer.received == ...)`` wakes up when bytes
  arrive, with no sleeps and no polling interval.
* :class:`Net` -- makes listeners, peers and socketpair transports, and closes them all.
* :class:`EchoClients` -- many plain clients of a server in another process, watched
  with their own selector (no reactor involved).
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from reactor import Reactor, StreamTransport
from reactor.io.listeners import Listener

WAIT = 10.0  # generous: the machine is shared and may be loaded


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


requires_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="IPv6 loopback unavailable")


class Recorder(asyncio.Protocol):
    """Records callbacks; hooks ``on_made``, ``on_data``, ``on_eof``, ``on_lost``."""

    def __init__(
        self,
        on_made: Callable[[Recorder], object] | None = None,
        on_data: Callable[[Recorder, bytes], object] | None = None,
        on_eof: Callable[[Recorder], bool | None] | None = None,
        on_lost: Callable[[Recorder, BaseException | None], object] | None = None,
    ) -> None:
        self.on_made, self.on_data, self.on_eof, self.on_lost = on_made, on_data, on_eof, on_lost
        self.transport: Any = None
        self.events: list[str] = []
        self.data = bytearray()
        self.lost: list[BaseException | None] = []
        self.pause_sizes: list[int] = []
        self.resume_sizes: list[int] = []
        self.current: str | None = None  # the callback running now
        self.reentered: list[tuple[str, str]] = []  # (outer, inner) callback pairs

    def _enter(self, name: str) -> str | None:
        outer = self.current
        if outer is not None:
            self.reentered.append((outer, name))
        self.current = name
        self.events.append(name)
        return outer

    def connection_made(self, transport: Any) -> None:
        outer = self._enter("connection_made")
        self.transport = transport
        try:
            if self.on_made is not None:
                self.on_made(self)
        finally:
            self.current = outer

    def data_received(self, data: bytes) -> None:
        outer = self._enter("data_received")
        self.data += data
        try:
            if self.on_data is not None:
                self.on_data(self, data)
        finally:
            self.current = outer

    def eof_received(self) -> bool | None:
        outer = self._enter("eof_received")
        try:
            return self.on_eof(self) if self.on_eof is not None else None
        finally:
            self.current = outer

    def connection_lost(self, exc: BaseException | None) -> None:
        outer = self._enter("connection_lost")
        self.lost.append(exc)
        try:
            if self.on_lost is not None:
                self.on_lost(self, exc)
        finally:
            self.current = outer

    def pause_writing(self) -> None:
        self.pause_sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.resume_sizes.append(self.transport.get_write_buffer_size())

    @property
    def closed(self) -> bool:
        return bool(self.lost)


class Peer:
    """The far end of a connection, driven by the reactor's selector.

    While ``reading``, whatever arrives is appended to ``received``; :meth:`write`
    queues bytes the kernel does not take at once and sends them as it can.
    """

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.reactor = reactor
        self.sock = sock
        self.received = bytearray()
        self.outgoing = bytearray()
        self.eof = False
        self.error: OSError | None = None
        self.reading = False
        self.closed = False
        self._mask = 0
        self.start_reading()

    def _update(self) -> None:
        mask = (selectors.EVENT_READ if self.reading else 0) | (
            selectors.EVENT_WRITE if self.outgoing else 0)
        if self.closed:
            mask = 0
        selector = self.reactor.selector
        if mask == self._mask:
            return
        if self._mask == 0:
            selector.register(self.sock, mask, self)
        elif mask == 0:
            try:
                selector.unregister(self.sock)
            except (KeyError, ValueError, RuntimeError):
                pass
        else:
            selector.modify(self.sock, mask, self)
        self._mask = mask

    # the selector calls these
    def _read_ready(self) -> None:
        while self.reading:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error = exc
                self.stop_reading()
                return
            if not chunk:
                self.eof = True
                self.stop_reading()
                return
            self.received += chunk

    def _write_ready(self) -> None:
        while self.outgoing:
            try:
                sent = self.sock.send(self.outgoing)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error = exc
                self.outgoing.clear()
                break
            del self.outgoing[:sent]
        self._update()

    def start_reading(self) -> None:
        if not self.closed and not self.eof:
            self.reading = True
            self._update()

    def stop_reading(self) -> None:
        self.reading = False
        self._update()

    def write(self, data: bytes) -> None:
        """Send ``data``, queuing what the kernel does not take at once."""
        self.outgoing += data
        self._write_ready()

    @property
    def flushed(self) -> bool:
        return not self.outgoing

    def recv_some(self, size: int) -> int:
        """Read at most ``size`` bytes now (while not ``reading``); 0 when none."""
        try:
            chunk = self.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return 0
        if not chunk:
            self.eof = True
        self.received += chunk
        return len(chunk)

    def send(self, data: bytes) -> int:
        """Send what the kernel takes now; the count (0 when its buffer is full)."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def send_all(self, data: bytes) -> None:
        """Send a small message that must fit in the kernel's buffer."""
        assert self.send(data) == len(data)

    def fill(self, chunk: int = 65536) -> int:
        """Send until the kernel refuses more; the total sent."""
        total = 0
        block = b"f" * chunk
        while True:
            n = self.send(block)
            if n == 0:
                return total
            total += n

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.reading = False
            self.outgoing.clear()
            self._update()
            self.closed = True
            self.sock.close()


class Net:
    """Makes listeners, peers and socketpair transports on one reactor; closes them."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.protocols: list[Recorder] = []
        self.peers: list[Peer] = []
        self.listeners: list[Listener] = []

    def factory(self, **hooks: Any) -> Callable[[], Recorder]:
        def make() -> Recorder:
            proto = Recorder(**hooks)
            self.protocols.append(proto)
            return proto

        return make

    def wait(self, condition: Callable[[], object], timeout: float = WAIT) -> None:
        self.reactor.run_until(lambda: bool(condition()), timeout)

    def listen_tcp(self, host: str = "127.0.0.1", **kwargs: Any) -> Listener:
        hooks = {k: kwargs.pop(k) for k in ("on_made", "on_data", "on_eof", "on_lost")
                 if k in kwargs}
        listener = self.reactor.listen_tcp(host, 0, self.factory(**hooks), **kwargs)
        self.listeners.append(listener)
        return listener

    def listen_unix(self, path: str, **kwargs: Any) -> Listener:
        hooks = {k: kwargs.pop(k) for k in ("on_made", "on_data", "on_eof", "on_lost")
                 if k in kwargs}
        listener = self.reactor.listen_unix(path, self.factory(**hooks), **kwargs)
        self.listeners.append(listener)
        return listener

    def connect(self, address: Any, family: int | None = None) -> Peer:
        """A blocking connect (the kernel completes it from the backlog), then a Peer."""
        if family is None:
            family = socket.AF_UNIX if isinstance(address, str) else (
                socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return self.adopt(sock)

    def adopt(self, sock: socket.socket) -> Peer:
        peer = Peer(self.reactor, sock)
        self.peers.append(peer)
        return peer

    def accept(self, listener: Listener, address: Any = None) -> tuple[Peer, Recorder]:
        """Connect to ``listener`` and run the reactor until its protocol exists."""
        n = len(self.protocols)
        peer = self.connect(address if address is not None else listener.address)
        self.wait(lambda: len(self.protocols) > n)
        return peer, self.protocols[n]

    def pair(self, **kwargs: Any) -> tuple[Peer, StreamTransport, Recorder]:
        """A StreamTransport over one end of a socketpair; the other end is a Peer."""
        hooks = {k: kwargs.pop(k) for k in ("on_made", "on_data", "on_eof", "on_lost")
                 if k in kwargs}
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        transport = StreamTransport(self.reactor, ours, "socketpair", **kwargs)
        proto = self.factory(**hooks)()
        transport.attach(proto)
        return self.adopt(theirs), transport, proto

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        for listener in self.listeners:
            listener.close()


def events_of(reactor: Reactor, sock: Any) -> int:
    """The events ``sock`` is registered for in the reactor's selector (0: none)."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    try:
        return reactor.selector.get_map()[fd].events
    except KeyError:
        return 0


class EchoClients:
    """Blocking-free clients of the child's echo server, watched with a selector."""

    def __init__(self, port: int, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.got: dict[int, bytes] = {}
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            s.setblocking(False)
            self.socks.append(s)
            self.got[i] = b""
            self.selector.register(s, selectors.EVENT_READ, i)

    def send(self, i: int, data: bytes) -> None:
        assert self.socks[i].send(data) == len(data)

    def pump(self, until: Callable[[], bool], timeout: float) -> None:
        """Collect replies until ``until()`` or ``timeout`` (then return quietly)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.selector.select(min(left, 0.2)):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(key.fileobj)
                else:
                    self.got[key.data] += data

    def served(self, marker: bytes) -> set[int]:
        return {i for i, data in self.got.items() if marker in data}

    def close(self, i: int) -> None:
        try:
            self.selector.unregister(self.socks[i])
        except (KeyError, ValueError):  # unregistered at EOF, or closed already
            pass
        self.socks[i].close()

    def close_all(self) -> None:
        for i in range(len(self.socks)):
            self.close(i)
        self.selector.close()
