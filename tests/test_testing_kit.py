"""reactor.testing: FakeTransport and ProtocolPair, the in-memory test kit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reactor.sansio.errors import ClosedError
from reactor.testing import FakeTransport, ProtocolPair


class Trace(asyncio.Protocol):
    """Records every callback; optional behaviours for the tests."""

    def __init__(self, *, echo: bool = False, keep_open: bool = False,
                 close_on: bytes | None = None) -> None:
        self.events: list[Any] = []
        self.transport: Any = None
        self.echo = echo
        self.keep_open = keep_open
        self.close_on = close_on
        self.in_callback = False

    def _enter(self, event: Any) -> None:
        assert not self.in_callback, f"{event!r} called from inside another callback"
        self.events.append(event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._enter("made")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._enter(("data", data))
        self.in_callback = True
        try:
            if self.echo:
                self.transport.write(data)
            if self.close_on is not None and self.close_on in data:
                self.transport.close()
        finally:
            self.in_callback = False

    def eof_received(self) -> bool:
        self._enter("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(("lost", type(exc).__name__ if exc else None))

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    @property
    def received(self) -> bytes:
        return b"".join(e[1] for e in self.events if isinstance(e, tuple) and e[0] == "data")


# -- FakeTransport ----------------------------------------------------------------------


def test_fake_transport_is_an_asyncio_transport() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    assert isinstance(transport, asyncio.Transport)
    assert proto.events == ["made"]
    assert transport.get_protocol() is proto
    assert transport.get_extra_info("peername") == ("127.0.0.1", 50000)
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.get_extra_info("missing", "dflt") == "dflt"
    extra = FakeTransport(extra={"cipher": "none"}, peername="p")
    assert extra.get_extra_info("cipher") == "none"
    assert extra.get_extra_info("peername") == "p"


def test_records_writes_and_take() -> None:
    transport = FakeTransport(Trace())
    transport.write(b"ab")
    transport.writelines([b"c", bytearray(b"d"), memoryview(b"e")])
    assert transport.get_write_buffer_size() == 5
    assert transport.take(2) == b"ab"
    assert transport.take() == b"cde"
    assert transport.bytes_written == 5
    with pytest.raises(TypeError):
        transport.write("text")  # type: ignore[arg-type]


def test_feed_and_eof_reach_the_protocol() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.feed(b"x")
    transport.feed(b"")  # nothing to deliver
    transport.feed_eof()
    assert proto.events == ["made", ("data", b"x"), "eof", ("lost", None)]
    assert transport.lost and transport.eof_fed
    with pytest.raises(ClosedError):
        transport.feed(b"late")


def test_eof_kept_open_when_the_protocol_says_so() -> None:
    proto = Trace(keep_open=True)
    transport = FakeTransport(proto)
    transport.feed_eof()
    assert not transport.is_closing()
    transport.write(b"still writing")
    transport.write_eof()
    assert transport.eof_written
    with pytest.raises(RuntimeError):
        transport.write(b"after eof")
    assert transport.take() == b"still writing"
    transport.close()
    assert proto.events[-1] == ("lost", None)


def test_close_waits_for_the_buffer_to_be_taken() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.write(b"bye")
    transport.close()
    assert transport.is_closing() and not transport.lost
    transport.write(b"dropped")
    assert transport.dropped_writes == 1
    assert transport.take(1) == b"b"
    assert not transport.lost
    assert transport.take() == b"ye"
    assert transport.lost
    assert proto.events[-1] == ("lost", None)


def test_abort_drops_the_buffer() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.write(b"never sent")
    transport.abort()
    assert transport.aborted and transport.lost
    assert transport.take() == b""
    assert proto.events == ["made", ("lost", None)]


def test_connection_lost_exactly_once() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.close()
    transport.close()
    transport.abort()
    transport.lose(ConnectionResetError())
    transport.feed_eof()
    assert [e for e in proto.events if isinstance(e, tuple) and e[0] == "lost"] == [
        ("lost", None)]


def test_lose_reports_the_error() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.lose(ConnectionResetError("reset"))
    assert proto.events[-1] == ("lost", "ConnectionResetError")
    assert isinstance(transport.lost_exc, ConnectionResetError)


def test_connection_lost_is_never_called_inside_another_callback() -> None:
    proto = Trace(close_on=b"quit")
    transport = FakeTransport(proto)
    transport.feed(b"quit")  # Trace asserts it is not re-entered
    assert proto.events == ["made", ("data", b"quit"), ("lost", None)]


def test_water_marks_pause_and_resume_the_protocol() -> None:
    proto = Trace()
    transport = FakeTransport(proto, high_water=10)
    assert transport.get_write_buffer_limits() == (2, 10)
    transport.write(b"x" * 10)
    assert "pause" not in proto.events
    transport.write(b"x")
    assert proto.events[-1] == "pause"
    transport.write(b"x" * 5)
    assert proto.events.count("pause") == 1
    transport.take(13)  # 3 left: above the low mark
    assert "resume" not in proto.events
    transport.take(1)
    assert proto.events[-1] == "resume"
    transport.set_write_buffer_limits(high=100)
    assert transport.get_write_buffer_limits() == (25, 100)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=1, low=2)


def test_pause_reading_queues_input_in_order() -> None:
    proto = Trace()
    transport = FakeTransport(proto)
    transport.pause_reading()
    assert not transport.is_reading()
    transport.feed(b"a")
    transport.feed(b"b")
    transport.feed_eof()
    assert proto.events == ["made"]
    transport.resume_reading()
    assert transport.is_reading() or transport.lost
    assert proto.events == ["made", ("data", b"a"), ("data", b"b"), "eof", ("lost", None)]


def test_resume_reading_inside_a_callback_delivers_afterwards() -> None:
    class Resumer(Trace):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.in_callback = True
            self.transport.resume_reading()
            self.in_callback = False

    proto = Resumer()
    transport = FakeTransport(proto)
    transport.pause_reading()
    transport.feed(b"queued")
    transport.resume_reading()
    transport.pause_reading()
    transport.feed(b"next")
    transport.resume_reading()
    assert proto.received == b"queuednext"


def test_get_protocol_without_one_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="no protocol"):
        FakeTransport().get_protocol()


# -- ProtocolPair -------------------------------------------------------------------------


def test_pair_connects_and_pumps_both_ways() -> None:
    client, server = Trace(), Trace(echo=True)
    pair = ProtocolPair(client, server)
    assert server.events == ["made"] and client.events == ["made"]
    assert pair.server_transport.get_extra_info("peername") == \
        pair.client_transport.get_extra_info("sockname")
    pair.client_transport.write(b"ping")
    assert pair.pump()
    assert client.received == b"ping"
    assert not pair.pump()  # nothing left to move


def test_pair_delivers_in_chunks() -> None:
    client, server = Trace(), Trace(echo=True)
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"abcde")
    pair.pump(chunk_size=2)
    assert [e[1] for e in server.events if isinstance(e, tuple)] == [b"ab", b"cd", b"e"]
    assert client.received == b"abcde"


def test_pair_propagates_close_as_eof_then_both_sides_are_lost() -> None:
    client, server = Trace(), Trace()
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"last words")
    pair.client_transport.close()
    pair.pump()
    assert server.events == ["made", ("data", b"last words"), "eof", ("lost", None)]
    assert client.events == ["made", ("lost", None)]


def test_pair_half_close() -> None:
    client, server = Trace(), Trace(keep_open=True)
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"request")
    pair.client_transport.write_eof()
    pair.pump()
    assert server.events[-1] == "eof"
    pair.server_transport.write(b"response")
    pair.server_transport.close()
    pair.pump()
    assert client.received == b"response"
    assert client.events[-2:] == ["eof", ("lost", None)]
    assert server.events[-1] == ("lost", None)


def test_pair_abort_resets_the_peer() -> None:
    client, server = Trace(), Trace()
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"dropped")
    pair.client_transport.abort()
    pair.pump()
    assert server.events == ["made", ("lost", "ConnectionResetError")]


def test_pair_writing_to_a_gone_peer_resets() -> None:
    client, server = Trace(), Trace(keep_open=True)
    pair = ProtocolPair(client, server)
    pair.client_transport.close()
    pair.pump()
    assert client.events[-1] == ("lost", None)
    pair.server_transport.write(b"too late")
    pair.pump()
    assert server.events[-1] == ("lost", "ConnectionResetError")


def test_pair_a_reader_that_pauses_makes_the_writer_buffer_and_pause() -> None:
    client, server = Trace(), Trace()
    pair = ProtocolPair(client, server, high_water=100)
    pair.client_transport.pause_reading()
    pair.server_transport.write(b"x" * 150)
    assert not pair.pump()
    assert pair.server_transport.get_write_buffer_size() == 150
    assert server.events[-1] == "pause"
    pair.client_transport.resume_reading()
    assert pair.pump()
    assert client.received == b"x" * 150
    assert server.events[-1] == "resume"


def test_pair_livelock_is_reported() -> None:
    client, server = Trace(echo=True), Trace(echo=True)
    pair = ProtocolPair(client, server)
    pair.client_transport.write(b"ping-pong forever")
    with pytest.raises(RuntimeError, match="still moving"):
        pair.pump(max_rounds=50)
