"""Scenario 30: Unix sockets bound with a requested mode.

``listen_unix(path, factory, mode=0o600)`` (and ``listen_unix_datagram``) creates the
socket file with exactly that mode, whatever the process's umask, by setting the umask
around ``bind`` -- never by a ``chmod`` after it, which would leave a moment in which
the socket has wider permissions -- and restores the umask afterwards, also when
``bind`` fails. ``reactor serve --bind unix:PATH --unix-mode 600`` does the same.
(Stale-path removal only for sockets, and the over-long path refusal, are tested in
``tests/faults/test_fault_bind.py`` and ``tests/test_listeners.py``.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servekit import ROOT, WAIT, ServerProcess

from reactor import Reactor

MODES = [0o600, 0o660, 0o640, 0o700, 0o777, 0o000]
UMASKS = [0o022, 0o077, 0o000, 0o777]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the test process's umask whatever a test does to it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield
    os.umask(saved)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    with Reactor() as r:
        yield r


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any chmod: the mode must come from the umask at bind, not from a chmod."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"chmod called: {args!r}")

    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


def mode_of(path: Path) -> int:
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return stat.S_IMODE(st.st_mode)


@pytest.mark.usefixtures("umask", "no_chmod")
@pytest.mark.parametrize("process_umask", UMASKS, ids=oct)
@pytest.mark.parametrize("mode", MODES, ids=oct)
@pytest.mark.parametrize("kind", ["stream", "datagram"])
def test_the_socket_gets_exactly_the_requested_mode(
    reactor: Reactor, tmp_path: Path, kind: str, mode: int, process_umask: int,
) -> None:
    path = tmp_path / "s.sock"
    os.umask(process_umask)
    if kind == "stream":
        endpoint: Any = reactor.listen_unix(str(path), asyncio.Protocol, mode=mode)
    else:
        endpoint = reactor.listen_unix_datagram(str(path), asyncio.DatagramProtocol, mode=mode)
    assert current_umask() == process_umask
    assert mode_of(path) == mode, f"{oct(mode_of(path))} != {oct(mode)}"
    endpoint.close()
    for _ in range(3):
        reactor.run_once(0)
    assert not path.exists()


@pytest.mark.usefixtures("umask")
def test_without_a_mode_the_umask_decides(reactor: Reactor, tmp_path: Path) -> None:
    os.umask(0o077)
    listener = reactor.listen_unix(str(tmp_path / "s.sock"), asyncio.Protocol)
    assert mode_of(tmp_path / "s.sock") == 0o700
    listener.close()


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("kind", ["stream", "datagram"])
def test_the_umask_is_restored_when_bind_fails(reactor: Reactor, tmp_path: Path,
                                                kind: str) -> None:
    os.umask(0o027)
    missing = tmp_path / "no-such-directory" / "s.sock"
    with pytest.raises(OSError, match="cannot bind"):
        if kind == "stream":
            reactor.listen_unix(str(missing), asyncio.Protocol, mode=0o600)
        else:
            reactor.listen_unix_datagram(str(missing), asyncio.DatagramProtocol, mode=0o600)
    assert current_umask() == 0o027
    assert len(reactor.connections) == 0 and not reactor.listeners


NOBODY = 65534
OUTCOMES = {0: "connected", 1: "PermissionError", 2: "another error"}


def connect_from_another_user(path: Path) -> str:
    """Connect as user ``nobody`` (we are root) from a forked child; the outcome."""
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report through the exit status
        code = 2
        try:
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(WAIT)
                client.connect(str(path))
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return OUTCOMES.get(os.waitstatus_to_exitcode(status), f"status {status}")


@pytest.mark.timeout(60)
def test_the_kernel_enforces_the_mode(reactor: Reactor, tmp_path: Path) -> None:
    """0o600 keeps other users out and 0o666 lets them in. As root, the other user is
    ``nobody`` (a child that drops to it); otherwise mode 0o000 keeps out even us."""
    if os.geteuid() != 0:
        path = tmp_path / "s.sock"
        reactor.listen_unix(str(path), asyncio.Protocol, mode=0o000)
        with socket.socket(socket.AF_UNIX) as client, pytest.raises(PermissionError):
            client.connect(str(path))
        return
    directory = Path(tempfile.mkdtemp(prefix="reactor-mode-"))
    try:
        directory.chmod(0o755)  # the directory, not the socket: nobody may look inside
        private = reactor.listen_unix(str(directory / "private.sock"), asyncio.Protocol,
                                      mode=0o600)
        public = reactor.listen_unix(str(directory / "public.sock"), asyncio.Protocol,
                                     mode=0o666)
        assert connect_from_another_user(directory / "private.sock") == "PermissionError"
        assert connect_from_another_user(directory / "public.sock") == "connected"
        private.close()
        public.close()
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, 1.5, "600", True])
def test_a_mode_that_is_not_permission_bits_is_refused(reactor: Reactor, tmp_path: Path,
                                                       mode: Any) -> None:
    path = tmp_path / "s.sock"
    with pytest.raises(ValueError, match="mode"):
        reactor.listen_unix(str(path), asyncio.Protocol, mode=mode)
    with pytest.raises(ValueError, match="mode"):
        reactor.listen_unix_datagram(str(path), asyncio.DatagramProtocol, mode=mode)
    assert not path.exists()


def test_a_mode_for_an_abstract_or_unbound_socket_is_refused(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="abstract"):
        reactor.listen_unix(f"\0reactor-test-{os.getpid()}", asyncio.Protocol, mode=0o600)
    with pytest.raises(ValueError, match="unbound"):
        reactor.listen_unix_datagram(None, asyncio.DatagramProtocol, mode=0o600)


# -- the command line -----------------------------------------------------------------------


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", "serve", "echo", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given, mode", [("600", 0o600), ("0660", 0o660), ("0o640", 0o640)])
def test_the_command_binds_unix_paths_with_unix_mode(tmp_path: Path, given: str,
                                                     mode: int) -> None:
    path = tmp_path / "echo.sock"
    with ServerProcess("echo", "--bind", f"unix:{path}", "--unix-mode", given) as server:
        server.wait_for(r"listening on unix:")
        assert mode_of(path) == mode
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(WAIT)
            client.connect(str(path))
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given", ["999", "rw-------", "1000", "-600", ""])
def test_the_command_refuses_a_bad_unix_mode(tmp_path: Path, given: str) -> None:
    result = run_serve("--bind", f"unix:{tmp_path / 's.sock'}", "--unix-mode", given)
    assert result.returncode == 2, result.stderr
    assert "--unix-mode" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s.sock").exists()


@pytest.mark.timeout(60)
def test_the_command_refuses_unix_mode_without_a_unix_address() -> None:
    result = run_serve("--bind", "127.0.0.1:0", "--unix-mode", "600")
    assert result.returncode == 2, result.stderr
    assert "--unix-mode applies to unix:PATH" in result.stderr
    assert "listening on" not in result.stderr
