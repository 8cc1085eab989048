"""Pipelined RESP on the key-value service: the parser's batch fast path and one write
per read.

Two layers: the parser alone (a batch fed whole, which takes the fast path, must give
exactly what the state machine gives when the same bytes come one at a time), and the
service over real loopback sockets (replies in order, one ``transport.write`` per read,
errors, QUIT and MULTI inside a batch, a client that pipelines without reading), with
``reactor serve kv`` driven by redis-py's pipeline and ``redis-cli --pipe``.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_tools import redis_tool
from test_kv import Served

from handlers.framers.resp import FAST_WINDOW, RespParser, RespProtocolError, encode_command
from handlers.services.kv import FLUSH_SIZE, KVProtocol, KVServer

_T = TypeVar("_T")
TOOL_TIMEOUT = 300  # the first redis-tools test may install the package


# -- the parser: the batch fast path agrees with the state machine ---------------------


def run_parser(chunks: list[bytes], **limits: int) -> tuple[list[list[bytes]], list[bytes]]:
    """Feed ``chunks`` one by one, draining after each: the commands, and the error
    replies in the order met (parsing goes on after a non-fatal error)."""
    parser = RespParser(**limits)
    commands: list[list[bytes]] = []
    errors: list[bytes] = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                command = parser.next_command()
            except RespProtocolError as exc:
                errors.append(exc.reply)
                if exc.fatal:
                    return commands, errors
                continue
            if command is None:
                break
            commands.append(command)
    return commands, errors


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


arg = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"", b"\r\n", b"a\r\nb", b"\r", b"\n", b"x\r", b"*1", b"$3",
                     b"v" * 1023, b"v" * 1024]),
)
piece = st.one_of(
    st.lists(arg, min_size=1, max_size=4).map(encode_command),  # canonical
    st.lists(arg, min_size=1, max_size=4).map(encode_command),
    st.sampled_from([
        b"PING\r\n", b"SET a 1\r\n", b'ECHO "x\r\n', b"\r\n",  # inline, an unbalanced quote
        b"*0\r\n", b"*-1\r\n", b"*1\r\n$03\r\nabc\r\n",  # ignored, refused
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\n", b"*1\r\n$2\r\nabc\r\n", b"*1\r\n$x\r\n",
        b"*1\r\n:1\r\n", b"*" + b"9" * 30 + b"\r\n",
    ]),
)
LIMITS = [{}, {"max_bulk_length": 16, "max_array_length": 3, "max_command_size": 30,
               "max_inline_length": 20}]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(piece, min_size=1, max_size=12), tail=st.binary(max_size=6),
       limits=st.sampled_from(LIMITS))
def test_a_batch_fed_whole_parses_as_fed_byte_by_byte(
    pieces: list[bytes], tail: bytes, limits: dict[str, int]
) -> None:
    data = b"".join(pieces) + tail
    assert run_parser([data], **limits) == run_parser(byte_by_byte(data), **limits)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(commands=st.lists(st.lists(arg, min_size=1, max_size=4), min_size=1, max_size=20),
       cut=st.integers(min_value=0, max_value=10_000))
def test_canonical_batches_cut_anywhere(commands: list[list[bytes]], cut: int) -> None:
    data = b"".join(encode_command(command) for command in commands)
    cut %= len(data) + 1
    assert run_parser([data[:cut], data[cut:]]) == (commands, [])


def test_the_fast_path_takes_a_whole_batch_at_once() -> None:
    batch = b"".join(encode_command(["SET", f"key:{i}", "x" * i]) for i in range(16))
    parser = RespParser()
    parser.feed(batch + b"*2\r\n$3\r\nGET")  # and the start of one more
    assert parser.next_command() == [b"SET", b"key:0", b""]
    # the 16 commands are parsed already; only the partial one is left unparsed
    assert parser.buffered == len(b"*2\r\n$3\r\nGET")
    assert not parser.idle
    got = [parser.next_command() for _ in range(15)]
    assert got == [[b"SET", b"key:%d" % i, b"x" * i] for i in range(1, 16)]
    assert parser.next_command() is None
    parser.feed(b"\r\n$1\r\nk\r\n")
    assert parser.next_command() == [b"GET", b"k"]
    assert parser.next_command() is None
    assert parser.idle


def test_the_fast_path_parses_a_window_at_a_time() -> None:
    batch = encode_command(["GET", "k"]) * (4 * FAST_WINDOW // 20)  # about 4 windows
    parser = RespParser()
    parser.feed(batch)
    assert parser.next_command() == [b"GET", b"k"]
    # what waits parsed in the queue is at most one window's worth
    assert len(batch) - FAST_WINDOW <= parser.buffered < len(batch) - FAST_WINDOW + 20
    assert run_parser([batch]) == ([[b"GET", b"k"]] * (len(batch) // 20), [])


@pytest.mark.parametrize("sizes", [
    [10, 80, 10, 10], [70, 70, 1, 70], [1] * 200 + [63, 65, 64] + [1] * 200, [150, 1],
])
def test_commands_across_window_ends(sizes: list[int]) -> None:
    # commands of n arguments of 1000 bytes: n = 70 is longer than a window
    commands = [[b"MSET", *[b"%d" % (j % 10) * 1000 for j in range(n)]] for n in sizes]
    commands += [[b"GET", b"k"]] * 5000
    data = b"".join(encode_command(command) for command in commands)
    assert run_parser([data]) == (commands, [])
    assert run_parser([data[: len(data) // 3], data[len(data) // 3 :]]) == (commands, [])


def test_the_fast_path_stops_before_an_error_and_keeps_order() -> None:
    good = encode_command(["INCR", "n"])
    parser = RespParser()
    parser.feed(good * 3 + b"*1\r\n$x\r\n" + good)
    assert [parser.next_command() for _ in range(3)] == [[b"INCR", b"n"]] * 3
    with pytest.raises(RespProtocolError) as info:
        parser.next_command()
    assert info.value.fatal
    assert info.value.reply == b"-ERR Protocol error: invalid bulk length\r\n"


# -- the service over real sockets -----------------------------------------------------


class _CountingTransport:
    """Passes everything to the real transport and counts ``write`` calls."""

    def __init__(self, transport: asyncio.Transport, owner: CountingKV) -> None:
        self._transport = transport
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingKV(KVProtocol):
    """A KVProtocol that records how many writes each read (data_received) made."""

    __slots__ = ("writes", "writes_per_read")

    def __init__(self, server: KVServer) -> None:
        super().__init__(server)
        self.writes = 0
        self.writes_per_read: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(_CountingTransport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        before = self.writes
        super().data_received(data)
        self.writes_per_read.append(self.writes - before)


class CountingServer(KVServer):
    def __call__(self) -> KVProtocol:
        return CountingKV(self)


@pytest.fixture
def counted() -> Iterator[Served]:
    served = Served(CountingServer())
    yield served
    served.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def the_client(served: Served) -> CountingKV:
    (protocol,) = served.server.clients.values()
    assert isinstance(protocol, CountingKV)
    return protocol


@pytest.mark.timeout(60)
def test_a_pipelined_batch_is_answered_in_order_with_one_write(counted: Served) -> None:
    batches = 20
    with connect(counted.port) as sock:
        for b in range(batches):
            batch = b"".join(encode_command(["SET", f"k{b}.{i}", f"v{i}"])
                             + encode_command(["GET", f"k{b}.{i}"]) for i in range(8))
            sock.sendall(batch)
            expected = b"".join(b"+OK\r\n$%d\r\nv%d\r\n" % (len(b"v%d" % i), i)
                                for i in range(8))
            assert read_exactly(sock, len(expected)) == expected
        per_read = counted.call(lambda: list(the_client(counted).writes_per_read))
    # every read carried whole commands and got exactly one write (one send)
    assert len(per_read) >= batches
    assert per_read == [1] * len(per_read)


@pytest.mark.timeout(60)
def test_errors_multi_and_quit_inside_one_batch(counted: Served) -> None:
    batch = b"".join(encode_command(c) for c in [
        ["SET", "s", "1"], ["NOPE", "x"], ["GET"], ["RPUSH", "l", "a"], ["GET", "l"],
        ["MULTI"], ["INCR", "s"], ["INCR", "s"], ["EXEC"], ["INCR", "s"],
        ["QUIT"], ["SET", "after", "quit"],
    ])
    expected = (b"+OK\r\n"
                b"-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n"
                b"-ERR wrong number of arguments for 'get' command\r\n"
                b":1\r\n"
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
                b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:2\r\n:3\r\n:4\r\n+OK\r\n")
    with connect(counted.port) as sock:
        sock.sendall(batch)
        assert read_until_closed(sock) == expected
    assert counted.call(lambda: counted.server.store.get(b"after")) is None
    assert counted.call(lambda: counted.server.store.get(b"s")) == b"4"


@pytest.mark.timeout(60)
def test_a_protocol_error_mid_batch_answers_what_came_before(counted: Served) -> None:
    with connect(counted.port) as sock:
        sock.sendall(encode_command(["SET", "a", "1"]) + encode_command(["INCR", "a"])
                     + b"*1\r\n$x\r\n" + encode_command(["SET", "b", "1"]))
        assert read_until_closed(sock) == (
            b"+OK\r\n:2\r\n-ERR Protocol error: invalid bulk length\r\n")
    assert counted.call(lambda: counted.server.store.get(b"b")) is None


@pytest.mark.timeout(120)
def test_a_client_that_pipelines_and_does_not_read_is_bounded() -> None:
    high_water = 64 * 1024
    served = Served(CountingServer(), high_water=high_water)
    value = b"v" * 1000
    count = 20_000  # 20 MB of replies from 600 kB of requests
    reply = b"$1000\r\n" + value + b"\r\n"
    try:
        with connect(served.port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(encode_command(["SET", "k", value]))
            assert read_exactly(sock, 5) == b"+OK\r\n"
            sender = threading.Thread(
                target=sock.sendall, args=(encode_command(["GET", "k"]) * count,),
                daemon=True)
            sender.start()

            def paused() -> bool:
                protocol = the_client(served)
                transport = protocol._transport
                return transport is not None and not transport.is_reading()

            served.wait_for(paused)

            def buffered() -> int:
                return sum(row.write_buffer_size for row in served.reactor.connections)

            bound = high_water + FLUSH_SIZE + len(reply)
            assert served.call(buffered) < bound
            received = reads = high = 0
            while received < count * len(reply):
                chunk = sock.recv(256 * 1024)
                assert chunk
                received += len(chunk)
                reads += 1
                if reads % 8 == 0:
                    high = max(high, served.call(buffered))
            sender.join(10)
            assert received == count * len(reply)
            assert high < bound
    finally:
        served.close()


# -- `reactor serve kv` with real clients -----------------------------------------------


@pytest.fixture
def reactor_serve_kv() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "reactor", "serve", "kv", "-b",
                             "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline()
            assert line, "reactor serve kv exited before listening"
            if match := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(60)
def test_redis_py_pipelines_against_reactor_serve_kv(reactor_serve_kv: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=reactor_serve_kv, socket_timeout=20)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"p{i}", i)
            pipe.incr(f"p{i}")
            pipe.get(f"p{i}")
        pipe.get("nope")
        pipe.lpush("list", "x")
        pipe.incr("list")  # an error reply in the middle of the pipeline
        pipe.echo("last")
        results = pipe.execute(raise_on_error=False)
        assert results[0:6000:3] == [True] * 2000
        assert results[1:6000:3] == [i + 1 for i in range(2000)]
        assert results[2:6000:3] == [str(i + 1).encode() for i in range(2000)]
        assert results[6000:6002] == [None, 1]
        assert isinstance(results[6002], redis.ResponseError)
        assert results[6003] == b"last"
        transaction = client.pipeline()
        transaction.set("t", 1).incr("t").get("t")
        assert transaction.execute() == [True, 2, b"2"]
    finally:
        client.close()


@pytest.mark.timeout(TOOL_TIMEOUT)
def test_redis_cli_pipe_against_reactor_serve_kv(reactor_serve_kv: int) -> None:
    cli = redis_tool("redis-cli")
    script = b"".join(encode_command(["SET", f"key:{i}", f"value:{i}"]) for i in range(10_000))
    script += encode_command(["INCR", "key:1"])  # one error reply
    done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(reactor_serve_kv), "--pipe"],
                          input=script, capture_output=True, timeout=120, check=False)
    output = done.stdout.decode() + done.stderr.decode()
    assert "errors: 1, replies: 10001" in output, output
    check = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(reactor_serve_kv), "DBSIZE"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.stdout == "10000\n"
