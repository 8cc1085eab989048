"""The control socket of a running ``reactor serve echo --control unix:PATH``, driven
over real sockets and through ``reactor ctl``: every command, close and abort of a
client's connection, drain, malformed and over-long commands, a client that never
reads."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servekit import ROOT, WAIT, ServerProcess, read_until_closed
from tlskit import Certs

pytestmark = pytest.mark.timeout(90)


class Control:
    """A raw control client: one command line in, one reply (up to the empty line)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(str(path))
        self.buffer = b""

    def ask(self, line: bytes | str) -> str:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\n")
        return self.reply()

    def reply(self) -> str:
        while b"\n\n" not in self.buffer:
            data = self.sock.recv(65536)
            assert data, f"closed after {self.buffer!r}"
            self.buffer += data
        reply, _, self.buffer = self.buffer.partition(b"\n\n")
        return reply.decode()

    def json(self, line: str) -> Any:
        return json.loads(self.ask(line + " --json"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, tuple[str, int]]]:
    path = tmp_path / "ctl.sock"
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--control", f"unix:{path}",
                           "--graceful-timeout", "5")
    try:
        host, port = server.addresses()[0].rsplit(":", 1)
        server.wait_for("serving echo")  # signal handlers installed
        yield server, path, (host, int(port))
    finally:
        server.close()


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", "ctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT)


def echo_client(address: tuple[str, int], data: bytes = b"hello\n") -> socket.socket:
    client = socket.create_connection(address, timeout=WAIT)
    client.sendall(data)
    got = b""
    while len(got) < len(data):
        got += client.recv(65536)
    assert got == data
    return client


def row_of(control: Control, client: socket.socket) -> dict[str, Any]:
    peer = f"127.0.0.1:{client.getsockname()[1]}"
    rows = [r for r in control.json("conns")["connections"] if r["peer"] == peer]
    assert len(rows) == 1, rows
    return rows[0]  # type: ignore[no-any-return]


def test_the_socket_is_owner_only_and_gone_after_exit(served: Any) -> None:
    server, path, _ = served
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.stop() == 0
    assert not path.exists()


def test_an_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--control", f"unix:{path}")
    try:
        assert server.wait() == 1
        assert "not a socket" in server.log
    finally:
        server.close()
    assert path.read_text() == "keep me"


def test_info_and_its_json(served: Any) -> None:
    server, path, address = served
    client = echo_client(address)
    control = Control(path)
    text = control.ask("info")
    assert f"pid: {server.proc.pid}" in text.splitlines()
    assert {"connections: 1", "by_state: open=1", "control_clients: 1"} <= set(
        text.splitlines())
    info = control.json("info")
    assert info["pid"] == server.proc.pid and info["version"]
    assert (info["connections"], info["by_state"]) == (1, {"open": 1})
    assert info["loop"]["bytes_in"] >= 6 and info["loop"]["iterations"] > 0
    served_listener, = [x for x in info["listeners"] if x["role"] == "served"]
    assert served_listener["address"] == f"{address[0]}:{address[1]}"
    assert served_listener["active"] == 1 and served_listener["state"] == "accepting"
    control_listener, = [x for x in info["listeners"] if x["role"] == "control"]
    assert control_listener["address"] == str(path)
    assert info["server"]["service"] == "echo" and info["server"]["stopping"] is False
    assert info["server"]["limits"]["backlog"] == 1024
    assert "limits.backlog=1024" in text
    client.close()
    control.close()


def test_conns_filters_sorts_and_limits(served: Any) -> None:
    _, path, address = served
    small = echo_client(address, b"a\n")
    big = echo_client(address, b"b" * 5000 + b"\n")
    control = Control(path)
    rows = control.json("conns")["connections"]
    assert len(rows) == 2 and all(r["role"] == "served" for r in rows)
    assert {r["state"] for r in rows} == {"open"}
    assert rows[0]["id"] < rows[1]["id"]
    by_bytes = control.json("conns --sort bytes_in --limit 1")
    assert by_bytes["total"] == 2
    assert [r["bytes_in"] for r in by_bytes["connections"]] == [5001]
    assert control.json("conns --peer 127.0.0.0/8")["total"] == 2
    assert control.json("conns --peer 10.0.0.0/8")["total"] == 0
    assert control.json("conns closing")["total"] == 0
    assert len(control.json("conns --all")["connections"]) == 3  # this client too
    text = control.ask("conns --sort idle")
    assert text.splitlines()[0].split()[:3] == ["ID", "KIND", "PEER"]
    assert len(text.splitlines()) == 3
    assert "(no connections)" in control.ask("conns read-closed")
    for sock in (small, big, control):
        sock.close()


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_and_abort_end_the_clients_connection(served: Any, how: str) -> None:
    _, path, address = served
    client = echo_client(address)
    control = Control(path)
    ident = row_of(control, client)["id"]
    done = "closing" if how == "close" else "aborted"
    assert control.ask(f"{how} {ident}").startswith(f"ok: {done} {ident}")
    assert read_until_closed(client) == b""
    assert control.json("conns")["total"] == 0
    assert control.ask(f"{how} {ident}") == f"error: no connection {ident} (ids come from conns)"
    assert control.ask("close 999").startswith("error: no connection 999")
    client.close()
    control.close()


def test_malformed_commands_get_error_lines_and_the_server_goes_on(served: Any) -> None:
    _, path, address = served
    control = Control(path)
    control.sock.sendall(b"bogus\nclose\nconns --sort size\n\xff\xfe\ninfo --json --json x\n")
    replies = [control.reply() for _ in range(5)]
    assert replies[0] == "error: unknown command 'bogus'; try help"
    assert replies[1] == "error: usage: close ID (an id from conns)"
    assert replies[2].startswith("error: --sort takes age, idle")
    assert replies[3] == "error: a command must be UTF-8 text"
    assert json.loads(replies[4]) == {"error": "info takes no arguments"}
    assert control.ask("help").splitlines()[0].startswith("info")
    echo_client(address).close()
    control.close()


