"""Protocols the fault suite's server child runs as ``reactor serve faultkit:NAME``
(``--app-dir tests/faults``). Not a test module.

Each logs what a test must see from outside through the ``faultkit`` logger (the
server's stderr): in particular every ``connection_lost`` as ``lost #N peer=... exc=...``
where N counts the calls on that protocol (it must always be 1).

* :class:`Streamer` -- line commands:

  - ``stream N``: sends N bytes as a well-behaved producer (64 KiB pieces, paused by
    ``pause_writing``, resumed by ``resume_writing``); logs ``stream started`` and
    ``stream done N pauses=P`` (P: how many times it was paused);
  - ``close N`` / ``abort N``: one write of N bytes, then ``close()`` (or ``abort()``)
    twice and the other one never -- each must act once;
  - ``later MS N``: after MS milliseconds, writes ``N`` times 64 KiB, one write every
    10 ms, whether or not the peer is still there (writes after a loss are dropped);
    logs ``later done`` after the last;
  - ``quiet MS N``: the same with reading paused first, so the server does not see
    the peer's EOF and learns that it is gone only from a failing ``send`` (EPIPE);
  - ``ping``: ``pong``.

* :class:`Faulty` -- line commands ``raise`` (data_received raises), ``raise-lost``
  (connection_lost will raise; then the server closes), ``raise-eof`` (eof_received
  will raise), ``raise-timer`` (a timer callback raises 50 ms later), anything else is
  echoed. Every exception's message names the command, so a test finds it in the log.

  :func:`flaky_factory` makes Faulty protocols and raises on every second call.

* :class:`Delayed` -- answers each line ``L`` with ``L done`` ``DELAYED_MS`` (env,
  default 100) milliseconds later, from a reactor timer; after the peer's EOF it keeps
  its write side open until every answer is sent, then closes.

* :class:`Lines` -- a plain :class:`~handlers.framers.lines.LineHandler` echo with a 1 KiB
  maximum and the default reaction to a long line (log the reason and close).

* :class:`Records` -- a :class:`~handlers.framers.records.RecordHandler` sending each record
  back reversed, 1 KiB maximum.

* :class:`Whoami` -- answers with the peer address the server sees, then closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from handlers.framers.lines import LineHandler
from handlers.framers.records import RecordHandler

logger = logging.getLogger("faultkit")

CHUNK = 64 * 1024


class _Logged(asyncio.Protocol):
    """Counts and logs ``connection_lost``; splits input into lines for ``command``."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.lost_calls = 0
        self.peer: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end]).strip()
            del self.buffer[: end + 1]
            self.command(line)

    def command(self, line: bytes) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_calls += 1
        logger.info("lost #%d peer=%r exc=%s%s", self.lost_calls, self.peer,
                    type(exc).__name__ if exc is not None else "None", self.summary())

    def summary(self) -> str:
        return ""

    @property
    def reactor(self) -> Any:
        return self.transport.get_extra_info("connection").reactor


class Streamer(_Logged):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.remaining = 0
        self.paused = False
        self.pauses = 0
        self.streamed = 0
        self.piece = b"z" * CHUNK

    def command(self, line: bytes) -> None:
        word, _, arg = line.partition(b" ")
        if word == b"stream":
            self.remaining = self.streamed = int(arg)
            logger.info("stream started %d", self.remaining)
            self._produce()
        elif word in (b"close", b"abort"):
            self.transport.write(b"c" * int(arg))
            method = self.transport.close if word == b"close" else self.transport.abort
            method()
            method()
        elif word in (b"later", b"quiet"):
            if word == b"quiet":
                self.transport.pause_reading()
            ms, _, count = arg.partition(b" ")
            self.reactor.call_later(int(ms) / 1000, self._later, int(count))
        elif word == b"ping":
            self.transport.write(b"pong\n")

    def _produce(self) -> None:
        while self.remaining and not self.paused and not self.transport.is_closing():
            size = min(CHUNK, self.remaining)
            self.remaining -= size
            self.transport.write(self.piece if size == CHUNK else self.piece[:size])
        if not self.remaining and self.streamed:
            logger.info("stream done %d pauses=%d", self.streamed, self.pauses)
            self.streamed = 0

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self._produce()

    def _later(self, count: int) -> None:
        self.transport.write(self.piece)
        if count > 1:
            self.reactor.call_later(0.01, self._later, count - 1)
        else:
            logger.info("later done")

    def summary(self) -> str:
        return f" unsent={self.remaining} pauses={self.pauses}"


class Faulty(_Logged):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.raise_on_lost = False
        self.raise_on_eof = False

    def command(self, line: bytes) -> None:
        if line == b"raise":
            raise RuntimeError("faultkit: raise in data_received")
        if line == b"raise-lost":
            self.raise_on_lost = True
            self.transport.write(b"armed\n")
            self.transport.close()
        elif line == b"raise-eof":
            self.raise_on_eof = True
            self.transport.write(b"armed\n")
        elif line == b"raise-timer":
            self.reactor.call_later(0.05, self._boom)
            self.transport.write(b"armed\n")
        else:
            self.transport.write(line + b"\n")

    def _boom(self) -> None:
        raise RuntimeError("faultkit: raise in a timer callback")

    def eof_received(self) -> bool | None:
        if self.raise_on_eof:
            raise RuntimeError("faultkit: raise in eof_received")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.raise_on_lost:
            raise RuntimeError("faultkit: raise in connection_lost")


class Delayed(_Logged):
    """See the module docstring."""

    delay = int(os.environ.get("DELAYED_MS", "100")) / 1000

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0
        self.eof = False

    def command(self, line: bytes) -> None:
        self.pending += 1
        self.reactor.call_later(self.delay, self._answer, line)

    def _answer(self, line: bytes) -> None:
        self.pending -= 1
        if self.transport.is_closing():
            return
        self.transport.write(line + b" done\n")
        if self.eof and not self.pending:
            self.transport.close()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.pending:
            self.transport.close()
        return True  # keep writing the answers still to come


class Lines(LineHandler):
    """See the module docstring."""

    __slots__ = ()
    max_line_length = 1024

    def line_received(self, line: bytes) -> None:
        self.send_line(line)


class Records(RecordHandler):
    """See the module docstring."""

    __slots__ = ()
    max_record_size = 1024

    def record_received(self, record: bytes) -> None:
        self.send_record(record[::-1])


_made = 0


def flaky_factory() -> Faulty:
    """A protocol factory that raises on every second call."""
    global _made
    _made += 1
    if _made % 2 == 0:
        raise RuntimeError(f"faultkit: the factory refuses connection {_made}")
    return Faulty()


class Whoami(asyncio.Protocol):
    """Answers any input with the peer address the server sees, then closes."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(repr(self.transport.get_extra_info("peername")).encode() + b"\n")
        self.transport.close()
