"""The reactor inside other loops: asyncio, and a host's own select loop."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reactor import LocalProtocolError, Reactor
from reactor.embed import attach
from reactor.testing import FakeSelector


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.mark.timeout(30)
def test_asyncio_app_and_reactor_server_share_one_thread() -> None:
    reactor = Reactor()
    listener = reactor.listen_tcp("127.0.0.1", 0, Echo)
    port = listener.port

    async def main() -> tuple[int, float, list[float]]:
        embedding = attach(reactor)
        # an asyncio application: a ticker that must keep its cadence
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(20):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        # an asyncio client talking to the reactor's server through the same thread
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        for i in range(200):
            writer.write(b"ping %d\n" % i)
            assert await asyncio.wait_for(reader.readline(), 5) == b"ping %d\n" % i
        elapsed = time.monotonic() - start
        writer.close()
        await writer.wait_closed()
        await tick_task
        # reactor timers fire while embedded
        fired = asyncio.Event()
        reactor.call_later(0.02, fired.set)
        await asyncio.wait_for(fired.wait(), 5)
        turns = embedding.turns
        embedding.detach()
        return turns, elapsed, ticks

    turns, elapsed, ticks = asyncio.run(main())
    reactor.close()
    assert turns > 0
    assert elapsed < 10
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) == 20 and max(gaps) < 1.0


@pytest.mark.timeout(10)
def test_reactor_work_scheduled_from_the_host_wakes_the_embedding() -> None:
    reactor = Reactor()

    async def main() -> list[str]:
        embedding = attach(reactor)
        out: list[str] = []
        done = asyncio.Event()
        # scheduled from asyncio code, outside any reactor iteration
        reactor.call_soon(lambda: (out.append("soon"), done.set()))
        await asyncio.wait_for(done.wait(), 5)
        embedding.detach()
        embedding.attach()
        with pytest.raises(RuntimeError, match="already attached"):
            embedding.attach()
        embedding.detach()
        return out

    try:
        assert asyncio.run(main()) == ["soon"]
    finally:
        reactor.close()


def test_fileno_and_next_timeout() -> None:
    r = Reactor()
    try:
        assert isinstance(r.fileno(), int)
        assert r.next_timeout() is None
        r.call_later(10, lambda: None)
        t = r.next_timeout()
        assert t is not None and 9 < t <= 10
        r.call_soon(lambda: None)
        assert r.next_timeout() == 0
    finally:
        r.close()
    with pytest.raises(LocalProtocolError):
        Reactor(selector=FakeSelector()).fileno()


@pytest.mark.timeout(60)
def test_select_host_example_serves_while_the_host_ticks() -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "select_host.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--seconds", "2"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(first.split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(50):
                s.sendall(b"x%d" % i)
                assert s.recv(100) == b"x%d" % i
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    words = out.split()
    ticks, served = int(words[2]), int(words[5])
    assert served >= 50
    assert ticks >= 10  # the host kept its own cadence (about 40 in 2 s)
