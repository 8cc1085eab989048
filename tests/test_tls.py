"""TLS on reactor transports (reactor/io/tls.py), over real sockets on one reactor.

The good path (echo, both ends on the reactor, TCP and Unix), what the row and
``get_extra_info`` show, flow control and closing; then the bad input: garbage instead
of a ClientHello, a stalled handshake, a client gone mid-handshake, a truncated record,
a client that never reads. Each bad case ends with one INFO line naming the peer and
the reason, and no row left in the table.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from typing import Any

import pytest
from netkit import WAIT, Net, Peer, Recorder
from tlskit import Certs, MemoryClient, tls_messages

from reactor import Reactor, StreamTransport
from reactor.io.tls import TLSLayer
from reactor.sansio.tls import TLSState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def rnet(default_reactor: Reactor) -> Any:
    n = Net(default_reactor)
    yield n
    n.close()


def echo(proto: Recorder, data: bytes) -> None:
    proto.transport.write(data)


def connect_client(reactor: Reactor, port: int, ctx: ssl.SSLContext,
                   **kwargs: Any) -> tuple[Any, Recorder]:
    future = reactor.connect_tcp("127.0.0.1", port, Recorder, ssl=ctx,
                                 server_hostname="localhost", **kwargs)
    transport, proto = reactor.run_until_complete(future, WAIT)
    assert isinstance(proto, Recorder)
    return transport, proto


def wait_empty(net: Net) -> None:
    net.wait(lambda: len(net.reactor.connections) == 0)


# -- the good path --------------------------------------------------------------------------


def test_echo_over_tls_on_every_backend(reactor: Reactor, net: Net, certs: Certs) -> None:
    listener = net.listen_tcp(on_data=echo, ssl=certs.server_context())
    transport, client = connect_client(reactor, listener.port, certs.client_context())
    assert isinstance(transport, TLSLayer)
    assert client.events == ["connection_made"]  # the future resolved after the handshake
    payload = os.urandom(300_000)
    transport.write(payload)
    net.wait(lambda: len(client.data) == len(payload))
    assert bytes(client.data) == payload
    server = net.protocols[0]
    assert server.data == payload and isinstance(server.transport, TLSLayer)
    transport.close()
    wait_empty(net)
    # close_notify is the server's eof_received; the client's close is orderly
    assert server.events[-2:] == ["eof_received", "connection_lost"]
    assert server.lost == [None] and client.lost == [None]
    assert server.reentered == [] and client.reentered == []


def test_row_shows_the_session(rnet: Net, certs: Certs) -> None:
    reactor = rnet.reactor
    listener = rnet.listen_tcp(ssl=certs.server_context())
    transport, _client = connect_client(reactor, listener.port, certs.client_context())
    rnet.wait(lambda: rnet.protocols)
    rows = {row.peername: row for row in reactor.connections}
    server_row = next(row for row in rows.values() if row.listener is listener)
    assert isinstance(server_row, StreamTransport)
    assert server_row.meta is not None
    session = server_row.meta["tls"]
    assert session.state is TLSState.ESTABLISHED
    assert session.version == "TLSv1.3" and session.cipher
    assert session.peer_subject is None  # no client certificate
    assert "established TLSv1.3" in session.describe()
    client_session = transport.get_extra_info("tls")
    assert client_session.peer_subject is None or "CN" not in client_session.peer_subject
    transport.close()
    wait_empty(rnet)
    assert session.state is TLSState.CLOSED


def test_get_extra_info_as_asyncio(rnet: Net, certs: Certs) -> None:
    ctx = certs.server_context()
    listener = rnet.listen_tcp(ssl=ctx)
    transport, _ = connect_client(rnet.reactor, listener.port, certs.client_context())
    rnet.wait(lambda: rnet.protocols)
    server = rnet.protocols[0].transport
    assert isinstance(server.get_extra_info("ssl_object"), ssl.SSLObject)
    assert server.get_extra_info("sslcontext") is ctx
    assert server.get_extra_info("cipher")[1] == "TLSv1.3"
    assert server.get_extra_info("peercert") is None  # the client sent none
    assert server.get_extra_info("peername") == transport.get_extra_info("sockname")
    assert server.get_extra_info("socket") is not None
    assert isinstance(server.get_extra_info("connection"), StreamTransport)
    assert server.get_extra_info("nonesuch", "x") == "x"
    subject = dict(rdn[0] for rdn in transport.get_extra_info("peercert")["subject"])
    assert "organizationName" in subject
    assert not server.can_write_eof()
    with pytest.raises(NotImplementedError):
        server.write_eof()
    transport.abort()
    wait_empty(rnet)


def test_tls_over_unix_sockets(rnet: Net, certs: Certs, sockdir: str) -> None:
    path = os.path.join(sockdir, "tls.sock")
    rnet.listen_unix(path, on_data=echo, ssl=certs.server_context())
    future = rnet.reactor.connect_unix(path, Recorder, ssl=certs.client_context(),
                                       server_hostname="localhost")
    transport, client = rnet.reactor.run_until_complete(future, WAIT)
    transport.write(b"over unix")
    rnet.wait(lambda: client.data == b"over unix")
    transport.close()
    wait_empty(rnet)


def test_mutual_tls_subject_in_row_and_extra_info(rnet: Net, certs: Certs) -> None:
    listener = rnet.listen_tcp(on_data=echo, ssl=certs.server_context(require_client=True))
    transport, client = connect_client(rnet.reactor, listener.port,
                                       certs.client_context(with_cert=True))
    transport.write(b"who am i")
    rnet.wait(lambda: client.data == b"who am i")
    server = rnet.protocols[0].transport
    session = server.get_extra_info("tls")
    assert session.peer_subject.startswith("CN=tls-test-client,OU=Testing cert ")
    assert server.get_extra_info("connection").meta["tls"] is session
    peercert = server.get_extra_info("peercert")
    assert ("commonName", "tls-test-client") in [rdn[0] for rdn in peercert["subject"]]
    transport.close()
    wait_empty(rnet)


def test_mutual_tls_without_a_client_certificate_is_refused(
        rnet: Net, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.tls")
    listener = rnet.listen_tcp(ssl=certs.server_context(require_client=True))
    # TLS 1.3: the client finishes its side first; the server's refusal comes after
    _transport, client = connect_client(rnet.reactor, listener.port, certs.client_context())
    rnet.wait(lambda: client.lost)
    wait_empty(rnet)
    assert rnet.protocols == []  # the server never made its protocol
    server_lines = [m for m in tls_messages(caplog) if "handshake failed" in m]
    assert len(server_lines) == 1 and "certificate" in server_lines[0]


def test_connect_fails_on_a_wrong_host_name(rnet: Net, certs: Certs,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.tls")
    listener = rnet.listen_tcp(ssl=certs.server_context())
    future = rnet.reactor.connect_tcp("127.0.0.1", listener.port, Recorder,
                                      ssl=certs.client_context(), server_hostname="example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        rnet.reactor.run_until_complete(future, WAIT)
    wait_empty(rnet)
    assert any("example.com" in m for m in tls_messages(caplog))


def test_tls_version_mismatch_fails_the_handshake(rnet: Net, certs: Certs,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.tls")
    server_ctx = certs.server_context()
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    listener = rnet.listen_tcp(ssl=server_ctx)
    future = rnet.reactor.connect_tcp("127.0.0.1", listener.port, Recorder,
                                      ssl=certs.client_context(maximum=ssl.TLSVersion.TLSv1_2))
    with pytest.raises(ssl.SSLError):
        rnet.reactor.run_until_complete(future, WAIT)
    wait_empty(rnet)
    lines = tls_messages(caplog)
    assert len(lines) == 2  # one per end
    assert any("version" in line for line in lines)


def test_tls_1_2_with_renegotiation_off(rnet: Net, certs: Certs) -> None:
    ctx = certs.server_context(maximum=ssl.TLSVersion.TLSv1_2)
    listener = rnet.listen_tcp(on_data=echo, ssl=ctx)
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):  # set by the layer on the context it uses
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
    transport, client = connect_client(rnet.reactor, listener.port, certs.client_context())
    assert transport.get_extra_info("tls").version == "TLSv1.2"
    transport.write(b"one two")
    rnet.wait(lambda: client.data == b"one two")
    transport.close()
    wait_empty(rnet)


def test_argument_errors(rnet: Net, certs: Certs) -> None:
    reactor = rnet.reactor
    with pytest.raises(ValueError, match="only meaningful with ssl"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, ssl_handshake_timeout=1.0)
    with pytest.raises(ValueError, match="positive"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, ssl=certs.server_context(),
                           ssl_handshake_timeout=0)
    with pytest.raises(TypeError, match="SSLContext"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, ssl=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_accept"):
        reactor.listen_tcp("127.0.0.1", 0, ssl=certs.server_context(),
                           on_accept=lambda *a: None)
    with pytest.raises(ValueError, match="server_hostname"):
        reactor.connect_unix("/nonexistent", Recorder, ssl=certs.client_context())
    assert reactor.listeners == [] and len(reactor.connections) == 0


def test_a_client_protocol_that_raises_fails_the_connect(rnet: Net, certs: Certs) -> None:
    listener = rnet.listen_tcp(ssl=certs.server_context())

    def explode(_proto: Recorder) -> None:
        raise RuntimeError("boom")

    future = rnet.reactor.connect_tcp("127.0.0.1", listener.port,
                                      lambda: Recorder(on_made=explode),
                                      ssl=certs.client_context())
    with pytest.raises(RuntimeError, match="boom"):
        rnet.reactor.run_until_complete(future, WAIT)
    wait_empty(rnet)


def test_records_received_while_paused_are_delivered_on_resume(rnet: Net,
                                                                certs: Certs) -> None:
    listener = rnet.listen_tcp(on_made=lambda p: p.transport.pause_reading(),
                               ssl=certs.server_context())
    peer = rnet.connect(listener.address)
    client = MemoryClient(certs.client_context(), rnet.reactor, peer)
    last = client.handshake(send_last=False)
    # the last handshake flight and two records in one write: the records reach the
    # layer with the end of the handshake, and its protocol pauses reading at once
    peer.write(last + client.record(b"one") + client.record(b"two"))
    rnet.wait(lambda: rnet.protocols)
    server = rnet.protocols[0]
    for _ in range(10):
        rnet.reactor.run_once(0.01)
    assert server.data == b""
    server.transport.resume_reading()
    rnet.wait(lambda: server.data == b"onetwo")
    peer.close()
    wait_empty(rnet)


def test_plain_listener_has_no_layer(rnet: Net) -> None:
    listener = rnet.listen_tcp()
    peer, proto = rnet.accept(listener)
    assert isinstance(proto.transport, StreamTransport)
    assert proto.transport.meta is None
    peer.close()


# -- flow control -----------------------------------------------------------------------------


class Firehose(asyncio.Protocol):
    """Writes 64 KiB blocks while not paused (from the loop, not recursively)."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.paused = False
        self.pauses = 0
        self.written = 0
        self.max_buffer = 0
        self.transport: Any = None
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.reactor.call_soon(self.pump)

    def pump(self) -> None:
        while not self.paused and not self.transport.is_closing():
            self.transport.write(b"z" * 65536)
            self.written += 65536
            self.max_buffer = max(self.max_buffer, self.transport.get_write_buffer_size())

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self.reactor.call_soon(self.pump)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_a_client_that_never_reads_pauses_the_writer(rnet: Net, certs: Certs) -> None:
    reactor = rnet.reactor
    hoses: list[Firehose] = []

    def make() -> Firehose:
        hoses.append(Firehose(reactor))
        return hoses[-1]

    listener = reactor.listen_tcp("127.0.0.1", 0, make, ssl=certs.server_context())
    rnet.listeners.append(listener)
    transport, client = connect_client(reactor, listener.port, certs.client_context())
    transport.pause_reading()  # passes through: the raw transport stops reading
    assert not transport.is_reading()
    rnet.wait(lambda: hoses and hoses[0].paused)
    hose = hoses[0]
    high = hose.transport.get_write_buffer_limits()[1]
    # bounded: the queue stops one block (plus the records' overhead) past the mark
    assert hose.max_buffer <= high + 65536 + 1024
    written = hose.written
    for _ in range(20):  # stays paused: nothing more is written
        reactor.run_once(0.01)
    assert hose.written == written and hose.paused
    transport.resume_reading()
    rnet.wait(lambda: len(client.data) >= written)
    assert hose.pauses >= 1
    transport.abort()
    wait_empty(rnet)
    assert hose.lost and len(hose.lost) == 1


