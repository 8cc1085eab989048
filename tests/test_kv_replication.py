"""kv replication over real sockets: several kv hosts, each on its own reactor in a
background thread, replicating to each other (handlers/services/kv/peers.py and
replicating.py), talked to with redis-py and raw sockets; loopback, port 0."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from workerkit import echo_once, wait_until

from handlers.framers.resp import RespParser
from handlers.services.kv import KVServer
from handlers.services.kv.replwire import NOREPLICAS_AFTER
from reactor import Reactor
from reactor.io.background import Background
from tests.netkit import WAIT

pytestmark = pytest.mark.timeout(60)

SECRET = "test-secret"


@dataclass
class Host:
    reactor: Reactor
    loop: Background
    server: KVServer
    port: int

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=WAIT,
                           protocol=2)

    def links(self) -> list[dict[str, Any]]:
        replication = self.server.replication
        assert replication is not None
        return self.loop.call(replication.describe)

    def kill(self) -> None:
        if self.loop.running:
            self.loop.stop(WAIT)
        if not self.reactor.is_closed():
            self.reactor.close()


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def start(sock: socket.socket, **settings: Any) -> Host:
    reactor = Reactor()
    server = KVServer(reactor, replication_secret=SECRET, **settings)
    loop = reactor.background()
    loop.start()
    loop.call(lambda: reactor.listen_tcp(None, 0, server, sock=sock))
    return Host(reactor, loop, server, sock.getsockname()[1])


def phases(host: Host) -> list[str]:
    return [link["phase"] for link in host.links()]


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[list[Host]]:
    """Three hosts, each replicating to the other two; ``min_replicas`` per host from
    the test's parameter (default 1 each)."""
    mins = getattr(request, "param", (1, 1, 1))
    socks = [listening() for _ in mins]
    ports = [s.getsockname()[1] for s in socks]
    hosts: list[Host] = []
    try:
        for n, sock in enumerate(socks):
            peers = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != n]
            hosts.append(start(sock, replicate_to=peers, min_replicas=mins[n],
                               replication_timeout=2.0))
        for host in hosts:
            wait_until(lambda h=host: phases(h) == ["up", "up"], "every link up")
        yield hosts
    finally:
        for host in hosts:
            host.kill()
        for sock in socks:
            sock.close()


