"""Scenario 29: IPv6 scope ids are kept in addresses.

A link-local address (``fe80::/10``) means nothing without the interface it belongs
to: its scope id, the fourth item of an AF_INET6 address tuple, or ``%IFACE`` in text.
A listener bound to ``fe80::1%lo`` keeps it in its address; accepted connections keep it
in their peer and local names; an outgoing connection and a UDP endpoint too, and a
reply sent to a datagram's source address reaches it. On the command line
``--bind [fe80::1%lo]:0`` is accepted and the ``listening on`` line shows the scope.

The link-local address lives on the loopback interface of a network namespace each
test module creates (``ip netns add``, root), so the host's interfaces are untouched;
the code under test runs in a child started with ``ip netns exec``. When iproute2 is
missing and we are root with apt-get, it is installed (as tests/redis_tools.py does
for redis-tools); the tests skip, with the reason, only when that cannot be done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from redis_tools import install_package
from servekit import ROOT, WAIT, ServerProcess

from reactor.cli.graceful import BindAddress, parse_bind

LINK_LOCAL = "fe80::1"
IFACE = "lo"
SCOPED = f"{LINK_LOCAL}%{IFACE}"


def _find_ip() -> str | None:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")


def _ip_command() -> str:
    """The path of iproute2's ``ip``, installed with apt-get if missing; else skip."""
    path = _find_ip()
    if path is None:
        reason = install_package("iproute2")
        path = _find_ip()
        if path is None:
            pytest.skip(reason or "iproute2 was installed but has no ip command")
    return path


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    """``(ip, NAME)``: a network namespace whose ``lo`` is up with fe80::1/64."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace (ip netns add) needs root")
    ip = _ip_command()
    name = f"reactor-scope-{os.getpid()}"
    added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True,
                           timeout=WAIT, check=False)
    if added.returncode != 0:
        pytest.skip(f"ip netns add failed, network namespaces unavailable: "
                    f"{added.stderr.strip()}")
    try:
        for command in (["link", "set", IFACE, "up"],
                        ["-6", "addr", "add", f"{LINK_LOCAL}/64", "dev", IFACE, "nodad"]):
            subprocess.run([ip, "-n", name, *command], capture_output=True, text=True,
                           timeout=WAIT, check=True)
        yield ip, name
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=WAIT,
                       check=False)


def in_netns(netns: tuple[str, str], script: str) -> Any:
    """Run ``script`` with this Python inside the namespace; its stdout, as JSON."""
    ip, name = netns
    done = subprocess.run([ip, "netns", "exec", name, sys.executable, "-c",
                           textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


LIBRARY = """
    import asyncio, json, socket
    from reactor import Reactor

    SCOPED = "fe80::1%lo"
    rows, got = [], []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            rows.append(transport)

        def data_received(self, data):
            self.transport.write(data)

    class Datagrams(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(addr)

    out = {"lo": socket.if_nametoindex("lo")}
    with Reactor() as reactor:
        listener = reactor.listen_tcp(SCOPED, 0, Echo)
        out["listener"] = listener.address
        client = socket.socket(socket.AF_INET6)
        client.settimeout(10)
        client.connect(listener.address)
        reactor.run_until(lambda: bool(rows), timeout=10)
        row = rows[0]
        out["peername"] = row.peername
        out["extra_peername"] = row.get_extra_info("peername")
        out["sockname"] = row.sockname
        out["describe"] = row.describe()
        client.sendall(b"ping")
        reactor.run_until(lambda: row.bytes_out == 4, timeout=10)
        out["echo"] = client.recv(4).decode()

        future = reactor.connect_tcp(SCOPED, listener.port, asyncio.Protocol, timeout=10)
        transport, _ = reactor.run_until_complete(future, timeout=10)
        out["out_peername"] = transport.get_extra_info("peername")
        out["out_sockname"] = transport.sockname

        endpoint = reactor.listen_udp(SCOPED, 0, Datagrams)
        out["udp_sockname"] = endpoint.sockname
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.settimeout(10)
        udp.sendto(b"x", endpoint.sockname)
        reactor.run_until(lambda: bool(got), timeout=10)
        out["udp_from"] = got[0]
        endpoint.sendto(b"reply", got[0])
        reactor.run_until(lambda: endpoint.bytes_out == 5, timeout=10)
        out["udp_reply"] = udp.recv(16).decode()
        client.close()
        udp.close()
    print(json.dumps(out))
"""


@pytest.mark.timeout(60)
def test_scope_ids_are_kept_in_every_address(netns: tuple[str, str]) -> None:
    out = in_netns(netns, LIBRARY)
    scope = out["lo"]
    assert scope > 0
    for key in ("listener", "peername", "extra_peername", "sockname", "out_peername",
                "out_sockname", "udp_sockname", "udp_from"):
        address = out[key]
        assert len(address) == 4 and address[0] == LINK_LOCAL, (key, address)
        assert address[3] == scope, f"{key}: scope id {address[3]} != {scope} ({address})"
    assert out["out_peername"][1] == out["listener"][1]
    assert out["echo"] == "ping" and out["udp_reply"] == "reply"
    assert f", {scope})" in out["describe"], out["describe"]  # logs name the scope


def test_bind_parses_a_scoped_address() -> None:
    bind = parse_bind(f"[{SCOPED}]:0")
    assert bind == BindAddress("tcp", host=SCOPED, port=0)
    assert str(bind) == f"[{SCOPED}]:0"
    assert parse_bind(str(bind)) == bind
    with pytest.raises(ValueError, match="not an IPv6 address"):
        parse_bind("[fe80::zz%lo]:0")


CLIENT = """
    import json, socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as sock:
        sock.sendall(b"ping")
        print(json.dumps([sock.recv(4).decode(), sock.getpeername()]))
"""


@pytest.mark.timeout(60)
def test_the_command_binds_a_scoped_address_and_logs_the_scope(netns: tuple[str, str]) -> None:
    ip, name = netns
    command = [ip, "netns", "exec", name, sys.executable, "-m", "reactor", "serve"]
    with ServerProcess("echo", "--bind", f"[{SCOPED}]:0", command=command) as server:
        found = server.wait_for(r"listening on \[([^\]]+)\]:(\d+)")
        assert found.group(1) == SCOPED, server.log
        port = int(found.group(2))
        parse_bind(f"[{found.group(1)}]:{port}")  # the logged address reads back
        done = subprocess.run(
            [ip, "netns", "exec", name, sys.executable, "-c", textwrap.dedent(CLIENT),
             SCOPED, str(port)], capture_output=True, text=True, timeout=WAIT, check=False)
        assert done.returncode == 0, done.stderr
        reply, peer = json.loads(done.stdout)
        assert reply == "ping"
        assert peer[0] == LINK_LOCAL and peer[1] == port and peer[3] > 0
        assert not re.search(r"Traceback|ERROR", server.log), server.log


def test_scope_ids_are_named_in_the_listening_line_for_any_interface() -> None:
    """Without a namespace: format_listener turns a scope id into its interface's name
    (a stand-in listener whose socket reports a scoped address)."""
    from reactor.cli.graceful import format_listener

    class Sock:
        family = socket.AF_INET6

        def getsockname(self) -> tuple[str, int, int, int]:
            return (LINK_LOCAL, 8080, 0, socket.if_nametoindex(IFACE))

    class Listener:
        sock = Sock()

    assert format_listener(Listener()) == f"[{SCOPED}]:8080"  # type: ignore[arg-type]
