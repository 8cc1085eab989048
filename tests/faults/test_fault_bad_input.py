"""Scenario 8: bad input -- an over-long line, an oversized length-prefixed record, an
oversized RESP bulk string, malformed RESP.

Each gets a clear error (a logged reason, an error reply where the protocol has one),
the connection is closed where the stream cannot be resynchronised, and the server
buffers nothing without bound while a client keeps pouring bytes after the error.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, assert_idle, figure, log_lines
from servekit import read_lines, read_until_closed

from handlers.framers.resp import encode_command

FLOOD = 64 * 2**20
ALLOWANCE = 2 * 2**20  # RSS growth allowed while 64 MiB are poured (measured 0.0 MiB)


def pour(sock: socket.socket, total: int, piece: bytes) -> tuple[int, bool]:
    """Send up to ``total`` bytes of ``piece`` repeated; returns the bytes sent and
    whether the server cut the connection (an error on send)."""
    sent = 0
    sock.settimeout(WAIT)
    while sent < total:
        try:
            sock.sendall(piece)
        except OSError:
            return sent, True
        sent += len(piece)
    return sent, False


def check_bounded(srv: FaultServer, baseline_rss: int, peak: int, name: str) -> None:
    growth = peak - baseline_rss
    figure(f"bad input: RSS growth while a client pours 64 MiB of {name}", growth / 2**20,
           "MiB")
    assert growth < ALLOWANCE, f"RSS grew {growth / 2**20:.1f} MiB: input was buffered"


@pytest.mark.timeout(60)
def test_an_over_long_line_is_refused_and_closed(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Lines", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    with srv.connect() as other, srv.connect() as bad:
        with srv.sampler.rss_watch() as watch:
            pour(bad, FLOOD, b"L" * 65536)
            got = read_until_closed(bad)
        assert got == b""
        check_bounded(srv, baseline.rss, watch.peak, "one endless line")
        other.sendall(b"fine\n")
        assert read_lines(other, 1) == [b"fine"]
    reason = srv.wait_for(r".*closing: line too long: .*max_line_length=1024\)").group(0)
    assert "Lines ('127.0.0.1', " in reason  # who, and why
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_chat_skips_an_endless_line_with_bounded_memory_and_goes_on(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("chat", "--bind", "127.0.0.1:0", app_dir=False)
    baseline = srv.usage()
    with srv.connect() as member:
        read_lines(member, 1)  # welcome
        with srv.sampler.rss_watch() as watch:
            sent, cut = pour(member, FLOOD, b"C" * 65536)
            assert not cut and sent == FLOOD
            member.sendall(b"\n/who\n")
            lines = read_lines(member, 2)
        assert lines[0].startswith(b"! line too long")
        assert lines[1].startswith(b"* in lobby: ")
        check_bounded(srv, baseline.rss, watch.peak, "one chat line")
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_an_oversized_record_is_refused_from_its_prefix(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("faultkit:Records", "--bind", "127.0.0.1:0")
    baseline = srv.usage()
    with srv.connect() as good:
        good.sendall((3).to_bytes(4, "big") + b"abc")
        assert good.recv(16) == (3).to_bytes(4, "big") + b"cba"
        with srv.sampler.rss_watch() as watch, srv.connect() as bad:
            bad.sendall((FLOOD).to_bytes(4, "big"))
            _sent, cut = pour(bad, FLOOD, b"R" * 65536)
            assert cut or read_until_closed(bad) == b""
        check_bounded(srv, baseline.rss, watch.peak, "an oversized record's payload")
        assert_idle(srv, "after an oversized record")
        good.sendall((1).to_bytes(4, "big") + b"z")
        assert good.recv(16) == (1).to_bytes(4, "big") + b"z"
    srv.wait_for(rf"record too large: {FLOOD} bytes announced \(max_record_size=1024\)")
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    srv.assert_clean_log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "request_", "reply"), [
    ("an oversized bulk string", b"*2\r\n$3\r\nGET\r\n$4294967296\r\n",
     b"-ERR Protocol error: invalid bulk length\r\n"),  # the log names the limit
    ("an oversized array", b"*99999999\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("malformed RESP", b"*2\r\n$3\r\nGET\r\n!oops\r\n",
     b"-ERR Protocol error: expected '$', got '!'\r\n"),
    ("an endless inline command", b"GET " + b"i" * 65536,
     b"-ERR Protocol error: too big inline request\r\n"),
])
def test_kv_refuses_bad_resp_with_an_error_and_a_close(
    start_server: Callable[..., FaultServer], name: str, request_: bytes, reply: bytes,
) -> None:
    srv = start_server("kv", "--bind", "127.0.0.1:0", app_dir=False)
    baseline = srv.usage()
    with srv.connect() as good, srv.connect() as bad:
        with srv.sampler.rss_watch() as watch:
            bad.sendall(b"PING\r\n" + request_)
            pour(bad, FLOOD, b"P" * 65536)
            got = read_until_closed(bad)
        assert got == b"+PONG\r\n" + reply
        check_bounded(srv, baseline.rss, watch.peak, name)
        good.sendall(encode_command([b"SET", b"k", b"v"]) + b"GET k\r\n")
        deadline = time.monotonic() + WAIT
        data = b""
        while data != b"+OK\r\n$1\r\nv\r\n":
            assert time.monotonic() < deadline, data
            data += good.recv(64)
    srv.wait_back_to(baseline)
    assert srv.stop() == 0
    assert len(log_lines(srv.log, "; closing")) == 1
    srv.assert_clean_log()


@pytest.mark.timeout(60)
def test_unbalanced_quotes_get_an_error_and_the_connection_goes_on(
    start_server: Callable[..., FaultServer],
) -> None:
    srv = start_server("kv", "--bind", "127.0.0.1:0", app_dir=False)
    with srv.connect() as client:
        client.sendall(b'SET "k v\r\nPING\r\n')
        data = b""
        while not data.endswith(b"+PONG\r\n"):
            chunk = client.recv(256)
            assert chunk, data
            data += chunk
        assert data.startswith(b"-ERR Protocol error: unbalanced quotes")
    assert srv.stop() == 0
    srv.assert_clean_log()
