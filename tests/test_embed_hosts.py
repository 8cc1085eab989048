"""What only one host or the shared base does (the rest: tests/test_embed_conformance.py)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from embedkit import Echo, echo_rounds

from reactor import ClosedError, Reactor
from reactor.embed import asyncio as embed_asyncio


def test_attach_refuses_a_closed_reactor_and_one_running_by_itself() -> None:
    reactor = Reactor()
    loop = asyncio.new_event_loop()
    refused: list[BaseException] = []

    def inside_run() -> None:
        try:
            embed_asyncio.attach(reactor, loop)
        except RuntimeError as exc:
            refused.append(exc)
        reactor.stop()

    try:
        reactor.call_soon(inside_run)
        reactor.run()
        assert "running its own loop" in str(refused[0])
        reactor.close()
        with pytest.raises(ClosedError):
            embed_asyncio.attach(reactor, loop)
    finally:
        loop.close()


def test_embedding_is_a_context_manager_that_detaches() -> None:
    reactor = Reactor()
    loop = asyncio.new_event_loop()
    try:
        with embed_asyncio.attach(reactor, loop) as embedding:
            assert embedding.attached
        assert not embedding.attached
        embedding.detach()  # twice is harmless
    finally:
        loop.close()
        reactor.close()


@pytest.mark.timeout(30)
def test_trio_reattach_at_once_and_a_closed_nursery() -> None:
    trio = pytest.importorskip("trio")
    from reactor.embed import trio as embed_trio

    reactor = Reactor()
    port = reactor.listen_tcp("127.0.0.1", 0, Echo).port

    async def main() -> tuple[bool, int]:
        async with trio.open_nursery() as nursery:
            embedding = embed_trio.attach(reactor, nursery)
            await trio.sleep(0)
            # detach and attach again before the old task has run again: trio allows
            # one waiter per descriptor, and the new task must not find the old one
            embedding.detach()
            embedding.attach()

            def client() -> None:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    echo_rounds(sock, 10)

            await trio.to_thread.run_sync(client)
            turns = embedding.turns
            embedding.detach()
        attached_after = embedding.attached
        # its nursery is closed: attaching again there is refused by trio
        with pytest.raises(RuntimeError):
            embedding.attach()
        return attached_after, turns

    try:
        attached_after, turns = trio.run(main)
    finally:
        reactor.close()
    assert not attached_after and turns > 0


@pytest.mark.timeout(30)
def test_trio_run_ending_while_attached_detaches_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    trio = pytest.importorskip("trio")
    from reactor.embed import trio as embed_trio

    reactor = Reactor()

    async def main() -> embed_trio.TrioEmbedding:
        embedding = embed_trio.attach(reactor)  # a system task, ended with the run
        await trio.sleep(0)
        return embedding

    try:
        with caplog.at_level(logging.WARNING, logger="reactor.embed"):
            embedding = trio.run(main)
        assert not embedding.attached
        assert "the trio task ended" in caplog.text
        reactor.run_until(lambda: True, timeout=5)  # still usable by itself
    finally:
        reactor.close()


def test_twisted_dropping_the_descriptor_detaches_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("twisted")
    from twisted.internet.epollreactor import EPollReactor

    from reactor.embed import twisted as embed_twisted

    host = EPollReactor()
    reactor = Reactor()
    try:
        embedding = embed_twisted.attach(reactor, host)
        with caplog.at_level(logging.WARNING, logger="reactor.embed"):
            host.disconnectAll()  # as Twisted does to a descriptor it finds broken
        assert not embedding.attached
        assert "the host stopped watching the reactor" in caplog.text
        embedding.attach()  # and it can be attached again
        assert embedding.attached
        embedding.detach()
    finally:
        reactor.close()
        host.removeAll()
        host.waker.connectionLost(None)
        host._poller.close()
