"""The README's server snippets run as written.

Every ``python`` block of the README that starts a server (it prints "... port N") is
run in a subprocess, probed over loopback (over HTTPS with throwaway certificates, for
a server over TLS), and stopped with SIGINT. The Sun RPC example (a ``.x`` file, a
module, ``reactor serve rpc``) runs as its console session shows.
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
    run_as_scripts(snippets, tmp_path)


def run_as_scripts(snippets: list[str], tmp_path: Path) -> list[str]:
    """Run each snippet as a script; what each printed (each must exit 0)."""
    printed = []
    for index, snippet in enumerate(snippets):
        script = tmp_path / f"snippet{index}.py"
        script.write_text(snippet)
        done = subprocess.run([sys.executable, str(script)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=50)
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout)
    return printed


def thread_snippets() -> list[str]:
    """The README's examples of guest mode and of ``reactor.background()``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks
            if "from reactor.embed import guest" in b or ".background() as" in b]


@pytest.mark.timeout(60)
def test_the_guest_and_background_examples_run_as_written(tmp_path: Path) -> None:
    snippets = thread_snippets()
    assert len(snippets) == 2, "the README shows guest mode and reactor.background()"
    for printed in run_as_scripts(snippets, tmp_path):
        assert printed.strip(), "the example prints what it did"


# -- the Sun RPC example: a .x file, a module, reactor serve rpc ---------------------------


def rpc_example() -> tuple[str, str, list[str]]:
    """The README's counter.x, counter.py and its console session's commands."""
    text = README.read_text()
    [xfile] = re.findall(r"```c\n(/\* counter\.x.*?)```", text, re.S)
    [module] = re.findall(r"```python\n(# counter\.py.*?)```", text, re.S)
    [session] = re.findall(r"```console\n(\$ reactor serve rpc counter.*?)```", text, re.S)
    commands = [line[2:] for line in session.splitlines() if line.startswith("$ ")]
    return xfile, module, commands


@pytest.mark.timeout(120)
def test_the_rpc_example_serves_as_written(tmp_path: Path) -> None:
    from rpckit import read_replies, rpcinfo

    from handlers.framers.rpcrecord import encode_record
    from handlers.rpc import Int, String, decode, decode_reply, encode, encode_call

    xfile, module, (serve, ping) = rpc_example()
    (tmp_path / "counter.x").write_text(xfile)
    (tmp_path / "counter.py").write_text(module)
    argv = serve.split()
    assert argv[:4] == ["reactor", "serve", "rpc", "counter:Counter"]
    argv[argv.index("--bind") + 1] = "127.0.0.1:0"
    proc = subprocess.Popen([sys.executable, "-m", *argv, "--app-dir", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, cwd=README.parent)
    try:
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:
            log.append(line)
            if "registered with the portmapper" in line:
                break
        [port] = {int(m) for m in re.findall(r"listening on (?:udp )?127\.0\.0\.1:(\d+)",
                                             "".join(log))}
        ping_argv = ping.split()
        ping_argv[2] = f"127.0.0.1.{port >> 8}.{port & 0xFF}"
        done = subprocess.run([rpcinfo(), *ping_argv[1:]], capture_output=True, text=True,
                              timeout=20, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "program 536872022 version 1 ready and waiting\n"
        prog = 0x20000456
        increment = encode(String(), "apples") + encode(Int(), 3)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(encode_record(encode_call(1, prog, 1, 1, increment))
                      + encode_record(encode_call(2, prog, 1, 1, increment))
                      + encode_record(encode_call(3, prog, 1, 2, encode(String(), "apples"))))
            replies = {r.xid: decode(Int(), r.results) for r in read_replies(s, 3)}
        assert replies == {1: 3, 2: 6, 3: 6}  # GET came after both ADDs ran
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(20)
            udp.sendto(encode_call(4, prog, 1, 2, encode(String(), "apples")),
                       ("127.0.0.1", port))
            assert decode(Int(), decode_reply(udp.recv(65536)).results) == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
