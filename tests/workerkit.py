"""Helpers for the ``reactor serve --workers`` tests (not a test module).

* :class:`Environment` -- served as ``workerkit:Environment``: answers every
  connection with the names of the worker's environment variables that systemd sets
  (``LISTEN_*``, ``NOTIFY_SOCKET``) and closes, so a test sees what a worker inherited.
* :func:`kill_tree` -- SIGKILL a supervisor and every worker it had.
* :func:`worker_pids`, :func:`echo_once`, :func:`wait_until`, :data:`READY`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil
from servekit import WAIT, ServerProcess

__all__ = ["READY", "Environment", "echo_once", "kill_tree", "wait_until", "worker_pids"]

READY = r"worker \d+ \(pid (\d+)\) is ready"
SYSTEMD_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")


class Environment(asyncio.Protocol):
    """Says which systemd variables this process has (``none`` when it has none)."""

    def connection_made(self, transport: Any) -> None:
        found = [name for name in SYSTEMD_VARIABLES if name in os.environ]
        transport.write((" ".join(found) or "none").encode() + b"\n")
        transport.close()


def kill_tree(srv: ServerProcess, known: set[int]) -> None:
    """SIGKILL the supervisor and every worker it had (no process left behind)."""
    try:
        known |= {p.pid for p in psutil.Process(srv.proc.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        pass
    for pid in known:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    srv.close()


def worker_pids(srv: ServerProcess) -> set[int]:
    """The supervisor's child processes now."""
    return {p.pid for p in psutil.Process(srv.proc.pid).children()}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` until it holds (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def echo_once(address: tuple[str, int], payload: bytes) -> bytes:
    """One connection: send ``payload``, half-close, read until the server closes."""
    with socket.create_connection(address, timeout=WAIT) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data