def test_a_write_acked_by_one_host_is_on_the_others_at_once(cluster: list[Host]) -> None:
    a, b, c = (host.client() for host in cluster)
    assert a.set("greeting", "hello")
    assert b.get("greeting") == c.get("greeting") == b"hello"  # no wait: acked means there
    assert b.incr("visits") == 1 and c.incr("visits") == 2 and a.get("visits") == b"2"
    assert c.rpush("queue", "x", "y") == 2 and a.lpop("queue") == b"x"
    assert b.lrange("queue", 0, -1) == [b"y"]
    assert a.hset("h", mapping={"f": "1"}) and c.hget("h", "f") == b"1"
    assert b.sadd("s", "m") and a.smembers("s") == {b"m"}
    # a relative expiry is replicated as given: each host counts it from its own clock
    assert a.set("brief", "v", ex=100) and 98 <= c.ttl("brief") <= 100
    assert a.delete("greeting") == 1 and b.exists("greeting") == 0
    # a transaction's writes, each in the database it ran in (SELECT inside MULTI),
    # sent as one REPLEXEC
    raw = socket.create_connection(("127.0.0.1", cluster[0].port), timeout=WAIT)
    with raw:
        raw.sendall(b"MULTI\r\nSET t 1\r\nSELECT 5\r\nSET t 5\r\nGET t\r\nEXEC\r\n")
        assert read_replies(raw, 6)[-1] == b"*4\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\n5\r\n"
    other = redis.Redis(host="127.0.0.1", port=cluster[2].port, db=5, socket_timeout=WAIT)
    assert c.get("t") == b"1" and other.get("t") == b"5"
    # the peers applied what they received without sending it on: each host's links
    # acknowledged only the writes made on that host
    for host in cluster:
        assert sum(link["failed"] for link in host.links()) == 0


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole replies (simple, error, integer, bulk, or arrays of those)."""
    data = b""
    while True:
        replies = split_replies(data)
        if len(replies) >= count:
            return replies
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk


def split_replies(data: bytes) -> list[bytes]:
    out, at = [], 0
    while True:
        end = _reply_end(data, at)
        if end is None:
            return out
        out.append(data[at:end])
        at = end


def _reply_end(data: bytes, at: int) -> int | None:
    line = data.find(b"\r\n", at)
    if line < 0:
        return None
    kind, value = data[at:at + 1], data[at + 1:line]
    if kind == b"$" and int(value) >= 0:
        end = line + 2 + int(value) + 2
        return end if len(data) >= end else None
    if kind == b"*" and int(value) > 0:
        end: int | None = line + 2
        for _ in range(int(value)):
            assert end is not None
            end = _reply_end(data, end)
            if end is None:
                return None
        return end
    return line + 2


@pytest.mark.parametrize("cluster", [(2, 1, 1)], indirect=True)
def test_a_dead_peer_fails_writes_only_where_min_replicas_cannot_be_met(
    cluster: list[Host],
) -> None:
    a, b, c = cluster
    assert a.client().set("before", "1") and c.client().get("before") == b"1"
    c.kill()
    wait_until(lambda: phases(a)[1] == "down" and phases(b)[1] == "down", "C seen down")
    # A wants 2 acknowledgements of its 2 peers: refused, and not applied anywhere
    with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS"):
        a.client().set("k", "from-a")
    assert a.client().get("k") is None and b.client().get("k") is None
    # B wants 1: A is enough
    assert b.client().set("k", "from-b") and a.client().get("k") == b"from-b"
    # reads are never refused
    assert a.client().get("before") == b"1"


class SilentPeer:
    """A peer that accepts the link and answers the handshake, then acknowledges
    writes only when told to (or never)."""

    def __init__(self) -> None:
        self.listener = listening()
        self.port = self.listener.getsockname()[1]
        self.link: socket.socket | None = None
        self.parser = RespParser()

    def accept(self, answer: bool = True) -> None:
        self.listener.settimeout(WAIT)
        self.link, _ = self.listener.accept()
        self.link.settimeout(WAIT)
        assert self.command() == [b"REPLLINK", SECRET.encode()]
        if answer:
            self.link.sendall(b"+OK\r\n")

    def command(self) -> list[bytes]:
        assert self.link is not None
        while (args := self.parser.next_command()) is None:
            chunk = self.link.recv(65536)
            assert chunk, "the link closed"
            self.parser.feed(chunk)
        return args

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        self.listener.close()


def link_up(host: Host, peer: SilentPeer, patient: bool = False) -> None:
    """The host's link to ``peer`` accepted and up (``patient``: the host then waits
    WAIT seconds, not 0.5, for each acknowledgement)."""
    if patient:
        host.server.replication.timeout = WAIT  # type: ignore[union-attr]
    peer.accept()
    wait_until(lambda: phases(host) == ["up"], "the link up")


@pytest.fixture
def silent() -> Iterator[tuple[Host, SilentPeer]]:
    peer = SilentPeer()
    sock = listening()
    host = start(sock, replicate_to=[f"127.0.0.1:{peer.port}"], replication_timeout=0.5)
    try:
        yield host, peer
    finally:
        host.kill()
        peer.close()
        sock.close()


def test_held_replies_keep_their_order_and_hold_nothing_elsewhere(
    silent: tuple[Host, SilentPeer],
) -> None:
    host, peer = silent
    link_up(host, peer, patient=True)
    client = socket.create_connection(("127.0.0.1", host.port), timeout=WAIT)
    with client:
        client.sendall(b"GET k\r\nSET k v\r\nGET k\r\nPING\r\n")  # pipelined
        assert peer.command() == [b"REPLWRITE", b"0", b"SET", b"k", b"v"]
        # the SET ran: its reply and the two after it wait; the GET before it did not
        assert read_replies(client, 1) == [b"$-1\r\n"]
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(65536)
        client.setblocking(True)
        # another connection's read is not held, and sees the write
        assert host.client().get("k") == b"v"
        assert peer.link is not None
        peer.link.sendall(b"+OK\r\n")
        assert read_replies(client, 3) == [b"+OK\r\n", b"$1\r\nv\r\n", b"+PONG\r\n"]


def test_a_peer_that_never_acknowledges_is_marked_down_within_the_timeout(
    silent: tuple[Host, SilentPeer],
) -> None:
    host, peer = silent
    link_up(host, peer)
    client = socket.create_connection(("127.0.0.1", host.port), timeout=WAIT)
    with client:
        began = time.monotonic()
        client.sendall(b"SET k v\r\nPING\r\n")
        # applied here, unacknowledged: the error that says so, then the PING's reply
        assert read_replies(client, 2) == [NOREPLICAS_AFTER, b"+PONG\r\n"]
        took = time.monotonic() - began
    assert 0.5 <= took < 0.5 + 2.0, took
    assert host.links()[0]["phase"] in ("down", "connecting", "handshake")
    assert host.links()[0]["failed"] == 1
    # down: the next write is refused up front, unapplied
    with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS Not enough"):
        host.client().set("k2", "v")
    assert host.client().get("k2") is None and host.client().get("k") == b"v"


def test_a_peer_that_never_answers_the_handshake_stays_down(
    silent: tuple[Host, SilentPeer],
) -> None:
    host, peer = silent
    began = time.monotonic()
    peer.accept(answer=False)
    wait_until(lambda: host.links()[0]["phase"] != "handshake"
               and host.links()[0]["phase"] != "connecting", "the handshake given up")
    assert time.monotonic() - began < 0.5 + 2.0
    with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS"):
        host.client().set("k", "v")


def test_bad_input_on_a_link_gets_an_error_and_a_closed_link(
    silent: tuple[Host, SilentPeer],
) -> None:
    host, _peer = silent
    address = ("127.0.0.1", host.port)

    def exchange(data: bytes) -> bytes:
        """The replies to ``data``, up to the server's close."""
        return echo_once(address, data)

    link = b"REPLLINK " + SECRET.encode() + b"\r\n"
    out = exchange(link + b"REPLWRITE 99 SET k v\r\nPING\r\n")
    assert out.startswith(b"+OK\r\n-REPLERR REPLWRITE: database 99")
    assert b"PONG" not in out  # closed after the error
    out = exchange(link + b"REPLWRITE 0 GET k\r\nPING\r\n")
    assert b"-REPLERR REPLWRITE: 'GET' is not a write command" in out and b"PONG" not in out
    out = exchange(b"REPLLINK wrong\r\nPING\r\n")
    assert out.startswith(b"-REPLERR wrong replication secret") and b"PONG" not in out
    # not a link: refused, and the client goes on
    out = exchange(b"REPLWRITE 0 SET k v\r\nPING\r\n")
    assert out == (b"-REPLERR REPLWRITE and REPLEXEC are for replication links "
                   b"(REPLLINK)\r\n+PONG\r\n")
    # a transaction checked whole: one bad write in it and nothing is applied
    out = exchange(link + b"REPLEXEC 0 3 SET t 1 0 2 GET t\r\nPING\r\n")
    assert b"-REPLERR REPLEXEC: 'GET' is not a write command" in out and b"PONG" not in out
    assert host.client().get("t") is None
    # a command's own error on a link is an answer, not bad input: the link stays
    out = exchange(link + b"REPLWRITE 0 SET k v\r\nREPLWRITE 0 INCR k\r\nPING\r\n")
    assert out == (b"+OK\r\n+OK\r\n-ERR value is not an integer or out of range\r\n"
                   b"+PONG\r\n")
    assert host.client().get("k") == b"v"  # and the host still serves


