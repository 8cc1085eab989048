"""Several ``reactor serve`` hosts behind a real HAProxy, configured by
``examples/deploy/haproxy.cfg``: the hosts see the clients' own addresses
(``send-proxy-v2``), HAProxy's health checks (kv's PING, a TCP connect for echo) route
around a host that dies in the middle of a load run, and a host drained by SIGTERM loses
no request.

The kv hosts replicate to each other (``--replicate-to`` the two others, the default
``--min-replicas 1``): a write is acknowledged once its host and one peer hold it. Each
client connection learns which host it is on from a key set on each host alone
(``__host``, written through a replication link, which is never replicated further).
After the kill, every acknowledged write, the killed host's included, is read back from
a live host, past HAProxy: none is lost.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from haproxy_tools import haproxy
from hostkit import REPLICATION_SECRET, Hosts, Resp, direct

from tests.netkit import WAIT

pytestmark = pytest.mark.timeout(300)  # a first run may install haproxy

CLIENTS = 4
RUN = 4.0  # seconds of load
EVENT_AT = 1.5  # the kill or the SIGTERM, seconds into the run
PER_CONNECTION = 20  # writes on one connection before it reconnects


@pytest.fixture(scope="module")
def haproxy_path() -> str:
    return haproxy()


@dataclass
class Load:
    """What the clients did: each acknowledged write (key, value, host, when) and each
    failed connection (its client port, when, error)."""

    frontend: tuple[str, int]
    per_request: bool = False  # one SET per connection (and no __host lookup)
    acked: list[tuple[str, bytes, str, float]] = field(default_factory=list)
    failed: list[tuple[int, float, str]] = field(default_factory=list)
    served: int = 0
    wrong: list[str] = field(default_factory=list)  # replies that were not +OK
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, number: int) -> None:
        keys = (f"c{number}:{n}" for n in itertools.count())
        while not self.stop.is_set():
            host, port = "?", 0
            try:
                with Resp(socket.create_connection(self.frontend, timeout=WAIT)) as r:
                    port = r.sock.getsockname()[1]
                    if not self.per_request:
                        host = r.call("GET", "__host").decode()
                        self._count(1)
                    for _ in range(1 if self.per_request else PER_CONNECTION):
                        key, value = next(keys), os.urandom(8).hex().encode()
                        reply = r.call("SET", key, value)
                        if reply != "+OK":
                            self.wrong.append(repr(reply))
                            return
                        with self.lock:
                            self.acked.append((key, value, host, time.monotonic()))
                            self.served += 1
                        if self.stop.is_set():
                            break
            except (OSError, ConnectionError) as exc:
                with self.lock:
                    self.failed.append((port, time.monotonic(), repr(exc)))

    def _count(self, n: int) -> None:
        with self.lock:
            self.served += n

    def during(self, event: Callable[[], object]) -> tuple[float, list[threading.Thread]]:
        """Start the clients, call ``event`` EVENT_AT seconds in; return its time."""
        threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                   for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(EVENT_AT)  # load before the event: a duration, not an ordering
        at = time.monotonic()
        event()
        return at, threads

    def finish(self, threads: list[threading.Thread], started: float) -> float:
        """Stop the clients RUN seconds after ``started``; the run's length."""
        time.sleep(max(0.0, started + RUN - time.monotonic()))
        self.stop.set()
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive()
        assert not self.wrong, self.wrong
        return time.monotonic() - started

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time between two acknowledgements from ``start`` to ``end``."""
        times = sorted(when for *_rest, when in self.acked if start <= when <= end)
        return max((b - a for a, b in itertools.pairwise(times)), default=end - start)


def seed(hosts: Hosts) -> None:
    """``__host`` on each host alone: set through a replication link of our own."""
    for name in hosts.names:
        with Resp(direct(hosts.address("kv", name))) as r:
            assert r.call("REPLLINK", REPLICATION_SECRET) == "+OK"
            assert r.call("REPLWRITE", "0", "SET", "__host", name) == "+OK"
    for name in hosts.names:
        with Resp(direct(hosts.address("kv", name))) as r:
            assert r.call("GET", "__host") == name.encode()


def test_a_killed_host_is_routed_around(haproxy_path: str) -> None:
    with Hosts() as hosts:
        seed(hosts)
        victim = hosts.names[1]
        load = Load(hosts.frontend("kv"))
        started = time.monotonic()
        killed, threads = load.during(hosts.servers["kv", victim].proc.kill)
        down = hosts.wait_states({("kv", victim): "DOWN"})
        elapsed = load.finish(threads, started)

        # only the connections that were on the killed host failed (says HAProxy's log;
        # one may fail on its first request, before it learned its host), and then
        assert all(port and hosts.routed_to("kv", port) == victim
                   for port, _when, _error in load.failed), load.failed
        assert all(when >= killed for _port, when, _error in load.failed), load.failed
        before = [a for a in load.acked if a[3] < killed]
        after = [a for a in load.acked if a[3] > down]
        assert any(host == victim for _k, _v, host, _t in before)  # it did serve
        assert after and all(host != victim for _k, _v, host, _t in after)
        # every acknowledged write, the killed host's included, is on a live host
        live = [name for name in hosts.names if name != victim]
        found: dict[str, set[str]] = {}
        for name in live:
            with Resp(direct(hosts.address("kv", name))) as r:
                for key, value, _host, _when in load.acked:
                    if r.call("GET", key) == value:
                        found.setdefault(key, set()).add(name)
        lost = [a for a in load.acked if a[0] not in found]
        assert not lost, f"{len(lost)} acknowledged writes on no live host: {lost[:5]}"
        by_victim = sum(1 for _k, _v, host, _t in load.acked if host == victim)
        on_both = sum(1 for names in found.values() if len(names) == len(live))
        pause = load.longest_pause(killed - 0.5, down + 0.5)
        print(f"\nkilled host behind HAProxy: {load.served} requests served in "
              f"{elapsed:.1f} s by {CLIENTS} clients ({len(after)} writes after it was "
              f"routed around), {len(load.failed)} connections failed (all on the killed "
              f"host), marked down {down - killed:.2f} s after the kill, "
              f"longest pause between acknowledgements {pause * 1000:.0f} ms, "
              f"{len(load.acked)} acknowledged writes read back from a live host "
              f"({by_victim} acknowledged by the killed host; {on_both} on both live "
              f"hosts), {len(lost)} lost")


def test_a_drained_host_loses_no_request(haproxy_path: str) -> None:
    with Hosts() as hosts:
        victim = hosts.names[1]
        srv = hosts.servers["kv", victim]
        load = Load(hosts.frontend("kv"), per_request=True)
        started = time.monotonic()
        drained, threads = load.during(lambda: srv.signal(signal.SIGTERM))
        down = hosts.wait_states({("kv", victim): "DOWN"})
        assert srv.wait() == 0
        elapsed = load.finish(threads, started)
        assert not load.failed, load.failed
        assert any(when > down for *_rest, when in load.acked)
        print(f"\ndrained host behind HAProxy: {load.served} requests served in "
              f"{elapsed:.1f} s (a connection each), none failed, marked down "
              f"{down - drained:.2f} s after SIGTERM")


def test_echo_hosts_see_the_client_and_a_tcp_check_routes_around(haproxy_path: str) -> None:
    with Hosts() as hosts:
        frontend = hosts.frontend("echo")
        seen: set[str] = set()
        for n in range(6):  # roundrobin: every host gets two
            with socket.create_connection(frontend, timeout=WAIT) as client:
                client.sendall(b"line %d\n" % n)
                assert client.makefile("rb").readline() == b"line %d\n" % n
                address = client.getsockname()
            seen.add(host_that_saw(hosts, address))
        assert seen == set(hosts.names)
        victim = hosts.names[0]
        hosts.servers["echo", victim].proc.kill()
        hosts.wait_states({("echo", victim): "DOWN"})
        for n in range(6):
            with socket.create_connection(frontend, timeout=WAIT) as client:
                client.sendall(b"after %d\n" % n)
                assert client.makefile("rb").readline() == b"after %d\n" % n


def host_that_saw(hosts: Hosts, address: tuple[str, int]) -> str:
    """The echo host whose access log names this client address (its own, not
    HAProxy's: the PROXY header carried it)."""
    deadline = time.monotonic() + WAIT
    while True:
        for name in hosts.names:
            if hosts.client_seen("echo", name, address):
                return name
        assert time.monotonic() < deadline, f"no host logged {address}"
        time.sleep(0.02)
