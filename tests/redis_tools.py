"""Find Redis's programs for the tests, installing them when possible.

``redis-cli`` and ``redis-benchmark`` come from the Debian package ``redis-tools``,
``redis-server`` from ``redis-server``. :func:`redis_tool` returns a program's path;
when the program is missing and the tests run as root on a system with ``apt-get``, it
installs the package once per test session (with a timeout; after an ``apt-get
update`` if the first try fails, as on a fresh container without package lists);
otherwise it makes the calling test skip with the precise reason.

Installing ``redis-server`` may start the packaged service on port 6379 (where an init
system runs and no ``policy-rc.d`` forbids it): it is stopped again at once, and no test
uses that port (each starts its own server on a Unix socket in a temporary directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

__all__ = [
    "INSTALL_TIMEOUT",
    "PACKAGE",
    "PACKAGES",
    "TOOLS",
    "find_redis_tool",
    "install_package",
    "redis_tool",
]

PACKAGE = "redis-tools"
PACKAGES = {"redis-cli": "redis-tools", "redis-benchmark": "redis-tools",
            "redis-server": "redis-server"}
TOOLS = tuple(PACKAGES)
INSTALL_TIMEOUT = 240.0  # seconds for apt-get install; tests calling this need more

# package -> why it is unavailable ("" if installed); a package missing is not tried yet.
_install_outcome: dict[str, str] = {}


def find_redis_tool(name: str) -> str | None:
    """The path of ``name`` on PATH (or in /usr/bin, /usr/local/bin), or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")


def _stop_packaged_service() -> None:
    """Stop the redis-server service the Debian package may have started (port 6379)."""
    systemctl = shutil.which("systemctl")
    if systemctl is not None and os.path.isdir("/run/systemd/system"):
        subprocess.run([systemctl, "stop", "redis-server"], capture_output=True,
                       timeout=60, check=False)
        return
    invoke = shutil.which("invoke-rc.d")
    if invoke is not None:  # denied (exit 101) where policy-rc.d kept it from starting
        subprocess.run([invoke, "redis-server", "stop"], capture_output=True,
                       timeout=60, check=False)


def install_package(package: str) -> str:
    """Install the Debian ``package`` with apt-get (any test's tool, not only Redis's);
    return "" on success, else the reason."""
    if os.geteuid() != 0:
        return f"{package} is not installed and the tests do not run as root"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"{package} is not installed and apt-get is not available"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    install = [apt_get, *lock, "install", "-y", "--no-install-recommends", package]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    try:
        done = subprocess.run(install, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, check=False)
        if done.returncode != 0:  # a fresh container has no package lists yet
            subprocess.run([apt_get, *lock, "update", "-qq"], env=env, capture_output=True,
                           timeout=max(1.0, deadline - time.monotonic()), check=False)
            done = subprocess.run(install, env=env, capture_output=True, text=True,
                                  timeout=max(1.0, deadline - time.monotonic()), check=False)
        if package == "redis-server":
            _stop_packaged_service()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"installing {package} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"apt-get install {package} exited {done.returncode}: {' / '.join(tail)}"
    return ""


def redis_tool(name: str) -> str:
    """Return the path of ``redis-cli``, ``redis-benchmark`` or ``redis-server``.

    Installs the Debian package holding it (at most once per session) when it is
    missing and the tests run as root; otherwise calls :func:`pytest.skip` with the
    reason.

    Raises:
        ValueError: ``name`` is not one of :data:`TOOLS`.
    """
    package = PACKAGES.get(name)
    if package is None:
        raise ValueError(f"unknown tool {name!r}; expected one of {TOOLS}")
    path = find_redis_tool(name)
    if path is not None:
        return path
    if package not in _install_outcome:
        _install_outcome[package] = install_package(package)
    path = find_redis_tool(name)
    if path is not None:
        return path
    pytest.skip(_install_outcome[package] or f"{name} is still missing after installing "
                f"{package}")
