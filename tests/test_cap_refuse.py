"""A listener at its cap with ``at_cap="refuse"``: clients that come while it is full are
accepted, sent the reply and closed at once (Redis's ``maxclients`` behaviour), instead
of waiting in the backlog; accepting resumes as a slot frees. Over real sockets, on every
selector backend."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from netkit import Net, Recorder, events_of

from reactor import Reactor
from reactor.io.refusal import CapRefuser

REPLY = b"-ERR max number of clients reached\r\n"


def echo(proto: Recorder, data: bytes) -> None:
    proto.transport.write(data)


def refused_reply(net: Net, address: Any) -> bytes:
    """Connect, read until the server closes; what it sent."""
    peer = net.connect(address)
    peer.start_reading()
    net.wait(lambda: peer.eof or peer.error is not None)
    return bytes(peer.received)


def test_clients_over_the_cap_get_the_reply_and_a_close(reactor: Reactor, net: Net,
                                                        caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor.listeners")
    listener = net.listen_tcp(max_connections=2, at_cap="refuse", cap_reply=REPLY,
                              on_data=echo)
    refused: list[Any] = []
    listener.on_refused = lambda lst, addr, sent: refused.append((addr, sent))
    first = net.connect(listener.address)
    second = net.connect(listener.address)
    net.wait(lambda: listener.active == 2)
    assert isinstance(listener.refuser, CapRefuser)
    assert events_of(reactor, listener.sock) == 1  # still polled, by the refuser

    for _ in range(3):
        assert refused_reply(net, listener.address) == REPLY
    assert listener.refused == 3 and listener.accepted == 2 and listener.active == 2
    assert [(addr[0], sent) for addr, sent in refused] == [("127.0.0.1", len(REPLY))] * 3
    lines = [r.getMessage() for r in caplog.records if "refusing new clients" in
             r.getMessage()]
    assert len(lines) == 1, lines  # once per episode, not once per client

    # the connections being served are untouched
    first.send_all(b"ping")
    first.start_reading()
    net.wait(lambda: first.received == b"ping")

    # a slot frees: the next client is served, not refused
    second.close()
    net.wait(lambda: listener.active == 1)
    assert listener.refuser is None and listener.accepting
    third = net.connect(listener.address)
    third.send_all(b"three")
    third.start_reading()
    net.wait(lambda: third.received == b"three")
    assert listener.refused == 3


def test_without_a_reply_the_refused_client_sees_only_the_close(reactor: Reactor,
                                                                net: Net) -> None:
    listener = net.listen_tcp(max_connections=1, at_cap="refuse", on_data=echo)
    net.connect(listener.address)
    net.wait(lambda: listener.active == 1)
    assert refused_reply(net, listener.address) == b""
    assert listener.refused == 1


def test_closing_a_full_refusing_listener_unregisters_the_refuser(reactor: Reactor,
                                                                  net: Net) -> None:
    listener = net.listen_tcp(max_connections=1, at_cap="refuse", on_data=echo)
    net.connect(listener.address)
    net.wait(lambda: listener.active == 1)
    fd = listener.sock.fileno()
    listener.close()
    assert listener.refuser is None
    assert events_of(reactor, fd) == 0


def test_an_on_refused_that_raises_is_logged_and_refusing_goes_on(
        reactor: Reactor, net: Net, caplog: pytest.LogCaptureFixture) -> None:
    listener = net.listen_tcp(max_connections=1, at_cap="refuse", cap_reply=b"full\n",
                              on_data=echo)

    def broken(lst: Any, addr: Any, sent: int) -> None:
        raise RuntimeError("boom")

    listener.on_refused = broken
    net.connect(listener.address)
    net.wait(lambda: listener.active == 1)
    assert refused_reply(net, listener.address) == b"full\n"
    assert refused_reply(net, listener.address) == b"full\n"
    assert listener.refused == 2
    assert any("on_refused raised" in r.getMessage() for r in caplog.records)


def test_unix_listener_refuses_too(reactor: Reactor, net: Net, tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    listener = net.listen_unix(path, max_connections=1, at_cap="refuse", cap_reply=b"no\n",
                               on_data=echo)
    net.connect(path)
    net.wait(lambda: listener.active == 1)
    assert refused_reply(net, path) == b"no\n"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"at_cap": "drop"}, ValueError),
    ({"at_cap": "wait", "cap_reply": b"x"}, ValueError),
    ({"at_cap": "refuse", "cap_reply": "text"}, TypeError),
])
def test_bad_at_cap_options_fail_before_binding(reactor: Reactor, kwargs: dict[str, Any],
                                                error: type[Exception]) -> None:
    with pytest.raises(error):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, max_connections=1, **kwargs)
    assert not reactor.listeners
