"""Helpers for the ``reactor serve`` tests (not a test module).

* Protocols the command serves as ``servekit:NAME`` (``--app-dir tests``):
  :class:`SlowLines` answers each line after blocking the reactor for a moment;
  :class:`Paced` answers one line at a time from timers, with reading paused, so
  requests sent meanwhile wait in the kernel's receive buffer; :class:`Stubborn`
  claims, through ``begin_shutdown``, that it will close by itself, and never does.
* :class:`ServerProcess` -- ``python -m reactor serve ...`` as a child process whose log
  (stderr) is collected by a thread, with ``wait_for(regex)`` and the bound addresses
  parsed from the ``listening on`` lines: :class:`bench.procs.ServerProcess` (the kit
  the benchmark uses too) with the command line's defaults.
* :func:`read_until_closed` -- a client read loop with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench.procs, however pytest was started

from bench import procs  # noqa: E402
from bench.procs import WAIT  # noqa: E402

# -- protocols served by the child ---------------------------------------------------------


class SlowLines(asyncio.Protocol):
    """Line requests; each is answered after ``SLOW_LINES_DELAY`` seconds of blocking.

    ``big N`` is answered with ``big N `` followed by N ``x`` and a newline; ``slow S``
    with ``started`` at once, then, after blocking for S seconds, ``slow S done``; any
    other line ``L`` with ``L done``.
    """

    delay = float(os.environ.get("SLOW_LINES_DELAY", "0.02"))

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
            if line.startswith(b"slow "):
                self.transport.write(b"started\n")
                time.sleep(float(line[5:]))
            else:
                time.sleep(self.delay)  # blocks the reactor: later requests wait in the kernel
            if line.startswith(b"big "):
                self.transport.write(line + b" " + b"x" * int(line[4:]) + b"\n")
            else:
                self.transport.write(line + b" done\n")


class Stubborn(SlowLines):
    """Says it will close by itself when the server stops, and never does."""

    delay = 0.0

    def begin_shutdown(self) -> bool:
        self.transport.write(b"shutting down\n")
        return True


class Paced(asyncio.Protocol):
    """Answers line requests one at a time, each ``PACED_DELAY`` seconds after the
    previous one, from a reactor timer; reading is paused while requests are queued, so
    whatever the client sends meanwhile waits in the kernel's receive buffer.

    ``big N`` is answered as by :class:`SlowLines`; any other line ``L`` with ``L done``.
    """

    delay = float(os.environ.get("PACED_DELAY", "0.02"))

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.transport.pause_reading()
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buffer.find(b"\n")
        if end < 0:
            self.busy = False
            self.transport.resume_reading()
            return
        self.busy = True
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        reactor = self.transport.get_extra_info("connection").reactor
        reactor.call_later(self.delay, self._answer, line)

    def _answer(self, line: bytes) -> None:
        if self.transport.is_closing():
            return
        if line.startswith(b"big "):
            self.transport.write(line + b" " + b"x" * int(line[4:]) + b"\n")
        else:
            self.transport.write(line + b" done\n")
        self._next()


NOT_CALLABLE = 42

# -- the child process ---------------------------------------------------------------------


class ServerProcess(procs.ServerProcess):
    """``python -m reactor serve ARGS``, started, with its log collected line by line
    (see :class:`bench.procs.ServerProcess`: ``wait_for``, ``signal``, ``wait``,
    ``stop``, ``close``, ``sampler``), and the addresses it logs it listens on."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = (),
        nofile: int | None = None, command: list[str] | None = None,
    ) -> None:
        """``nofile``: the child's RLIMIT_NOFILE soft limit (None: inherited).
        ``command``: run this instead of ``python -m reactor serve`` (ARGS follow it)."""
        super().__init__([*(command or [sys.executable, "-m", "reactor", "serve"]), *args],
                         cwd=ROOT, env={"PYTHONUNBUFFERED": "1", **(env or {})},
                         pass_fds=pass_fds, nofile=nofile)
        self.start()

    def addresses(self, count: int = 1) -> list[str]:
        self.wait_for(r"listening on (\S+)", count=count)
        return re.findall(r"listening on (\S+)", self.log)

    def tcp_address(self, index: int = 0) -> tuple[str, int]:
        address = self.addresses(index + 1)[index]
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port)

    def connect(self, index: int = 0, timeout: float = WAIT) -> socket.socket:
        return socket.create_connection(self.tcp_address(index), timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self


def serve(*args: str, **kwargs: Any) -> ServerProcess:
    """Start ``reactor serve`` with the test modules importable."""
    return ServerProcess(*args, "--app-dir", str(TESTS), **kwargs)


def json_records(srv: ServerProcess, logger: str | None = None) -> list[dict[str, Any]]:
    """The server's ``--log-format json`` lines so far, of ``logger`` when given."""
    found = [json.loads(line) for line in srv.log.splitlines() if line.startswith("{")]
    return [r for r in found if logger is None or r["logger"] == logger]


def json_tcp_address(srv: ServerProcess) -> tuple[str, int]:
    """The first ``listening on HOST:PORT`` of a server logging JSON lines."""
    match = srv.wait_for(r"listening on ([^\"\s]+)")
    host, _, port = match.group(1).rpartition(":")
    return host, int(port)


def access_records(srv: ServerProcess, count: int) -> list[dict[str, Any]]:
    """The access log's JSON lines, once there are ``count`` of them."""
    srv.wait_for(r'"logger": "reactor.access"', count=count)
    return json_records(srv, "reactor.access")


def read_until_closed(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the peer sends until it closes (or resets) the connection."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server did not close within {timeout} s")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_lines(sock: socket.socket, count: int, timeout: float = WAIT) -> list[bytes]:
    """Exactly ``count`` lines (fails on EOF or at the deadline)."""
    deadline = time.monotonic() + timeout
    data = b""
    newline = b"\n"
    while data.count(newline) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {data.count(newline)} of {count} lines in {timeout} s")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF after {data.count(newline)} of {count} lines")
        data += chunk
    return data.split(b"\n")[:count]


__all__ = [
    "NOT_CALLABLE",
    "ROOT",
    "TESTS",
    "WAIT",
    "Paced",
    "ServerProcess",
    "SlowLines",
    "Stubborn",
    "read_lines",
    "read_until_closed",
    "serve",
]
