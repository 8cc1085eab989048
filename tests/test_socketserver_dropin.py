"""Programs that ``import socketserver`` run on the facades unedited (issue point 6):
``reactor.socketserver.install()`` and ``python -m reactor run-module MODULE``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import types
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from sskit import PYTHON, ROOT, subprocess_env

pytestmark = pytest.mark.timeout(60)


def run_python(code: str, *args: str, timeout: float = 40) -> dict[str, Any]:
    proc = subprocess.run([PYTHON, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=subprocess_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- install() ----------------------------------------------------------------------------


def test_install_serves_a_directory_with_http_server(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello from the reactor\n")
    result = run_python(
        """
        import functools, json, sys, threading, urllib.request
        import reactor.socketserver
        reactor.socketserver.install()
        import http.server                      # imports socketserver: ours now
        from reactor.facades import servers

        handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                    directory=sys.argv[1])
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/hello.txt"
        bodies = [urllib.request.urlopen(url, timeout=10).read().decode() for _ in range(3)]
        stats = server.statistics()
        server.shutdown()
        thread.join()
        server.server_close()
        print(json.dumps({
            "bodies": bodies,
            "ours": issubclass(http.server.HTTPServer, servers.TCPServer),
            "accepted": stats.accepted, "threads": stats.dispatched_thread,
            "handler_is_ours": issubclass(http.server.BaseHTTPRequestHandler,
                                          reactor.socketserver.StreamRequestHandler),
        }))
        """,
        str(tmp_path),
    )
    assert result == {"bodies": ["hello from the reactor\n"] * 3, "ours": True,
                      "accepted": 3, "threads": 3, "handler_is_ours": True}


def test_install_serves_xmlrpc() -> None:
    result = run_python(
        """
        import json, threading, xmlrpc.client
        import reactor.socketserver
        reactor.socketserver.install()
        from xmlrpc.server import SimpleXMLRPCServer
        from reactor.facades import servers

        server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
        server.register_function(lambda a, b: a + b, "add")
        server.register_function(lambda: "pong", "ping")
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{server.server_address[1]}/")
        results = [proxy.add(2, 3), proxy.ping(), proxy.add("a", "b")]
        try:
            proxy.nothing()
            fault = None
        except xmlrpc.client.Fault as exc:
            fault = exc.faultCode
        stats = server.statistics()
        server.shutdown()
        thread.join()
        server.server_close()
        print(json.dumps({"results": results, "fault": fault, "inline": stats.dispatched_inline,
                          "ours": isinstance(server, servers.TCPServer)}))
        """
    )
    assert result == {"results": [5, "pong", "ab"], "fault": 1, "inline": 4, "ours": True}


def test_install_and_uninstall_in_process(caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from reactor import socketserver as ours

    assert not ours.installed()
    std = importlib.import_module("socketserver")  # the standard library's module
    assert std is not ours
    home = ours.TCPServer.__module__
    holder = types.ModuleType("holder_of_the_standard_socketserver")
    holder.socketserver = std  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    monkeypatch.setitem(sys.modules, "socketserver", std)
    try:
        with caplog.at_level(logging.INFO, logger="reactor.socketserver"):
            assert ours.install() is ours
            assert ours.install() is ours  # twice is harmless
        assert ours.installed()
        import socketserver

        assert socketserver is ours
        assert ours.TCPServer.__module__ == "socketserver"
        assert ours.StreamRequestHandler.__module__ == "socketserver"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings  # once, not again for the second install()
        assert "keep it" in warnings[0] and holder.__name__ in warnings[0], warnings
    finally:
        ours.uninstall()
    assert sys.modules["socketserver"] is std
    assert ours.TCPServer.__module__ == home
    assert not ours.installed()

    # nothing imported the standard module: no warning, and uninstall() removes the name
    monkeypatch.delitem(sys.modules, "socketserver")
    monkeypatch.delitem(sys.modules, holder.__name__)
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="reactor.socketserver"):
            ours.install()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "socketserver is now reactor.socketserver" in caplog.text
    finally:
        ours.uninstall()
    assert "socketserver" not in sys.modules


def test_install_names_the_modules_that_kept_the_standard_module() -> None:
    result = run_python(
        """
        import json, logging, io
        stream = io.StringIO()
        logging.basicConfig(stream=stream, level=logging.WARNING)
        import http.server                      # binds the standard socketserver first
        import reactor.socketserver
        reactor.socketserver.install()
        print(json.dumps({"log": stream.getvalue()}))
        """
    )
    assert "install()" in result["log"] and "http.server" in result["log"]


# -- run-module ---------------------------------------------------------------------------


def has_eventpoll_fd(pid: int) -> bool:
    """Whether ``pid`` holds an epoll descriptor: the reactor's selector (the standard
    library's servers poll with poll(2), which holds none)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == "anon_inode:[eventpoll]":
                return True
        except OSError:
            continue
    return False


