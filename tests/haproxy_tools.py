"""HAProxy for the PROXY protocol tests (not a test module).

:func:`haproxy` returns the path of ``haproxy``, installing the Debian package of that
name once per session through the project's installer (:func:`redis_tools.install_package`:
as root, with apt-get) when it is missing, else skips the calling test with the reason.
:class:`HAProxy` runs one in the foreground on listening sockets the test made itself
(port 0, handed over as ``fd@N``), so no port is guessed and the frontends take
connections from the moment it starts (they queue in the sockets' backlogs meanwhile).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from redis_tools import install_package

__all__ = ["HAProxy", "haproxy", "listening"]

_outcome: list[str] = []  # why installing failed ("" when it worked), once per session


def _stop_packaged_service() -> None:
    """The package may start its own service (with no frontend); stop it again."""
    systemctl = shutil.which("systemctl")
    if systemctl is not None and os.path.isdir("/run/systemd/system"):
        subprocess.run([systemctl, "stop", "haproxy"], capture_output=True, timeout=60,
                       check=False)


def haproxy() -> str:
    """The path of ``haproxy`` (installed if need be), or skip the test."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if found is not None:
        return found
    if not _outcome:
        _outcome.append(install_package("haproxy"))
        _stop_packaged_service()
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip(_outcome[0] or "haproxy is still missing after installing it")
    return found


class HAProxy:
    """``haproxy -db`` in mode tcp: one frontend per listening socket in ``frontends``,
    each relaying to ``server`` with its ``server`` line options (``send-proxy``,
    ``send-proxy-v2`` ...)."""

    def __init__(self, server: tuple[str, int], frontends: list[tuple[socket.socket, str]],
                 extra: str = "") -> None:
        lines = ["global", "    maxconn 100", "", "defaults", "    mode tcp",
                 "    timeout connect 5s", "    timeout client 30s",
                 "    timeout server 30s", ""]
        host, port = server
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for n, (sock, options) in enumerate(frontends):
            lines += [f"frontend f{n}", f"    bind fd@{sock.fileno()}",
                      f"    default_backend b{n}", extra,
                      f"backend b{n}", f"    server s{n} {target} {options}", ""]
        self._start("\n".join(lines), [sock for sock, _options in frontends])

    @classmethod
    def from_config(cls, config: str, frontends: list[socket.socket]) -> HAProxy:
        """Run ``config`` as written (its binds on ``fd@N`` of ``frontends``)."""
        self = cls.__new__(cls)
        self._start(config, frontends)
        return self

    def _start(self, config: str, frontends: list[socket.socket]) -> None:
        self.binary = haproxy()
        self.dir = tempfile.TemporaryDirectory(prefix="haproxy-")
        self.config = Path(self.dir.name) / "haproxy.cfg"
        self.config.write_text(config)
        self.frontends = frontends
        fds = tuple(sock.fileno() for sock in self.frontends)
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)], pass_fds=fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> HAProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        for sock in self.frontends:
            sock.close()
        self.dir.cleanup()

    def output(self) -> str:
        """What haproxy printed (after it exited)."""
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")


def listening(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free port, inheritable, for a frontend."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    sock.set_inheritable(True)
    return sock
