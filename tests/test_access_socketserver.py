"""Access lists on the socketserver facades, over real sockets:
:class:`~reactor.facades.access.AccessControlMixIn` refuses in ``verify_request`` by
address (IPv4, IPv6, behind the PROXY protocol: the real client) and, on Unix stream
servers, by the peer's uid or gid (a real process of another user)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from accesskit import NOBODY, outcome
from sskit import serving, wait_for

from reactor import socketserver
from reactor.sansio.access import PeerCredentials
from tests import proxykit as pk
from tests.netkit import WAIT, requires_ipv6

pytestmark = pytest.mark.timeout(60)


class Tell(socketserver.StreamRequestHandler):
    """Answers a line with the client's address (and, on Unix, its credentials)."""

    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        if self.server.address_family == getattr(socket, "AF_UNIX", None):
            found = socketserver.peer_credentials(self.request)
            self.wfile.write(f"{found.uid} {found.gid} {line}\n".encode())
            return
        self.wfile.write(f"{self.client_address[0]} {line}\n".encode())


def make(base: Any, address: Any = ("127.0.0.1", 0), family: int | None = None,
         mixins: tuple[type, ...] = (), **attributes: Any) -> Any:
    seen: list[Any] = []

    class Server(socketserver.AccessControlMixIn, *mixins, base):  # type: ignore[misc]
        pass

    if family is not None:
        Server.address_family = family  # type: ignore[attr-defined]
    for name, value in attributes.items():
        setattr(Server, name, value)
    server = Server(address, Tell)
    server.seen = seen
    return server


def ask(server: Any, source: str | None = None, data: bytes = b"hi\n") -> bytes | None:
    """The server's answer; None when it closed the connection without one."""
    address = server.server_address
    family = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        if source is not None:
            client.bind((source, 0))
        client.connect(address if isinstance(address, str) else address[:2])
        try:
            client.sendall(data)
            reply = client.makefile("rb").readline()
        except ConnectionError:
            return None
        return reply or None


BASES = ["TCPServer", "ThreadingTCPServer", "ForkingTCPServer"]


@pytest.mark.parametrize("base", BASES)
def test_an_allow_list_refuses_others(base: str) -> None:
    if base.startswith("Forking") and not hasattr(os, "fork"):
        pytest.skip("needs fork")
    server = make(getattr(socketserver, base), allow_from=["127.0.0.2"])
    with serving(server):
        assert ask(server, "127.0.0.1") is None
        assert ask(server, "127.0.0.2") == b"127.0.0.2 hi\n"
        wait_for(lambda: server.statistics().finished == 1)
        stats = server.statistics()
    assert stats.refused_by_address == 1 and stats.rejected == 1
    assert stats.refused_by_credentials == 0 and stats.accepted == 2


def test_the_deny_list_wins() -> None:
    server = make(socketserver.ThreadingTCPServer, allow_from="127.0.0.0/8",
                  deny_from="127.0.0.3")
    with serving(server):
        assert ask(server, "127.0.0.3") is None
        assert ask(server, "127.0.0.4") == b"127.0.0.4 hi\n"
    assert server.statistics().refused_by_address == 1


@requires_ipv6
@pytest.mark.parametrize(("allow", "deny", "admitted"), [
    ("::1/128", None, True), (None, "::1", False), ("127.0.0.1", None, False),
    ("::/0", None, True),
])
def test_an_ipv6_server(allow: Any, deny: Any, admitted: bool) -> None:
    server = make(socketserver.TCPServer, ("::1", 0), family=socket.AF_INET6,
                  allow_from=allow, deny_from=deny)
    with serving(server):
        assert ask(server) == (b"::1 hi\n" if admitted else None)


