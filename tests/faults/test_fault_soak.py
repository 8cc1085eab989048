"""Scenario 15: a soak -- many connections opened, used and closed.

After a warm-up, the echo service (with an idle timeout, so every connection also has
a deadline timer) serves 10 000 connections (100 000 in the long variant), a quarter
of them closed with an RST: descriptors and threads return exactly to the baseline,
RSS to within a few MiB (a leak of a few hundred bytes per connection fails), and the
reactor's table and timer heap are empty. The same for a ``ThreadingTCPServer`` facade
(a thread per connection): every thread ends, nothing is left.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from faultlib import FaultServer, churn, figure

SHORT = 10_000
LONG = 100_000


def soak(start_server: Callable[..., FaultServer], total: int, rss_slack: int,
         timeout: float) -> None:
    srv = start_server("echo", "--bind", "127.0.0.1:0", "--idle-timeout", "60",
                       "--backlog", "1024", app_dir=False)
    address = srv.tcp_address()
    warm = churn(address, 2000, rst_every=4)  # caches, allocator arenas, interned peers
    assert warm.failed == 0, warm.errors
    srv.wait_idle()
    baseline = srv.usage()
    done = churn(address, total, concurrency=64, rst_every=4, timeout=timeout)
    assert done.failed == 0, done.errors
    assert done.completed == total
    stats = srv.wait_idle()
    after = srv.wait_back_to(baseline, rss_slack=rss_slack)
    assert after.fds == baseline.fds and after.threads == baseline.threads
    assert stats["closed_total"] == stats["opened_total"] == total + 2000
    assert stats["pending_timers"] == 0, "deadline timers left behind"
    figure(f"soak ({total} echo connections): rate", done.rate, "connections/s")
    figure(f"soak ({total} echo connections): fds after - before", after.fds - baseline.fds,
           "")
    figure(f"soak ({total} echo connections): threads after - before",
           after.threads - baseline.threads, "")
    figure(f"soak ({total} echo connections): RSS after - before",
           (after.rss - baseline.rss) / 2**20, "MiB")
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(180)
def test_soak_echo_short(start_server: Callable[..., FaultServer]) -> None:
    soak(start_server, SHORT, rss_slack=3 * 2**20, timeout=150)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_soak_echo_long(start_server: Callable[..., FaultServer]) -> None:
    soak(start_server, LONG, rss_slack=6 * 2**20, timeout=800)


def soak_threading(start_server: Callable[..., FaultServer], total: int, rss_slack: int,
                   timeout: float) -> None:
    srv = start_server(facade="threading")
    initial = srv.usage()
    address = srv.tcp_address()
    warm = churn(address, 2000, rst_every=4)
    assert warm.failed == 0, warm.errors
    baseline = srv.wait_back_to(initial, rss_slack=64 * 2**20)  # threads ended
    done = churn(address, total, concurrency=64, rst_every=4, timeout=timeout)
    assert done.failed == 0, done.errors
    assert done.completed == total
    after = srv.wait_back_to(baseline, rss_slack=rss_slack)
    assert after.fds == baseline.fds and after.threads == baseline.threads == 1
    figure(f"soak ({total} ThreadingTCPServer connections): rate", done.rate,
           "connections/s")
    figure(f"soak ({total} ThreadingTCPServer connections): fds/threads after - before",
           (after.fds - baseline.fds) + (after.threads - baseline.threads), "")
    figure(f"soak ({total} ThreadingTCPServer connections): RSS after - before",
           (after.rss - baseline.rss) / 2**20, "MiB")
    assert srv.stop() == 0
    assert "threads=1 children=0" in srv.log
    srv.assert_clean_log()


@pytest.mark.timeout(180)
def test_soak_threading_facade_short(start_server: Callable[..., FaultServer]) -> None:
    soak_threading(start_server, SHORT, rss_slack=3 * 2**20, timeout=150)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_soak_threading_facade_long(start_server: Callable[..., FaultServer]) -> None:
    soak_threading(start_server, LONG, rss_slack=6 * 2**20, timeout=800)
