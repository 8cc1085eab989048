"""Tests of tests/redis_tools.py: how Redis's programs are installed for the tests
(apt-get faked; nothing is installed here)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import redis_tools


class Done:
    def __init__(self, returncode: int) -> None:
        self.returncode = returncode
        self.stdout = ""
        self.stderr = "E: Unable to locate package redis-server"


@pytest.fixture
def apt(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Root, apt-get and systemd present; every command run is recorded, and apt-get
    install fails until apt-get update has run."""
    calls: list[list[str]] = []
    updated = False

    def run(command: list[str], **kwargs: Any) -> Done:
        nonlocal updated
        calls.append(command)
        if "update" in command:
            updated = True
        return Done(0 if updated or "install" not in command else 100)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(redis_tools.shutil, "which",
                        lambda name, path=None: f"/usr/bin/{name}"
                        if name in ("apt-get", "systemctl") else None)
    monkeypatch.setattr(redis_tools.os.path, "isdir", lambda path: path == "/run/systemd/system")
    monkeypatch.setattr(redis_tools, "_install_outcome", {})
    return calls


def test_install_updates_the_package_lists_when_needed(apt: list[list[str]]) -> None:
    assert redis_tools.install_package("redis-tools") == ""
    assert [c[-1] for c in apt] == ["redis-tools", "-qq", "redis-tools"]
    assert all("DPkg::Lock::Timeout=120" in c for c in apt)


def test_installing_redis_server_stops_the_packaged_service(apt: list[list[str]]) -> None:
    assert redis_tools.install_package("redis-server") == ""
    assert apt[-1] == ["/usr/bin/systemctl", "stop", "redis-server"]


def test_still_missing_after_install_skips_with_the_reason(apt: list[list[str]]) -> None:
    with pytest.raises(pytest.skip.Exception, match="still missing after installing"):
        redis_tools.redis_tool("redis-server")
    assert redis_tools._install_outcome == {"redis-server": ""}
    apt.clear()
    with pytest.raises(pytest.skip.Exception):  # tried once per session only
        redis_tools.redis_tool("redis-server")
    assert apt == []
