"""``reactor serve`` as users run it: a real child process, addresses read from its log.

Signals, the graceful stop with requests in flight, a second SIGINT, a signal storm,
the limits, inherited sockets, and the errors for bad flags.
"""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servekit import ROOT, TESTS, WAIT, ServerProcess, read_lines, read_until_closed, serve

import reactor
from reactor.cli import main

requires_dualstack = pytest.mark.skipif(
    not socket.has_ipv6 or not socket.has_dualstack_ipv6(), reason="IPv6 unavailable")


def run_cli(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


# -- help, version, usage errors ---------------------------------------------------------

SERVE_FLAGS = [
    "--bind", "--max-connections", "--idle-timeout", "--first-byte-timeout",
    "--write-timeout", "--request-timeout", "--backlog", "--reuse-port", "--graceful-timeout",
    "--stats-interval", "--log-level", "--log-config", "--app-dir", "--config",
]


def test_serve_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in SERVE_FLAGS:
        assert flag in text
    for word in ("SIGTERM", "SIGINT", "SIGUSR1", "unix:PATH", "fd://N", "MODULE:FACTORY",
                 "echo", "chat", "kv", "127.0.0.1:8888"):
        assert word in text


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "serve" in text and "run-module" in text and "--version" in text


def test_version_through_python_dash_m() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert reactor.__version__ in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "a command is required"),
        (["launch"], "invalid choice"),
        (["serve"], "SERVICE"),
        (["serve", "echo", "--bind", "nonsense"], "expected HOST:PORT"),
        (["serve", "echo", "--bind", "127.0.0.1:99999"], "0 to 65535"),
        (["serve", "echo", "--bind", "::1:80"], "brackets"),
        (["serve", "echo", "--bind", "unix:"], "needs a path"),
        (["serve", "echo", "--bind", "fd://three"], "descriptor number"),
        (["serve", "echo", "--max-connections", "0"], "at least 1"),
        (["serve", "echo", "--backlog", "many"], "not a whole number"),
        (["serve", "echo", "--idle-timeout", "-1"], "more than zero"),
        (["serve", "echo", "--graceful-timeout", "soon"], "not a number"),
        (["serve", "echo", "--stats-interval", "nan"], "not a finite number of seconds"),
        (["serve", "echo", "--log-level", "loud"], "not a log level"),
        (["serve", "echo", "--log-config", "/nonexistent/log.ini"],
         "--log-config /nonexistent/log.ini: no such file"),
        (["serve", "gopher"], "unknown service gopher"),
        (["serve", "no_such_module_xyz:Factory"], "no module named no_such_module_xyz"),
        (["serve", "servekit:Missing", "--app-dir", str(TESTS)], "has no Missing"),
        (["serve", "servekit:NOT_CALLABLE", "--app-dir", str(TESTS)], "not a class or callable"),
        (["serve", ":Factory"], "MODULE:FACTORY"),
    ],
)
def test_bad_usage_is_a_clear_error_with_status_2(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error:" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_log_config_content_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "log.json"
    config.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    result = run_cli("serve", "echo", "--log-config", str(config))
    assert result.returncode == 2
    assert f"--log-config {config}: Unable to configure handler 'h'" in result.stderr
    assert "No module named 'no'" in result.stderr


def test_an_address_in_use_fails_with_status_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "echo", "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--bind): address already in use" in \
        result.stderr


def test_a_unix_path_that_is_not_a_socket_fails_with_status_1(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    result = run_cli("serve", "echo", "--bind", f"unix:{precious}")
    assert result.returncode == 1
    assert "not a socket" in result.stderr
    assert precious.read_text() == "keep me"


def test_an_inherited_fd_that_is_not_listening_fails_with_status_1() -> None:
    with socket.socket() as unbound:
        fd = unbound.fileno()
        result = subprocess.run(
            [sys.executable, "-m", "reactor", "serve", "echo", "--bind", f"fd://{fd}"],
            cwd=ROOT, capture_output=True, text=True, timeout=WAIT, pass_fds=(fd,))
    assert result.returncode == 1
    assert "is not listening" in result.stderr


# -- serving -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_serves_a_user_factory_on_tcp_and_unix_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0", "--bind", f"unix:{path}") as srv:
        tcp_addr, unix_addr = srv.addresses(2)
        assert re.fullmatch(r"127\.0\.0\.1:\d+", tcp_addr) and not tcp_addr.endswith(":0")
        assert unix_addr == f"unix:{path}"
        with srv.connect() as tcp, socket.socket(socket.AF_UNIX) as unix:
            unix.settimeout(WAIT)
            unix.connect(str(path))
            tcp.sendall(b"one\n")
            unix.sendall(b"two\n")
            assert read_lines(tcp, 1) == [b"one done"]
            assert read_lines(unix, 1) == [b"two done"]
            srv.signal(signal.SIGUSR1)
            stats = srv.wait_for(r"statistics: open=(\d+) .*by state: (.*)")
            assert stats.group(1) == "2" and "OPEN=2" in stats.group(2)
            srv.signal(signal.SIGTERM)
            assert read_until_closed(tcp) == b""
            assert read_until_closed(unix) == b""
        assert srv.wait() == 0
    assert "stopping gracefully" in srv.log and "stopped" in srv.log
    assert not path.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("service", "request_", "reply"),
    [
        ("echo", b"ping\n", b"ping\n"),
        ("kv", b"PING\r\n", b"+PONG\r\n"),
        ("chat", b"/nick tester\n", b"tester"),
    ],
)
def test_the_ready_services_by_name(service: str, request_: bytes, reply: bytes) -> None:
    with ServerProcess(service, "--bind", "127.0.0.1:0") as srv, srv.connect() as client:
        client.sendall(request_)
        data = b""
        while reply not in data:
            chunk = client.recv(4096)
            assert chunk, f"EOF before {reply!r}; got {data!r}"
            data += chunk
        srv.signal(signal.SIGTERM)
        read_until_closed(client)
        client.close()  # the server waits for this EOF (up to its linger timeout)
        assert srv.wait() == 0


@pytest.mark.timeout(90)
def test_sigterm_with_requests_in_flight_answers_every_one() -> None:
    """Requests sent before SIGTERM -- queued in the protocol, waiting unread in the
    server's kernel buffer, or answered with output the client has not read yet -- all
    get complete responses; then the connections close and the exit status is 0."""
    first_batch, second_batch, connections, big = 5, 10, 4, 2_000_000
    with serve("servekit:Paced", "--bind", "127.0.0.1:0", "--graceful-timeout", "60",
               env={"PACED_DELAY": "0.02"}) as srv:
        clients = [srv.connect() for _ in range(connections)]
        bulky = srv.connect()
        expected: dict[socket.socket, bytes] = {}
        for n, client in enumerate(clients):
            lines = [b"c%d-r%d" % (n, i) for i in range(first_batch + second_batch)]
            client.sendall(b"".join(line + b"\n" for line in lines[:first_batch]))
            expected[client] = b"".join(line + b" done\n" for line in lines)
        for n, client in enumerate(clients):
            # the server is working through the first batch with reading paused: the
            # second batch waits in its kernel buffer
            first = read_lines(client, 1)
            assert first == [b"c%d-r0 done" % n]
            expected[client] = expected[client][len(first[0]) + 1:]
            client.sendall(b"".join(b"c%d-r%d\n" % (n, i)
                                    for i in range(first_batch, first_batch + second_batch)))
        # a large answer the client does not read before the signal: most of it waits in
        # the server's write buffer
        bulky.sendall(b"big %d\n" % big)
        expected[bulky] = b"big %d " % big + b"x" * big + b"\n"
        srv.signal(signal.SIGTERM)
        started = time.monotonic()
        srv.wait_for(r"stopping gracefully")
        for client, want in expected.items():
            got = read_until_closed(client)
            assert got == want, f"{len(got)} bytes instead of {len(want)}"
            client.close()
        assert srv.wait() == 0
        assert time.monotonic() - started < 60
    assert re.search(r"draining 5 connections", srv.log)
    assert "aborting" not in srv.log
    assert "Traceback" not in srv.log


@pytest.mark.timeout(60)
def test_sigterm_while_the_reactor_is_busy_answers_pipelined_requests() -> None:
    """A synchronous protocol blocking the reactor when the signal arrives."""
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0",
               env={"SLOW_LINES_DELAY": "0.02"}) as srv:
        clients = [srv.connect() for _ in range(3)]
        for n, client in enumerate(clients):
            client.sendall(b"".join(b"c%d-r%d\n" % (n, i) for i in range(10)))
        assert read_lines(clients[0], 1) == [b"c0-r0 done"]
        srv.signal(signal.SIGTERM)
        for n, client in enumerate(clients):
            got = read_until_closed(client)
            want = b"".join(b"c%d-r%d done\n" % (n, i) for i in range(1 if n == 0 else 0, 10))
            assert got == want
            client.close()
        assert srv.wait() == 0


