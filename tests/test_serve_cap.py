"""``reactor serve --max-connections N --on-max-connections refuse``: a client that comes
while the server is full is told so and closed at once (kv: Redis's own ``maxclients``
reply, which redis-py turns into its ConnectionError), with an access-log line whose
reason is ``cap``; the clients being served are untouched. A real ``reactor serve``
child, real clients."""

from __future__ import annotations

import socket

import pytest
import redis
from servekit import WAIT, access_records, json_tcp_address, read_until_closed, serve

pytestmark = pytest.mark.timeout(60)


def test_kv_refuses_with_redis_reply_and_logs_cap() -> None:
    with serve("kv", "--bind", "127.0.0.1:0", "--max-connections", "1",
               "--on-max-connections", "refuse", "--access-log",
               "--log-format", "json") as srv:
        host, port = json_tcp_address(srv)
        served = redis.Redis(host=host, port=port, socket_timeout=WAIT)
        assert served.set("k", "v")
        with socket.create_connection((host, port), timeout=WAIT) as raw:
            refused_name = "{}:{}".format(*raw.getsockname()[:2])
            assert read_until_closed(raw) == b"-ERR max number of clients reached\r\n"
        other = redis.Redis(host=host, port=port, socket_timeout=WAIT)
        with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
            other.ping()
        other.close()
        assert served.get("k") == b"v"  # the served client never noticed
        lines = {r["peer"]: r for r in access_records(srv, 2)}
        served.close()
        assert srv.stop() == 0
    line = lines[refused_name]
    assert (line["reason"], line["bytes_in"], line["duration"]) == ("cap", 0, 0.0)
    assert line["bytes_out"] == len(b"-ERR max number of clients reached\r\n")
    warnings = [r for r in srv.log.splitlines() if "refusing new clients" in r]
    assert len(warnings) == 1, warnings


def test_chat_says_it_is_full_and_waiting_is_still_the_default() -> None:
    with serve("chat", "--bind", "127.0.0.1:0", "--max-connections", "1",
               "--on-max-connections", "refuse") as srv:
        where = json_tcp_address(srv)
        with socket.create_connection(where, timeout=WAIT) as member:
            assert member.recv(100).startswith(b"* welcome")
            with socket.create_connection(where, timeout=WAIT) as late:
                assert read_until_closed(late) == b"* the server is full; try again later\r\n"
        assert srv.stop() == 0
    with serve("echo", "--bind", "127.0.0.1:0", "--max-connections", "1") as srv:
        where = json_tcp_address(srv)
        with socket.create_connection(where, timeout=WAIT) as first, \
                socket.create_connection(where, timeout=WAIT) as second:
            first.sendall(b"a")
            assert first.recv(1) == b"a"
            second.sendall(b"b")
            second.settimeout(0.3)
            with pytest.raises(TimeoutError):  # waits in the backlog, not refused
                second.recv(1)
            first.close()
            second.settimeout(WAIT)
            assert second.recv(1) == b"b"
        assert srv.stop() == 0
