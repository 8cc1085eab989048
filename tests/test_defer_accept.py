"""``listen_tcp(..., defer_accept=S)``: Linux's TCP_DEFER_ACCEPT on the listening socket
(the kernel hands a connection over once its first bytes are in), and those bytes read
in the same loop iteration as the accept, not at the next poll. Real sockets."""

from __future__ import annotations

import select
import socket
import sys
from typing import Any

import pytest
from netkit import WAIT, Net, Recorder

from reactor import Reactor

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"),
                                reason="TCP_DEFER_ACCEPT is Linux's")


def listening_ready(sock: socket.socket) -> bool:
    """Whether the kernel has a connection for accept() now (without taking it)."""
    return bool(select.select([sock], [], [], WAIT)[0])


def test_the_first_bytes_arrive_with_the_accept(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(defer_accept=5, on_data=lambda p, d: p.transport.write(d))
    assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    peer = net.connect(listener.address)
    peer.send_all(b"first")
    assert listening_ready(listener.sock)
    reactor.run_once(WAIT)  # one iteration: accepted, read and answered
    assert listener.accepted == 1
    assert net.protocols[0].data == b"first"
    peer.start_reading()
    net.wait(lambda: peer.received == b"first")
    peer.send_all(b"second")  # later bytes come through the poll as always
    net.wait(lambda: peer.received == b"firstsecond")


def test_a_silent_client_is_not_handed_over(reactor: Reactor, net: Net) -> None:
    listener = net.listen_tcp(defer_accept=30)
    silent = net.connect(listener.address)  # the handshake completes in the kernel
    talker = net.connect(listener.address)
    talker.send_all(b"hi")
    net.wait(lambda: listener.accepted >= 1)
    reactor.run_once(0.2)  # the silent one stays with the kernel meanwhile
    assert listener.accepted == 1 and listener.active == 1
    assert net.protocols[0].data == b"hi"
    silent.send_all(b"now")
    net.wait(lambda: listener.accepted == 2)
    net.wait(lambda: net.protocols[1].data == b"now")


def test_a_protocol_that_pauses_reading_in_connection_made_is_not_read(
        reactor: Reactor, net: Net) -> None:
    def pause(proto: Recorder) -> None:
        proto.transport.pause_reading()

    listener = net.listen_tcp(defer_accept=5, on_made=pause)
    peer = net.connect(listener.address)
    peer.send_all(b"held")
    assert listening_ready(listener.sock)
    reactor.run_once(WAIT)
    assert listener.accepted == 1 and net.protocols[0].data == b""
    net.protocols[0].transport.resume_reading()
    net.wait(lambda: net.protocols[0].data == b"held")


def test_tls_reads_the_client_hello_at_once(reactor: Reactor, net: Net) -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listener = net.listen_tcp(defer_accept=5, ssl=server_ctx,
                              on_data=lambda p, d: p.transport.write(d))
    done: list[bytes] = []

    def client() -> None:
        with socket.create_connection(listener.address, timeout=WAIT) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"over tls")
            done.append(tls.recv(100))

    import threading

    thread = threading.Thread(target=client)
    thread.start()
    try:
        net.wait(lambda: bool(done))
    finally:
        thread.join(WAIT)
    assert done == [b"over tls"]


@pytest.mark.parametrize(("value", "error"), [
    (0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    (3601, ValueError), ("1", TypeError), (True, TypeError),
])
def test_bad_deferrals_fail_before_binding(reactor: Reactor, value: Any,
                                           error: type[Exception]) -> None:
    with pytest.raises(error, match="defer_accept"):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, defer_accept=value)
    assert not reactor.listeners


def test_a_fraction_rounds_up_to_a_whole_second(reactor: Reactor) -> None:
    listener = reactor.listen_tcp("127.0.0.1", 0, Recorder, defer_accept=0.2)
    try:
        assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) >= 1
    finally:
        listener.close()


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("Linux only", allow_module_level=True)