@pytest.mark.timeout(60)
def test_the_backlog_and_the_kernel_buffer_at_the_signal_are_served() -> None:
    """A client that connected and sent its request while the server was busy (still in
    the listen backlog when the signal arrives) gets its answer too."""
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0") as srv:
        busy = srv.connect()
        busy.sendall(b"slow 1.0\n")
        assert read_lines(busy, 1) == [b"started"]  # the server's reactor is blocked now
        late = srv.connect()
        late.sendall(b"late\n")
        srv.signal(signal.SIGTERM)
        assert read_until_closed(busy) == b"slow 1.0 done\n"
        assert read_until_closed(late) == b"late done\n"
        busy.close()
        late.close()
        assert srv.wait() == 0


@pytest.mark.timeout(60)
def test_first_sigint_is_graceful_and_exits_0() -> None:
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0") as srv, srv.connect() as c:
        c.sendall(b"hello\n")
        assert read_lines(c, 1) == [b"hello done"]
        srv.signal(signal.SIGINT)
        assert read_until_closed(c) == b""
        c.close()
        assert srv.wait() == 0
    assert "SIGINT: stopping gracefully" in srv.log


@pytest.mark.timeout(60)
def test_a_second_sigint_exits_at_once_with_130() -> None:
    with serve("servekit:Stubborn", "--bind", "127.0.0.1:0", "--graceful-timeout", "120") as srv:
        client = srv.connect()
        client.sendall(b"hi\n")
        assert read_lines(client, 1) == [b"hi done"]
        srv.signal(signal.SIGINT)
        srv.wait_for(r"stopping gracefully")
        assert read_lines(client, 1) == [b"shutting down"]  # told, and kept open
        started = time.monotonic()
        srv.signal(signal.SIGINT)
        assert srv.wait() == 130
        assert time.monotonic() - started < 10  # not the 120 s grace period
        assert read_until_closed(client) == b""
        client.close()
    assert "second SIGINT: exiting at once" in srv.log


