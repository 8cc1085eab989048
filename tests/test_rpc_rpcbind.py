"""handlers.rpc.portmap: rpcbind versions 3 and 4 (universal addresses), in memory.

The system's rpcinfo speaks them to our portmapper in tests/test_rpc_serve.py, in a
network namespace of its own where the portmapper may have port 111.
"""

from __future__ import annotations

from typing import Any

import pytest

from handlers.rpc.dispatch import Dispatcher
from handlers.rpc.message import AcceptStat, Reply, decode_reply, encode_call
from handlers.rpc.portmap import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    PMAP_PROG,
    SPEC,
    Binding,
    Portmapper,
    from_uaddr,
    to_uaddr,
)
from handlers.rpc.xdr import Bool, String, UnsignedInt, decode, encode

RPCB = SPEC.types["rpcb"]
RPCBLIST = SPEC.types["rpcblist_ptr"]
MAPPING = SPEC.types["mapping"]
LOCAL, REMOTE = ("127.0.0.1", 600), ("192.0.2.7", 600)
PROG = 0x2000_0556
SET, UNSET, GETADDR, DUMP, GETVERSADDR = 1, 2, 3, 4, 9


def ask(dispatcher: Dispatcher, vers: int, proc: int, args: bytes = b"",
        peer: Any = LOCAL) -> Reply:
    reply = dispatcher.dispatch(encode_call(1, PMAP_PROG, vers, proc, args), peer)
    assert reply is not None
    return decode_reply(reply)


def rpcb(vers: int = 1, netid: str = "tcp", addr: str = "", owner: str = "",
         prog: int = PROG) -> bytes:
    return encode(RPCB, {"r_prog": prog, "r_vers": vers, "r_netid": netid, "r_addr": addr,
                         "r_owner": owner})


def dump(dispatcher: Dispatcher, vers: int = 4) -> list[tuple[int, int, str, str, str]]:
    node = decode(RPCBLIST, ask(dispatcher, vers, DUMP).results)
    rows = []
    while node is not None:
        b = node.rpcb_map
        rows.append((b.r_prog, b.r_vers, b.r_netid, b.r_addr, b.r_owner))
        node = node.rpcb_next
    return rows


def test_universal_addresses() -> None:
    assert to_uaddr("127.0.0.1", 2049) == "127.0.0.1.8.1"
    assert from_uaddr("127.0.0.1.8.1") == ("127.0.0.1", 2049)
    assert from_uaddr("::1.0.111") == ("::1", 111)
    for bad in ("1.2", "x.1.300", ".1.2", "a.b.c"):
        with pytest.raises(ValueError):
            from_uaddr(bad)


@pytest.mark.parametrize("vers", [3, 4])
def test_set_getaddr_dump_unset(vers: int) -> None:
    pmap = Dispatcher([Portmapper().program()])
    assert ask(pmap, vers, 0).accept_stat == AcceptStat.SUCCESS
    tcp = "127.0.0.1.8.1"
    assert decode(Bool(), ask(pmap, vers, SET, rpcb(addr=tcp, owner="1000")).results)
    assert not decode(Bool(), ask(pmap, vers, SET, rpcb(addr="127.0.0.1.0.9")).results)
    assert not decode(Bool(), ask(pmap, vers, SET, rpcb(netid="udp", addr="junk")).results)
    assert decode(Bool(), ask(pmap, vers, SET, rpcb(netid="udp", addr="127.0.0.1.8.2")).results)
    assert decode(Bool(), ask(pmap, vers, SET, rpcb(netid="tcp6", addr="::1.8.3")).results)
    assert decode(String(), ask(pmap, vers, GETADDR, rpcb()).results) == tcp
    assert decode(String(), ask(pmap, vers, GETADDR, rpcb(netid="tcp6")).results) == "::1.8.3"
    assert decode(String(), ask(pmap, vers, GETADDR, rpcb(netid="sctp")).results) == ""
    assert dump(pmap, vers) == [(PROG, 1, "tcp", tcp, "1000"),
                                (PROG, 1, "udp", "127.0.0.1.8.2", "unknown"),
                                (PROG, 1, "tcp6", "::1.8.3", "unknown")]
    # version 2 sees the IPv4 TCP and UDP mappings, with their ports
    assert decode(UnsignedInt(), ask(pmap, 2, 3, encode(MAPPING, {
        "prog": PROG, "vers": 1, "prot": IPPROTO_UDP, "port": 0})).results) == 2050
    assert decode(Bool(), ask(pmap, vers, UNSET, rpcb(netid="udp")).results)
    assert [row[2] for row in dump(pmap, vers)] == ["tcp", "tcp6"]
    assert decode(Bool(), ask(pmap, vers, UNSET, rpcb(netid="")).results)  # every netid
    assert dump(pmap, vers) == []
    assert not decode(Bool(), ask(pmap, vers, UNSET, rpcb()).results)


def test_version_4_getaddr_falls_back_to_another_version() -> None:
    portmapper = Portmapper()
    portmapper.register({PROG: (2,)}, 900, host="127.0.0.1")
    pmap = Dispatcher([portmapper.program()])
    assert decode(String(), ask(pmap, 4, GETADDR, rpcb(vers=1)).results) == "127.0.0.1.3.132"
    assert decode(String(), ask(pmap, 3, GETADDR, rpcb(vers=1)).results) == ""
    assert decode(String(), ask(pmap, 4, GETVERSADDR, rpcb(vers=1)).results) == ""
    assert decode(String(), ask(pmap, 4, GETVERSADDR, rpcb(vers=2)).results) == (
        "127.0.0.1.3.132")
    assert ask(pmap, 3, GETVERSADDR, rpcb()).accept_stat == AcceptStat.PROC_UNAVAIL
    assert ask(pmap, 4, 5).accept_stat == AcceptStat.PROC_UNAVAIL  # no BCAST


def test_version_2_mappings_are_seen_at_the_wildcard_address() -> None:
    portmapper = Portmapper()
    assert portmapper.set(PROG, 1, IPPROTO_TCP, 2049)
    assert not portmapper.set(PROG, 1, 99, 2049)  # neither TCP nor UDP
    pmap = Dispatcher([portmapper.program()])
    assert dump(pmap) == [(PROG, 1, "tcp", "0.0.0.0.8.1", "unknown")]
    portmapper.register({PROG: (3,)}, 7000, udp=False, host="::1", owner="0")
    assert portmapper.bindings[-1] == Binding(PROG, 3, "tcp6", "::1.27.88", "0")
    assert portmapper.getport(PROG, 3, IPPROTO_TCP) == 0  # IPv6 only: not version 2's


def test_only_loopback_may_set_or_unset() -> None:
    pmap = Dispatcher([Portmapper().program()])
    assert not decode(Bool(), ask(pmap, 4, SET, rpcb(addr="1.2.3.4.0.1"), REMOTE).results)
    assert decode(Bool(), ask(pmap, 4, SET, rpcb(addr="1.2.3.4.0.1")).results)
    assert not decode(Bool(), ask(pmap, 3, UNSET, rpcb(), REMOTE).results)
    assert len(dump(pmap)) == 1
