"""``reactor serve --allow-from/--deny-from`` (TCP) and ``--allow-uid/--allow-gid``
(unix:), in a real child process: usage errors, refused and served clients, the
environment and the configuration file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from accesskit import NOBODY, outcome
from servekit import ROOT, WAIT, serve

from tests.netkit import requires_ipv6

pytestmark = pytest.mark.timeout(60)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--allow-from", "example.org"], {}, "'example.org' is not an IP address or network"),
    (["--deny-from", "10.0.0.0/8", "10.0.0.0/33"], {}, "'10.0.0.0/33' is not an IP"),
    (["--allow-uid", "no-such-user-here"], {}, "not a user id nor a known user name"),
    (["--allow-gid", "no-such-group-here"], {}, "not a group id nor a known group name"),
    (["--allow-uid", "0"], {}, "apply to unix:PATH addresses, and no --bind gives one"),
    (["--bind", "unix:/tmp/nowhere.sock", "--allow-from", "127.0.0.1"], {},
     "apply to TCP addresses"),
    ([], {"REACTOR_ALLOW_FROM": "10.0.0.0/8,bogus"}, "REACTOR_ALLOW_FROM (for --allow-from)"),
])
def test_bad_flags_are_usage_errors(args: list[str], env: dict[str, str],
                                    message: str) -> None:
    result = run_cli("serve", "echo", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_has_an_access_group() -> None:
    result = run_cli("serve", "--help")
    assert "Access:" in result.stdout
    for flag in ("--allow-from", "--deny-from", "--allow-uid", "--allow-gid",
                 "REACTOR_ALLOW_FROM"):
        assert flag in result.stdout


def exchange(address: tuple[str, int], source: str) -> bytes:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.bind((source, 0))
        client.connect(address)
        try:
            client.sendall(b"ping\n")
            return client.recv(100)  # the echo, or b"" when refused
        except ConnectionError:
            return b""


def test_allow_and_deny_over_ipv4() -> None:
    with serve("echo", "--bind", "127.0.0.1:0", "--allow-from", "127.0.0.0/8",
               "--deny-from", "127.0.0.2,127.0.0.3", "--stats-interval", "0.2") as srv:
        address = srv.tcp_address()
        assert exchange(address, "127.0.0.1") == b"ping\n"
        assert exchange(address, "127.0.0.2") == b""
        srv.wait_for(r"refused \('127\.0\.0\.2', \d+\): in deny_from "
                     r"\(allow_from 127\.0\.0\.0/8; deny_from 127\.0\.0\.2/32, 127\.0\.0\.3/32\)")
        srv.wait_for(r"statistics: .* refused_by_address=1 refused_by_credentials=0")
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


@requires_ipv6
def test_ipv6_from_the_environment() -> None:
    with serve("echo", "--bind", "[::1]:0", env={"REACTOR_DENY_FROM": "::1/128"}) as srv:
        assert exchange(srv.tcp_address(), "::1") == b""
        srv.wait_for(r"refused \('::1', .*in deny_from")
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_a_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "reactor.toml"
    config.write_text('allow-from = ["127.0.0.4/32", "::1"]\n')
    with serve("echo", "--bind", "127.0.0.1:0", "--config", str(config)) as srv:
        address = srv.tcp_address()
        assert exchange(address, "127.0.0.4") == b"ping\n"
        assert exchange(address, "127.0.0.1") == b""
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_allow_uid_on_a_unix_address(public_dir: Path) -> None:
    path = str(public_dir / "echo.sock")
    with serve("echo", "--bind", f"unix:{path}", "--unix-mode", "666",
               "--allow-uid", "nobody") as srv:
        srv.addresses(1)
        assert outcome(path) == "ping\n"
        assert outcome(path, as_nobody=False) == "refused"  # root is not on the list
        srv.wait_for(rf"refused a peer \(pid=\d+ uid=0 gid=0\): not in allow_uids/allow_gids "
                     rf"\(allow_uids {NOBODY}\)")
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_allow_gid_admits_this_process(sockdir: str) -> None:
    path = os.path.join(sockdir, "echo.sock")
    with serve("echo", "--bind", f"unix:{path}", "--allow-gid", str(os.getgid())) as srv:
        srv.addresses(1)
        assert outcome(path, as_nobody=False) == "ping\n"
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