def test_a_server_without_replication_knows_no_link_commands() -> None:
    server = KVServer()
    assert server.replication is None
    assert type(server()).__name__ == "KVProtocol"
    with pytest.raises(ValueError, match="secret"):
        KVServer(replicate_to=["127.0.0.1:1"])
    with pytest.raises(ValueError, match="reactor"):
        KVServer(replicate_to=["127.0.0.1:1"], replication_secret="s")


def test_the_graceful_stop_closes_the_links_of_peers_at_once(
    silent: tuple[Host, SilentPeer],
) -> None:
    """A drained host closes the links its peers opened to it (they stop sending
    there), while a client connection with nothing held drains as usual."""
    host, _peer = silent
    link = socket.create_connection(("127.0.0.1", host.port), timeout=WAIT)
    client = socket.create_connection(("127.0.0.1", host.port), timeout=WAIT)
    with link, client:
        link.sendall(b"REPLLINK " + SECRET.encode() + b"\r\n")
        assert read_replies(link, 1) == [b"+OK\r\n"]
        client.sendall(b"PING\r\n")
        assert read_replies(client, 1) == [b"+PONG\r\n"]
        answers = host.loop.call(
            lambda: sorted(str(p.begin_shutdown()) for p in host.server.clients.values()))
        assert answers == ["None", "True"]
        assert link.recv(65536) == b""  # closed
        client.sendall(b"PING\r\n")  # still served
        assert read_replies(client, 1) == [b"+PONG\r\n"]


