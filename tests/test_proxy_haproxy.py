"""The PROXY protocol against a real HAProxy (``mode tcp``, ``send-proxy`` and
``send-proxy-v2``): the service sees the address HAProxy's client connected from."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from haproxy_tools import HAProxy, haproxy, listening

from reactor import Reactor
from reactor.sansio.proxy import TLV_CRC32C, TLV_UNIQUE_ID, ProxyHeader
from tests.netkit import WAIT, Recorder, requires_ipv6

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)  # a first run may install haproxy


@pytest.fixture(scope="module")
def haproxy_path() -> str:
    return haproxy()


def serve(reactor: Reactor, version: str, host: str = "127.0.0.1") -> tuple[Any, list[Recorder]]:
    protocols: list[Recorder] = []

    def factory() -> Recorder:
        proto = Recorder(on_data=lambda p, data: p.transport.write(data))
        protocols.append(proto)
        return proto

    listener = reactor.listen_tcp(host, 0, factory, proxy_protocol=version,
                                  proxy_allow_from=["127.0.0.1", "::1"])
    return listener, protocols


def round_trip(reactor: Reactor, protocols: list[Recorder], frontend: socket.socket,
               family: int = socket.AF_INET) -> tuple[socket.socket, Recorder]:
    """Connect to HAProxy's frontend, send a line, get it echoed through our service."""
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(WAIT)
    client.connect(frontend.getsockname()[:2])
    n = len(protocols)
    client.sendall(b"through haproxy\n")
    reactor.run_until(lambda: len(protocols) > n and
                      protocols[n].data == b"through haproxy\n", WAIT)
    got = b""
    while len(got) < 16:
        chunk = client.recv(64)
        assert chunk, got
        got += chunk
    assert got == b"through haproxy\n"
    return client, protocols[n]


@pytest.mark.parametrize(("version", "option", "number"), [
    ("v1", "send-proxy", 1), ("v2", "send-proxy-v2", 2), ("any", "send-proxy", 1),
    ("any", "send-proxy-v2", 2),
])
def test_the_service_sees_haproxys_client(haproxy_path: str, version: str, option: str,
                                          number: int) -> None:
    with Reactor() as reactor:
        listener, protocols = serve(reactor, version)
        frontend = listening()
        with HAProxy(("127.0.0.1", listener.port), [(frontend, option)]):
            client, proto = round_trip(reactor, protocols, frontend)
            with client:
                transport = proto.transport
                assert transport.get_extra_info("peername") == client.getsockname()
                assert transport.peername == client.getsockname()  # the row
                header = transport.get_extra_info("proxy_header")
                assert isinstance(header, ProxyHeader) and header.version == number
                assert header.destination == frontend.getsockname()
                proxy = transport.get_extra_info("proxy")
                assert proxy[0] == "127.0.0.1" and proxy != client.getsockname()
        listener.close()


def test_v2_tlvs_and_checksum_from_haproxy(haproxy_path: str) -> None:
    with Reactor() as reactor:
        listener, protocols = serve(reactor, "v2")
        frontend = listening()
        with HAProxy(("127.0.0.1", listener.port),
                     [(frontend, "send-proxy-v2 proxy-v2-options unique-id,crc32c")],
                     extra='    unique-id-format "req-%{+X}o%ci"'):
            client, proto = round_trip(reactor, protocols, frontend)
            client.close()
            header = proto.transport.get_extra_info("proxy_header")
            unique = header.tlv(TLV_UNIQUE_ID)
            assert unique is not None and unique.startswith(b"req-"), header.tlvs
            assert header.tlv(TLV_CRC32C) is not None  # and it matched HAProxy's bytes
        listener.close()


@requires_ipv6
def test_an_ipv6_client_through_haproxy(haproxy_path: str) -> None:
    with Reactor() as reactor:
        listener, protocols = serve(reactor, "any")
        frontend = listening("::1")
        with HAProxy(("127.0.0.1", listener.port), [(frontend, "send-proxy-v2")]):
            client, proto = round_trip(reactor, protocols, frontend, socket.AF_INET6)
            with client:
                peer = proto.transport.get_extra_info("peername")
                assert peer == ("::1", client.getsockname()[1], 0, 0)
        listener.close()


