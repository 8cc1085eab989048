"""Helpers for the socketserver facade tests: serving in a thread, waiting on conditions,
small clients, per-thread counters from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def wait_for(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.005,
             what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def serving(server: Any, poll_interval: float = 0.5, close: bool = True) -> Iterator[Any]:
    """Run ``server.serve_forever`` in a thread; shut down and close it afterwards."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,),
                              name="serve_forever", daemon=True)
    thread.start()
    wait_for(lambda: server.statistics().serving, what="serve_forever started")
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        assert not thread.is_alive(), "serve_forever did not return"
        if close:
            server.server_close()


def exchange(address: Any, data: bytes, family: int = socket.AF_INET,
             timeout: float = 10.0) -> bytes:
    """Connect, send ``data``, read until the peer closes or a newline arrives."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf


def thread_switches(native_id: int) -> int:
    """Voluntary context switches of one thread of this process (Linux)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])
    raise RuntimeError("no voluntary_ctxt_switches in /proc status")


def has_proc_switches() -> bool:
    return Path(f"/proc/self/task/{threading.get_native_id()}/status").exists()


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python that imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