def start_http_server(command: list[str], directory: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PYTHON, *command, "http.server", "0", "--bind", "127.0.0.1", "--directory",
         str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...) ..."
    assert "Serving HTTP" in line, line + (proc.stderr.read() if proc.stderr else "")
    port = line.split(" port ")[1].split()[0]
    return proc, f"http://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)  # http.server exits cleanly on KeyboardInterrupt
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("command", [
    pytest.param(["-m", "reactor.cli.runmodule", "--log-level", "info"],
                 id="reactor.cli.runmodule"),
    pytest.param(["-m", "reactor", "run-module"], id="python -m reactor run-module"),
])
def test_run_module_http_server(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "page.html").write_text("<p>run-module</p>\n")
    proc, url = start_http_server(command, tmp_path)
    try:
        assert urllib.request.urlopen(url + "page.html", timeout=10).read() == (
            b"<p>run-module</p>\n")
        listing = urllib.request.urlopen(url, timeout=10).read()
        assert b"page.html" in listing
        assert has_eventpoll_fd(proc.pid)
    finally:
        status, err = stop(proc)
    assert status == 0, err
    assert "GET /page.html" in err
    if "--log-level" in command:
        assert "socketserver is now reactor.socketserver" in err


XMLRPC_MODULE = textwrap.dedent(
    """
    import sys
    from xmlrpc.server import SimpleXMLRPCServer

    def is_ours():
        from reactor.facades import servers
        return isinstance(server, servers.TCPServer)

    server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
    server.register_function(is_ours)
    server.register_function(pow)
    server.register_function(lambda: server.statistics().accepted, "accepted")
    server.register_function(lambda: sys.argv[1:], "argv")
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    """
)


def test_run_module_xmlrpc_server(tmp_path: Path) -> None:
    (tmp_path / "rpcserver.py").write_text(XMLRPC_MODULE)
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    proc = subprocess.Popen([PYTHON, "-m", "reactor", "run-module", "rpcserver", "--x", "y"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/")
        assert proxy.is_ours() is True
        assert proxy.pow(2, 10) == 1024
        assert proxy.argv() == ["--x", "y"]
        assert proxy.accepted() == 4
    finally:
        status, err = stop(proc)
    assert status == 0, err


def test_run_module_usage_errors() -> None:
    from reactor.cli.runmodule import main

    assert main(["no_such_module_here"]) == 2
    assert main([]) == 2
    assert main(["--log-level", "loud", "http.server"]) == 2


def test_run_module_runs_a_module_to_its_end(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from reactor import socketserver as ours
    from reactor.cli.runmodule import main

    (tmp_path / "probe_module.py").write_text(
        "import socketserver, sys\n"
        "RESULT.append((socketserver.__name__, sys.argv[1:]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result: list[Any] = []
    import builtins

    monkeypatch.setattr(builtins, "RESULT", result, raising=False)
    try:
        assert main(["probe_module", "a", "b"]) == 0
    finally:
        ours.uninstall()
    assert result == [("reactor.socketserver", ["a", "b"])]
