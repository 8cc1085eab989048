"""The live status page of ``reactor serve --status`` in headless Chromium, driven over
the DevTools protocol: it loads, lists the connections the test opened, sorts and
filters them, and updates when they close. Its screenshot is the README's
(``REACTOR_STATUS_SCREENSHOT=docs/status.png`` writes it there).

Chromium is installed with apt-get when the tests run as root, else this skips with
the reason."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdpkit import Browser, find_chromium
from servekit import ROOT, ServerProcess
from test_observe_serve import endpoint

pytestmark = pytest.mark.timeout(180)

ROWS = "document.querySelectorAll('#rows tr').length"


@pytest.fixture(scope="module")
def chromium() -> str:
    binary, reason = find_chromium()
    if binary is None:
        pytest.skip(reason)
    return binary


@pytest.fixture
def served() -> Iterator[tuple[ServerProcess, int]]:
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--status", "127.0.0.1:0",
                           "--loop-health")
    try:
        server.addresses()
        yield server, endpoint(server, "status page")
    finally:
        server.close()


def test_the_page_follows_the_table(chromium: str, served: tuple[ServerProcess, int],
                                    tmp_path: Path) -> None:
    server, port = served
    clients: list[socket.socket] = []
    for size in (10, 2000, 300):
        client = server.connect()
        client.sendall(b"x" * (size - 1) + b"\n")
        got = b""
        while len(got) < size:
            got += client.recv(65536)
        clients.append(client)
    browser = Browser(chromium, f"http://127.0.0.1:{port}/?interval=0.2", tmp_path / "profile")
    try:
        assert browser.wait(f"{ROWS} === 3 && document.getElementById('conn-count')"
                            ".textContent === '3'")
        states = browser.evaluate("[...document.querySelectorAll('#rows tr')]"
                                  ".map(r => r.dataset.state)")
        assert states == ["open"] * 3
        # sorted by bytes in, the largest first (a click on the column's title)
        browser.evaluate("document.querySelector('th[data-key=bytes_in]').click()")
        ins = browser.evaluate("[...document.querySelectorAll('#rows tr')]"
                               ".map(r => Number(r.children[7].textContent))")
        assert ins == [2000, 300, 10]
        # a filter on a state no row is in hides them all
        browser.evaluate("const f = document.getElementById('filter');"
                         "f.append(new Option('closing', 'closing')); f.value = 'closing';"
                         "f.dispatchEvent(new Event('change'))")
        assert browser.evaluate(ROWS) == 0
        browser.evaluate("const g = document.getElementById('filter'); g.value = '';"
                         "g.dispatchEvent(new Event('change'))")
        for _ in range(12):  # some traffic for the throughput chart
            refreshes = browser.evaluate("Number(document.body.dataset.refreshes)")
            for client in clients:
                client.sendall(b"y" * (1000 * (refreshes % 5 + 1)) + b"\n")
            browser.wait(f"Number(document.body.dataset.refreshes) > {refreshes + 1}")
        assert browser.evaluate("document.querySelectorAll('#throughput polyline').length") == 2
        assert browser.evaluate("document.querySelectorAll('#by-state rect').length") == 1
        shot = browser.screenshot()
        assert shot.startswith(b"\x89PNG\r\n\x1a\n")
        (tmp_path / "status.png").write_bytes(shot)
        target = os.environ.get("REACTOR_STATUS_SCREENSHOT")
        if target:
            (ROOT / target).write_bytes(shot)
        for client in clients[:2]:
            client.close()
        assert browser.wait(f"{ROWS} === 1")
        assert browser.evaluate("document.getElementById('error').textContent") == ""
    finally:
        browser.close()
        for client in clients:
            client.close()
