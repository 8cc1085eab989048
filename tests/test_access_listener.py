"""Access lists on reactor listeners, over real sockets: ``listen_tcp(allow_from=...,
deny_from=...)`` closes a refused client at accept, unread and never a row (IPv4,
IPv6, IPv4-mapped, behind the PROXY protocol), and ``listen_unix(allow_uids=...,
allow_gids=..., peercred=...)`` reads the peer's credentials, refuses by uid or gid (a
real process of another user) and records them in the row."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from accesskit import NOBODY, talk
from tlskit import Certs

from reactor import Reactor
from reactor.io.access import peer_credentials
from reactor.sansio.access import PeerCredentials
from tests import proxykit as pk
from tests.netkit import WAIT, Net, Peer, Recorder, requires_ipv6

pytestmark = pytest.mark.timeout(60)


def connect_from(net: Net, listener: Any, source: str) -> Peer:
    """A client bound to ``source`` (any 127/8 address works on Linux's loopback)."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    try:
        sock.bind((source, 0))
        sock.connect(listener.address[:2])
    except BaseException:
        sock.close()
        raise
    return net.adopt(sock)


def refused(net: Net, peer: Peer) -> bool:
    """Run until the server closes ``peer`` (True) or sends it something (False)."""
    net.wait(lambda: peer.eof or peer.error is not None or bool(peer.received))
    return not peer.received


def served(net: Net, peer: Peer) -> bool:
    peer.write(b"ping")
    net.wait(lambda: peer.eof or peer.error is not None or bool(peer.received))
    return bytes(peer.received) == b"ping"


def echo(proto: Recorder, data: bytes) -> None:
    proto.transport.write(data)


def test_an_allow_list_refuses_others_unread_and_counts_them(net: Net) -> None:
    listener = net.listen_tcp(allow_from=["127.0.0.2"], on_data=echo)
    stranger = connect_from(net, listener, "127.0.0.1")
    stranger.write(b"never read")
    assert refused(net, stranger)
    friend = connect_from(net, listener, "127.0.0.2")
    assert served(net, friend)
    assert len(net.protocols) == 1  # the refused client never had a protocol
    stats = net.reactor.statistics()
    assert stats.refused_by_address == 1 and stats.refused_by_credentials == 0
    assert stats.opened_total == 1  # ... nor a row
    assert listener.active == 1 and listener.accepted == 2


def test_the_deny_list_wins_over_the_allow_list(net: Net) -> None:
    listener = net.listen_tcp(allow_from="127.0.0.0/8", deny_from="127.0.0.1/32",
                              on_data=echo)
    assert refused(net, connect_from(net, listener, "127.0.0.1"))
    assert served(net, connect_from(net, listener, "127.0.0.2"))
    assert net.reactor.statistics().refused_by_address == 1


def test_a_deny_list_alone_admits_every_other_address(net: Net) -> None:
    listener = net.listen_tcp(deny_from=["192.0.2.0/24", "127.0.0.3"], on_data=echo)
    assert served(net, connect_from(net, listener, "127.0.0.1"))
    assert refused(net, connect_from(net, listener, "127.0.0.3"))


@pytest.mark.parametrize(("allow", "deny", "admitted"), [
    ("0.0.0.0/0", None, True),
    (None, "0.0.0.0/0", False),
    ("127.0.0.1/32", None, True),
    ("*", "127.0.0.1", False),
    ("::/0", None, False),  # an IPv4 client is in no IPv6 network
])
def test_the_extremes_over_ipv4(net: Net, allow: Any, deny: Any, admitted: bool) -> None:
    listener = net.listen_tcp(allow_from=allow, deny_from=deny, on_data=echo)
    peer = connect_from(net, listener, "127.0.0.1")
    assert (served(net, peer) if admitted else refused(net, peer))


@requires_ipv6
@pytest.mark.parametrize(("allow", "deny", "admitted"), [
    ("::1/128", None, True),
    ("::/0", None, True),
    (None, "::1", False),
    ("127.0.0.0/8", None, False),
    ("::/0", "::1/128", False),
    ("0.0.0.0/0", None, False),
])
def test_ipv6_clients(net: Net, allow: Any, deny: Any, admitted: bool) -> None:
    listener = net.listen_tcp("::1", allow_from=allow, deny_from=deny, on_data=echo)
    peer = connect_from(net, listener, "::1")
    assert (served(net, peer) if admitted else refused(net, peer))


@requires_ipv6
@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack sockets")
@pytest.mark.parametrize(("allow", "deny", "admitted"), [
    ("127.0.0.0/8", None, True),
    ("::ffff:127.0.0.0/104", None, True),
    (None, "127.0.0.1", False),
    ("::/0", None, False),
])
def test_ipv4_clients_of_a_dual_stack_socket_are_matched_as_ipv4(
    net: Net, allow: Any, deny: Any, admitted: bool,
) -> None:
    listener = net.listen_tcp("", dual_stack=True, allow_from=allow, deny_from=deny,
                              on_data=echo)
    assert listener.sock.family == socket.AF_INET6
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=WAIT)
    peer = net.adopt(sock)
    assert (served(net, peer) if admitted else refused(net, peer))
    if admitted:
        assert net.protocols[0].transport.peername[0] == "::ffff:127.0.0.1"