def test_a_programs_own_verify_request_keeps_working() -> None:
    calls: list[str] = []

    class Base(socketserver.ThreadingTCPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            calls.append("base " + client_address[0])  # below the mix-in: admitted only
            return client_address[0] != "127.0.0.5"

    class Server(socketserver.AccessControlMixIn, Base):
        deny_from = "127.0.0.4"

        def verify_request(self, request: Any, client_address: Any) -> bool:
            calls.append("own " + client_address[0])  # above the mix-in: every client
            return super().verify_request(request, client_address)

    server = Server(("127.0.0.1", 0), Tell)
    with serving(server):
        assert ask(server, "127.0.0.4") is None
        assert ask(server, "127.0.0.5") is None
        assert ask(server, "127.0.0.6") == b"127.0.0.6 hi\n"
        stats = server.statistics()
    assert calls == ["own 127.0.0.4", "own 127.0.0.5", "base 127.0.0.5", "own 127.0.0.6",
                     "base 127.0.0.6"]
    assert stats.rejected == 2 and stats.refused_by_address == 1


@pytest.mark.parametrize("header", [pk.v1(), pk.v2_inet()], ids=["v1", "v2"])
def test_behind_the_proxy_protocol_the_lists_judge_the_real_client(header: bytes) -> None:
    mixins = (socketserver.ProxyProtocolMixIn,)
    # the proxy (127.0.0.1) is outside allow_from: only the client the header names counts
    allowed = make(socketserver.ThreadingTCPServer, mixins=mixins, allow_from="192.0.2.0/24")
    with serving(allowed):
        assert ask(allowed, data=header + b"hi\n") == b"192.0.2.7 hi\n"
    denied = make(socketserver.ThreadingTCPServer, mixins=mixins, deny_from="192.0.2.7",
                  allow_from="127.0.0.1")
    with serving(denied):
        assert ask(denied, data=header + b"hi\n") is None
        assert ask(denied, data=pk.v1(src="127.0.0.1") + b"hi\n") == b"127.0.0.1 hi\n"
    assert denied.statistics().refused_by_address == 1


def test_a_udp_server_drops_refused_datagrams() -> None:
    got: list[bytes] = []

    class Note(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            got.append(self.rfile.read())

    class Server(socketserver.AccessControlMixIn, socketserver.UDPServer):
        allow_from = "127.0.0.2"

    server = Server(("127.0.0.1", 0), Note)
    with serving(server):
        for source in ("127.0.0.1", "127.0.0.2"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((source, 0))
                client.sendto(source.encode(), server.server_address)
        wait_for(lambda: server.statistics().accepted == 2 and bool(got))
    assert got == [b"127.0.0.2"]
    assert server.statistics().refused_by_address == 1


@pytest.mark.parametrize(("attributes", "message"), [
    ({"allow_from": "10.0.0.0/33"}, "allow_from: '10.0.0.0/33' is not an IP address"),
    ({"allow_from": []}, "allow_from is empty"),
    ({"deny_from": ["nonsense"]}, "deny_from: 'nonsense'"),
    ({"allow_uids": [0]}, "need a Unix stream server"),
    ({"peercred": True}, "need a Unix stream server"),
])
def test_a_bad_list_is_an_error_at_start_up(attributes: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(socketserver.TCPServer, **attributes)


# -- Unix stream servers: peer credentials ------------------------------------------------


def unix_server(directory: Path, **attributes: Any) -> Any:
    path = directory / f"s{len(list(directory.iterdir()))}.sock"  # a server leaves its path
    server = make(socketserver.ThreadingUnixStreamServer, str(path), **attributes)
    os.chmod(server.server_address, 0o666)
    return server


def test_an_address_list_on_a_unix_server_is_an_error(public_dir: Path) -> None:
    with pytest.raises(ValueError, match="peers of a Unix socket have none"):
        unix_server(public_dir, allow_from="127.0.0.1")


def test_a_unix_server_admits_and_refuses_this_process_by_uid(public_dir: Path) -> None:
    mine = unix_server(public_dir, allow_uids=[os.getuid()])
    with serving(mine):
        assert ask(mine) == f"{os.getuid()} {os.getgid()} hi\n".encode()
    other = unix_server(public_dir, allow_uids=os.getuid() + 4242)
    with serving(other):
        assert ask(other) is None
    assert other.statistics().refused_by_credentials == 1


def test_the_row_shows_the_credentials_while_the_request_runs(public_dir: Path) -> None:
    server = unix_server(public_dir, peercred=True)
    with serving(server), socket.socket(socket.AF_UNIX) as client:
        client.settimeout(WAIT)
        client.connect(server.server_address)
        wait_for(lambda: server.statistics().by_state.get("DISPATCHED_THREAD") == 1)
        rows = server._reactor_engine.own_rows()
        assert rows[0].meta["peercred"] == PeerCredentials(os.getpid(), os.getuid(),
                                                             os.getgid())
        assert f"pid={os.getpid()}" in rows[0].describe()
        client.sendall(b"x\n")
        assert client.makefile("rb").readline() == f"{os.getuid()} {os.getgid()} x\n".encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
@pytest.mark.parametrize(("attributes", "expected"), [
    ({"allow_uids": [0]}, "refused"),
    ({"allow_uids": [NOBODY]}, f"{NOBODY} {NOBODY} hi"),
    ({"allow_gids": [NOBODY]}, f"{NOBODY} {NOBODY} hi"),
])
def test_a_process_of_another_user(public_dir: Path, attributes: Any, expected: str) -> None:
    server = unix_server(public_dir, **attributes)
    with serving(server):
        assert outcome(server.server_address, b"hi\n").strip() == expected
    assert server.statistics().refused_by_credentials == (expected == "refused")
