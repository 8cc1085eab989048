"""Every embedding passes the same checks (tests/embedkit.py), under each host: asyncio,
a plain ``select`` loop, trio, Twisted, Tk, and the guest mode driven by a queue and a
thread and by Tk's ``after_idle``."""

from __future__ import annotations

import os
import threading

import psutil
import pytest
import xvfb
from embedkit import CHECKS, Host
from embedkit_guests import GUESTS
from embedkit_hosts import HOSTS

from reactor import Reactor

ALL_HOSTS = {**HOSTS, **GUESTS}


@pytest.fixture(params=sorted(ALL_HOSTS))
def host(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Host:
    kind = ALL_HOSTS[request.param]
    if kind.needs_display:
        monkeypatch.setenv("DISPLAY", xvfb.x_display())
    made = kind()
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