@pytest.mark.timeout(60)
def test_a_second_sigterm_does_not_cut_the_grace_period_short() -> None:
    with serve("servekit:Stubborn", "--bind", "127.0.0.1:0", "--graceful-timeout", "2") as srv:
        client = srv.connect()
        client.sendall(b"hi\n")
        read_lines(client, 1)
        srv.signal(signal.SIGTERM)
        srv.wait_for(r"stopping gracefully")
        srv.signal(signal.SIGTERM)
        srv.wait_for(r"already stopping")
        assert srv.wait() == 0
        client.close()
    assert re.search(r"graceful timeout \(2 s\): aborting 1 connection\b", srv.log)


@pytest.mark.timeout(60)
def test_connections_left_at_the_grace_deadline_are_aborted() -> None:
    with serve("servekit:Stubborn", "--bind", "127.0.0.1:0", "--graceful-timeout", "1") as srv:
        client = srv.connect()
        client.sendall(b"hi\n")
        read_lines(client, 1)
        srv.signal(signal.SIGTERM)
        started = time.monotonic()
        assert read_until_closed(client) == b"shutting down\n"
        closed_after = time.monotonic() - started
        assert srv.wait() == 0
        client.close()
    assert 0.5 < closed_after < 20
    assert re.search(r"aborting 1 connection\b", srv.log)


@pytest.mark.timeout(90)
def test_a_signal_storm_breaks_nothing() -> None:
    """SIGALRM every millisecond in the server: no InterruptedError escapes, timers
    fire on time, the idle timeout still closes, and SIGTERM still stops it cleanly."""
    with serve("servestorm:Storm", "--bind", "127.0.0.1:0", "--idle-timeout", "1.5",
               "--stats-interval", "0.25") as srv, srv.connect() as client:
        for ms in (50, 300):
            started = time.monotonic()
            client.sendall(b"after %d\n" % ms)
            (line,) = read_lines(client, 1)
            seen = (time.monotonic() - started) * 1000
            slept = float(line.split()[1])
            assert ms <= slept < ms + 3000, line
            assert seen >= ms
        payload = b"y" * 200_000
        client.sendall(payload + b"\n")
        assert read_lines(client, 1) == [payload]
        client.sendall(b"alarms\n")
        (line,) = read_lines(client, 1)
        assert int(line.split()[1]) > 50  # the storm is real
        idle = srv.connect()
        started = time.monotonic()
        assert read_until_closed(idle) == b""
        assert 1.2 < time.monotonic() - started < 20
        idle.close()
        srv.wait_for(r"statistics: open=", count=3)
        srv.signal(signal.SIGTERM)
        read_until_closed(client)
        assert srv.wait() == 0
    assert "InterruptedError" not in srv.log
    assert "Traceback" not in srv.log
    assert "idle timeout" in srv.log


