"""``reactor serve``'s logs: JSON lines, a log file that SIGHUP reopens after rotation,
the pid file, and floods that log once per episode, not once per connection.

Each test runs the real command as a child process.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from servekit import ROOT, WAIT, ServerProcess, read_until_closed, serve

pytestmark = pytest.mark.timeout(90)


def wait_file(path: Path, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
    """The text of ``path`` once ``predicate`` holds for it (polled up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"{path} never matched; it holds:\n{text}"
        time.sleep(0.02)  # polling a file another process writes


def port_in(text: str) -> int:
    for line in text.splitlines():
        if "listening on " in line:
            return int(line.rsplit(":", 1)[1].strip('"}, '))
    raise AssertionError(text)


def echo_once(port: int, data: bytes = b"ping") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
        client.sendall(data)
        assert client.recv(len(data)) == data
        client.shutdown(socket.SHUT_WR)
        read_until_closed(client)


def test_json_lines_have_the_time_zone_level_logger_and_message() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--log-format", "json") as srv:
        srv.wait_for(r"serving echo")
        assert srv.stop() == 0
        lines = [line for line in srv.log.splitlines() if line.strip() and line != "<EOF>"]
    assert len(lines) >= 3
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        stamp = datetime.datetime.fromisoformat(record["timestamp"])
        assert stamp.tzinfo is not None and stamp.utcoffset() is not None
        assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 120
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")
        assert record["logger"].startswith("reactor")
    messages = [json.loads(line)["message"] for line in lines]
    assert any(m.startswith("listening on 127.0.0.1:") for m in messages)


def test_sighup_reopens_the_log_file_after_rotation(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serve("echo", "--bind", "127.0.0.1:0", "--log-file", str(log), "--access-log") as srv:
        port = port_in(wait_file(log, lambda t: "serving echo" in t))
        echo_once(port)
        wait_file(log, lambda t: "reactor.access" in t)
        assert srv.log.strip() == ""  # nothing on stderr: the file has it all
        rotated = tmp_path / "serve.log.1"
        log.rename(rotated)  # logrotate's move ...
        srv.signal(signal.SIGHUP)  # ... then HUP
        fresh = wait_file(log, lambda t: "SIGHUP: reopened the log file" in t)
        assert str(log) in fresh
        echo_once(port)  # still serving, and its lines go to the new file
        fresh = wait_file(log, lambda t: "reactor.access" in t)
        assert srv.running()
        srv.signal(signal.SIGHUP)  # again, without a rotation: same file, appended
        wait_file(log, lambda t: t.count("SIGHUP: reopened") == 2)
        assert srv.stop() == 0
    old = rotated.read_text()
    assert "listening on" in old and old.count("reactor.access") == 1
    assert "SIGHUP" not in old
    new = log.read_text()
    assert "listening on" not in new and new.count("reactor.access") == 1
    assert "stopped: every connection closed" in new


def test_sighup_without_a_log_file_keeps_serving() -> None:
    with serve("echo", "--bind", "127.0.0.1:0") as srv:
        port = srv.tcp_address()[1]
        srv.wait_for("serving echo")  # the signal handlers are installed by then
        srv.signal(signal.SIGHUP)
        srv.wait_for("SIGHUP: no log file to reopen")
        echo_once(port)
        assert srv.running()
        assert srv.stop() == 0


def test_the_pid_file_is_written_and_removed(tmp_path: Path) -> None:
    pid = tmp_path / "serve.pid"
    with serve("echo", "--bind", "127.0.0.1:0", "--pid", str(pid)) as srv:
        srv.wait_for("serving echo")
        assert pid.read_text() == f"{srv.proc.pid}\n"
        assert srv.stop() == 0
    assert not pid.exists()
    assert not list(tmp_path.iterdir())  # no temporary file left either


def test_an_unwritable_pid_file_refuses_to_start(tmp_path: Path) -> None:
    where = tmp_path / "missing" / "serve.pid"
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "echo", "--bind", "127.0.0.1:0",
         "--pid", str(where)], cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert f"cannot write the pid file {where} (--pid)" in result.stderr
    assert "listening on" not in result.stderr and "Traceback" not in result.stderr
    assert not where.parent.exists()


@pytest.mark.parametrize("extra", [["--log-file", "x.log"], ["--log-format", "json"]])
def test_log_file_and_format_do_not_combine_with_log_config(
    tmp_path: Path, extra: list[str]
) -> None:
    config = tmp_path / "log.json"
    config.write_text(json.dumps({"version": 1}))
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "echo", "--log-config", str(config),
         *extra], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT,
        stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "do not combine with --log-config" in result.stderr


