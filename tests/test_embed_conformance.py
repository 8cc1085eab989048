"""Every embedding passes the same checks (tests/embedkit.py), under each host."""

from __future__ import annotations

import os
import threading

import psutil
import pytest
import xvfb
from embedkit import CHECKS, Host
from embedkit_hosts import HOSTS

from reactor import Reactor


@pytest.fixture(params=sorted(HOSTS))
def host(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Host:
    if request.param == "tk":
        monkeypatch.setenv("DISPLAY", xvfb.x_display())
    made = HOSTS[request.param]()
    made.warm_up()
    return made


@pytest.mark.timeout(60)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_embedding_conforms(host: Host, check: str) -> None:
    process = psutil.Process()
    fds, threads = process.num_fds(), threading.active_count()
    host.setup()
    try:
        reactor = Reactor()
        try:
            CHECKS[check](host, reactor)
        finally:
            reactor.close()
    finally:
        host.teardown()
    assert host.errors == [], "an exception reached the host's loop"
    assert process.num_fds() == fds, f"descriptors left: {sorted(os.listdir('/proc/self/fd'))}"
    assert threading.active_count() == threads
