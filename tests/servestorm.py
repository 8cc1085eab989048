"""A signal storm for ``reactor serve servestorm:Storm`` (not a test module).

Importing this module (the command does, to load the factory) arms an interval timer
that sends the process SIGALRM every millisecond for as long as it runs, with a Python
handler that counts the signals. Every blocking system call of the server (``select``,
``accept``, ``recv``, ``send``, ``sleep``) is then interrupted again and again.

:class:`Storm` speaks lines:

* ``after MS`` -- answers ``slept ELAPSED_MS`` after MS milliseconds, scheduled with the
  reactor's ``call_later``; ELAPSED_MS is measured with :func:`time.monotonic`;
* ``alarms`` -- answers ``alarms N``, the SIGALRMs handled so far;
* anything else is echoed back.
"""

from __future__ import annotations

import asyncio
import atexit
import signal
import time
from types import FrameType
from typing import Any

ALARMS = 0


def _count(signum: int, frame: FrameType | None) -> None:
    global ALARMS
    ALARMS += 1


def _disarm() -> None:
    # before the interpreter resets signal handlers to their defaults, or a last
    # SIGALRM would kill the process
    signal.setitimer(signal.ITIMER_REAL, 0)


signal.signal(signal.SIGALRM, _count)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
atexit.register(_disarm)


class Storm(asyncio.Protocol):
    """Timers and echo under a signal storm."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if line.startswith(b"after "):
                reactor = self.transport.get_extra_info("connection").reactor
                reactor.call_later(int(line[6:]) / 1000, self._slept, time.monotonic())
            elif line == b"alarms":
                self.transport.write(b"alarms %d\n" % ALARMS)
            else:
                self.transport.write(line + b"\n")

    def _slept(self, started: float) -> None:
        if not self.transport.is_closing():
            elapsed = (time.monotonic() - started) * 1000
            self.transport.write(b"slept %.1f\n" % elapsed)
