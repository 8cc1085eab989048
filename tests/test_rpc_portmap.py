"""handlers.rpc.portmap: the portmapper (program 100000 version 2) on any port."""

from __future__ import annotations

import logging
import socket
import subprocess
from typing import Any

import pytest
from rpckit import DEADLINE, read_replies, rpcinfo, serving

from handlers.framers.rpcrecord import encode_record
from handlers.rpc.dispatch import Dispatcher, Program, Version
from handlers.rpc.message import AcceptStat, Reply, decode_reply, encode_call
from handlers.rpc.portmap import IPPROTO_TCP, IPPROTO_UDP, PMAP_PROG, SPEC, Portmapper
from handlers.rpc.server import RPCServer
from handlers.rpc.xdr import Bool, UnsignedInt, decode, encode

MAPPING = SPEC.types["mapping"]
DUMP = SPEC.types["pmaplist_ptr"]
LOCAL, REMOTE = ("127.0.0.1", 600), ("192.0.2.7", 600)
PROG = 0x2000_0555


def ask(dispatcher: Dispatcher, proc: int, args: bytes = b"", peer: Any = LOCAL) -> Reply:
    reply = dispatcher.dispatch(encode_call(1, PMAP_PROG, 2, proc, args), peer)
    assert reply is not None
    return decode_reply(reply)


def mapping(prog: int = PROG, vers: int = 1, prot: int = IPPROTO_TCP, port: int = 0
            ) -> bytes:
    return encode(MAPPING, {"prog": prog, "vers": vers, "prot": prot, "port": port})


def dump(dispatcher: Dispatcher) -> list[tuple[int, int, int, int]]:
    node = decode(DUMP, ask(dispatcher, 4).results)
    rows = []
    while node is not None:
        m = node.map
        rows.append((m.prog, m.vers, m.prot, m.port))
        node = node.next
    return rows


def test_set_getport_dump_unset() -> None:
    pmap = Dispatcher([Portmapper().program()])
    assert ask(pmap, 0).accept_stat == AcceptStat.SUCCESS
    assert decode(Bool(), ask(pmap, 1, mapping(port=2049)).results) is True
    assert decode(Bool(), ask(pmap, 1, mapping(port=9)).results) is False  # already set
    assert decode(Bool(), ask(pmap, 1, mapping(prot=IPPROTO_UDP, port=2050)).results)
    assert decode(Bool(), ask(pmap, 1, mapping(vers=2, port=2051)).results)
    assert decode(UnsignedInt(), ask(pmap, 3, mapping()).results) == 2049
    assert decode(UnsignedInt(), ask(pmap, 3, mapping(prot=IPPROTO_UDP)).results) == 2050
    assert decode(UnsignedInt(), ask(pmap, 3, mapping(vers=3)).results) == 0
    assert dump(pmap) == [(PROG, 1, IPPROTO_TCP, 2049), (PROG, 1, IPPROTO_UDP, 2050),
                          (PROG, 2, IPPROTO_TCP, 2051)]
    assert decode(Bool(), ask(pmap, 2, mapping()).results) is True  # both protocols go
    assert decode(Bool(), ask(pmap, 2, mapping()).results) is False
    assert dump(pmap) == [(PROG, 2, IPPROTO_TCP, 2051)]
    assert ask(pmap, 5, mapping()).accept_stat == AcceptStat.PROC_UNAVAIL  # no CALLIT


def test_only_loopback_may_change_the_table(caplog: pytest.LogCaptureFixture) -> None:
    pmap = Dispatcher([Portmapper().program()])
    with caplog.at_level(logging.INFO, "handlers.rpc"):
        assert decode(Bool(), ask(pmap, 1, mapping(port=1), REMOTE).results) is False
    assert "SET from ('192.0.2.7', 600) refused" in caplog.text
    assert dump(pmap) == []
    assert decode(Bool(), ask(pmap, 1, mapping(port=1), ("::1", 5, 0, 0)).results)
    assert decode(Bool(), ask(pmap, 2, mapping(), REMOTE).results) is False
    assert decode(UnsignedInt(), ask(pmap, 3, mapping(), REMOTE).results) == 1
    trusting = Dispatcher([Portmapper(allow_remote=True).program()])
    assert decode(Bool(), ask(trusting, 1, mapping(port=1), REMOTE).results) is True


def test_a_long_table_dumps_whole() -> None:
    portmapper = Portmapper()
    portmapper.register({PROG + n: (1, 2) for n in range(500)}, 4000)
    rows = dump(Dispatcher([portmapper.program()]))
    assert len(rows) == 2000
    assert rows[:2] == [(PROG, 1, IPPROTO_TCP, 4000), (PROG, 1, IPPROTO_UDP, 4000)]


@pytest.mark.timeout(60)
def test_a_server_registered_with_the_portmapper_beside_it() -> None:
    portmapper = Portmapper()
    served = RPCServer([portmapper.program(), Program(PROG, {1: Version(1), 3: Version(3)})])
    with serving(served) as endpoints:
        portmapper.register(served.dispatcher.registrations, endpoints.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(DEADLINE)
            udp.connect(("127.0.0.1", endpoints.port))
            udp.send(encode_call(7, PMAP_PROG, 2, 3, mapping(vers=3, prot=IPPROTO_UDP)))
            reply = decode_reply(udp.recv(65536))
        assert decode(UnsignedInt(), reply.results) == endpoints.port
        with socket.create_connection(("127.0.0.1", endpoints.port), timeout=DEADLINE) as s:
            s.sendall(encode_record(encode_call(8, PMAP_PROG, 2, 4)))
            [reply] = read_replies(s, 1)
    node = decode(DUMP, reply.results)
    seen = set()
    while node is not None:
        seen.add((node.map.prog, node.map.vers, node.map.prot))
        node = node.next
    assert seen == {(prog, vers, prot) for prog, vers in (
        (PMAP_PROG, 2), (PMAP_PROG, 3), (PMAP_PROG, 4), (PROG, 1), (PROG, 3))
        for prot in (IPPROTO_TCP, IPPROTO_UDP)}


@pytest.mark.timeout(300)
def test_rpcinfo_pings_the_portmapper() -> None:
    tool = rpcinfo()
    with serving(RPCServer([Portmapper().program()])) as endpoints:
        uaddr = f"127.0.0.1.{endpoints.port >> 8}.{endpoints.port & 0xFF}"
        for netid in ("tcp", "udp"):
            done = subprocess.run([tool, "-a", uaddr, "-T", netid, str(PMAP_PROG)],
                                  capture_output=True, text=True, timeout=DEADLINE,
                                  check=False)
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                f"program {PMAP_PROG} version {v} ready and waiting" for v in (2, 3, 4)]
