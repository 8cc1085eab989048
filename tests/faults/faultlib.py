"""Measuring the server under test from outside (not a test module).

* :class:`Sampler` and :class:`Usage` (from :mod:`bench.procs`, the kit the benchmark
  uses too) -- CPU, descriptors, threads, child processes and RSS of a process and its
  descendants: :meth:`Sampler.cpu_fraction` (share of one core over an interval),
  :meth:`Sampler.rss_watch` (peak RSS while something runs) and
  :meth:`Sampler.wait_back_to` (poll until the tree is back at a baseline, or fail with
  the numbers).
* :class:`FaultServer` -- a :class:`servekit.ServerProcess` (``python -m reactor serve
  ...``) with its sampler (``srv.sampler``), log checks and a graceful ``stop()``
  (signal, then wait: :meth:`bench.procs.ServerProcess.stop`).
* :func:`churn` -- many short echo connections, a bounded number at a time.
* :func:`figure` -- record a measured figure for the README.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

FAULTS = Path(__file__).resolve().parent
if str(FAULTS.parent) not in sys.path:
    sys.path.insert(0, str(FAULTS.parent))  # the helpers in tests/ (servekit, netkit ...)

from servekit import WAIT, ServerProcess  # noqa: E402

from bench.procs import Sampler, Usage  # noqa: E402, F401 - Sampler: for the tests

CPU_LIMIT = 0.05  # of one core, while a fault lasts (psutil counts 10 ms ticks)
TRACEBACK = "Traceback (most recent call last)"


# -- measuring a process tree from outside --------------------------------------------------


def ghost_connections(pid: int) -> list[str]:
    """The process's TCP connections that are ESTABLISHED with a peer address that no
    socket on this host has: connections the kernel completed for a client that is gone.

    Past a full backlog the kernel answers with SYN cookies, and a stray handshake
    segment validated by a cookie after its client closed can give the server an
    accepted connection that no client will ever write to or close. A server that has
    no deadline for silent connections (the standard library's, and so our facades'
    default) holds such a connection like any other open one; a connection the server
    failed to close after its client left is not one of these -- it is in CLOSE_WAIT
    (after a FIN) or closed (after an RST), never ESTABLISHED.
    """
    try:
        proc = psutil.Process(pid)
        listing = getattr(proc, "net_connections", None) or proc.connections
        mine = listing(kind="tcp")
        local = {conn.laddr for conn in psutil.net_connections(kind="tcp")}
    except psutil.Error:
        return []
    return [f"{conn.laddr} <- {conn.raddr}" for conn in mine
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr
            and conn.raddr not in local]


# -- the server under test ------------------------------------------------------------------


class FaultServer(ServerProcess):
    """``python -m reactor serve`` (see :class:`servekit.ServerProcess`) with a sampler."""

    def __init__(self, *args: str, **kwargs: Any) -> None:
        self.cli = kwargs.get("command") is None  # reactor serve (not a facadekit child)
        super().__init__(*args, **kwargs)

    def ready(self, count: int = 1) -> FaultServer:
        """Wait for the ``listening on`` lines and, for ``reactor serve``, for the
        ``serving`` line that follows the installation of its signal handlers (a
        SIGUSR1 or SIGTERM before it would kill the process)."""
        self.addresses(count)
        if self.cli:
            self.wait_for(r"serving .* \(graceful timeout")
        return self

    @property
    def port(self) -> int:
        return self.tcp_address()[1]

    def usage(self) -> Usage:
        return self.sampler.usage()

    def tracebacks(self) -> int:
        return self.log.count("Traceback (most recent call last)")

    def assert_clean_log(self) -> None:
        assert self.tracebacks() == 0, self.log
        assert "InterruptedError" not in self.log, self.log

    def stats(self) -> dict[str, int]:
        """SIGUSR1 and parse the next ``statistics:`` line (open, closed_total ...)."""
        count = self.log.count("statistics: open=")
        self.signal(signal.SIGUSR1)
        match = self.wait_for(r"statistics: (.*); by state", count=count + 1)
        return {k: int(v) for k, v in
                (item.split("=") for item in match.group(1).split() if "=" in item)
                if v.isdigit()}

    def wait_idle(self, open_: int = 0, timeout: float = WAIT,
                  excused: Callable[[], int] | None = None) -> dict[str, int]:
        """Poll the statistics until ``open_`` connections are left (plus ``excused()``,
        connections the caller allows at that moment); return them."""
        deadline = time.monotonic() + timeout
        while (stats := self.stats())["open"] != open_ + (excused() if excused else 0):
            assert time.monotonic() < deadline, f"still open: {stats}"
            time.sleep(0.05)  # polling a condition, with a deadline
        return stats

    def wait_back_to(self, baseline: Usage, **kwargs: Any) -> Usage:
        """:meth:`Sampler.wait_back_to`; on failure the message also carries what the
        server says it holds (its SIGUSR1 statistics) and the end of its log."""
        try:
            return self.sampler.wait_back_to(baseline, **kwargs)
        except AssertionError as exc:
            if self.proc.poll() is None:
                count = self.log.count("statistics: ")
                self.signal(signal.SIGUSR1)
                try:
                    self.wait_for(r"statistics: ", count=count + 1, timeout=5)
                except AssertionError:
                    pass  # the server does not answer: say so through the log below
            tail = "\n    ".join(self.log.splitlines()[-40:])
            raise AssertionError(f"{exc}\n  the server's log ends:\n    {tail}") from None

def log_lines(text: str, needle: str) -> list[str]:
    """The lines of ``text`` containing ``needle``."""
    return [line for line in text.splitlines() if needle in line]


FIGURES_ENV = "REACTOR_FAULT_FIGURES"


def figure(name: str, value: float, unit: str) -> None:
    """Record a measured figure: appended as a JSON line to the file named by
    ``$REACTOR_FAULT_FIGURES`` (if set), for the README's table of guarantees."""
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"name": name, "value": round(value, 4), "unit": unit})
                      + "\n")


