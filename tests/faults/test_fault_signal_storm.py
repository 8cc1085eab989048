"""Scenario 12: a signal storm (SIGALRM every millisecond) while serving.

The kv service runs with an interval timer interrupting every system call (the rate
of SIGALRMs it handled is counted and gated): no InterruptedError escapes, key expiry
(timers) is neither early nor late, pipelined traffic is answered exactly, the idle
timeout fires on time, and SIGTERM still stops it cleanly.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from faultlib import WAIT, FaultServer, figure
from servekit import read_until_closed

from handlers.framers.resp import encode_command

MIN_RATE = 500  # SIGALRM a second; the interval timer asks for 1 000
SLACK = 0.5  # seconds late a timer may fire on a loaded machine, storm or not


def alarms(srv: FaultServer) -> tuple[int, float]:
    """SIGUSR2: the SIGALRMs the server handled so far, and when (its monotonic clock)."""
    count = srv.log.count("stormkit: alarms=")
    srv.signal(signal.SIGUSR2)
    match = srv.wait_for(r"stormkit: alarms=(\d+) at=([\d.]+)", count=count + 1)
    return int(match.group(1)), float(match.group(2))


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
    alarms0, at0 = alarms(srv)
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
        assert 0.58 <= expired_after < 0.58 + SLACK  # not early either
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
        assert 1.5 <= idled < 1.5 + SLACK
    alarms1, at1 = alarms(srv)
    rate = (alarms1 - alarms0) / (at1 - at0)
    figure("signal storm: SIGALRM handled by the kv server per second", rate, "/s")
    assert rate >= MIN_RATE, f"only {rate:.0f} SIGALRM a second: the storm was not one"
    figure("signal storm: key expiry (PX 200-580 ms) complete after", expired_after, "s")
    figure("signal storm: idle timeout (1.5 s) closed after", idled, "s")
    srv.wait_back_to(baseline, rss_slack=2 * 2**20)
    assert srv.stop() == 0
    srv.assert_clean_log()
    assert "idle timeout" in srv.log
