"""Headless Chromium driven over the DevTools protocol, for the status page's test (not
a test module): a minimal WebSocket client (RFC 6455, client side: masked frames out,
fragmented messages in) on the standard library, and :class:`Browser`, which starts
``chromium --headless`` on a page and evaluates expressions in it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis_tools import install_package
from servekit import WAIT

_OP_TEXT, _OP_CLOSE, _OP_PING = 1, 8, 9


def find_chromium() -> tuple[str | None, str]:
    """The Chromium binary, installed with apt-get if missing (root only), or None and
    the reason."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found, ""
    reason = install_package("chromium")
    found = shutil.which("chromium")
    return found, reason or ("" if found else "chromium is missing after installing it")


class WebSocket:
    """A WebSocket client connection (text messages only)."""

    def __init__(self, url: str) -> None:
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the browser closed the DevTools connection"
            data += chunk
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | _OP_TEXT, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | _OP_TEXT, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | _OP_TEXT, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> str:
        parts = []
        while True:
            first, second = self._exact(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._exact(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(size)  # a server never masks
            opcode = first & 0x0F
            if opcode == _OP_CLOSE:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode == _OP_PING:
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """``chromium --headless`` showing ``url``, driven over the DevTools protocol."""

    def __init__(self, binary: str, url: str, profile: Path, size: str = "1200,860") -> None:
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", f"--window-size={size}",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._id = 0
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            self.ws = WebSocket(self._page(port, url))
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, path: Path) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count("\n") >= 1:
                return int(path.read_text().split()[0])
            assert self.process.poll() is None, "chromium exited"
            time.sleep(0.05)
        raise AssertionError("chromium did not open its DevTools port within 60 s")

    def _page(self, port: int, url: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                        timeout=WAIT) as reply:
                targets = json.load(reply)
            for target in targets:
                if target.get("type") == "page" and target.get("url", "").startswith(url):
                    return str(target["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise AssertionError(f"no page target for {url}")

    def call(self, method: str, **params: Any) -> Any:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.evaluate(expression)
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} still false after {timeout} s")
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.process.kill()
        self.process.wait(WAIT)