@pytest.mark.parametrize(("allow", "deny", "message"), [
    ([], None, "allow_from is empty"),
    ("10.0.0.0/33", None, "allow_from: '10.0.0.0/33' is not an IP address"),
    (None, ["10.0.0.0/8", "nonsense"], "deny_from: 'nonsense'"),
])
def test_a_bad_list_is_an_error_before_any_socket(reactor: Reactor, allow: Any, deny: Any,
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reactor.listen_tcp("127.0.0.1", 0, Recorder, allow_from=allow, deny_from=deny)
    assert not reactor.listeners


def test_without_lists_the_accept_path_is_the_plain_one(net: Net) -> None:
    plain = net.listen_tcp()
    empty_deny = net.listen_tcp(deny_from=[])
    listed = net.listen_tcp(deny_from="192.0.2.1")
    assert plain._on_accept.__qualname__ == "_stream_acceptor.<locals>.on_accept"
    assert empty_deny._on_accept.__qualname__ == plain._on_accept.__qualname__
    assert listed._on_accept.__qualname__ != plain._on_accept.__qualname__


def test_refused_clients_free_their_slot_at_once(net: Net) -> None:
    listener = net.listen_tcp(allow_from="127.0.0.2", max_connections=1, on_data=echo)
    for _ in range(5):
        assert refused(net, connect_from(net, listener, "127.0.0.1"))
    assert listener.active == 0 and listener.accepting
    assert served(net, connect_from(net, listener, "127.0.0.2"))


def test_a_custom_accept_callback_is_guarded_too(net: Net) -> None:
    seen: list[Any] = []

    def on_accept(listener: Any, conn: Any, addr: Any) -> None:
        seen.append(addr)
        conn.close()
        listener.release_slot()

    listener = net.reactor.listen_tcp("127.0.0.1", 0, on_accept=on_accept,
                                      deny_from="127.0.0.1")
    net.listeners.append(listener)
    assert refused(net, connect_from(net, listener, "127.0.0.1"))
    peer = connect_from(net, listener, "127.0.0.2")
    net.wait(lambda: bool(seen))
    assert [addr[0] for addr in seen] == ["127.0.0.2"]
    assert refused(net, peer)


def test_a_flood_of_refused_clients_is_logged_once_per_episode(
    net: Net, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="reactor.listeners")
    listener = net.listen_tcp(deny_from="127.0.0.0/8")
    peers = [connect_from(net, listener, "127.0.0.1") for _ in range(30)]
    for peer in peers:
        assert refused(net, peer)
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    info = [r for r in lines if r.levelno >= logging.INFO]
    assert len(info) == 1
    assert "in deny_from (deny_from 127.0.0.0/8)" in info[0].getMessage()
    assert len(lines) == 30
    net.wait(lambda: any("refused 30 connections" in r.getMessage()
                         for r in caplog.records if r.levelno == logging.INFO))
    assert net.reactor.statistics().refused_by_address == 30


def test_with_tls_a_refused_client_never_reaches_the_handshake(net: Net,
                                                                tmp_path: Path) -> None:
    listener = net.listen_tcp(ssl=Certs(tmp_path).server_context(), deny_from="127.0.0.1")
    assert refused(net, connect_from(net, listener, "127.0.0.1"))
    assert net.reactor.statistics().opened_total == 0  # no row, no TLS layer
    connect_from(net, listener, "127.0.0.2")  # admitted: its handshake starts
    net.wait(lambda: net.reactor.statistics().opened_total == 1)
    assert net.reactor.statistics().refused_by_address == 1


# -- behind the PROXY protocol --------------------------------------------------------------


@pytest.mark.parametrize("source", ["192.0.2.7", "2001:db8::7"])
def test_behind_the_proxy_protocol_the_lists_judge_the_real_client(net: Net,
                                                                   source: str) -> None:
    header = pk.v1("TCP6" if ":" in source else "TCP4", src=source,
                   dst="2001:db8::1" if ":" in source else "198.51.100.1")
    allowed = net.listen_tcp(proxy_protocol="v1", allow_from=source, on_data=echo)
    peer = net.connect(allowed.address)
    peer.write(header)
    assert served(net, peer)
    assert net.protocols[0].transport.get_extra_info("peername")[0] == source
    denied = net.listen_tcp(proxy_protocol="v1", deny_from=source, on_data=echo)
    peer = net.connect(denied.address)  # the proxy is 127.0.0.1: trusted, not judged
    peer.write(header + b"never seen")
    assert refused(net, peer)
    assert len(net.protocols) == 1
    assert net.reactor.statistics().refused_by_address == 1


# -- Unix sockets: peer credentials ---------------------------------------------------------


def test_peercred_is_read_at_accept_when_asked_for(net: Net, sockdir: str) -> None:
    listener = net.listen_unix(os.path.join(sockdir, "s"), peercred=True)
    _peer, proto = net.accept(listener)
    found = proto.transport.get_extra_info("peercred")
    assert found == PeerCredentials(os.getpid(), os.getuid(), os.getgid())
    assert f"pid={os.getpid()} uid={os.getuid()}" in proto.transport.describe()
    plain = net.listen_unix(os.path.join(sockdir, "t"))
    _peer, proto = net.accept(plain)
    assert proto.transport.get_extra_info("peercred") is None  # not asked for: not read
    assert "pid=" not in proto.transport.describe()
    assert peer_credentials(proto.transport.get_extra_info("socket")) == found


def test_an_allow_list_by_uid_admits_and_refuses_this_process(net: Net, sockdir: str) -> None:
    mine = net.listen_unix(os.path.join(sockdir, "a"), allow_uids=[os.getuid()],
                           on_data=echo)
    peer, proto = net.accept(mine)
    assert proto.transport.get_extra_info("peercred").uid == os.getuid()
    assert served(net, peer)
    other = net.listen_unix(os.path.join(sockdir, "b"), allow_uids=[os.getuid() + 4242],
                            allow_gids=[os.getgid() + 4242], on_data=echo)
    assert refused(net, net.connect(other.address))
    stats = net.reactor.statistics()
    assert stats.refused_by_credentials == 1 and stats.refused_by_address == 0


@pytest.mark.parametrize(("allow", "message"), [
    ({"allow_uids": []}, "allow_uids is empty"),
    ({"allow_gids": ["root"]}, "allow_gids: 'root' is not a user or group id"),
])
def test_a_bad_id_list_is_an_error_before_any_socket(reactor: Reactor, sockdir: str,
                                                     allow: Any, message: str) -> None:
    path = os.path.join(sockdir, "s")
    with pytest.raises(ValueError, match=message):
        reactor.listen_unix(path, Recorder, **allow)
    assert not os.path.exists(path)


def outcome_in_reactor(net: Net, path: Path) -> str:
    """:func:`accesskit.talk` as nobody, the report read by the reactor under test
    (which must run meanwhile to accept the child's connection)."""
    pid, sock = talk(str(path))
    report = net.adopt(sock)
    try:
        net.wait(lambda: report.eof)
    finally:
        os.waitpid(pid, 0)
    return bytes(report.received).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
@pytest.mark.parametrize(("allow", "outcome"), [
    ({"allow_uids": [0]}, "refused"),
    ({"allow_uids": [NOBODY]}, "ping\n"),
    ({"allow_gids": [NOBODY]}, "ping\n"),
    ({"allow_uids": [0], "allow_gids": [0]}, "refused"),
])
def test_a_process_of_another_user(net: Net, public_dir: Path, allow: Any,
                                   outcome: str) -> None:
    path = public_dir / "s.sock"
    net.listen_unix(str(path), mode=0o666, on_data=echo, **allow)
    assert outcome_in_reactor(net, path) == outcome
    stats = net.reactor.statistics()
    if outcome != "refused":
        assert net.protocols[0].transport.get_extra_info("peercred")[1:] == (NOBODY, NOBODY)
        assert stats.refused_by_credentials == 0
    else:
        assert not net.protocols and stats.refused_by_credentials == 1
