"""Scenario 12: a signal storm (SIGALRM every millisecond) while serving.

The kv service runs with an interval timer interrupting every system call: no
InterruptedError escapes, key expiry (timers) stays correct, pipelined traffic is
answered exactly, the idle timeout still fires, and SIGTERM still stops it cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, figure
from servekit import read_until_closed

from handlers.resp import encode_command


def roundtrip(sock: object, data: bytes, size: int) -> bytes:
    sock.sendall(data)  # type: ignore[attr-defined]
    got = b""
    deadline = time.monotonic() + WAIT
    while len(got) < size:
        assert time.monotonic() < deadline, got
        chunk = sock.recv(1 << 20)  # type: ignore[attr-defined]
        assert chunk, got
        got += chunk
    return got


@pytest.mark.timeout(90)
def test_kv_under_a_signal_storm(start_server: Callable[..., FaultServer]) -> None:
    srv = start_server("stormkit:kv", "--bind", "127.0.0.1:0", "--idle-timeout", "1.5")
    baseline = srv.usage()
    proc = srv.sampler.proc
    switches0 = sum(proc.num_ctx_switches())
    t0 = time.monotonic()
    with srv.connect() as client:
        # expiry on the reactor's timers, 20 keys between 0.2 and 0.6 s
        setup = b"".join(encode_command([b"SET", b"t%d" % i, b"v", b"PX", b"%d" % (200 + 20 * i)])
                         for i in range(20))
        assert roundtrip(client, setup, 5 * 20) == b"+OK\r\n" * 20
        assert roundtrip(client, b"DBSIZE\r\n", 5) == b":20\r\n"
        deadline = time.monotonic() + WAIT
        while True:  # active expiry deletes them without anybody reading them
            reply = roundtrip(client, b"DBSIZE\r\n", 4)
            if reply == b":0\r\n":
                break
            assert time.monotonic() < deadline, f"keys never expired: {reply!r}"
            time.sleep(0.05)  # polling a condition, with a deadline
        expired_after = time.monotonic() - t0
        assert expired_after > 0.55  # not early either
        # pipelined traffic, answered exactly
        pipeline = b"".join(encode_command([b"INCR", b"n"]) for _ in range(1000))
        expected = b"".join(b":%d\r\n" % i for i in range(1, 1001))
        assert roundtrip(client, pipeline, len(expected)) == expected
        value = b"s" * 300_000
        reply = b"$%d\r\n%s\r\n" % (len(value), value)
        assert roundtrip(client, encode_command([b"ECHO", value]), len(reply)) == reply
        # an idle connection still closes at the idle timeout
        with srv.connect() as idle:
            started = time.monotonic()
            assert read_until_closed(idle) == b""
            idled = time.monotonic() - started
        assert 1.2 < idled < 20
    switches = sum(proc.num_ctx_switches()) - switches0
    rate = switches / (time.monotonic() - t0)
    figure("signal storm: context switches of the server per second (the storm)", rate, "/s")
    assert rate > 100, "the storm did not happen"
    srv.wait_back_to(baseline, rss_slack=16 * 2**20)
    assert srv.stop() == 0
    srv.assert_clean_log()
    assert "idle timeout" in srv.log
