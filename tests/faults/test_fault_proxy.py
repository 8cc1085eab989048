"""Scenario 33: PROXY header spoofing or malformation.

``reactor serve echo --proxy-protocol v2`` gets a flood of connections whose headers
are wrong in every way the specification names -- no header at all, the other version,
a bad signature, an unknown family, a length that overruns the cap, TLVs that do not
fit, a header cut short by EOF, and silence -- while one proper client keeps talking.
Every bad connection must be closed (the silent ones at ``--proxy-timeout``), with a
log line per episode rather than per connection; the proper client must not wait; the
server must end where it began (descriptors, RSS) and idle afterwards. A second server
allowing only another network must close every peer unread.
"""

from __future__ import annotations

import select
import socket
import time

import pytest
from faultlib import WAIT, FaultServer, assert_idle, figure, log_lines

from tests import proxykit as pk

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 1.0  # --proxy-timeout
EACH = 25  # connections per kind of bad header
KINDS: dict[str, bytes] = {
    "no header": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "v1 on a v2 listener": pk.v1(),
    "bad signature": pk.SIGNATURE[:11] + b"X" + pk.v2_inet()[12:],
    "unknown family": pk.v2(1, 0x51, b"\x00" * 12),
    "over the size cap": pk.SIGNATURE + b"\x21\x11\xff\xff" + b"\x00" * 512,
    "TLV overrun": pk.v2_inet(extra=b"\x02\x00\x09abc"),
    "cut short by EOF": pk.v2_inet()[:30],
    "silent": b"",
}


def closed_after(socks: list[socket.socket], start: float, limit: float) -> list[float]:
    """For each socket, the seconds from ``start`` until the server closed it."""
    times: dict[socket.socket, float] = {}
    while len(times) < len(socks):
        left = start + limit - time.monotonic()
        assert left > 0, f"{len(socks) - len(times)} bad connections still open"
        live = [sock for sock in socks if sock not in times]
        ready, _, _ = select.select(live, [], [], left)
        for sock in ready:
            try:
                if sock.recv(4096):
                    raise AssertionError("the server answered a bad header")
            except OSError:
                pass
            times[sock] = time.monotonic() - start
    return [times[sock] for sock in socks]


def round_trip(client: socket.socket, line: bytes) -> float:
    start = time.monotonic()
    client.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = client.recv(4096)
        assert chunk, "the proper client was closed"
        got += chunk
    assert got == line
    return time.monotonic() - start


def test_a_flood_of_bad_headers() -> None:
    with FaultServer("echo", "--bind", "127.0.0.1:0", "--proxy-protocol", "v2",
                     "--proxy-allow-from", "127.0.0.1", "--proxy-timeout",
                     str(TIMEOUT)) as srv:
        srv.ready()
        address = ("127.0.0.1", srv.port)
        good = socket.create_connection(address, timeout=WAIT)
        good.sendall(pk.v2_inet())
        round_trip(good, b"before\n")
        baseline = srv.usage()
        bad: dict[str, list[socket.socket]] = {kind: [] for kind in KINDS}
        start = time.monotonic()
        slowest = 0.0
        for n in range(EACH):
            for kind, data in KINDS.items():
                sock = socket.create_connection(address, timeout=WAIT)
                if data:
                    sock.sendall(data)
                if kind == "cut short by EOF":
                    sock.shutdown(socket.SHUT_WR)
                bad[kind].append(sock)
            if n % 5 == 0:
                slowest = max(slowest, round_trip(good, b"during\n"))
        every = [sock for socks in bad.values() for sock in socks]
        times = dict(zip(every, closed_after(every, start, WAIT), strict=True))
        slowest = max(slowest, round_trip(good, b"after\n"))
        silent = [times[sock] for sock in bad["silent"]]
        prompt = [times[sock] for kind, socks in bad.items() if kind != "silent"
                  for sock in socks]
        for sock in every:
            sock.close()
        figure("proxy header flood: bad headers closed within", max(prompt) * 1000, "ms")
        figure("proxy header flood: silent connections closed after", max(silent), "s")
        figure("proxy header flood: the proper client's slowest round trip",
               slowest * 1000, "ms")
        assert min(silent) >= TIMEOUT * 0.95
        assert max(silent) < TIMEOUT + 1.0
        assert slowest < 0.3
        lines = log_lines(srv.log, "closing:")
        figure(f"proxy header flood: log lines for {len(every)} refused connections",
               len(lines), "")
        assert 1 <= len(lines) <= 3, lines  # one per episode (the prompt run, the silent)
        srv.wait_back_to(baseline, rss_slack=2 * 2**20)
        assert_idle(srv, "proxy header flood")
        good.close()
        srv.assert_clean_log()


def test_peers_outside_the_allow_list_are_closed_unread() -> None:
    with FaultServer("echo", "--bind", "127.0.0.1:0", "--proxy-protocol", "any",
                     "--proxy-allow-from", "192.0.2.0/24") as srv:
        srv.ready()
        socks = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
            sock.sendall(pk.v1() + b"let me in\n")
            socks.append(sock)
        closed_after(socks, time.monotonic(), WAIT)
        stats = srv.wait_idle()
        figure("proxy untrusted: bytes read from 50 refused peers", stats["bytes_in"], "bytes")
        assert stats["bytes_in"] == 0
        assert len(log_lines(srv.log, "not in proxy_allow_from")) <= 2
        for sock in socks:
            sock.close()
        srv.assert_clean_log()