def test_write_limits_pass_to_the_raw_transport(rnet: Net, certs: Certs) -> None:
    listener = rnet.listen_tcp(ssl=certs.server_context())
    transport, _ = connect_client(rnet.reactor, listener.port, certs.client_context())
    transport.set_write_buffer_limits(high=4096)
    assert transport.get_write_buffer_limits() == (1024, 4096)
    assert transport.raw_transport.get_write_buffer_limits() == (1024, 4096)
    transport.close()
    wait_empty(rnet)


# -- closing ----------------------------------------------------------------------------------


def test_close_sends_close_notify_abort_does_not(rnet: Net, certs: Certs) -> None:
    reactor = rnet.reactor
    listener = rnet.listen_tcp(ssl=certs.server_context())
    for how in ("close", "abort"):
        made = len(rnet.protocols)
        _transport, client = connect_client(reactor, listener.port, certs.client_context())
        rnet.wait(lambda n=made: len(rnet.protocols) > n)
        server = rnet.protocols[-1]
        getattr(server.transport, how)()
        rnet.wait(lambda c=client: c.lost)
        if how == "close":  # the client read close_notify: eof_received, then closed
            assert client.events == ["connection_made", "eof_received", "connection_lost"]
            assert client.lost == [None]
        else:  # an end of stream with no close_notify, between records
            assert "connection_lost" in client.events
        wait_empty(rnet)


