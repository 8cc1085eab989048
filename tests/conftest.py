"""Shared fixtures: a reactor per available selector backend, loopback helpers."""

from __future__ import annotations

import selectors
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netkit import Net

from reactor import Reactor

# A shell without job control starts background commands with SIGINT ignored, and an
# ignored signal stays ignored across exec: the servers these tests start and stop with
# SIGINT (http.server, the README's examples) would then never see KeyboardInterrupt.
# A Python-level handler here is reset to the default in every child at exec, and Python
# turns a default SIGINT into KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

BACKENDS = [
    name
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector",
                 "KqueueSelector")
    if hasattr(selectors, name)
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> type[selectors.BaseSelector]:
    """Each selector class this platform offers."""
    return getattr(selectors, request.param)  # type: ignore[no-any-return]


@pytest.fixture
def reactor(backend: type[selectors.BaseSelector]) -> Iterator[Reactor]:
    """A reactor on each available backend, closed after the test."""
    r = Reactor(selector=backend())
    yield r
    if r.is_running():
        r.stop()
    if not r.is_closed():
        r.close()


@pytest.fixture
def net(reactor: Reactor) -> Iterator[Net]:
    """Loopback helpers (tests/netkit.py) on the ``reactor`` fixture's reactor."""
    n = Net(reactor)
    yield n
    n.close()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A temporary directory another user may reach Unix sockets in (pytest's and
    ``sockdir`` are private to us): for tests that connect from a child of another uid."""
    directory = Path(tempfile.mkdtemp(prefix="sr-pub-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short temporary directory for Unix socket paths (sun_path holds 107 bytes,
    and pytest's tmp_path can be long)."""
    with tempfile.TemporaryDirectory(prefix="sr-") as d:
        yield d


@pytest.fixture
def default_reactor() -> Iterator[Reactor]:
    """A reactor on the default selector, for tests that are not about backends."""
    r = Reactor()
    yield r
    if not r.is_closed():
        r.close()


@pytest.fixture
def supervised() -> Iterator[list[Any]]:
    """A list for the ``reactor serve --workers`` processes (servekit's ServerProcess) a
    test starts; each is killed with its whole process tree at the end, whatever
    happened."""
    from workerkit import kill_tree

    started: list[Any] = []
    yield started
    for srv in started:
        kill_tree(srv, set())
