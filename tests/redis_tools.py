"""Find ``redis-cli`` / ``redis-benchmark`` for the tests, installing them when possible.

Both come from the Debian package ``redis-tools``. :func:`redis_tool` returns a tool's
path; when the tool is missing and the tests run as root on a system with ``apt-get``,
it installs the package once per test session (with a timeout); otherwise it makes the
calling test skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

__all__ = ["INSTALL_TIMEOUT", "PACKAGE", "TOOLS", "find_redis_tool", "redis_tool"]

PACKAGE = "redis-tools"
TOOLS = ("redis-cli", "redis-benchmark")
INSTALL_TIMEOUT = 240.0  # seconds for apt-get install; tests calling this need more

# None: not tried yet in this session; else why the tools are unavailable ("" if fine).
_install_outcome: str | None = None


def find_redis_tool(name: str) -> str | None:
    """The path of ``name`` on PATH (or in /usr/bin), or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")


def _install() -> str:
    """Install redis-tools with apt-get; return "" on success, else the reason."""
    if os.geteuid() != 0:
        return f"{PACKAGE} is not installed and the tests do not run as root"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"{PACKAGE} is not installed and apt-get is not available"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = [apt_get, "-o", "DPkg::Lock::Timeout=120", "install", "-y",
               "--no-install-recommends", PACKAGE]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"installing {PACKAGE} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"apt-get install {PACKAGE} exited {done.returncode}: {' / '.join(tail)}"
    return ""


def redis_tool(name: str) -> str:
    """Return the path of ``redis-cli`` or ``redis-benchmark``.

    Installs ``redis-tools`` (at most once per session) when the tool is missing and
    the tests run as root; otherwise calls :func:`pytest.skip` with the reason.

    Raises:
        ValueError: ``name`` is not one of :data:`TOOLS`.
    """
    global _install_outcome
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; expected one of {TOOLS}")
    path = find_redis_tool(name)
    if path is not None:
        return path
    if _install_outcome is None:
        _install_outcome = _install()
    path = find_redis_tool(name)
    if path is not None:
        return path
    pytest.skip(_install_outcome or f"{name} is still missing after installing {PACKAGE}")
