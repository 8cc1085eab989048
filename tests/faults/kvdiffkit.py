"""The two servers of the kv differential tests, and how their answers are read and
compared: redis-server and our kv, each on a Unix socket in a temporary directory.

Used by test_kv_differential.py (random request sequences on one connection) and
test_kv_differential_sessions.py (WATCH across connections, SCAN to the end).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis_tools import redis_tool

from handlers.services.kv import KVServer
from reactor import Reactor

IO_TIMEOUT = 5.0  # seconds for one sequence's answer (both servers answer in milliseconds)


# -- the two servers ------------------------------------------------------------------


class RedisServer:
    """A redis-server on a Unix socket in a temporary directory, no persistence."""

    def __init__(self, directory: str) -> None:
        binary = redis_tool("redis-server")
        self.path = os.path.join(directory, "redis.sock")
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.path, "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not Path(self.path).exists():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                      timeout=20, check=False).stdout.strip()

    def close(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class OurKV:
    """Our kv service on a reactor in a background thread, on a Unix socket."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "kv.sock")
        self.reactor = Reactor()
        self.server = KVServer(self.reactor)
        self.reactor.listen_unix(self.path, self.server)
        self.thread = threading.Thread(target=self.reactor.run, name="kv-diff", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def close(self) -> None:
        if self.thread.is_alive():
            self.reactor.call_soon_threadsafe(self.reactor.stop)
            self.thread.join(10)
        if not self.reactor.is_closed():
            self.reactor.close()


@dataclass
class Servers:
    redis: RedisServer
    ours: OurKV


@contextlib.contextmanager
def both_servers() -> Iterator[Servers]:
    """redis-server and our kv, in one temporary directory (a module fixture's body)."""
    with tempfile.TemporaryDirectory(prefix="kvdiff-") as directory:
        redis_server = RedisServer(directory)
        ours = OurKV(directory)
        try:
            yield Servers(redis_server, ours)
        finally:
            ours.close()
            redis_server.close()


def exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect(path)
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"{path}: no end of the answer within {IO_TIMEOUT} s; "
                                     f"sent {data!r}, got {b''.join(chunks)!r}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# -- replies --------------------------------------------------------------------------


def read_reply(data: bytes, pos: int) -> tuple[Any, int]:
    """Parse one RESP2/RESP3 reply at ``pos``: (value tree, position after it)."""
    nl = data.index(b"\r\n", pos)
    kind = data[pos : pos + 1]
    head = data[pos + 1 : nl]
    pos = nl + 2
    if kind in (b"$", b"=", b"!"):
        size = int(head)
        if size < 0:
            return (kind, None), pos
        assert data[pos + size : pos + size + 2] == b"\r\n", "bad bulk in a reply"
        return (kind, data[pos : pos + size]), pos + size + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(head)
        if count < 0:
            return (kind, None), pos
        items = []
        for _ in range(count * (2 if kind in (b"%", b"|") else 1)):
            item, pos = read_reply(data, pos)
            items.append(item)
        return (kind, items), pos
    if kind == b":":
        return (kind, int(head)), pos
    return (kind, head), pos


def split_replies(data: bytes) -> list[tuple[Any, bytes]]:
    """Every top-level reply of a stream: (value tree, raw bytes)."""
    replies = []
    pos = 0
    while pos < len(data):
        start = pos
        value, pos = read_reply(data, pos)
        replies.append((value, data[start:pos]))
    return replies


def normal(value: Any, unordered: bool) -> Any:
    kind, body = value
    if isinstance(body, list):
        items = [normal(item, unordered) for item in body]
        if unordered and all(item[0] == b"$" for item in items):
            items.sort()
        return (kind, items)
    return value


def scan_reply(value: Any) -> list[Any] | None:
    """The [cursor, keys] of a reply shaped as SCAN's, else None."""
    kind, body = value
    if kind != b"*" or not isinstance(body, list) or len(body) != 2:
        return None
    (cursor_kind, cursor), (keys_kind, keys) = body
    if cursor_kind != b"$" or not isinstance(cursor, bytes) or not cursor.isdigit():
        return None
    if keys_kind != b"*" or not isinstance(keys, list) or any(k[0] != b"$" for k in keys):
        return None
    return [cursor, sorted(key for _, key in keys)]


def _same_scan(ours: list[Any], theirs: list[Any]) -> bool:
    """SCAN from the start, each server with its own cursors: when both ended, the same
    keys; when one ended, the other's keys among them; else nothing to compare."""
    ours_ended, theirs_ended = ours[0] == b"0", theirs[0] == b"0"
    if ours_ended and theirs_ended:
        return bool(ours[1] == theirs[1])
    if ours_ended or theirs_ended:
        whole, part = (ours, theirs) if ours_ended else (theirs, ours)
        return set(part[1]) <= set(whole[1])
    return True


def same_within(ours: Any, theirs: Any, slack: int, live_count: bool = False,
                 scan: bool = False) -> bool:
    """Equal trees, except non-negative integers may differ by ``slack``, with
    ``live_count`` ours may be lower (DBSIZE: see the README's differences), and with
    ``scan`` SCAN replies compare by :func:`_same_scan`."""
    if ours[0] != theirs[0]:
        return False
    if scan:
        ours_scan, theirs_scan = scan_reply(ours), scan_reply(theirs)
        if ours_scan is not None and theirs_scan is not None:
            return _same_scan(ours_scan, theirs_scan)
    if ours[0] == b":" and slack and ours[1] >= 0 and theirs[1] >= 0:
        return bool(abs(ours[1] - theirs[1]) <= slack)
    if ours[0] == b":" and live_count and 0 <= ours[1] <= theirs[1]:
        return True
    if isinstance(ours[1], list) and isinstance(theirs[1], list):
        return len(ours[1]) == len(theirs[1]) and all(
            same_within(a, b, slack, live_count, scan)
            for a, b in zip(ours[1], theirs[1], strict=True))
    return bool(ours[1] == theirs[1])