# -- many short connections -----------------------------------------------------------------


@dataclass
class ChurnResult:
    """What :func:`churn` did."""

    completed: int = 0
    failed: int = 0
    errors: dict[str, int] | None = None
    seconds: float = 0.0
    slowest: float = 0.0  # the longest connect-to-echo time of one connection

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def churn(address: tuple[str, int], total: int, *, concurrency: int = 50,
          payload: bytes = b"p" * 64, rst_every: int = 0,
          timeout: float = 120.0) -> ChurnResult:
    """Open ``total`` connections to an echo server, ``concurrency`` at a time: each
    connects (non-blocking), sends ``payload``, reads it back and closes -- with an RST
    for every ``rst_every``-th connection (0: never), a FIN otherwise.

    Raises:
        AssertionError: not done within ``timeout`` seconds.
    """
    result = ChurnResult(errors={})
    assert result.errors is not None
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    deadline = started + timeout
    opened = 0
    live: dict[socket.socket, list[Any]] = {}  # sock -> [received, started, index]
    linger0 = struct.pack("ii", 1, 0)

    def open_one() -> None:
        nonlocal opened
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        sock.setblocking(False)
        err = sock.connect_ex(address)
        index = opened
        opened += 1
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            fail(f"connect: {errno.errorcode.get(err, err)}")
            return
        live[sock] = [b"", time.monotonic(), index]
        selector.register(sock, selectors.EVENT_WRITE)

    def fail(reason: str) -> None:
        assert result.errors is not None
        result.failed += 1
        result.errors[reason] = result.errors.get(reason, 0) + 1

    def finish(sock: socket.socket, ok: bool, reason: str = "") -> None:
        state = live.pop(sock)
        selector.unregister(sock)
        if ok:
            result.completed += 1
            result.slowest = max(result.slowest, time.monotonic() - state[1])
        else:
            fail(reason)
        if rst_every and state[2] % rst_every == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        sock.close()

    try:
        while opened < total or live:
            while opened < total and len(live) < concurrency:
                open_one()
            left = deadline - time.monotonic()
            assert left > 0, (f"churn: {result.completed} of {total} done in {timeout} s, "
                              f"{len(live)} in flight, errors {result.errors}")
            for key, mask in selector.select(min(left, 1.0)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock not in live:
                    continue
                if mask & selectors.EVENT_WRITE:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(sock, False, f"connect: {errno.errorcode.get(err, err)}")
                        continue
                    try:
                        sock.send(payload)  # small: the kernel takes it whole
                    except OSError as exc:
                        finish(sock, False, f"send: {type(exc).__name__}")
                        continue
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    finish(sock, False, f"recv: {type(exc).__name__}")
                    continue
                if not data:
                    finish(sock, False, "EOF before the echo")
                    continue
                state = live[sock]
                state[0] += data
                if len(state[0]) >= len(payload):
                    finish(sock, state[0] == payload, "wrong echo")
    finally:
        for sock in list(live):
            selector.unregister(sock)
            sock.close()
        selector.close()
    result.seconds = time.monotonic() - started
    return result


def assert_idle(srv: FaultServer, what: str, seconds: float = 1.0) -> float:
    """The server's CPU over ``seconds`` is under :data:`CPU_LIMIT` (no busy loop left
    behind by a fault); recorded as a figure."""
    cpu = srv.sampler.cpu_fraction(seconds)
    figure(f"{what}: server CPU", cpu * 100, "% of a core")
    assert cpu < CPU_LIMIT, f"{what}: the server used {cpu:.0%} of a core"
    return cpu
