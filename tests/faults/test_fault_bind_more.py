"""Scenario 28: binding an address this host does not have (EADDRNOTAVAIL).

203.0.113.1 (TEST-NET-3) and 2001:db8::1 (the IPv6 documentation prefix) are on no
interface here; binding one sends no traffic and fails with EADDRNOTAVAIL. listen_tcp,
listen_udp and ``reactor serve --bind`` report it clearly, naming the address, and leak
no socket: not held (descriptors counted with psutil over a hundred attempts) and not
left unclosed to the garbage collector (no ResourceWarning).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import subprocess
import sys
import warnings
from collections.abc import Callable

import psutil
import pytest
from faultlib import WAIT
from servekit import ROOT

from reactor import Reactor
from reactor.cli.graceful import Server

ATTEMPTS = 100
NOT_HERE = [("203.0.113.1", "203.0.113.1:0"), ("2001:db8::1", "[2001:db8::1]:0")]


def fails_clearly_and_leaks_nothing(attempt: Callable[[], object], host: str) -> None:
    proc = psutil.Process()
    before = proc.num_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(ATTEMPTS):
            with pytest.raises(OSError) as raised:
                attempt()
            assert raised.value.errno == errno.EADDRNOTAVAIL, raised.value
            assert host in str(raised.value), str(raised.value)
            assert "annot assign requested address" in str(raised.value)
        gc.collect()
    assert proc.num_fds() == before, f"{proc.num_fds() - before} descriptors leaked"
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, f"{len(unclosed)} sockets left to the garbage collector: {unclosed[0]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host, bind", NOT_HERE, ids=["ipv4", "ipv6"])
def test_listening_on_an_address_not_on_this_host_fails_clearly(host: str, bind: str) -> None:
    with Reactor() as reactor:
        fails_clearly_and_leaks_nothing(
            lambda: reactor.listen_tcp(host, 0, asyncio.Protocol), host)
        fails_clearly_and_leaks_nothing(
            lambda: reactor.listen_tcp(host, 0, asyncio.Protocol, reuse_port=True), host)
        fails_clearly_and_leaks_nothing(
            lambda: reactor.listen_udp(host, 0, asyncio.DatagramProtocol), host)

        def server_start() -> None:  # the first address is let go again
            Server(asyncio.Protocol, ["127.0.0.1:0", bind], reactor=reactor,
                   handle_signals=False).start()

        fails_clearly_and_leaks_nothing(server_start, host)
        assert not reactor.listeners
        assert len(reactor.connections) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host, bind", NOT_HERE, ids=["ipv4", "ipv6"])
def test_the_command_reports_an_address_not_on_this_host(host: str, bind: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "echo", "--bind", "127.0.0.1:0",
         "--bind", bind], cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on {bind} (--bind): cannot assign requested address" in \
        result.stderr, result.stderr
    assert "no interface of this host has that address" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr
