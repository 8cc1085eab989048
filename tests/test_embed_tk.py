"""The reactor inside a real Tk (under Xvfb): the connection-table monitor example.

The monitor shows chat clients' rows and counters that move while the reactor serves
them from Tk's loop; the test photographs the window. With
``REACTOR_UPDATE_SCREENSHOT=1`` the picture replaces docs/tk_monitor.png, the one the
README shows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import xvfb

from handlers import ChatServer
from reactor import Reactor
from reactor.embed import tk as reactor_tk

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tk_monitor.py"
SCREENSHOT = ROOT / "docs" / "tk_monitor.png"


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> str:
    name = xvfb.x_display()
    monkeypatch.setenv("DISPLAY", name)
    return name


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tk_monitor", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {line!r}")
        line += chunk
    return line


@pytest.mark.timeout(60)
def test_monitor_shows_the_chat_clients_rows_live(display: str, tmp_path: Path) -> None:
    import tkinter

    from PIL import ImageGrab

    example = load_example()
    root = tkinter.Tk()
    root.geometry("+0+0")
    reactor = Reactor()
    chat = ChatServer()
    port = reactor.listen_tcp("127.0.0.1", 0, chat).port
    monitor = example.Monitor(root, reactor, chat, period=0.05)
    seen: dict[str, Any] = {}
    joined = threading.Event()
    clients: list[socket.socket] = []

    def snapshot(name: str) -> None:  # on Tk's thread, through the reactor
        monitor.refresh()
        seen[name] = ({k: v.get() for k, v in monitor.counters.items()}, monitor.rows())
        if name == "joined":
            joined.set()
        else:
            root.after(300, root.quit)  # let the window draw the last state

    def talk() -> None:
        try:
            for nick in ("alice", "bob", "carol"):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                clients.append(sock)
                read_line(sock)  # the welcome
                sock.sendall(b"/nick %s\n" % nick.encode())
            for sock in clients:
                while b"you are now known as" not in read_line(sock):
                    pass
            reactor.call_soon_threadsafe(snapshot, "joined")
            assert joined.wait(10)
            for n in range(5):
                for sock in clients:
                    sock.sendall(b"hello %d\n" % n)
            for sock in clients:  # each hears the other two, five times
                heard = 0
                while heard < 10:
                    heard += read_line(sock).startswith(b"<")
        except BaseException as exc:
            seen["error"] = exc
        finally:
            reactor.call_soon_threadsafe(snapshot, "talked")

    embedding = reactor_tk.attach(reactor, root)
    monitor.start()
    guard = root.after(30_000, root.quit)
    worker = threading.Thread(target=talk)
    try:
        root.after_idle(worker.start)
        root.mainloop()
        worker.join(10)
        assert "error" not in seen, seen.get("error")
        peers = {example.peer_text(sock.getsockname()) for sock in clients}
        root.update()
        picture = ImageGrab.grab(
            bbox=(root.winfo_rootx(), root.winfo_rooty(),
                  root.winfo_rootx() + root.winfo_width(),
                  root.winfo_rooty() + root.winfo_height()),
            xdisplay=display,
        )
    finally:
        root.after_cancel(guard)
        monitor.stop()
        embedding.detach()
        for sock in clients:
            sock.close()
        reactor.close()
        root.destroy()

    before, _ = seen["joined"]
    after, rows = seen["talked"]
    assert {row[0] for row in rows} == peers  # one row per client, by its address
    assert all(row[1] == "tcp" and row[2] == "OPEN" for row in rows)
    assert before["members"] == after["members"] == "3"
    assert int(after["messages"]) - int(before["messages"]) == 15
    assert int(after["bytes in"]) > int(before["bytes in"]) > 0
    assert monitor.refreshes > 2

    path = tmp_path / "tk_monitor.png"
    picture.save(path)
    assert picture.width >= 400 and picture.height >= 200
    colours = picture.getcolors(1 << 16)
    assert colours is None or len(colours) > 2  # not a blank window
    if os.environ.get("REACTOR_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


@pytest.mark.timeout(60)
def test_monitor_example_runs_as_a_program(display: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--seconds", "3"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert read_line(sock).startswith(b"* welcome")
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
