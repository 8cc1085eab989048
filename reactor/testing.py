"""Test helpers shipped with the package, so users test their code without sockets.

* :class:`FakeSelector` -- a :class:`selectors.BaseSelector` whose readiness the test
  sets by hand; ``select`` never blocks and records the timeouts it was asked for.
* :class:`~reactor.sansio.clock.FakeClock` -- re-exported: time moves only when told to.
* :class:`FakeTransport` -- an in-memory :class:`asyncio.Transport`: records writes,
  honours water marks, close/abort/write_eof and pause/resume reading, and calls
  ``connection_lost`` exactly once.
* :class:`ProtocolPair` -- two protocols connected in memory; ``pump()`` moves bytes,
  EOFs and closes between them (a sans-I/O stand-in for a loopback connection).

Socket-free apart from :mod:`selectors` (for :class:`FakeSelector`); :mod:`asyncio`
is imported for the transport and protocol interfaces only.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from .sansio.clock import FakeClock
from .sansio.errors import ClosedError, LocalProtocolError

__all__ = ["FakeClock", "FakeSelector", "FakeTransport", "ProtocolPair"]


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[Any, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[fileobj]

    def __iter__(self) -> Any:
        return iter(self._keys)


class FakeSelector(selectors.BaseSelector):
    """A selector driven by the test.

    ``set_ready(fileobj, events)`` marks a registered object ready; the next ``select``
    reports it (masked by what it is registered for) and forgets it. Every timeout
    passed to ``select`` is appended to :attr:`timeouts`; an optional ``clock`` (a
    :class:`FakeClock`) is advanced by the timeout when nothing is ready, as if the
    call had blocked that long.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self._ready: dict[Any, int] = {}
        self.timeouts: list[float | None] = []
        self.clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        if fileobj in self._keys:
            raise KeyError(f"{fileobj!r} is already registered")
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        self._ready.pop(fileobj, None)
        return self._keys.pop(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        ready = []
        for fileobj, events in list(self._ready.items()):
            key = self._keys.get(fileobj)
            if key is not None and events & key.events:
                ready.append((key, events & key.events))
        self._ready.clear()
        if not ready and self.clock is not None and timeout is not None:
            self.clock.advance(timeout)
        return ready

    def set_ready(self, fileobj: Any, events: int) -> None:
        """Report ``fileobj`` ready for ``events`` on the next ``select``."""
        self._ready[fileobj] = self._ready.get(fileobj, 0) | events

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _KeyMap(self._keys)

    def close(self) -> None:
        self._keys.clear()
        self._ready.clear()


# -- in-memory transports ---------------------------------------------------------------
#
# Theory of operation
# -------------------
# A FakeTransport stands for one end of a stream connection. What the protocol writes
# goes to ``buffer`` (the bytes "in flight"); the test, or a ProtocolPair, plays the
# peer: ``take()`` reads from ``buffer``, ``feed()``/``feed_eof()`` deliver input, and
# ``lose()`` breaks the connection. The water marks, pause/resume_writing and the
# close-after-flush rule behave as on a real transport, so flow control and slow
# readers can be tested without sockets.
#
# Like a real transport, the fake never calls a protocol callback from inside another
# one: connection_lost (and input queued while reading was paused) waits until the
# outermost callback returns. connection_lost is called exactly once. Unlike a real
# transport, an exception raised by a protocol callback propagates to the test.

_DEFAULT_PEER: Final = ("127.0.0.1", 50000)
_DEFAULT_LOCAL: Final = ("127.0.0.1", 8000)


class FakeTransport(asyncio.Transport):
    """An in-memory :class:`asyncio.Transport` for testing protocols without sockets.

    Args:
        protocol: when given, attached at once (its ``connection_made`` is called).
        peername, sockname: what ``get_extra_info`` reports.
        extra: more ``get_extra_info`` entries.
        high_water, low_water: the write buffer's water marks (as on the reactor).

    Attributes:
        buffer: bytes written by the protocol and not yet taken by the peer.
        bytes_written: every byte the protocol ever wrote.
        eof_written: the protocol called ``write_eof``.
        eof_fed: ``feed_eof`` was called.
        aborted: the protocol called ``abort``.
        lost_exc: the exception passed to ``connection_lost`` (once :attr:`lost`).
        dropped_writes: writes ignored because the connection was closing.
    """

    def __init__(
        self,
        protocol: asyncio.BaseProtocol | None = None,
        *,
        peername: Any = _DEFAULT_PEER,
        sockname: Any = _DEFAULT_LOCAL,
        extra: Mapping[str, Any] | None = None,
        high_water: int = 64 * 1024,
        low_water: int | None = None,
    ) -> None:
        info: dict[str, Any] = {"peername": peername, "sockname": sockname}
        if extra:
            info.update(extra)
        super().__init__(info)
        self._protocol: asyncio.BaseProtocol | None = None
        self.buffer = bytearray()
        self.bytes_written = 0
        self.eof_written = False
        self.eof_fed = False
        self.aborted = False
        self.lost_exc: BaseException | None = None
        self.dropped_writes = 0
        self._lost = False
        self._closing = False
        self._reading = True
        self._write_paused = False
        self._incoming: list[bytes | None] = []  # None marks EOF
        self._depth = 0
        self._deferred: list[Callable[[], None]] = []
        self._high = self._low = 0
        self.set_write_buffer_limits(high_water, low_water)
        if protocol is not None:
            self.attach(protocol)

    # -- driving the protocol (the test's side) -----------------------------------------

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Attach ``protocol`` and call its ``connection_made``."""
        self._protocol = protocol
        self._call(protocol.connection_made, self)

    def feed(self, data: bytes) -> None:
        """Deliver ``data`` from the peer (queued while reading is paused).

        Raises:
            ClosedError: the connection is lost or the peer already sent EOF.
        """
        if self._lost or self.eof_fed:
            raise ClosedError("cannot feed a transport whose connection is lost or at EOF")
        if not data:
            return
        if self._reading and not self._incoming:
            self._deliver(data)
        else:
            self._incoming.append(bytes(data))

    def feed_eof(self) -> None:
        """The peer finished sending: call ``eof_received``; close unless it returns true."""
        if self._lost or self.eof_fed:
            return
        self.eof_fed = True
        if self._reading and not self._incoming:
            self._deliver(None)
        else:
            self._incoming.append(None)

    def take(self, size: int | None = None) -> bytes:
        """Read up to ``size`` bytes (all when None) of what the protocol wrote."""
        buffer = self.buffer
        if size is None or size >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        if self._write_paused and len(buffer) <= self._low:
            self._write_paused = False
            if self._protocol is not None and not self._lost:
                self._call(self._protocol.resume_writing)
        if not buffer and self._closing:
            self._finish(None)
        return data

    def lose(self, exc: BaseException | None = None) -> None:
        """Break the connection (e.g. a reset): drop the buffer, call ``connection_lost``."""
        self.buffer.clear()
        self._closing = True
        self._finish(exc)

    @property
    def lost(self) -> bool:
        """True once ``connection_lost`` was called."""
        return self._lost

    @property
    def protocol(self) -> asyncio.BaseProtocol | None:
        return self._protocol

    def _deliver(self, data: bytes | None) -> None:
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        if data is not None:
            self._call(protocol.data_received, data)  # type: ignore[attr-defined]
            return
        keep_open = self._call(protocol.eof_received)  # type: ignore[attr-defined]
        if not keep_open:
            self.close()

    def _call(self, callback: Callable[..., Any], *args: Any) -> Any:
        self._depth += 1
        try:
            return callback(*args)
        finally:
            self._depth -= 1
            if not self._depth:
                while self._deferred:
                    self._deferred.pop(0)()

    def _later(self, action: Callable[[], None]) -> None:
        if self._depth:
            self._deferred.append(action)
        else:
            action()

    def _finish(self, exc: BaseException | None) -> None:
        def finish() -> None:
            if self._lost:
                return
            self._lost = True
            self.lost_exc = exc
            self._incoming.clear()
            protocol = self._protocol
            if protocol is not None:
                self._call(protocol.connection_lost, exc)
        self._later(finish)

    def _drain_incoming(self) -> None:
        while self._incoming and self._reading and not self._lost:
            self._deliver(self._incoming.pop(0))

    # -- asyncio.Transport (the protocol's side) ----------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self.eof_written and not self._lost:
            raise RuntimeError("cannot write() after write_eof()")
        if self._closing or self._lost:
            self.dropped_writes += 1
            return
        self.buffer += data
        self.bytes_written += len(data)
        if not self._write_paused and len(self.buffer) > self._high:
            self._write_paused = True
            if self._protocol is not None:
                self._call(self._protocol.pause_writing)

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._lost:
            return
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        if not self.buffer:
            self._finish(None)

    def abort(self) -> None:
        if self._lost:
            return
        self.aborted = True
        self.lose(None)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self._incoming:
            self._later(self._drain_incoming)

    def is_reading(self) -> bool:
        return self._reading and not self._closing and not self._lost

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        if self._protocol is None:
            raise LocalProtocolError("no protocol is attached")
        return self._protocol

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<FakeTransport {state} buffered={len(self.buffer)}>"


class ProtocolPair:
    """Two protocols connected in memory, like a client and a server over loopback.

    Each side gets a :class:`FakeTransport`; :meth:`pump` moves bytes, EOFs and closes
    between them until nothing is left to move. A side that pauses reading stops
    receiving, so the other side's write buffer grows as with a real slow reader.

    Args:
        client: the client's protocol (attached second, as when a connect completes
            after the server accepted).
        server: the server's protocol (attached first).
        client_address, server_address: the addresses each side reports.
        high_water: the write buffers' high-water mark.

    Example::

        pair = ProtocolPair(MyClient(), EchoHandler())
        pair.client_transport.write(b"hi")
        pair.pump()
    """

    def __init__(
        self,
        client: asyncio.BaseProtocol,
        server: asyncio.BaseProtocol,
        *,
        client_address: Any = _DEFAULT_PEER,
        server_address: Any = _DEFAULT_LOCAL,
        high_water: int = 64 * 1024,
    ) -> None:
        self.client = client
        self.server = server
        self.server_transport = FakeTransport(
            peername=client_address, sockname=server_address, high_water=high_water)
        self.client_transport = FakeTransport(
            peername=server_address, sockname=client_address, high_water=high_water)
        self.server_transport.attach(server)
        self.client_transport.attach(client)

    def pump(self, *, chunk_size: int | None = None, max_rounds: int = 100_000) -> bool:
        """Move data both ways until neither side has anything the other will take.

        Args:
            chunk_size: deliver at most this many bytes per ``data_received`` call
                (e.g. 1 to deliver byte by byte); None delivers all that is queued.
            max_rounds: give up after this many rounds (two protocols answering each
                other forever).

        Returns:
            True if anything moved.

        Raises:
            RuntimeError: still moving after ``max_rounds``.
        """
        moved_any = False
        for _ in range(max_rounds):
            moved = self._move(self.client_transport, self.server_transport, chunk_size)
            moved = self._move(self.server_transport, self.client_transport, chunk_size) or moved
            if not moved:
                return moved_any
            moved_any = True
        raise RuntimeError(f"ProtocolPair.pump: still moving after {max_rounds} rounds")

    @staticmethod
    def _move(src: FakeTransport, dst: FakeTransport, chunk_size: int | None) -> bool:
        if dst.lost:  # writing to a closed peer resets the connection, as TCP does
            if src.buffer and not src.lost:
                src.lose(ConnectionResetError("the peer closed the connection"))
                return True
            return False
        if src.aborted or (src.lost and src.lost_exc is not None):
            dst.lose(ConnectionResetError("connection reset by the peer"))
            return True
        if src.buffer:
            if dst.eof_fed or not dst._reading:
                return False
            dst.feed(src.take(chunk_size))
            return True
        if (src.eof_written or src.lost) and not dst.eof_fed and dst._reading:
            dst.feed_eof()
            return True
        return False