def test_haproxy_without_send_proxy_is_refused(haproxy_path: str) -> None:
    """A proxy that sends no header: the service never sees the connection."""
    with Reactor() as reactor:
        listener, protocols = serve(reactor, "any")
        frontend = listening()
        with HAProxy(("127.0.0.1", listener.port), [(frontend, "")]):
            with socket.create_connection(frontend.getsockname(), timeout=WAIT) as client:
                client.sendall(b"no header here\n")
                reactor.run_until(lambda: listener.accepted == 1
                                  and not reactor.connections, WAIT)
                try:  # HAProxy closes once we did
                    assert client.recv(64) == b""
                except ConnectionResetError:
                    pass
            assert not protocols
        listener.close()


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_a_threading_server_behind_haproxy(haproxy_path: str, option: str) -> None:
    """The facades: the handler's client_address is HAProxy's client."""
    from sskit import serving

    from reactor import socketserver

    class Tell(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            host, port = self.client_address[:2]
            self.wfile.write(f"{host} {port}\n".encode())

    class Server(socketserver.ProxyProtocolMixIn, socketserver.ThreadingTCPServer):
        pass

    with Server(("127.0.0.1", 0), Tell) as server, serving(server, close=False):
        frontend = listening()
        with HAProxy(server.server_address, [(frontend, option)]), \
                socket.create_connection(frontend.getsockname(), timeout=WAIT) as client:
            client.sendall(b"who am I?\n")
            host, port = client.getsockname()
            assert client.makefile("rb").readline() == f"{host} {port}\n".encode()


# -- the README's example, as written (ports swapped for the test's own) ------------------

README = ROOT / "README.md"


def readme_blocks() -> tuple[str, str]:
    """The README's haproxy.cfg and its socketserver program for the PROXY protocol."""
    text = README.read_text()
    config = re.search(r"```\n(# haproxy\.cfg\n.*?)```", text, re.S)
    program = re.search(r"```python\n(from reactor import socketserver\n.*?"
                        r"ProxyProtocolMixIn.*?)```", text, re.S)
    assert config is not None and program is not None
    return config.group(1), program.group(1)


def readme_haproxy(backend_port: int, frontend: socket.socket) -> HAProxy:
    config, _program = readme_blocks()
    assert "bind 127.0.0.1:8000" in config and "127.0.0.1:8888 send-proxy-v2" in config
    config = config.replace("bind 127.0.0.1:8000", f"bind fd@{frontend.fileno()}")
    config = config.replace("127.0.0.1:8888", f"127.0.0.1:{backend_port}")
    return HAProxy.from_config(config, [frontend])


def test_the_readme_example_with_reactor_serve(haproxy_path: str) -> None:
    from servekit import serve

    with serve("echo", "--bind", "127.0.0.1:0", "--proxy-protocol", "v2",
               "--proxy-allow-from", "127.0.0.1", "--access-log") as srv:
        port = int(srv.addresses(1)[0].rsplit(":", 1)[1])
        frontend = listening()
        with readme_haproxy(port, frontend), \
                socket.create_connection(frontend.getsockname(), timeout=WAIT) as client:
            client.sendall(b"hello\n")
            assert client.makefile("rb").readline() == b"hello\n"
            host, client_port = client.getsockname()
        srv.wait_for(rf"{re.escape(host)}:{client_port}\b")  # the access log names nc
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_the_readme_socketserver_program(haproxy_path: str, tmp_path: Path) -> None:
    from servekit import ServerProcess

    _config, program = readme_blocks()
    assert '("127.0.0.1", 8888)' in program
    program = program.replace('("127.0.0.1", 8888)', '("127.0.0.1", 0)').replace(
        "    server.serve_forever()",
        "    import sys\n    print('listening on 127.0.0.1:%d' % server.server_address[1],"
        " file=sys.stderr)\n    server.serve_forever()")
    script = tmp_path / "program.py"
    script.write_text(program)
    with ServerProcess(command=[sys.executable, str(script)]) as srv:
        port = srv.tcp_address()[1]
        frontend = listening()
        with readme_haproxy(port, frontend), \
                socket.create_connection(frontend.getsockname(), timeout=WAIT) as client:
            host, client_port = client.getsockname()
            assert client.makefile("rb").readline() == f"hello {host}:{client_port}\n".encode()
        srv.signal(signal.SIGINT)
        srv.wait()
