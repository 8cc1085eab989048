"""``reactor serve ... --tls-cert F --tls-key F [--tls-client-ca F] [--tls-min-version V]``
with real clients: Python's ``ssl``, ``openssl s_client`` (echo and chat), redis-py
with ``ssl=True`` and ``redis-cli --tls`` (kv), mutual TLS, the version floor, refused
renegotiation, a graceful stop that ends with close_notify, and the usage errors.

Certificates come from trustme (tests/tlskit.py); every server listens on port 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_tools import redis_tool
from servekit import WAIT, ServerProcess, serve
from tlskit import Certs, openssl, run_s_client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def tls_args(certs: Certs, *more: str) -> list[str]:
    return ["-b", "127.0.0.1:0", "--tls-cert", str(certs.cert_file),
            "--tls-key", str(certs.key_file), *more]


@pytest.fixture
def server_of(certs: Certs) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.close()


def start(started: list[ServerProcess], *args: str) -> ServerProcess:
    server = serve(*args)
    started.append(server)
    server.addresses()
    return server


def tls_connect(server: ServerProcess, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(server.tcp_address(), timeout=WAIT)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def recv_exactly(sock: ssl.SSLSocket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            raise AssertionError(f"EOF after {len(got)} of {size} bytes")
        got += chunk
    return got


def s_client(server: ServerProcess, certs: Certs, stdin: bytes, until: bytes,
             *extra: str) -> tuple[int, bytes]:
    """Run ``openssl s_client`` against the server (see :func:`tlskit.s_client`)."""
    return run_s_client(server.tcp_address(), certs, stdin, until, *extra)


# -- the services with real clients --------------------------------------------------------


def test_echo_with_pythons_ssl_client(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs))
    server.wait_for(r"serving echo over TLS")
    with tls_connect(server, certs.client_context()) as sock:
        assert sock.version() == "TLSv1.3"
        payload = b"0123456789abcdef" * 20_000
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        sock.unwrap()  # our close_notify, and the server's back
    assert server.stop(signal.SIGTERM) == 0


def test_a_unix_socket_over_tls(server_of: list[ServerProcess], certs: Certs,
                                sockdir: str) -> None:
    path = os.path.join(sockdir, "tls.sock")
    server = start(server_of, "echo", "-b", f"unix:{path}", "--tls-cert",
                   str(certs.cert_file), "--tls-key", str(certs.key_file))
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(WAIT)
        raw.connect(path)
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"over a unix socket")
            assert recv_exactly(sock, 18) == b"over a unix socket"
    assert server.stop(signal.SIGTERM) == 0


def test_echo_with_openssl_s_client(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs))
    status, output = s_client(server, certs, b"hello over tls\n", b"tls\n")
    assert status == 0
    assert output == b"hello over tls\n"


def test_chat_with_openssl_s_client(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "chat", *tls_args(certs))
    status, output = s_client(server, certs, b"/nick alice\n/who\n/quit\n", b"* bye")
    assert status == 0
    assert b"you are now known as alice" in output
    assert b"alice" in output.split(b"* in ", 1)[1]


def test_kv_with_redis_py_over_tls(server_of: list[ServerProcess], certs: Certs) -> None:
    import redis

    server = start(server_of, "kv", *tls_args(certs))
    host, port = server.tcp_address()
    client = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=str(certs.ca_file),
                         ssl_check_hostname=False, socket_timeout=WAIT)
    try:
        assert client.ping() is True
        client.set("greeting", "over tls")
        assert client.get("greeting") == b"over tls"
        big = b"v" * 500_000
        client.set("big", big)
        assert client.get("big") == big
    finally:
        client.close()


def test_kv_with_redis_cli_tls(server_of: list[ServerProcess], certs: Certs) -> None:
    cli = redis_tool("redis-cli")
    usage = subprocess.run([cli, "--help"], capture_output=True, timeout=WAIT, check=False)
    if b"--tls" not in usage.stdout + usage.stderr:
        pytest.skip("this redis-cli was built without TLS")
    server = start(server_of, "kv", *tls_args(certs))
    host, port = server.tcp_address()
    base = [cli, "-h", host, "-p", str(port), "--tls", "--cacert", str(certs.ca_file),
            "--sni", "localhost"]
    done = subprocess.run([*base, "SET", "k", "v"], capture_output=True, timeout=WAIT,
                          check=False)
    assert done.stdout.strip() == b"OK", done.stderr
    done = subprocess.run([*base, "GET", "k"], capture_output=True, timeout=WAIT, check=False)
    assert done.stdout.strip() == b"v", done.stderr


# -- mutual TLS, versions, renegotiation ---------------------------------------------------


def test_mutual_tls(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs, "--tls-client-ca", str(certs.ca_file)))
    with tls_connect(server, certs.client_context(with_cert=True)) as sock:
        sock.sendall(b"with a certificate")
        assert recv_exactly(sock, 18) == b"with a certificate"
    # TLS 1.3: the refusal arrives after the client's side of the handshake
    with tls_connect(server, certs.client_context()) as sock, \
            pytest.raises((ssl.SSLError, ConnectionResetError)):
        sock.sendall(b"x")
        sock.recv(1)
    line = server.wait_for(r"reactor\.tls: .*handshake failed: .*certificate.*; closed")
    assert "127.0.0.1" in line.group(0)


def test_min_version_refuses_older_clients(server_of: list[ServerProcess],
                                           certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs, "--tls-min-version", "1.3"))
    with pytest.raises(ssl.SSLError):
        tls_connect(server, certs.client_context(maximum=ssl.TLSVersion.TLSv1_2))
    server.wait_for(r"handshake failed: unsupported protocol; closed")
    with tls_connect(server, certs.client_context()) as sock:
        assert sock.version() == "TLSv1.3"


def test_renegotiation_is_refused(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs))
    host, port = server.tcp_address()
    # s_client renegotiates on a line holding "R" (not with -quiet); TLS 1.2 has it
    proc = subprocess.Popen(
        [openssl(), "s_client", "-connect", f"{host}:{port}", "-CAfile",
         str(certs.ca_file), "-servername", "localhost", "-tls1_2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        output, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert b"RENEGOTIATING" in output
    assert b"no renegotiation" in output
    server.wait_for(r"reactor\.tls: .*TLS protocol error: .*; closed")


def test_a_stalled_handshake_is_closed(server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs, "--tls-handshake-timeout", "0.5"))
    with socket.create_connection(server.tcp_address(), timeout=WAIT) as sock:
        assert sock.recv(1) == b""  # closed by the server, no byte sent
    server.wait_for(r"reactor\.tls: tcp .*127\.0\.0\.1.*TLS handshake timed out after 0\.5 s")


def test_graceful_stop_ends_with_close_notify(server_of: list[ServerProcess],
                                              certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs, "--graceful-timeout", "10"))
    with tls_connect(server, certs.client_context()) as sock:
        sock.sendall(b"before the stop")
        assert recv_exactly(sock, 15) == b"before the stop"
        server.signal(signal.SIGTERM)
        assert sock.recv(1) == b""  # close_notify: a clean end, not an EOF error
    assert server.wait() == 0


def test_graceful_stop_closes_a_handshake_in_progress_quietly(
        server_of: list[ServerProcess], certs: Certs) -> None:
    server = start(server_of, "echo", *tls_args(certs))
    server.wait_for(r"serving echo over TLS")
    with socket.create_connection(server.tcp_address(), timeout=WAIT) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a record, then nothing
        server.signal(signal.SIGTERM)
        assert sock.recv(1) == b""
    assert server.wait() == 0
    assert "reactor.tls" not in server.log  # the server closed it: nothing to report


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
    (["--tls-cert", "/nonexistent/cert.pem"], "no such file"),
    (["--tls-min-version", "1.1"], "invalid choice"),
    (["--tls-handshake-timeout", "0"], "more than zero"),
])
def test_usage_errors(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "reactor", "serve", "echo", "-b", "127.0.0.1:0",
                           *args], capture_output=True, text=True, timeout=WAIT,
                          check=False, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_key_that_does_not_match(certs: Certs, tmp_path: Path) -> None:
    other = Certs(tmp_path / "other")
    done = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "echo", "-b", "127.0.0.1:0",
         "--tls-cert", str(certs.cert_file), "--tls-key", str(other.key_file)],
        capture_output=True, text=True, timeout=WAIT, check=False,
        cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2
    assert "cannot load the certificate and key" in done.stderr


def test_tls_options_from_the_environment(server_of: list[ServerProcess],
                                          certs: Certs) -> None:
    server = serve("echo", "-b", "127.0.0.1:0", env={
        "REACTOR_TLS_CERT": str(certs.cert_file), "REACTOR_TLS_KEY": str(certs.key_file)})
    server_of.append(server)
    server.addresses()
    with tls_connect(server, certs.client_context()) as sock:
        sock.sendall(b"env")
        assert recv_exactly(sock, 3) == b"env"


# -- the README's example ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_readmes_tls_example_runs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
    snippet = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert "python -m trustme" in section
    subprocess.run([sys.executable, "-m", "trustme", "-q"], cwd=tmp_path, check=True,
                   timeout=WAIT)
    (tmp_path / "example.py").write_text(snippet.replace("8443", "0"))  # any free port
    proc = subprocess.Popen([sys.executable, "example.py"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        host, port = proc.stdout.readline().split()[-2:]
        ctx = ssl.create_default_context(cafile=str(tmp_path / "client.pem"))
        with socket.create_connection((host, int(port)), timeout=WAIT) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"from the README")
            assert recv_exactly(sock, 15) == b"from the README"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
