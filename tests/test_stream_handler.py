"""handlers.base.StreamHandler: conveniences in memory, and the same results on both loops."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import pytest
from handlerkit import LOOPS, LineClient, serve_tcp

from handlers.base import FramingError, StreamHandler
from reactor import ConnState, StreamTransport
from reactor.sansio.errors import RemoteProtocolError
from reactor.testing import FakeTransport, ProtocolPair


class Probe(StreamHandler):
    """Greets, answers "big" with 2 MB then closes when done, records what it saw."""

    __slots__ = ("seen",)

    BIG = 2 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, Any] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        row = self.row
        self.seen["peername"] = self.peername
        self.seen["row_is_transport"] = row is transport
        self.seen["row_state"] = row.state if row is not None else None
        self.seen["connected"] = self.connected
        self.send(b"hello\n")

    def data_received(self, data: bytes) -> None:
        if b"big" in data:
            self.send(b"x" * self.BIG)
            self.close_when_done()
            self.seen["send_after_close"] = self.send(b"dropped")
            self.seen["connected_after_close"] = self.connected

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.seen["lost"] = (self.lost, exc)


# -- in memory ----------------------------------------------------------------------------


def test_a_handler_is_small_and_has_no_dict() -> None:
    handler = StreamHandler()
    assert not hasattr(handler, "__dict__")
    assert sys.getsizeof(handler) <= 64
    assert isinstance(handler, asyncio.Protocol)


def test_before_connection_made() -> None:
    handler = StreamHandler()
    assert handler.transport is None
    assert handler.peername is None
    assert handler.row is None
    assert not handler.connected
    assert not handler.send(b"x")
    assert handler.write_buffer_size == 0
    handler.close_when_done()  # harmless
    assert repr(handler) == "<StreamHandler None>"


def test_conveniences_on_a_fake_transport() -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler, peername=("10.0.0.1", 4242))
    assert handler.transport is transport
    assert handler.peername == ("10.0.0.1", 4242)
    assert handler.row is None  # not on the reactor
    assert handler.connected
    assert handler.send(b"abc")
    assert handler.write_buffer_size == 3
    handler.close_when_done()
    assert not handler.connected
    assert not handler.send(b"dropped")
    assert not transport.lost  # waits for the queued output
    assert transport.take() == b"abc"
    assert transport.lost and handler.lost


def test_eof_closes_by_default_and_is_remembered() -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler)
    transport.feed_eof()
    assert handler.peer_closed
    assert transport.lost and handler.lost


def test_pause_and_resume_writing_are_tracked() -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler, high_water=4)
    handler.send(b"12345")
    assert handler.writing_paused
    transport.take()
    assert not handler.writing_paused


def test_disconnect_logs_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler, peername=("192.0.2.7", 99))
    handler.send(b"pending")
    with caplog.at_level(logging.INFO, logger="handlers"):
        handler.disconnect("bad input", abort=True)
    assert "StreamHandler ('192.0.2.7', 99): closing: bad input" in caplog.text
    assert transport.aborted and transport.lost
    handler.disconnect("again")  # a lost connection is left alone
    assert caplog.text.count("closing") == 1


def test_framing_error_closes_after_flushing(caplog: pytest.LogCaptureFixture) -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler)
    handler.send(b"error reply\n")
    with caplog.at_level(logging.INFO, logger="handlers"):
        handler.framing_error(FramingError("frame too big"))
    assert "frame too big" in caplog.text
    assert transport.take() == b"error reply\n"
    assert transport.lost
    assert issubclass(FramingError, RemoteProtocolError)


def test_connection_lost_with_an_error_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = StreamHandler()
    transport = FakeTransport(handler)
    with caplog.at_level(logging.DEBUG, logger="handlers"):
        transport.lose(ConnectionResetError("reset by peer"))
    assert "reset by peer" in caplog.text
    assert handler.lost


def test_probe_over_a_protocol_pair() -> None:
    client_data = bytearray()

    class Client(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            client_data.extend(data)

    probe = Probe()
    pair = ProtocolPair(Client(), probe)
    pair.client_transport.write(b"big")
    pair.pump()
    assert bytes(client_data) == b"hello\n" + b"x" * Probe.BIG
    assert probe.seen["lost"] == (True, None)
    assert probe.seen["send_after_close"] is False


# -- over loopback, on both loops ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_same_behaviour_on_both_loops() -> None:
    results = {}
    for kind in LOOPS:
        handlers: list[Probe] = []

        def factory(handlers: list[Probe] = handlers) -> Probe:
            handlers.append(Probe())
            return handlers[-1]

        with serve_tcp(kind, factory) as server, LineClient(server.port) as client:
            assert client.read_line() == "hello"
            client.send(b"big")
            data = client.read_all()  # until the server closes: everything was flushed
            assert len(data) == Probe.BIG
            server.wait_for(lambda handlers=handlers: "lost" in handlers[0].seen,
                            what="connection_lost")
            seen = dict(handlers[0].seen)
            assert seen["peername"] == client.sock.getsockname()
            if kind == "reactor":
                assert seen.pop("row_is_transport") is True
                assert seen.pop("row_state") is ConnState.OPEN
                assert isinstance(handlers[0].transport, StreamTransport)
            else:
                assert seen.pop("row_is_transport") is False
                assert seen.pop("row_state") is None
            seen.pop("peername")
            results[kind] = seen
    assert results["reactor"] == results["asyncio"] == {
        "connected": True,
        "send_after_close": False,
        "connected_after_close": False,
        "lost": (True, None),
    }