def test_an_unopenable_log_file_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "serve", "echo", "--log-file",
         str(tmp_path / "no" / "such.log")], cwd=ROOT, capture_output=True, text=True,
        timeout=WAIT, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "cannot open the log file" in result.stderr and "--log-file" in result.stderr


# -- floods: once per episode ----------------------------------------------------------------

CLIENTS = 40


def flood(srv: ServerProcess, each: Callable[[socket.socket], None]) -> None:
    """Connect :data:`CLIENTS` clients at once, then run ``each`` on them in turn."""
    clients = [socket.create_connection(srv.tcp_address(), timeout=WAIT)
               for _ in range(CLIENTS)]
    try:
        for client in clients:
            each(client)
    finally:
        for client in clients:
            client.close()


def served_then_gone(client: socket.socket) -> None:
    client.sendall(b"hi")
    assert client.recv(2) == b"hi"
    client.close()


def closed_by_server(client: socket.socket) -> None:
    assert read_until_closed(client) == b""


def test_a_flood_at_max_connections_logs_one_episode() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--max-connections", "2") as srv:
        flood(srv, served_then_gone)  # served in turn as the ones before them leave
        srv.wait_for(r"accepting again: under max_connections=2")
        assert srv.stop() == 0
        log = srv.log
    start = [line for line in log.splitlines() if "not accepting" in line]
    end = [line for line in log.splitlines() if "accepting again" in line]
    assert len(start) == 1 and len(end) == 1, log
    assert "WARNING" in start[0] and "at max_connections=2" in start[0]
    assert "new clients wait in the backlog" in start[0]
    reached = int(end[0].split("the cap was reached ")[1].split(" time")[0])
    assert reached >= CLIENTS - 2


def test_a_flood_of_idle_closes_logs_one_line_and_a_count() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--idle-timeout", "0.5") as srv:
        flood(srv, closed_by_server)
        srv.wait_for(rf"the idle timeout: closed {CLIENTS} connections in")
        assert srv.stop() == 0
        log = srv.log
    assert len([ln for ln in log.splitlines() if "closing: idle timeout" in ln]) == 1, log
    assert len([ln for ln in log.splitlines() if "idle timeout" in ln]) == 2, log


def test_at_debug_each_idle_close_has_its_line() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--idle-timeout", "0.5",
               "--log-level", "debug") as srv:
        where = srv.tcp_address()
        clients = [socket.create_connection(where, timeout=WAIT) for _ in range(5)]
        for client in clients:
            assert read_until_closed(client) == b""
            client.close()
        srv.wait_for(r"closing: idle timeout", count=5)
        srv.wait_for(r"accepted 127.0.0.1:\d+ on 127.0.0.1:", count=5)
        assert srv.stop() == 0


def test_help_has_a_logging_group(capsys: pytest.CaptureFixture[str]) -> None:
    from reactor.cli import main

    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    group = text[text.index("\nlogging:"):]
    for flag in ("--log-level", "--log-config", "--log-format", "--log-file",
                 "--access-log", "--pid"):
        assert flag in group
    assert "SIGHUP" in text


def test_a_log_config_routes_the_access_log_apart_and_sighup_reopens_it(
    tmp_path: Path,
) -> None:
    access = tmp_path / "access.log"
    config = tmp_path / "log.json"
    config.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "%(reason)s %(bytes_in)d %(message)s"}},
        "handlers": {"access": {"class": "logging.FileHandler", "filename": str(access),
                                "formatter": "plain"},
                     "stderr": {"class": "logging.StreamHandler"}},
        "loggers": {"reactor.access": {"handlers": ["access"], "propagate": False}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }))
    with serve("echo", "--bind", "127.0.0.1:0", "--log-config", str(config),
               "--access-log") as srv:
        port = srv.tcp_address()[1]
        srv.wait_for("serving echo")
        echo_once(port)
        first = wait_file(access, lambda t: "client-eof" in t)
        assert first.startswith("client-eof 4 ") and "reactor.access" not in srv.log
        access.rename(tmp_path / "access.log.1")
        srv.signal(signal.SIGHUP)
        srv.wait_for("SIGHUP: reopened the log file")
        echo_once(port)
        wait_file(access, lambda t: t.startswith("client-eof 4 "))
        assert srv.stop() == 0
