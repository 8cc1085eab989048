"""``reactor serve --proxy-protocol``: the flags, and the service seeing the client that
the header names, in a real child process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from servekit import ROOT, WAIT, read_lines, read_until_closed, serve

from tests import proxykit as pk

pytestmark = pytest.mark.timeout(60)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "message"), [
    (["--proxy-protocol", "v3"], "invalid choice"),
    (["--proxy-protocol", "v1", "--proxy-allow-from", "example.org"],
     "not an IP address or network"),
    (["--proxy-allow-from", "10.0.0.0/8"], "need --proxy-protocol"),
    (["--proxy-timeout", "2"], "need --proxy-protocol"),
    (["--proxy-protocol", "v2", "--proxy-timeout", "0"], "not a positive number"),
])
def test_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    result = run_cli("serve", "echo", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_service_sees_the_client_named_by_the_header() -> None:
    with serve("proxykit:WhoAmI", "--bind", "127.0.0.1:0", "--proxy-protocol", "any",
               "--proxy-allow-from", "10.0.0.0/8,127.0.0.1", "--access-log") as srv:
        srv.addresses(1)
        with srv.connect() as client:
            client.sendall(pk.v2_inet("203.0.113.5", "198.51.100.1", 5555, 80) + b"hi\n")
            assert read_lines(client, 2) == [b"peer 203.0.113.5 5555 via 127.0.0.1", b"hi"]
        with srv.connect() as client:
            client.sendall(pk.v1("TCP6", "2001:db8::5", "2001:db8::1", 6666, 80))
            assert read_lines(client, 1) == [b"peer 2001:db8::5 6666 via 127.0.0.1"]
        with srv.connect() as client:  # no header: refused
            client.sendall(b"hello\n")
            assert read_until_closed(client) == b""
        srv.wait_for(r"closing: expected a PROXY v1 or v2 header")
        srv.wait_for(r"203\.0\.113\.5")  # the access log names the real client
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_a_peer_outside_the_allow_list_is_refused() -> None:
    with serve("proxykit:WhoAmI", "--bind", "127.0.0.1:0", "--proxy-protocol", "v1",
               "--proxy-allow-from", "192.0.2.0/24") as srv:
        srv.addresses(1)
        with srv.connect() as client:
            client.sendall(pk.v1())
            assert read_until_closed(client) == b""
        srv.wait_for(r"not in proxy_allow_from \(192\.0\.2\.0/24\)")
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_a_stop_does_not_wait_on_a_header_past_its_deadline() -> None:
    with serve("proxykit:WhoAmI", "--bind", "127.0.0.1:0", "--proxy-protocol", "v2",
               "--proxy-timeout", "0.5", "--graceful-timeout", "30") as srv:
        srv.addresses(1)
        with srv.connect() as client:
            client.sendall(pk.v2_inet()[:10])  # and never the rest
            srv.wait_for(r"serving .* \(graceful timeout")  # the signal handlers are in
            srv.signal(signal.SIGTERM)
            srv.wait_for(r"stopping gracefully")
            assert read_until_closed(client) == b""
        assert srv.wait() == 0
    assert "no complete PROXY header within 0.5 s" in srv.log


def test_a_unix_socket_behind_a_local_proxy(tmp_path: object) -> None:
    path = f"{tmp_path}/p.sock"
    with serve("proxykit:WhoAmI", "--bind", f"unix:{path}", "--proxy-protocol", "v2") as srv:
        srv.addresses(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(WAIT)
            client.connect(path)
            client.sendall(pk.v2_inet("192.0.2.9", "192.0.2.1", 7, 8))
            assert read_lines(client, 1) == [b"peer 192.0.2.9 7 via -"]
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_help_documents_the_flags() -> None:
    result = run_cli("serve", "--help")
    for flag in ("--proxy-protocol", "--proxy-allow-from", "--proxy-timeout", "send-proxy"):
        assert flag in result.stdout
