"""Scenario 1: accept() fails with EMFILE.

``reactor serve echo`` (and a ``ThreadingTCPServer`` facade) in a child whose
RLIMIT_NOFILE is 64, and 100 clients: the
server must not spin while clients wait, must say once per episode which limit it hit,
keep serving the connections it has, serve the waiting clients as descriptors free up,
and end with its descriptors back at the baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from faultlib import CPU_LIMIT, WAIT, FaultServer, figure, log_lines
from netkit import EchoClients

CLIENTS = 100
NOFILE = 64


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["reactor serve echo", "ThreadingTCPServer"])
def test_emfile_no_busy_loop_one_line_per_episode_and_recovery(
    start_server: Callable[..., FaultServer], server: str,
) -> None:
    if server == "ThreadingTCPServer":
        srv = start_server(facade="threading", nofile=NOFILE)
    else:
        srv = start_server("echo", "--bind", "127.0.0.1:0", nofile=NOFILE, app_dir=False)
    baseline = srv.usage()
    c = EchoClients(srv.port, CLIENTS)
    try:
        for i in range(CLIENTS):
            c.send(i, b"hello")
        srv.wait_for("RLIMIT_NOFILE")
        # every descriptor the server has left holds a client, and each of them is
        # answered (waiting for all of them: a snapshot taken earlier would see the
        # last few answers arrive later, as if served without a free descriptor);
        # nobody else is served while no descriptor frees up
        slots = NOFILE - baseline.fds
        c.pump(lambda: len(c.served(b"hello")) >= slots, WAIT)
        served = c.served(b"hello")
        waiting = set(range(CLIENTS)) - served
        assert len(served) == slots, f"{len(served)} served with {slots} descriptors free"
        assert len(waiting) >= CLIENTS - NOFILE

        cpu = srv.sampler.cpu_fraction(during=lambda left: c.pump(lambda: False, left))
        figure(f"emfile ({server}): server CPU while clients wait at RLIMIT_NOFILE=64",
               cpu * 100,
               "% of a core")
        assert cpu < CPU_LIMIT, f"{cpu:.0%} of a core while {len(waiting)} clients waited"
        assert c.served(b"hello") == served, "served a client without a free descriptor"
        assert len(log_lines(srv.log, "RLIMIT_NOFILE")) == 1, srv.log

        old = sorted(served)[:5]
        for i in old:
            c.send(i, b"<again>")
        c.pump(lambda: all(b"<again>" in c.got[i] for i in old), WAIT)
        assert all(b"<again>" in c.got[i] for i in old), "existing connections stopped"

        # clients leave: the waiting ones are served, without any nudge
        leaving = sorted(served)[:20]
        for i in leaving:
            c.close(i)
        c.pump(lambda: len(c.served(b"hello") & waiting) >= 15, WAIT)
        assert len(c.served(b"hello") & waiting) >= 15
        srv.wait_for("accepting again")

        # everybody leaves: every waiting client was served, descriptors are back
        for i in sorted(set(range(CLIENTS)) - set(leaving)):
            if i in c.served(b"hello"):
                c.close(i)
        remaining = set(range(CLIENTS)) - set(leaving) - c.served(b"hello")
        while remaining:
            c.pump(lambda r=remaining: bool(c.served(b"hello") & r), WAIT)  # type: ignore[misc]
            done = c.served(b"hello") & remaining
            assert done, f"{len(remaining)} clients never served"
            for i in done:
                c.close(i)
            remaining -= done
    finally:
        c.close_all()
    after = srv.wait_back_to(baseline)
    assert after.fds == baseline.fds and after.threads == baseline.threads
    with srv.connect() as fresh:  # and it still serves
        fresh.sendall(b"after")
        assert fresh.recv(100) == b"after"
    assert srv.stop() == 0
    srv.assert_clean_log()
    # each episode (a limit hit after the previous recovery) logs one line, no more
    episodes = len(log_lines(srv.log, "accepting again"))
    assert 1 <= len(log_lines(srv.log, "RLIMIT_NOFILE")) <= episodes + 1
