"""The README's server snippets run as written.

Every ``python`` block of the README that starts a server (it prints "... port N") is
run in a subprocess, probed over loopback (over HTTPS with throwaway certificates, for
a server over TLS), and stopped with SIGINT.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
PROBE = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"


def server_snippets(tls: bool = False) -> list[str]:
    """The snippets that start a server: plain ones, or (``tls``) those over TLS."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [
        b for b in blocks
        if re.search(r"print\(.*port", b) and ("run()" in b or "serve_forever()" in b)
        and ("ssl_context" in b) == tls
    ]


@contextmanager
def running(snippet: str, where: Path) -> Iterator[int]:
    """Run ``snippet`` in ``where``; its port, then SIGINT."""
    script = where / "snippet.py"
    script.write_text(snippet)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=where)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield int(line.split()[-1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_readme_has_the_snippets_we_promise() -> None:
    snippets = server_snippets()
    assert len(snippets) >= 3
    assert any("MultiplexingTCPServer" in s for s in snippets)
    assert any("request_buffer" in s for s in snippets)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("index", range(len(server_snippets())))
def test_server_snippet_serves(index: int, tmp_path: Path) -> None:
    with running(server_snippets()[index], tmp_path) as port, socket.create_connection(
            ("127.0.0.1", port), timeout=10) as s:
        s.sendall(PROBE)
        reply = s.recv(100)
    # an echo server returns the probe; an HTTP server answers it
    assert reply.startswith((b"GET /", b"HTTP/1.0 200"))


@pytest.mark.timeout(60)
def test_https_snippet_serves(tmp_path: Path) -> None:
    snippets = server_snippets(tls=True)
    assert snippets, "the README shows a server over TLS"
    # what the README says to run first: server.pem, server.key, and client.pem (the CA)
    subprocess.run([sys.executable, "-m", "trustme", "-q", "-d", str(tmp_path)],
                   check=True, timeout=30)
    (tmp_path / "hello.txt").write_text("hello\n")
    context = ssl.create_default_context(cafile=str(tmp_path / "client.pem"))
    for snippet in snippets:
        with running(snippet, tmp_path) as port, urllib.request.urlopen(
                f"https://localhost:{port}/hello.txt", timeout=10,
                context=context) as response:
            assert response.read() == b"hello\n"


def kit_snippets() -> list[str]:
    """The README's examples of the test kit (they import ``reactor.testing``)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if "from reactor.testing import" in b]


@pytest.mark.timeout(60)
def test_the_test_kit_examples_run_as_written(tmp_path: Path) -> None:
    snippets = kit_snippets()
    assert snippets, "the README shows reactor.testing at work"
    for index, snippet in enumerate(snippets):
        script = tmp_path / f"kit{index}.py"
        script.write_text(snippet)
        done = subprocess.run([sys.executable, str(script)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=50)
        assert done.returncode == 0, done.stderr
