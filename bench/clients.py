"""The load generators as child processes, and their output parsed.

``bench/bin/loadgen`` (built from ``bench/loadgen.c``: :func:`ensure_loadgen`) as a
:class:`LoadgenRun` that reports its ``@measure``/``@done`` events as they come;
``redis-benchmark --csv`` and ``wrk --latency`` output parsers; pinning a client to a
CPU; and the build of the C floor server, ``bench/bin/epoll_echo``
(:func:`ensure_c_echo`). Part of ``python -m bench.run``; imports :mod:`bench.plan` and
:mod:`bench.servers` only (for their paths and messages), never the measuring or
report modules.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.plan import BENCH, log
from bench.servers import C_ECHO, C_ECHO_BUILD, C_ECHO_SRC

__all__ = [
    "LOADGEN",
    "LOADGEN_BUILD",
    "LOADGEN_SRC",
    "LoadgenRun",
    "ensure_c_echo",
    "ensure_loadgen",
    "parse_redis_csv",
    "parse_wrk",
    "pinned",
    "run_command",
]

LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "bin" / "loadgen"
LOADGEN_BUILD = ["cc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(LOADGEN),
                 str(LOADGEN_SRC)]


def ensure_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    log("building the load generator: " + " ".join(LOADGEN_BUILD))
    proc = subprocess.run(LOADGEN_BUILD, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cannot build {LOADGEN}: {proc.stderr}")


def ensure_c_echo() -> None:
    """Build the C floor server if it is missing or older than its source; when it
    cannot be built, say so (the benchmark then skips ``c-epoll``)."""
    if C_ECHO.exists() and C_ECHO.stat().st_mtime >= C_ECHO_SRC.stat().st_mtime:
        return
    if shutil.which(C_ECHO_BUILD[0]) is None:
        log(f"no C compiler: {C_ECHO} cannot be built; c-epoll is skipped")
        return
    C_ECHO.parent.mkdir(parents=True, exist_ok=True)
    log("building the C echo server: " + " ".join(C_ECHO_BUILD))
    proc = subprocess.run(C_ECHO_BUILD, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log(f"cannot build {C_ECHO} (c-epoll is skipped): {proc.stderr}")


class LoadgenRun:
    """bench/bin/loadgen as a child: events from stderr, the JSON result from stdout."""

    def __init__(self, args: list[str], cpu: int | None,
                 handlers: dict[str, Callable[[str], None]] | None = None,
                 program: Path = LOADGEN) -> None:
        """Start it; ``handlers`` (event word -> callable taking the line) are called
        from the thread that reads its stderr, set before it starts so that none of
        the early events (``@ready``) is missed. ``program``: another client that
        speaks the same events and JSON (``bench/bin/tlsload``, ``bench/bin/rpcload``)."""
        cmd = [str(program), *args]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.cmd = cmd
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self.messages: list[str] = []
        self.handlers: dict[str, Callable[[str], None]] = dict(handlers or {})
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.rstrip("\n")
            if line.startswith("@"):
                word = line[1:].split()[0]
                handler = self.handlers.get(word)
                if handler is not None:
                    handler(line)
                self.events.put((line, time.monotonic()))
            elif line:
                self.messages.append(line)

    def wait_event(self, word: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line, _ = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None:
                    return None
                continue
            if line[1:].split()[0] == word:
                return line

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the exit; the JSON result (stderr stays with the reader thread)."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise RuntimeError(f"{Path(self.cmd[0]).name} did not finish within "
                               f"{timeout:.0f} s") from None
        assert self.popen.stdout is not None
        out = self.popen.stdout.read()
        self.popen.stdout.close()
        self._reader.join(timeout=5)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.popen.returncode != 0 or not lines:
            raise RuntimeError(f"{Path(self.cmd[0]).name} failed ({self.popen.returncode}): "
                               + "; ".join(self.messages[-3:]))
        data: dict[str, Any] = json.loads(lines[-1])
        data["loadgen_messages"] = self.messages[-5:]
        return data


def run_command(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def parse_redis_csv(text: str) -> dict[str, float]:
    """redis-benchmark --csv: the header row (Redis 6.2+) names the columns."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header: list[str] | None = None
    for row in rows:
        if row[0] == "test":
            header = row
            continue
        values: dict[str, float] = {}
        try:
            values["rps"] = float(row[1])
        except (IndexError, ValueError):
            continue
        if header is not None:
            for key, value in zip(header[2:], row[2:], strict=False):
                with contextlib.suppress(ValueError):
                    values[key] = float(value)
        return values
    raise ValueError(f"no result in redis-benchmark output: {text[:200]!r}")


_WRK_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def _wrk_us(value: str, unit: str) -> float:
    return float(value) * _WRK_UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": 0, "timeouts": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise ValueError(f"no Requests/sec in wrk output: {text[:300]!r}")
    out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        out["requests"] = int(m.group(1))
    lat: dict[str, float] = {}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            lat[key] = _wrk_us(m.group(1), m.group(2))
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)", text)
    if m:
        lat["mean"] = _wrk_us(m.group(1), m.group(2))
        lat["max"] = _wrk_us(m.group(3), m.group(4))
    out["latency_us"] = lat
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["connect_errors"] = int(m.group(1))
        out["errors"] = int(m.group(2)) + int(m.group(3))
        out["timeouts"] = int(m.group(4))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["errors"] += int(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    if m:
        scale = {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}.get(m.group(2), 0)
        out["mib_s"] = float(m.group(1)) * scale
    return out