def test_writes_after_close_are_dropped(rnet: Net, certs: Certs,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "reactor.tls")
    listener = rnet.listen_tcp(ssl=certs.server_context())
    transport, _ = connect_client(rnet.reactor, listener.port, certs.client_context())
    transport.close()
    assert transport.is_closing()
    for _ in range(6):
        transport.write(b"late")
    assert len(tls_messages(caplog, logging.WARNING)) == 1
    with pytest.raises(TypeError):
        transport.write("text")  # type: ignore[arg-type]
    wait_empty(rnet)


def test_close_from_connection_made_and_data_received(rnet: Net, certs: Certs) -> None:
    def close(proto: Recorder, *_: Any) -> None:
        proto.transport.write(b"bye")
        proto.transport.close()

    listener = rnet.listen_tcp(on_made=close, ssl=certs.server_context())
    _transport, client = connect_client(rnet.reactor, listener.port, certs.client_context())
    rnet.wait(lambda: client.lost)
    assert client.data == b"bye"
    assert rnet.protocols[0].events == ["connection_made", "connection_lost"]
    wait_empty(rnet)


# -- bad input --------------------------------------------------------------------------------


def bad_client(rnet: Net, certs: Certs, caplog: pytest.LogCaptureFixture,
               **listen: Any) -> tuple[Peer, MemoryClient]:
    """A listener over TLS and a raw client of it with a TLS engine of its own."""
    caplog.set_level(logging.INFO, "reactor.tls")
    listener = rnet.listen_tcp(ssl=certs.server_context(), **listen)
    peer = rnet.connect(listener.address)
    return peer, MemoryClient(certs.client_context(), rnet.reactor, peer)


