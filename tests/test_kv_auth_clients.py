"""``reactor serve kv --requirepass`` with real clients (redis-cli -a, redis-py with a
password), and the same requests sent to a redis-server started with the same
``--requirepass``: the replies must be the same, byte for byte.

Both servers listen on Unix sockets in a temporary directory (ours also on
127.0.0.1:0); redis-server and redis-cli come from tests/redis_tools.py (installed by
its apt helper, or the test skips with the reason).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_tools import redis_tool
from servekit import ServerProcess, read_until_closed

from handlers.framers.resp import encode_command

PASSWORD = "pa55-w0rd"
TOOL_TIMEOUT = 300  # the first redis-tools test may install the packages
IO_TIMEOUT = 10.0


@dataclass
class Ours:
    path: str
    port: int


@contextlib.contextmanager
def reactor_serve_kv(directory: str, *flags: str, env: dict[str, str] | None = None
                     ) -> Iterator[Ours]:
    """``reactor serve kv`` on ``directory``/kv.sock and 127.0.0.1:0; at the end, a
    clean exit and a log that holds no password."""
    path = os.path.join(directory, "kv.sock")
    with ServerProcess("kv", "-b", f"unix:{path}", "-b", "127.0.0.1:0", *flags,
                       env=env) as server:
        yield Ours(path, server.tcp_address(1)[1])
        assert server.stop() == 0, server.log
        assert "Traceback" not in server.log
        for secret in (PASSWORD, "wrong-guess"):
            assert secret not in server.log


@contextlib.contextmanager
def redis_server(directory: str) -> Iterator[str]:
    """A redis-server with ``--requirepass`` on ``directory``/redis.sock, no persistence."""
    path = os.path.join(directory, "redis.sock")
    proc = subprocess.Popen(
        [redis_tool("redis-server"), "--port", "0", "--unixsocket", path,
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not Path(path).exists():  # redis-server has no readiness signal to wait on
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Pair:
    ours: Ours
    redis: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    directory = str(tmp_path_factory.mktemp("kvauth"))
    with redis_server(directory) as theirs, \
            reactor_serve_kv(directory, "--requirepass", PASSWORD) as ours:
        yield Pair(ours, theirs)


def exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect(path)
        sock.sendall(data)
        return read_until_closed(sock, IO_TIMEOUT)


# the same requests, one connection, ending in QUIT (both servers then close)
SCRIPT: list[list[str]] = [
    ["SET", "k", "v"], ["GET", "k"], ["PING"], ["ECHO", "x"], ["SELECT", "1"],
    ["CLIENT", "SETNAME", "n"], ["COMMAND", "COUNT"], ["MULTI"], ["DISCARD"], ["EXEC"],
    ["NOPE", "a"], ["GET"], ["HELLO"], ["HELLO", "2"], ["HELLO", "4"],
    ["HELLO", "3", "AUTH", "default", "wrong-guess"], ["HELLO", "3", "AUTH", "default"],
    ["HELLO", "3", "AUTH", "bob", PASSWORD], ["AUTH", "wrong-guess"],
    ["AUTH", "bob", PASSWORD], ["AUTH", "a", "b", "c"], ["AUTH"], ["GET", "k"],
    ["AUTH", PASSWORD], ["SET", "k", "v"], ["GET", "k"], ["AUTH", "wrong-guess"],
    ["INCR", "n"], ["AUTH", "default", PASSWORD], ["GET", "k"], ["DEL", "k", "n"],
    ["QUIT"],
]


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_replies_are_redis_servers_byte_for_byte(pair: Pair) -> None:
    data = b"".join(encode_command(args) for args in SCRIPT)
    expected = exchange(pair.redis, data)
    assert expected.count(b"-NOAUTH Authentication required.\r\n") == 10
    assert exchange(pair.ours.path, data) == expected
    # a request at a time: the same replies
    for args in (["GET", "k"], ["AUTH", "x"], ["AUTH", PASSWORD]):
        one = encode_command(args) + encode_command(["QUIT"])
        assert exchange(pair.ours.path, one) == exchange(pair.redis, one)


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_cli_with_and_without_a_password(pair: Pair) -> None:
    cli = redis_tool("redis-cli")

    def run(path: str, *args: str) -> str:
        done = subprocess.run([cli, "-s", path, *args], capture_output=True, text=True,
                              timeout=60, check=False)
        return done.stdout

    cases = [
        ("-a", PASSWORD, "--no-auth-warning", "SET", "cli", "1"),
        ("-a", PASSWORD, "--no-auth-warning", "INCR", "cli"),
        ("-a", PASSWORD, "--no-auth-warning", "GET", "cli"),
        ("GET", "cli"),
        ("-a", "wrong-guess", "--no-auth-warning", "GET", "cli"),
        ("--user", "default", "--pass", PASSWORD, "--no-auth-warning", "-3", "GET", "cli"),
        ("-a", PASSWORD, "--no-auth-warning", "DEL", "cli"),
    ]
    outputs = [run(pair.ours.path, *case) for case in cases]
    assert outputs[:3] == ["OK\n", "2\n", "2\n"]
    assert outputs[3].startswith("NOAUTH Authentication required.")
    assert outputs == [run(pair.redis, *case) for case in cases]


@pytest.mark.timeout(TOOL_TIMEOUT)
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_with_a_password(pair: Pair, protocol: int) -> None:
    # protocol 2 authenticates with AUTH, protocol 3 with HELLO 3 AUTH default PASSWORD
    client = redis.Redis(host="127.0.0.1", port=pair.ours.port, password=PASSWORD,
                         protocol=protocol, socket_timeout=IO_TIMEOUT)
    try:
        assert client.set("py", "1")
        assert client.incr("py") == 2
        assert client.get("py") == b"2"
        assert client.delete("py") == 1
    finally:
        client.close()


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_py_without_or_with_a_wrong_password(pair: Pair) -> None:
    def failures(path: str) -> list[tuple[type[Exception], str]]:
        seen = []
        for options in ({"protocol": 2}, {"protocol": 3},
                        {"protocol": 2, "password": "wrong-guess"},
                        {"protocol": 3, "password": "wrong-guess"}):
            # no retries: redis-py counts an authentication error as a connection error
            client = redis.Redis(unix_socket_path=path, socket_timeout=IO_TIMEOUT,
                                 retry=Retry(NoBackoff(), 0),
                                 **options)  # type: ignore[arg-type]
            try:
                with pytest.raises(redis.AuthenticationError) as caught:
                    client.get("k")
                seen.append((type(caught.value), str(caught.value)))
            finally:
                client.close()
        return seen

    ours = failures(pair.ours.path)
    assert ours[0] == (redis.AuthenticationError, "Authentication required.")
    assert "invalid username-password pair" in ours[2][1]
    assert ours == failures(pair.redis)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["environment", "config"])
def test_the_password_from_the_environment_or_the_config_file(
    tmp_path: Path, where: str
) -> None:
    if where == "environment":
        flags: tuple[str, ...] = ()
        env = {"REACTOR_REQUIREPASS": PASSWORD}
    else:
        if sys.version_info < (3, 11):
            pytest.skip("--config needs tomllib (Python 3.11)")
        config = tmp_path / "kv.toml"
        config.write_text(f'requirepass = "{PASSWORD}"\n')
        flags, env = ("--config", str(config)), {}
    with reactor_serve_kv(str(tmp_path), *flags, env=env) as ours:
        data = b"".join(encode_command(args) for args in (
            ["GET", "k"], ["AUTH", PASSWORD], ["GET", "k"], ["QUIT"]))
        assert exchange(ours.path, data) == (
            b"-NOAUTH Authentication required.\r\n+OK\r\n$-1\r\n+OK\r\n")
