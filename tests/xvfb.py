"""A real X server for the Tk tests: Xvfb on a display number it picks itself.

:func:`x_display` returns a ``DISPLAY`` value. An X server already named by ``DISPLAY``
is used as is; otherwise Xvfb (Debian package ``xvfb``, installed once per session when
the tests run as root, as tests/redis_tools.py does for Redis) is started with
``-displayfd``, so it chooses a free display number and writes it back to us: no fixed
number, no race with another session's server. The server is stopped at the end of the
test session. Where no X server can be had, the calling test skips with the reason.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import socket
import subprocess
import time

import pytest
import redis_tools

__all__ = ["x_display"]

_server: dict[str, str] = {}  # "display" -> ":N", or "reason" -> why there is none


def _start() -> None:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        reason = redis_tools.install_package("xvfb")
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            _server["reason"] = reason or "Xvfb is not installed"
            return
    for _ in range(5):  # another program may take the number between choice and listen
        proc, number = _launch(xvfb)
        if number and _answers(number) and proc.poll() is None:
            atexit.register(_stop, proc)
            _server["display"] = f":{number}"
            return
        _stop(proc)
    _server["reason"] = "Xvfb did not start on any display"


def _launch(xvfb: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start Xvfb; return it and the display number it wrote back ("" if none)."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", "1024x768x24",
             "-nolisten", "tcp"],
            pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_end)
        # Xvfb writes the number, then a newline, and dies if the pipe is closed in
        # between: read the whole line
        line = b""
        deadline = time.monotonic() + 30
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], deadline - time.monotonic())
            chunk = os.read(read_end, 64) if ready else b""
            if not chunk:
                break
            line += chunk
        number = line.decode().strip()
    finally:
        os.close(read_end)
    return proc, number if number.isdigit() else ""


def _answers(number: str) -> bool:
    """Whether an X server listens on display ``number`` (its Unix socket, in the
    abstract namespace first, as Xlib tries it)."""
    for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(5)
            try:
                probe.connect(address)
            except OSError:
                continue
            return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def x_display() -> str:
    """The ``DISPLAY`` of a running X server (started on first use); skips the calling
    test where none can be had."""
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    if not _server:
        _start()
    if "display" not in _server:
        pytest.skip(_server["reason"])
    return _server["display"]