def test_an_over_long_line_closes_that_client_with_the_reason(served: Any) -> None:
    _, path, _ = served
    control = Control(path)
    control.sock.sendall(b"conns " + b"x" * 5000 + b"\n")
    reply = read_until_closed(control.sock)
    assert reply == b"error: command line over 1024 bytes; closing the connection\n\n"
    control.close()
    assert Control(path).ask("quit") == "ok: bye"


def test_loglevel_shows_and_sets_the_level(served: Any) -> None:
    server, path, _ = served
    control = Control(path)
    assert control.ask("loglevel") == "ok: log level info"
    assert control.ask("loglevel debug") == "ok: log level debug (was info)"
    assert control.json("loglevel") == {"ok": "log level debug", "level": "DEBUG"}
    Control(path).close()
    server.wait_for(r"DEBUG reactor.control: client connected")  # debug lines get through
    assert control.ask("loglevel warning") == "ok: log level warning (was debug)"
    control.close()


def test_a_control_client_that_never_reads_is_bounded(served: Any) -> None:
    _, path, address = served
    greedy = Control(path)
    greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.sock.setblocking(False)
    request = b"help\n" * 800_000  # 4 MB of commands, 600 MB of replies, never read
    sent = 0
    deadline = time.monotonic() + WAIT
    while sent < len(request) and time.monotonic() < deadline:
        try:
            sent += greedy.sock.send(request[sent:])
        except BlockingIOError:
            break  # the server stopped reading: its commands wait in the kernel
    watcher = Control(path)

    def greedy_row() -> dict[str, Any]:  # the older of the two control clients
        rows = watcher.json("conns --all")["connections"]
        return min((r for r in rows if r["role"] == "control"), key=lambda r: r["id"])

    deadline = time.monotonic() + WAIT
    while greedy_row()["queued"] < 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.02)
    row = greedy_row()
    assert 64 * 1024 <= row["queued"] <= 64 * 1024 + 2048  # one reply past the mark
    assert row["bytes_in"] < len(request)  # the rest waits, unread, in the kernel
    echo_client(address).close()  # the server serves on
    greedy.close()
    watcher.close()


def test_drain_stops_as_sigterm_does(served: Any) -> None:
    server, path, address = served
    client = echo_client(address)
    result = ctl(str(path), "drain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: draining")
    assert read_until_closed(client) == b""  # the lingering close: EOF after the answers
    client.close()
    assert server.wait() == 0
    assert "drain (control socket): stopping gracefully" in server.log
    assert not path.exists()


def test_reactor_ctl_prints_tables_json_and_top(served: Any) -> None:
    _, path, address = served
    client = echo_client(address)
    result = ctl("--json", str(path), "conns")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["connections"]
    assert [r["peer"] for r in rows] == [f"127.0.0.1:{client.getsockname()[1]}"]
    table = ctl(str(path), "conns", "--sort", "age")
    assert table.stdout.splitlines()[0].split()[0] == "ID" and len(table.stdout.splitlines()) == 2
    assert json.loads(ctl(str(path), "info", "--json").stdout)["connections"] == 1
    bad = ctl(str(path), "close", "nope")
    assert bad.returncode == 1 and bad.stdout.startswith("error:")
    top = ctl(str(path), "top", "-n", "2", "--interval", "0.05", "--sort", "idle")
    assert top.returncode == 0, top.stderr
    assert top.stdout.count("ID  KIND") == 2 and "control_clients: 1" in top.stdout
    assert ctl(str(path), "top", "--once").stdout.count("ID  KIND") == 1
    missing = ctl(str(path) + ".none", "info")
    assert missing.returncode == 1 and "cannot connect" in missing.stderr
    assert ctl(str(path)).returncode == 2
    client.close()


def test_conns_shows_the_client_behind_a_proxy_header(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--control", f"unix:{path}",
                           "--proxy-protocol", "v1")
    try:
        host, port = server.addresses()[0].rsplit(":", 1)
        server.wait_for("serving echo")
        client = socket.create_connection((host, int(port)), timeout=WAIT)
        client.sendall(b"PROXY TCP4 10.9.8.7 127.0.0.1 4321 80\r\nhi\n")
        assert client.recv(10) == b"hi\n"
        control = Control(path)
        row, = control.json("conns --peer 10.0.0.0/8")["connections"]
        assert row["peer"] == "10.9.8.7:4321"
        assert row["proxy"] == f"127.0.0.1:{client.getsockname()[1]} v1"
        assert f"proxy=127.0.0.1:{client.getsockname()[1]} v1" in control.ask("conns")
        client.close()
        control.close()
    finally:
        server.close()


def test_conns_shows_the_tls_session(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    path = tmp_path / "ctl.sock"
    server = ServerProcess("echo", "-b", "127.0.0.1:0", "--control", f"unix:{path}",
                           "--tls-cert", str(certs.cert_file), "--tls-key",
                           str(certs.key_file))
    try:
        host, port = server.addresses()[0].rsplit(":", 1)
        server.wait_for("serving echo")
        raw = socket.create_connection((host, int(port)), timeout=WAIT)
        client = certs.client_context().wrap_socket(raw, server_hostname="localhost")
        client.sendall(b"secret\n")
        assert client.recv(10) == b"secret\n"
        control = Control(path)
        row, = control.json("conns")["connections"]
        assert row["tls"].startswith("established TLSv1.")
        assert "tls=established TLSv1." in control.ask("conns")
        client.close()
        control.close()
    finally:
        server.close()
