"""The README's quick start runs as written."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the quick start has a python block"
    return match.group(1)


@pytest.mark.timeout(60)
def test_quick_start_serves_echo(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(quick_start())
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split()[-1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello reactor\n")
            assert s.recv(100) == b"hello reactor\n"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
