"""Helpers for the TLS tests (not a test module).

* :class:`Certs` -- a throwaway CA (trustme) with a server certificate for
  ``localhost``/127.0.0.1 and a client certificate, written to files too, and the
  contexts built from them.
* :class:`MemoryClient` -- a TLS client engine over memory buffers, driven through a
  :class:`netkit.Peer`, for the tests that must send exactly the bytes they choose (half
  a ClientHello, a truncated record).
* :func:`openssl` -- the ``openssl`` program, installed with apt-get when missing and
  the tests run as root, else the test skips with the reason.
* :func:`run_s_client` -- ``openssl s_client`` sends a text and reads until a marker.
* :func:`tls_messages` -- the reactor.tls log lines of a caplog.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from netkit import WAIT, Peer
from redis_tools import install_package

from reactor import Reactor

__all__ = ["Certs", "MemoryClient", "openssl", "run_s_client", "tls_messages"]


class Certs:
    """A CA, a server certificate and a client certificate, in memory and in ``where``."""

    def __init__(self, where: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.client = self.ca.issue_cert("client@example.org", common_name="tls-test-client")
        where.mkdir(parents=True, exist_ok=True)
        self.ca_file = where / "ca.pem"
        self.cert_file = where / "server.pem"
        self.key_file = where / "server.key"
        self.client_cert_file = where / "client.pem"
        self.client_key_file = where / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        self.server.private_key_pem.write_to_path(str(self.key_file))
        self.client.cert_chain_pems[0].write_to_path(str(self.client_cert_file))
        self.client.private_key_pem.write_to_path(str(self.client_key_file))

    def server_context(self, *, require_client: bool = False,
                       maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if require_client:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx

    def client_context(self, *, with_cert: bool = False,
                       maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx


class MemoryClient:
    """A TLS client engine whose bytes go through a :class:`Peer` (the test chooses
    what is sent and when)."""

    def __init__(self, context: ssl.SSLContext, reactor: Reactor, peer: Peer) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.reactor = reactor
        self.peer = peer

    def hello(self) -> bytes:
        """The ClientHello (not sent)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def _pump_in(self) -> None:
        self.reactor.run_until(lambda: bool(self.peer.received) or self.peer.eof, WAIT)
        self.incoming.write(bytes(self.peer.received))
        self.peer.received.clear()

    def handshake(self, send_last: bool = True) -> bytes:
        """Run the handshake through the peer; with ``send_last`` false the client's
        last flight is returned instead of sent (to send it with more)."""
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self.peer.write(self.outgoing.read())
                self._pump_in()
                continue
            break
        last = self.outgoing.read()
        if send_last and last:
            self.peer.write(last)
            return b""
        return last

    def record(self, data: bytes) -> bytes:
        """``data`` encrypted: the records to send (not sent)."""
        self.obj.write(data)
        return self.outgoing.read()

    def read_plaintext(self, size: int) -> bytes:
        """Pump bytes in until ``size`` bytes of plaintext were decrypted."""
        got = bytearray()
        while len(got) < size:
            try:
                got += self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._pump_in()
        return bytes(got)


_openssl_outcome: list[str] = []


def openssl() -> str:
    """The path of ``openssl`` (installing the Debian package once if need be)."""
    path = shutil.which("openssl")
    if path is not None:
        return path
    if not _openssl_outcome:
        _openssl_outcome.append(install_package("openssl"))
    path = shutil.which("openssl")
    if path is None:
        pytest.skip(_openssl_outcome[0] or "openssl is still missing after installing it")
    return path


def run_s_client(address: tuple[str, int], certs: Certs, stdin: bytes, until: bytes,
                 *extra: str) -> tuple[int, bytes]:
    """Run ``openssl s_client`` against ``address``: send ``stdin``, read until
    ``until`` appears, then end its input (it sends close_notify and exits); its exit
    status and output."""
    host, port = address
    proc = subprocess.Popen(
        [openssl(), "s_client", "-connect", f"{host}:{port}", "-CAfile", str(certs.ca_file),
         "-servername", "localhost", "-verify_return_error", "-quiet", "-no_ign_eof",
         *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    output = b""
    try:
        proc.stdin.write(stdin)
        proc.stdin.flush()
        deadline = time.monotonic() + WAIT
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while until not in output and time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
        proc.stdin.close()
        output += proc.stdout.read()
        return proc.wait(WAIT), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def tls_messages(caplog: Any, level: int = logging.INFO) -> list[str]:
    """The messages the reactor.tls logger logged at ``level``."""
    return [r.getMessage() for r in caplog.records
            if r.name == "reactor.tls" and r.levelno == level]
