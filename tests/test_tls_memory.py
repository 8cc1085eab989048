"""The TLS layer with no socket at all: two layers over in-memory transports
(:class:`reactor.testing.FakeTransport`), the bytes between them handed over whole,
byte by byte, and in random chunks (hypothesis). Whatever the split, the handshake
completes, the plaintext arrives intact and in order, and close_notify is
``eof_received`` on the other side."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netkit import Recorder
from tlskit import Certs

from reactor import Reactor, TLSLayer, TLSState
from reactor.testing import FakeTransport

Splitter = Callable[[bytes], Iterator[bytes]]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for n in range(len(data)):
        yield data[n:n + 1]


class Pair:
    """A client and a server layer, each over a FakeTransport; :meth:`pump` moves the
    bytes each wrote to the other, split by ``split``."""

    def __init__(self, certs: Certs, reactor: Reactor, split: Splitter) -> None:
        self.split = split
        self.server_app = Recorder()
        self.client_app = Recorder()
        self.server = TLSLayer(reactor, certs.server_context(), lambda: self.server_app,
                               server_side=True)
        self.client = TLSLayer(reactor, certs.client_context(), lambda: self.client_app,
                               server_side=False, server_hostname="localhost")
        self.server_raw = FakeTransport(self.server)
        self.client_raw = FakeTransport(self.client)

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for source, target in ((self.client_raw, self.server_raw),
                                   (self.server_raw, self.client_raw)):
                data = source.take()
                if data:
                    moved = True
                    for piece in self.split(data):
                        if not target.lost:
                            target.feed(piece)
            if not moved:
                return
        raise AssertionError("the layers never stopped talking")


def exchange(pair: Pair, messages: list[bytes]) -> None:
    pair.pump()
    assert pair.server.state is TLSState.ESTABLISHED
    assert pair.client.state is TLSState.ESTABLISHED
    assert pair.server_app.events == ["connection_made"]
    for message in messages:
        pair.client.write(message)
        pair.server.write(message[::-1])
    pair.pump()
    assert bytes(pair.server_app.data) == b"".join(messages)
    assert bytes(pair.client_app.data) == b"".join(m[::-1] for m in messages)
    pair.client.close()
    pair.pump()
    assert pair.server_app.events[-2:] == ["eof_received", "connection_lost"]
    assert pair.server_app.lost == [None] and pair.client_app.lost == [None]
    assert pair.server.state is TLSState.CLOSED


MESSAGES = [b"hello", b"x" * 20000, b"", b"last"]


@pytest.mark.parametrize("split", [whole, bytewise], ids=["whole", "byte-by-byte"])
def test_any_split_gives_the_same_session(certs: Certs, split: Splitter) -> None:
    with Reactor() as reactor:
        exchange(Pair(certs, reactor, split), MESSAGES if split is whole else [b"hi", b"yo"])


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_random_chunks(certs: Certs, sizes: list[int]) -> None:
    def chunks(data: bytes) -> Iterator[bytes]:
        pos, n = 0, 0
        while pos < len(data):
            size = sizes[n % len(sizes)]
            yield data[pos:pos + size]
            pos += size
            n += 1

    with Reactor() as reactor:
        exchange(Pair(certs, reactor, chunks), MESSAGES)


def test_the_layer_runs_over_any_asyncio_transport(certs: Certs) -> None:
    with Reactor() as reactor:
        pair = Pair(certs, reactor, whole)
        pair.pump()
        assert pair.server.raw_transport is pair.server_raw
        assert pair.server.get_extra_info("peername") == pair.server_raw.get_extra_info(
            "peername")
        assert pair.server_raw.get_extra_info("tls") is None  # no row to hold it
        pair.server.abort()
        assert pair.server_raw.aborted and pair.server_app.lost == [None]


class CountingEngine:
    """An SSLObject stand-in that counts the reads that only said "want read"."""

    def __init__(self, sslobj: Any) -> None:
        self.sslobj = sslobj
        self.want_reads = 0

    def read(self, *args: Any) -> Any:
        try:
            return self.sslobj.read(*args)
        except ssl.SSLWantReadError:
            self.want_reads += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sslobj, name)


def test_whole_records_need_no_want_read(certs: Certs) -> None:
    # The engine raises "want read" when asked for more than the bytes received hold,
    # and that exception costs more than decrypting a small record: the layer stops
    # reading once the incoming buffer is empty and the record used up.
    with Reactor() as reactor:
        pair = Pair(certs, reactor, whole)
        pair.pump()
        engine = CountingEngine(pair.server._sslobj)
        pair.server._sslobj = engine  # type: ignore[assignment]
        for message in (b"one", b"two" * 3000, b"x" * 40000):
            pair.client.write(message)
            pair.pump()
        assert bytes(pair.server_app.data) == b"onetwo" + b"two" * 2999 + b"x" * 40000
        assert engine.want_reads == 0
        pair.client.write(b"half")  # a record cut in two: the first half wants more
        record = pair.client_raw.take()
        pair.server_raw.feed(record[:7])
        assert engine.want_reads == 1
        pair.server_raw.feed(record[7:])
        assert pair.server_app.data.endswith(b"xhalf") and engine.want_reads == 1


def test_data_and_close_notify_in_one_chunk(certs: Certs) -> None:
    with Reactor() as reactor:
        pair = Pair(certs, reactor, whole)
        pair.pump()
        pair.client.write(b"last words")
        pair.client.close()
        pair.pump()
        assert bytes(pair.server_app.data) == b"last words"
        assert pair.server_app.events[-3:] == ["data_received", "eof_received",
                                               "connection_lost"]
        assert pair.server_app.lost == [None]