@pytest.mark.timeout(60)
def test_max_connections_leaves_extra_clients_waiting() -> None:
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0", "--max-connections", "1",
               env={"SLOW_LINES_DELAY": "0"}) as srv:
        first = srv.connect()
        first.sendall(b"a\n")
        assert read_lines(first, 1) == [b"a done"]
        second = srv.connect()  # completes in the kernel's backlog
        second.sendall(b"b\n")
        first.sendall(b"c\n")
        assert read_lines(first, 1) == [b"c done"]  # the server is not stuck...
        ready, _, _ = select.select([second], [], [], 0.5)
        assert not ready  # ...yet it does not serve the second client
        first.close()
        assert read_lines(second, 1) == [b"b done"]  # a slot is free: served now
        srv.signal(signal.SIGTERM)
        read_until_closed(second)
        second.close()
        assert srv.wait() == 0


@pytest.mark.timeout(60)
def test_idle_and_first_byte_timeouts_close_connections() -> None:
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0", "--idle-timeout", "2",
               "--first-byte-timeout", "0.5", env={"SLOW_LINES_DELAY": "0"}) as srv:
        silent = srv.connect()
        talker = srv.connect()
        talker.sendall(b"x\n")
        assert read_lines(talker, 1) == [b"x done"]
        started = time.monotonic()
        assert read_until_closed(silent) == b""
        silent_after = time.monotonic() - started
        assert read_until_closed(talker) == b""
        talker_after = time.monotonic() - started
        silent.close()
        talker.close()
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert silent_after < talker_after
    assert 1.0 < talker_after < 25
    assert "no data received" in srv.log and "idle timeout" in srv.log


@pytest.mark.timeout(60)
def test_an_inherited_listening_socket() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    with serve("servekit:SlowLines", "--bind", f"fd://{fd}", pass_fds=(fd,)) as srv:
        listener.close()  # the child has its own copy
        assert srv.addresses() == [f"127.0.0.1:{port}"]
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
            client.sendall(b"inherited\n")
            assert read_lines(client, 1) == [b"inherited done"]
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


@requires_dualstack
@pytest.mark.timeout(60)
def test_an_ipv6_address() -> None:
    with serve("servekit:SlowLines", "--bind", "[::1]:0") as srv:
        (address,) = srv.addresses()
        assert address.startswith("[::1]:")
        with srv.connect() as client:
            client.sendall(b"six\n")
            assert read_lines(client, 1) == [b"six done"]
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


@pytest.mark.timeout(60)
def test_log_config_from_a_json_file(tmp_path: Path) -> None:
    logfile = tmp_path / "server.log"
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "%(levelname)s|%(name)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(logfile),
                              "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["file"]},
    }
    path = tmp_path / "log.json"
    path.write_text(json.dumps(config))
    with serve("servekit:SlowLines", "--bind", "127.0.0.1:0", "--log-config", str(path)) as srv:
        deadline = time.monotonic() + WAIT
        while "listening on" not in (logfile.read_text() if logfile.exists() else ""):
            assert time.monotonic() < deadline, "no 'listening on' in the configured log file"
            assert srv.proc.poll() is None, srv.log
            time.sleep(0.05)  # polling a file for a condition, with a deadline
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert "INFO|reactor.serve|listening on 127.0.0.1:" in logfile.read_text()


def test_run_module_hands_its_arguments_to_reactor_runmodule(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(
        "import socketserver, sys\nprint(socketserver.__name__, sys.argv[1:])\n")
    result = subprocess.run(
        [sys.executable, "-m", "reactor", "run-module", "probe", "--flag", "value"],
        cwd=tmp_path, capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reactor.socketserver ['--flag', 'value']"
    help_result = run_cli("run-module", "--help")
    assert help_result.returncode == 0
    assert "--log-level" in help_result.stdout and "MODULE" in help_result.stdout


def test_the_console_script() -> None:
    # the project's set-up (make test: pip install -e) installs it next to python
    script = Path(sys.executable).parent / "reactor"
    assert script.exists(), f"no console script {script}: is the project installed?"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                            timeout=WAIT, cwd=ROOT)
    assert result.returncode == 0
    assert reactor.__version__ in result.stdout