def single_failure(caplog: pytest.LogCaptureFixture, *words: str) -> str:
    lines = tls_messages(caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "127.0.0.1" in line  # names the peer
    for word in words:
        assert word in line, line
    return line


def test_garbage_instead_of_a_client_hello(rnet: Net, certs: Certs,
                                           caplog: pytest.LogCaptureFixture) -> None:
    peer, _client = bad_client(rnet, certs, caplog)
    peer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    rnet.wait(lambda: peer.eof or peer.error)
    wait_empty(rnet)
    single_failure(caplog, "handshake failed")
    assert rnet.protocols == []


def test_handshake_that_stalls_times_out(rnet: Net, certs: Certs,
                                         caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog, ssl_handshake_timeout=0.3)
    hello = client.hello()
    peer.write(hello[:20])  # a start, then nothing
    start = rnet.reactor.time()
    rnet.wait(lambda: peer.eof or peer.error)
    assert 0.25 <= rnet.reactor.time() - start < 5
    wait_empty(rnet)
    single_failure(caplog, "timed out after 0.3 s")


def test_client_vanishes_mid_handshake(rnet: Net, certs: Certs,
                                       caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog)
    hello = client.hello()
    peer.write(hello[: len(hello) // 2])
    rnet.wait(lambda: len(rnet.reactor.connections) == 1)
    peer.close()
    wait_empty(rnet)
    single_failure(caplog, "during the handshake")


def test_client_resets_mid_handshake(rnet: Net, certs: Certs,
                                     caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog)
    peer.write(client.hello())
    rnet.wait(lambda: peer.received)  # the server answered: mid-handshake now
    peer.reset()
    wait_empty(rnet)
    single_failure(caplog, "during the handshake")


def test_truncated_record(rnet: Net, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog, on_data=echo)
    client.handshake()
    peer.write(client.record(b"whole"))
    assert client.read_plaintext(5) == b"whole"
    record = client.record(b"x" * 1000)
    peer.write(record[:600])
    peer.shutdown_write()
    wait_empty(rnet)
    line = single_failure(caplog, "truncated record")
    assert "bytes short" in line
    server = rnet.protocols[0]
    assert server.data == b"whole"
    assert len(server.lost) == 1 and isinstance(server.lost[0], ssl.SSLError)


def test_a_corrupt_record_ends_the_connection(rnet: Net, certs: Certs,
                                              caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog)
    client.handshake()
    record = bytearray(client.record(b"y" * 100))
    record[-1] ^= 0xFF  # the authentication tag no longer matches
    peer.write(bytes(record))
    wait_empty(rnet)
    single_failure(caplog, "protocol error")
    assert isinstance(rnet.protocols[0].lost[0], ssl.SSLError)


def test_end_of_stream_between_records_is_eof(rnet: Net, certs: Certs,
                                              caplog: pytest.LogCaptureFixture) -> None:
    peer, client = bad_client(rnet, certs, caplog)
    client.handshake()
    peer.write(client.record(b"last words"))
    peer.shutdown_write()  # no close_notify
    wait_empty(rnet)
    server = rnet.protocols[0]
    assert server.data == b"last words"
    assert server.events == ["connection_made", "data_received", "eof_received",
                             "connection_lost"]
    assert tls_messages(caplog) == []


def test_many_bad_clients_leave_no_rows(rnet: Net, certs: Certs) -> None:
    listener = rnet.listen_tcp(ssl=certs.server_context(), ssl_handshake_timeout=0.5)
    peers = [rnet.connect(listener.address) for _ in range(30)]
    for n, peer in enumerate(peers):
        if n % 3 == 0:
            peer.write(os.urandom(64))
        elif n % 3 == 1:
            peer.close()
    rnet.wait(lambda: all(p.closed or p.eof or p.error for p in peers))
    wait_empty(rnet)
    stats = rnet.reactor.connections.statistics()
    assert stats.open == 0 and stats.closed_total == 30


def test_tls_log_names_the_peer(rnet: Net, certs: Certs,
                                caplog: pytest.LogCaptureFixture) -> None:
    peer, _client = bad_client(rnet, certs, caplog)
    port = peer.sock.getsockname()[1]
    peer.write(b"\x17\x03\x01\x00\x05hello")  # application data before the handshake
    rnet.wait(lambda: peer.eof or peer.error)
    wait_empty(rnet)
    assert str(port) in single_failure(caplog, "handshake failed")


def test_a_proxy_header_comes_before_the_handshake(rnet: Net, certs: Certs) -> None:
    """PROXY and TLS on one listener: the header is read from the socket first (as
    HAProxy sends it, in clear before the ClientHello), then the handshake runs; the
    protocol over TLS sees the client the header names."""
    listener = rnet.listen_tcp(on_data=echo, ssl=certs.server_context(),
                               proxy_protocol="v1")
    result: dict[str, Any] = {}

    def client() -> None:
        raw = socket.create_connection(("127.0.0.1", listener.port), timeout=WAIT)
        raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8888\r\n")
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            result["reply"] = tls.recv(10)

    thread = threading.Thread(target=client)
    thread.start()
    rnet.wait(lambda: "reply" in result)
    thread.join(WAIT)
    assert result["reply"] == b"ping"
    server = rnet.protocols[0].transport
    assert isinstance(server, TLSLayer)
    assert server.get_extra_info("peername") == ("203.0.113.7", 40000)
    assert server.get_extra_info("cipher") is not None
    wait_empty(rnet)
