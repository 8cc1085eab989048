"""Errors that name the problem: every message ``reactor`` gives for a mistake names the
flag or value at fault and what to write instead, without a Python repr (no ``b'...'``,
no address tuples, no type names) and without a traceback.

Each case runs the real command line in a child process and asserts the message by
content; the exit status is 2 for a usage error and 1 for an address that cannot be
bound.
"""

from __future__ import annotations

import importlib
import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from servekit import ROOT, TESTS, WAIT, ServerProcess

from reactor.cli import main

# the module (reactor.cli's "main" attribute is the function of the same name)
cli_main = importlib.import_module("reactor.cli.main")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args], cwd=cwd, capture_output=True, text=True,
        timeout=WAIT, stdin=subprocess.DEVNULL,
    )


def error_of(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The stderr of a failed command, checked for what no message may contain."""
    assert result.returncode == status, (result.stdout, result.stderr)
    text = result.stderr
    assert "Traceback" not in text
    assert "b'" not in text and "('" not in text  # no bytes repr, no address tuple
    assert "[Errno" not in text
    return text


# -- --bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("999.1.1.1:80", "argument -b/--bind: 999.1.1.1:80: 999.1.1.1 is not an IPv4 "
                         "address (four numbers from 0 to 255"),
        ("1.2.3:80", "1.2.3 is not an IPv4 address"),
        ("tcp:8080", "argument -b/--bind: tcp:8080: no tcp: prefix is needed; write "
                     "HOST:PORT, e.g. 127.0.0.1:8080 (this host only) or :8080 (all "
                     "interfaces)"),
        ("http://127.0.0.1:0", "argument -b/--bind: http://127.0.0.1:0: --bind takes "
                               "HOST:PORT, not a URL; write 127.0.0.1:0"),
        ("https://example.com/path", "not a URL; write example.com:PORT"),
        ("8080", "8080: expected HOST:PORT; for port 8080 write 127.0.0.1:8080"),
    ],
)
def test_a_bind_address_in_another_notation_says_what_to_write(bind: str,
                                                               message: str) -> None:
    text = error_of(run_cli("serve", "echo", "--bind", bind))
    assert message in text
    assert "brackets" not in text  # what http://127.0.0.1:0 used to be told


def test_a_host_that_does_not_resolve_is_named_with_the_flag() -> None:
    text = error_of(run_cli("serve", "echo", "--bind", "no-such-host.invalid:0"), status=1)
    assert "cannot listen on no-such-host.invalid:0 (--bind): the host name " \
           "no-such-host.invalid cannot be resolved" in text
    assert "give an IP address, e.g. 127.0.0.1" in text


def test_an_address_in_use_is_named_without_a_tuple() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        text = error_of(run_cli("serve", "echo", "--bind", f"127.0.0.1:{port}"), status=1)
    assert f"cannot listen on 127.0.0.1:{port} (--bind): address already in use" in text
    assert "choose another port, or 0 for a free one" in text


def test_a_default_address_in_use_says_how_to_choose_another(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # serve sets the root level: restore it
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(cli_main, "DEFAULT_BIND", f"127.0.0.1:{port}")
        assert main(["serve", "servekit:SlowLines", "--app-dir", str(TESTS)]) == 1
    assert (f"cannot listen on 127.0.0.1:{port} (the default for servekit:SlowLines; "
            "choose another with --bind): address already in use") in caplog.text


@pytest.mark.timeout(60)
def test_all_interfaces_is_said_in_the_log_line_and_in_help(
        capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess("echo", "--bind", ":0", "--bind", "127.0.0.1:0") as srv:
        srv.addresses(2)
        srv.stop()
    assert "listening on 0.0.0.0:" in srv.log
    wildcard = next(line for line in srv.log.splitlines() if "listening on 0.0.0.0:" in line)
    assert wildcard.endswith(" (all interfaces)")
    local = next(line for line in srv.log.splitlines() if "listening on 127.0.0.1:" in line)
    assert "all interfaces" not in local
    assert main(["serve", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert ":PORT (no host), *:PORT or 0.0.0.0:PORT listen on all interfaces" in help_text


# -- the protocol factory -------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "mymod.py").write_text(textwrap.dedent("""\
        import asyncio

        class P(asyncio.Protocol):
            pass

        class NeedsName(asyncio.Protocol):
            def __init__(self, name, greeting="hi"):
                self.name = name

        def make(reactor, *, size):
            return P()

        class NotAProtocol:
            pass
        """))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.py").write_text("import asyncio\nP = asyncio.Protocol\n")
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./mymod.py:P", "./mymod.py:P: MODULE is a module name, not a file: write mymod:P"),
        ("mymod.py:P", "write mymod:P"),
        ("sub/other.py:P", "write other:P --app-dir sub"),
        (".mymod:P", "MODULE is an absolute module name; write mymod:P"),
    ],
)
def test_a_file_given_as_module_says_which_module_to_write(app_dir: Path, spec: str,
                                                           message: str) -> None:
    text = error_of(run_cli("serve", spec, cwd=app_dir))
    assert message in text
    assert "package" not in text  # importlib's "the 'package' argument is required"


def test_a_blocking_socketserver_handler_points_to_run_module() -> None:
    text = error_of(run_cli("serve", "http.server:SimpleHTTPRequestHandler"))
    assert ("http.server:SimpleHTTPRequestHandler is a blocking socketserver request "
            "handler, not an asyncio.Protocol") in text
    assert "reactor run-module http.server 8000" in text
    assert "listening on" not in text  # refused before anything was bound
    # this project's drop-in handlers are refused the same way
    text = error_of(run_cli("serve", "reactor.socketserver:StreamRequestHandler"))
    assert "blocking socketserver request handler" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mymod:NeedsName", "mymod:NeedsName: NeedsName needs arguments (name); FACTORY is "
                            "called with no arguments once per connection and must return "
                            "an asyncio.Protocol"),
        ("mymod:make", "make needs arguments (reactor, size)"),
        ("mymod:NotAProtocol", "the class NotAProtocol is not a stream protocol (it has "
                               "no data_received method); subclass asyncio.Protocol"),
    ],
)
def test_a_factory_that_cannot_serve_is_refused_at_start_up(app_dir: Path, spec: str,
                                                            message: str) -> None:
    text = error_of(run_cli("serve", spec, "--bind", "127.0.0.1:0", "--app-dir",
                            str(app_dir)))
    assert message in text
    assert "listening on" not in text


def test_an_unknown_service_is_named_without_quotes() -> None:
    text = error_of(run_cli("serve", "gopher"))
    assert "unknown service gopher: choose echo, chat, kv or MODULE:FACTORY" in text


# -- run-module -----------------------------------------------------------------------------


def test_run_module_with_a_file_name_suggests_the_module_name(tmp_path: Path) -> None:
    (tmp_path / "myrpc.py").write_text("print('myrpc ran')\n")
    text = error_of(run_cli("run-module", "myrpc.py", cwd=tmp_path))
    assert ("myrpc.py is a file; run-module takes a module name, as python -m does: "
            "write 'reactor run-module myrpc'") in text
    # and what it suggests works, from that directory
    result = run_cli("run-module", "myrpc", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "myrpc ran\n"


def test_run_module_with_a_path_says_where_to_run_it_from(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "myrpc.py").write_text("")
    text = error_of(run_cli("run-module", "tools/myrpc.py", cwd=tmp_path))
    assert "write 'reactor run-module myrpc' (from tools, or with PYTHONPATH=tools)" in text


def test_run_module_with_a_missing_module_says_where_it_looked(tmp_path: Path) -> None:
    text = error_of(run_cli("run-module", "no_such_module_xyz", cwd=tmp_path))
    assert "no module named no_such_module_xyz (looked in the current directory" in text


def test_run_module_without_arguments_asks_for_a_module() -> None:
    text = error_of(run_cli("run-module"))
    assert "name the MODULE to run, e.g. 'reactor run-module http.server 8000'" in text
    assert "required" not in text  # argparse's "the following arguments are required"


# -- --log-config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("log.ini", "[loggers]\nkeys=root\n\n[handlers]\nkeys=\n",
         "no [formatters] section; a logging.config.fileConfig INI file needs [loggers], "
         "[handlers] and [formatters] sections"),
        ("log.ini", "[loggers]\nkeys=root\n[handlers]\nkeys=\n[formatters]\nkeys=\n",
         "no [logger_root] section"),
        ("log.ini", "keys=root\n", "not an INI file"),
        ("log.json", '{"handlers": {}}', 'the dictionary needs "version": 1'),
        ("log.json", "[1, 2]", "the file must hold one JSON object"),
        ("log.json", '{"version": 1,', "not valid JSON (line 1, column 15: Expecting"),
    ],
)
def test_a_bad_log_config_says_what_the_file_lacks(tmp_path: Path, name: str, content: str,
                                                   message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    text = error_of(run_cli("serve", "echo", "--log-config", str(path)))
    assert f"--log-config {path}: {message}" in text
    assert "KeyError" not in text
