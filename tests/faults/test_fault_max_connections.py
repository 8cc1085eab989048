"""Scenario 2: the ``max_connections`` cap.

``reactor serve echo --max-connections 10`` and 40 clients: ten are served, the rest
wait in the listen backlog (not reset, not served, the server idle meanwhile), and as
served clients leave the waiting ones are served in turn; the server never crashes and
ends at its baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from faultlib import CPU_LIMIT, WAIT, FaultServer, figure
from netkit import EchoClients

CAP = 10
CLIENTS = 40


@pytest.mark.timeout(120)
def test_clients_over_the_cap_wait_in_the_backlog_and_are_served_later(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("echo", "--bind", "127.0.0.1:0", "--max-connections", str(CAP),
                       app_dir=False)
    baseline = srv.usage()
    c = EchoClients(srv.port, CLIENTS)
    try:
        for i in range(CLIENTS):
            c.send(i, b"hi")
        c.pump(lambda: len(c.served(b"hi")) >= CAP, WAIT)
        first = c.served(b"hi")
        assert len(first) == CAP
        # the others wait, and the server does not spin on its readable listener
        cpu = srv.sampler.cpu_fraction(during=lambda left: c.pump(lambda: False, left))
        figure("max_connections: server CPU while 30 clients wait at the cap", cpu * 100,
               "% of a core")
        assert cpu < CPU_LIMIT, f"{cpu:.0%} of a core while clients waited at the cap"
        assert c.served(b"hi") == first, "served more clients than the cap"
        assert srv.proc.poll() is None
        usage = srv.usage()
        assert usage.fds <= baseline.fds + CAP

        # the served ones still echo, and each that leaves lets one waiting client in
        for i in first:
            c.send(i, b"+more")
        c.pump(lambda: all(b"+more" in c.got[i] for i in first), WAIT)
        served: set[int] = set()
        while len(served) < CLIENTS:
            now = c.served(b"hi") - served
            assert now, f"{CLIENTS - len(served)} clients never served"
            assert len(c.served(b"hi")) - len(served) <= CAP
            for i in now:
                c.close(i)
            served |= now
            c.pump(lambda s=served: bool(c.served(b"hi") - s) or len(s) == CLIENTS,  # type: ignore[misc]
                   WAIT)
    finally:
        c.close_all()
    srv.wait_back_to(baseline)
    stats = srv.stats()
    assert stats["open"] == 0 and stats["closed_total"] == CLIENTS
    assert srv.stop() == 0
    srv.assert_clean_log()
