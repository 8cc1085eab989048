"""systemd socket activation and sd_notify, with this test playing systemd.

The unit files in ``examples/deploy/`` are read: the socket unit's ``ListenStream=`` is
bound here (port 0 instead of its port), the service's ``ExecStart=`` command is run
through ``sd_launch.py`` (the descriptor moved to 3, ``LISTEN_*`` set, as systemd does),
``NOTIFY_SOCKET`` names a datagram socket this test reads, and ``ExecReload=`` and
``KillSignal=`` are the signals sent.
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servekit import ROOT, TESTS, WAIT, ServerProcess
from workerkit import READY, echo_once, kill_tree, worker_pids

from reactor.cli.activation import Notifier, systemd_binds

pytestmark = pytest.mark.timeout(120)

DEPLOY = ROOT / "examples" / "deploy"


# -- the pieces -----------------------------------------------------------------------------


def test_listen_fds_are_taken_only_for_this_process() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "1", "LISTEN_FDNAMES": "a:b", "OTHER": "x"}
    assert systemd_binds(env, pid=1234) == []
    assert env == {"OTHER": "x"}  # removed all the same: no child takes them


def test_listen_fds_in_order_from_three() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "1234", "LISTEN_FDNAMES": "web:admin"}
    binds = systemd_binds(env, pid=1234)
    assert [str(b) for b in binds] == ["fd://3", "fd://4"]
    assert env == {}
    assert systemd_binds({}, pid=1234) == []


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_datagrams(tmp_path: Path, abstract: bool) -> None:
    name = f"@reactor-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind("\0" + name[1:] if abstract else name)
        sink.settimeout(WAIT)
        env = {"NOTIFY_SOCKET": name}
        notifier = Notifier(env)
        assert env == {} and notifier.enabled
        assert notifier.ready("serving on 127.0.0.1:1")
        assert sink.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:1\n"
        assert notifier.reloading("again")
        assert sink.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert not Notifier({}).ready("nobody listens")


# -- playing systemd with the shipped units -------------------------------------------------


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


class NotifySink:
    """The service manager's notify socket: every datagram, in order."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(WAIT)
        self.messages: list[dict[str, str]] = []

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.messages.append(message)
        return message

    def until(self, key: str) -> dict[str, str]:
        while True:
            message = self.next()
            if key in message:
                return message


@pytest.fixture
def activated(tmp_path: Path) -> Iterator[tuple[ServerProcess, NotifySink, socket.socket]]:
    socket_unit = unit(DEPLOY / "reactor-echo.socket")
    service = unit(DEPLOY / "reactor-echo.service")
    assert service["Service"]["Type"] == "notify"
    host, _, _port = socket_unit["Socket"]["ListenStream"].rpartition(":")
    listener = socket.create_server((host, 0), backlog=int(socket_unit["Socket"]["Backlog"]))
    name = socket_unit["Socket"]["FileDescriptorName"]
    command = shlex.split(service["Service"]["ExecStart"])
    assert Path(command[0]).name == "reactor"  # the installed console script, run as -m here
    sink = NotifySink(tmp_path / "notify")
    srv = ServerProcess(
        *command[1:],
        command=[sys.executable, str(TESTS / "sd_launch.py"), f"{listener.fileno()}={name}",
                 "--", sys.executable, "-m", "reactor"],
        env={"NOTIFY_SOCKET": str(tmp_path / "notify")}, pass_fds=(listener.fileno(),))
    try:
        yield srv, sink, listener
    finally:
        kill_tree(srv, set())
        sink.sock.close()
        listener.close()


def test_the_units_run_socket_activated_and_notify(
        activated: tuple[ServerProcess, NotifySink, socket.socket]) -> None:
    srv, sink, listener = activated
    address = listener.getsockname()
    service = unit(DEPLOY / "reactor-echo.service")

    ready = sink.until("READY")
    assert ready["READY"] == "1"
    assert f"serving on {address[0]}:{address[1]}" in ready["STATUS"]
    assert "socket activation: fd://3 (echo)" in srv.log
    workers = worker_pids(srv)
    assert len(workers) == 2
    assert echo_once(address, b"activated") == b"activated"

    reload_command = shlex.split(service["Service"]["ExecReload"])
    assert reload_command[1:] == ["-HUP", "$MAINPID"]
    srv.signal(signal.SIGHUP)
    reloading = sink.until("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert sink.until("READY")["READY"] == "1"
    srv.wait_for(READY, count=4)
    assert echo_once(address, b"reloaded") == b"reloaded"

    kill = getattr(signal, service["Service"]["KillSignal"])
    srv.signal(kill)
    stopping = sink.until("STOPPING")
    assert stopping["STATUS"].startswith("stopping")
    assert srv.wait() == 0
    order = [key for message in sink.messages for key in message
             if key in ("READY", "RELOADING", "STOPPING")]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]


def test_workers_never_see_the_variables(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    srv = ServerProcess(
        "workerkit:Environment", "--workers", "1", "--app-dir", str(TESTS),
        command=[sys.executable, str(TESTS / "sd_launch.py"), f"{listener.fileno()}=x",
                 "--", sys.executable, "-m", "reactor", "serve"],
        env={"NOTIFY_SOCKET": str(tmp_path / "nobody")}, pass_fds=(listener.fileno(),))
    try:
        srv.wait_for(READY)
        assert echo_once(listener.getsockname(), b"") == b"none\n"
    finally:
        kill_tree(srv, set())
        listener.close()


def test_listen_fds_for_another_process_are_ignored(tmp_path: Path) -> None:
    srv = ServerProcess("echo", "-b", "127.0.0.1:0",
                        env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    try:
        srv.wait_for("serving echo")
        assert "socket activation" not in srv.log
        assert echo_once(srv.tcp_address(), b"x") == b"x"
    finally:
        srv.close()
