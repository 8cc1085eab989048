"""Scenario 14: ``shutdown()`` of the facades -- from another thread, from inside a
handler, and while handlers are running (``block_on_close``).

Measured on a facade server child (:mod:`facadekit`): ``shutdown()`` returns at once
(the standard library waits up to ``poll_interval``, 0.5 s), a handler calling it does
not deadlock, handlers running at that moment finish and answer before
``server_close()`` returns, and nothing is left behind: no thread, no child, exit 0.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, figure
from servekit import read_lines, read_until_closed

SHUTDOWN_BOUND = 0.005  # seconds, for the best of TRIES servers (measured 0.2-0.7 ms)
TRIES = 3


def seconds(srv: FaultServer, what: str) -> float:
    return float(srv.wait_for(rf"{what} returned in ([\d.]+) s").group(1))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["tcp", "threading", "forking"])
def test_shutdown_from_another_thread_returns_at_once(
    start_server: Callable[..., FaultServer], kind: str,
) -> None:
    took: list[float] = []
    while len(took) < TRIES and min(took, default=SHUTDOWN_BOUND) >= SHUTDOWN_BOUND:
        srv = start_server(facade=kind)
        with srv.connect() as client:  # served once, so the loop is really running
            client.sendall(b"hello")
            assert client.recv(16) == b"hello"
        srv.signal(signal.SIGTERM)  # facadekit calls shutdown() from a new thread
        assert srv.wait() == 0
        took.append(seconds(srv, r"shutdown\(\)"))
        assert "threads=1 children=0" in srv.log
        srv.assert_clean_log()
    figure(f"facade {kind}: shutdown() from another thread returned in", min(took) * 1000,
           "ms")
    assert min(took) < SHUTDOWN_BOUND, f"shutdown() took {took} s (best of {TRIES})"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["tcp", "threading"])
def test_shutdown_from_inside_a_handler_does_not_deadlock(
    start_server: Callable[..., FaultServer], kind: str,
) -> None:
    srv = start_server(facade=kind)
    with srv.connect() as client:
        client.sendall(b"shutdown\n")
        assert read_lines(client, 1) == [b"shutting down"]
    assert srv.wait(WAIT) == 0  # a deadlock would hang here
    assert "serve_forever() returned" in srv.log
    assert "threads=1 children=0" in srv.log
    srv.assert_clean_log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["threading", "forking"])
def test_shutdown_while_handlers_run_waits_for_them_and_leaves_nothing(
    start_server: Callable[..., FaultServer], kind: str,
) -> None:
    srv = start_server(facade=kind)
    baseline = srv.usage()
    clients = [srv.connect() for _ in range(5)]
    for client in clients:
        client.sendall(b"sleep 1.5\n")
    srv.wait_for("handler sleeping", count=5)
    workers = srv.usage()
    assert workers.threads + workers.children >= baseline.threads + baseline.children + 5
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    for client in clients:  # every running handler finishes and answers
        assert read_until_closed(client) == b"slept\n"
        client.close()
    assert srv.wait() == 0
    elapsed = time.monotonic() - started
    assert seconds(srv, r"shutdown\(\)") < 0.1  # shutdown() itself does not wait
    closing = seconds(srv, r"server_close\(\)")  # server_close() does (block_on_close)
    figure(f"facade {kind}: server_close() waited for 5 running handlers", closing, "s")
    assert 0.5 < closing < 1.5 + 0.5 and elapsed < 1.5 + 1.0  # the handlers' 1.5 s sleep
    assert "threads=1 children=0" in srv.log
    srv.assert_clean_log()
