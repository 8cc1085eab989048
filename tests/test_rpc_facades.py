"""reactor.socketserver.RPCTCPServer / RPCUDPServer: RPC in the socketserver style.

The mix-ins apply as to any classic server; the system's ``rpcinfo`` and the rpcgen C
client (tests/test_rpc_rpcgen.py builds it) talk to them as to the reactor server.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from rpckit import DEADLINE, Inventory, read_replies, rpcinfo
from sskit import serving
from test_rpc_rpcgen import DATA, EXPECTED, client, run
from test_rpc_server import PROG, call, programs
from test_rpc_server import run as run_tool

from handlers.framers.rpcrecord import encode_record
from handlers.rpc import blocking
from handlers.rpc.dispatch import Call, Procedure, Program, Version
from handlers.rpc.message import AcceptStat, decode_reply, encode_call
from handlers.rpc.xdr import Int, decode, encode
from handlers.rpc.xdrlang import load_xdr
from reactor.facades.rpcservers import RPCFacade
from reactor.facades.servers import BaseServer
from reactor.socketserver import RPCTCPServer, RPCUDPServer, ThreadingMixIn

__all__ = ["client"]  # the fixture, imported to be found

MIXINS: dict[str, type | None] = {"inline": None, "threading": ThreadingMixIn}
if hasattr(os, "fork"):
    from reactor.socketserver import ForkingMixIn
    MIXINS["forking"] = ForkingMixIn


def server_class(mixin: type | None, base: type[BaseServer]) -> Any:
    if mixin is None:
        return base
    return type(f"{mixin.__name__}{base.__name__}", (mixin, base), {})


def uaddr(port: int) -> str:
    return f"127.0.0.1.{port >> 8}.{port & 0xFF}"


def test_the_facade_needs_its_rpc_side() -> None:
    class Bare(RPCFacade, BaseServer):
        pass

    with pytest.raises(TypeError, match=r"reactor\.socketserver"):
        Bare(("127.0.0.1", 0), programs())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mixin", MIXINS)
def test_calls_over_tcp_in_order_and_a_bad_record_closes(mixin: str) -> None:
    cls = server_class(MIXINS[mixin], RPCTCPServer)
    with serving(cls(("127.0.0.1", 0), programs(), max_record_size=1000)) as server:
        assert server.registrations == {PROG: (1, 2)}
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as s:
            s.sendall(b"".join(encode_record(call(i, args=encode(Int(), i)))
                               for i in range(50)))
            replies = read_replies(s, 50)
            assert [decode(Int(), r.results) for r in replies] == [2 * i for i in range(50)]
            s.sendall(encode_record(call(99, vers=7)))
            [mismatch] = read_replies(s, 1)
            assert (mismatch.low, mismatch.high) == (1, 2)
            s.sendall((0x8000_0000 | 1001).to_bytes(4, "big"))  # over max_record_size
            assert s.recv(100) == b""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mixin", MIXINS)
def test_calls_over_udp(mixin: str) -> None:
    cls = server_class(MIXINS[mixin], RPCUDPServer)
    with serving(cls(("127.0.0.1", 0), programs(), max_udp_reply=2000)) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(DEADLINE)
        udp.connect(("127.0.0.1", server.port))
        udp.send(b"not a call")  # no reply
        udp.send(call(1, args=encode(Int(), 21)))
        assert decode(Int(), decode_reply(udp.recv(65536)).results) == 42
        udp.send(call(2, proc=2, args=encode(Int(), 3000) + b"y" * 3000))  # too big a reply
        reply = decode_reply(udp.recv(65536))
        assert (reply.xid, reply.accept_stat) == (2, AcceptStat.SYSTEM_ERR)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mixin", MIXINS)
@pytest.mark.parametrize("netid", ["tcp", "udp"])
def test_rpcinfo_reaches_null(mixin: str, netid: str) -> None:
    tool = rpcinfo()
    cls = server_class(MIXINS[mixin], RPCTCPServer if netid == "tcp" else RPCUDPServer)
    with serving(cls(("127.0.0.1", 0), programs())) as server:
        done = run_tool(tool, "-a", uaddr(server.port), "-T", netid, str(PROG))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"program {PROG} version {v} ready and waiting" for v in (1, 2)]
        done = run_tool(tool, "-a", uaddr(server.port), "-T", netid, str(PROG + 1), "1")
        assert done.returncode != 0 and "Program unavailable" in done.stderr


@pytest.mark.timeout(400)
@pytest.mark.parametrize("base", [RPCTCPServer, RPCUDPServer])
def test_the_rpcgen_client_talks_to_a_threading_server(client: Path, base: type) -> None:
    spec = load_xdr(str(DATA / "inventory.x"))
    inventory = Inventory(spec)
    cls = server_class(ThreadingMixIn, base)
    with serving(cls(("127.0.0.1", 0), [Program.from_spec(spec, inventory)])) as server:
        proto = "tcp" if base is RPCTCPServer else "udp"
        out = run([str(client), "127.0.0.1", str(server.port), proto], client.parent)
    assert out == EXPECTED
    assert inventory.callers and all(c is not None for c in inventory.callers)


@pytest.mark.timeout(60)
def test_a_udp_retransmission_while_the_call_runs_in_a_thread_runs_once() -> None:
    entered, opened = threading.Event(), threading.Event()
    runs: list[int] = []

    @blocking
    def wait(call: Call, n: int) -> int:
        runs.append(n)
        entered.set()
        assert opened.wait(DEADLINE)
        return n

    version = Version(1, {1: Procedure(1, wait, Int(), Int())})
    cls = server_class(ThreadingMixIn, RPCUDPServer)
    with serving(cls(("127.0.0.1", 0), [Program(PROG, {1: version})])) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(DEADLINE)
        udp.connect(("127.0.0.1", server.port))
        slow = encode_call(1, PROG, 1, 1, encode(Int(), 8))
        udp.send(slow)
        assert entered.wait(DEADLINE)
        udp.send(slow)  # its thread finds the call running and drops it
        udp.send(encode_call(2, PROG, 1, 0))
        assert decode_reply(udp.recv(65536)).xid == 2
        opened.set()
        assert decode(Int(), decode_reply(udp.recv(65536)).results) == 8
        udp.send(slow)  # now answered from the cache
        assert decode(Int(), decode_reply(udp.recv(65536)).results) == 8
        assert server.rpc.cache.hits == 1
    assert runs == [8]
