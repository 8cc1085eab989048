"""Fixtures of the fault suite (``tests/faults``); the measuring helpers are in
:mod:`faultlib`, the protocols the server child runs in :mod:`faultkit`.

Every scenario runs the server as users run it -- ``python -m reactor serve ...`` in a
child process (or a facade server in a child) -- and measures it from outside with
psutil: the expected close or error reply, no traceback in its log, the other
connections still served, CPU under 5 % of a core while the fault lasts, and
descriptors, threads, children and memory back to the baseline afterwards.

The ``long`` marker: long variants (100 000 connections ...) are skipped unless
``REACTOR_LONG_FAULTS=1`` is set or ``-m`` names the marker (``make test-faults``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultlib import FAULTS, FaultServer

LONG_ENV = "REACTOR_LONG_FAULTS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long: long fault-suite variants (run by make test-faults)")


def long_enabled(config: pytest.Config) -> bool:
    return os.environ.get(LONG_ENV) == "1" or "long" in (config.getoption("markexpr") or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_enabled(config):
        return
    skip = pytest.mark.skip(reason=f"long variant: set {LONG_ENV}=1 (make test-faults)")
    for item in items:
        if item.get_closest_marker("long") and FAULTS in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.fixture
def start_server() -> Iterator[Callable[..., FaultServer]]:
    """``start_server(*args, app_dir=True, nofile=None, env=None, facade=None)`` starts
    ``reactor serve ARGS`` (with ``--app-dir tests/faults`` so ``faultkit:NAME`` works),
    or with ``facade=KIND`` the facade server of :mod:`facadekit` (``ARGS`` are its
    options), and waits for its first ``listening on`` line; killed at teardown if still
    running."""
    servers: list[FaultServer] = []

    def start(*args: str, app_dir: bool = True, wait: int = 1, facade: str | None = None,
              **kwargs: Any) -> FaultServer:
        extra: tuple[str, ...] = ("--app-dir", str(FAULTS)) if app_dir and not facade else ()
        if facade is not None:
            kwargs["command"] = [sys.executable, str(FAULTS / "facadekit.py"), facade]
        server = FaultServer(*args, *extra, **kwargs)
        servers.append(server)
        if wait:
            server.ready(wait)
        return server

    yield start
    for server in servers:
        server.close()