def test_a_client_far_ahead_of_its_held_replies_stops_being_read(
    silent: tuple[Host, SilentPeer],
) -> None:
    from handlers.services.kv.replicating import MAX_HELD

    host, peer = silent
    link_up(host, peer, patient=True)
    count = MAX_HELD + 10
    client = socket.create_connection(("127.0.0.1", host.port), timeout=WAIT)
    with client:
        client.sendall(b"SET k v\r\n" * count)
        first = MAX_HELD + 1  # held past the limit: reading stops (the rest may wait)
        for _ in range(first):
            assert peer.command()[:3] == [b"REPLWRITE", b"0", b"SET"]

        def paused() -> list[bool]:
            return [p._hold_paused for p in host.server.clients.values()
                    if not getattr(p, "link", True)]

        assert host.loop.call(paused) == [True]
        assert peer.link is not None
        peer.link.sendall(b"+OK\r\n" * first)
        for _ in range(count - first):  # read, run and sent once reading resumed
            assert peer.command()[:3] == [b"REPLWRITE", b"0", b"SET"]
        peer.link.sendall(b"+OK\r\n" * (count - first))
        assert read_replies(client, count) == [b"+OK\r\n"] * count
        wait_until(lambda: host.loop.call(paused) == [False], "reading again")
        client.sendall(b"PING\r\n")
        assert read_replies(client, 1) == [b"+PONG\r\n"]


def test_reactor_serve_kv_hosts_replicate_to_each_other() -> None:
    """Two ``reactor serve kv`` processes naming each other with --replicate-to (their
    sockets made here, so each knows the other's port): a write on one is read on the
    other; once the other is killed, writes are refused with NOREPLICAS."""
    from servekit import serve

    socks = [listening() for _ in range(2)]
    for sock in socks:
        sock.set_inheritable(True)
    ports = [s.getsockname()[1] for s in socks]
    env = {"REACTOR_REPLICATION_SECRET": SECRET}
    procs = []
    try:
        for n, sock in enumerate(socks):
            procs.append(serve(
                "kv", "--bind", f"fd://{sock.fileno()}", "--replicate-to",
                f"127.0.0.1:{ports[1 - n]}", "--replication-timeout", "1",
                pass_fds=(sock.fileno(),), env=env))
        for sock in socks:
            sock.close()  # the servers have them
        for proc in procs:
            proc.wait_for(r"kv replication: peer \S+ up")
        a, b = (redis.Redis(host="127.0.0.1", port=p, socket_timeout=WAIT) for p in ports)
        assert a.set("k", "from-a") and b.get("k") == b"from-a"
        assert b.lpush("l", "x") == 1 and a.lrange("l", 0, -1) == [b"x"]
        procs[1].proc.kill()
        procs[0].wait_for(r"kv replication: peer \S+ down")
        with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS"):
            a.set("k", "again")
        assert a.get("k") == b"from-a"
    finally:
        for proc in procs:
            proc.close()
        for sock in socks:
            sock.close()


def test_a_peer_that_stays_away_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = listening()
    port = closed.getsockname()[1]
    closed.close()  # connections to it are refused
    sock = listening()
    with caplog.at_level(logging.DEBUG, logger="handlers.kv.replication"):
        host = start(sock, replicate_to=[f"127.0.0.1:{port}"])
        try:
            wait_until(lambda: sum("down:" in r.getMessage() for r in caplog.records) >= 3,
                       "three connect attempts")
        finally:
            host.kill()
            sock.close()
    downs = [r for r in caplog.records if "down:" in r.getMessage()]
    assert [r.levelno for r in downs[:3]] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "Connection refused" in downs[0].getMessage()
