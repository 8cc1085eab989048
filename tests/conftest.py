"""Shared fixtures: a reactor per available selector backend, loopback helpers."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from reactor import Reactor

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
def default_reactor() -> Iterator[Reactor]:
    """A reactor on the default selector, for tests that are not about backends."""
    r = Reactor()
    yield r
    if not r.is_closed():
        r.close()


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


requires_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="IPv6 loopback unavailable")
