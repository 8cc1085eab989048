"""A portmapper and rpcbind (RFC 1833, program 100000 versions 2, 3 and 4), socket-free,
on any port.

Clients ask a portmapper which port serves a (program, version, protocol); servers
tell it. :class:`Portmapper` keeps the table and is an RPC program like any other
(:meth:`Portmapper.program`), so :class:`~.server.RPCServer` serves it over TCP and
UDP on the port it is given: tests never need port 111.

* Version 2 (portmap): NULL answers; SET adds a mapping (FALSE when the (program,
  version, protocol) is already mapped); UNSET removes every mapping of a (program,
  version); GETPORT gives the port, or 0; DUMP lists the TCP and UDP mappings.
* Versions 3 and 4 (rpcbind): the same table seen through network ids (``tcp``,
  ``udp``, ``tcp6``, ``udp6``, ...) and universal addresses (``h1.h2.h3.h4.p1.p2``, see
  :func:`to_uaddr`): SET and UNSET (an empty netid unsets every transport), GETADDR
  (the address, or an empty string; version 4 falls back to another version of the
  program on that transport, as rpcbind does), DUMP, and version 4's GETVERSADDR. The
  owner a caller gives is kept and shown. A mapping made with version 2 is seen by
  3 and 4 at ``0.0.0.0`` (and vice versa for ``tcp``/``udp`` mappings). GETTIME, the
  address conversions, GETADDRLIST, GETSTAT and the indirect calls are not offered
  (PROC_UNAVAIL); no client here needs them.
* SET and UNSET are taken only from callers on the loopback address unless
  ``allow_remote=True``: anyone else could point clients at a port of theirs. A
  refused call answers FALSE and is logged.
* CALLIT (indirect calls through the portmapper, and rpcbind's BCAST and INDIRECT) is
  not offered: PROC_UNAVAIL. It turns the portmapper into a UDP amplifier.
* :meth:`Portmapper.register` maps a server's programs directly, in process.

The protocol's types are written in the ``.x`` language and read with
:func:`~.xdrlang.parse_xdr`, like any user's file.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .dispatch import Call, Program
from .xdrlang import parse_xdr

__all__ = [
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "PMAP_PROG",
    "PMAP_X",
    "Binding",
    "PortMapping",
    "Portmapper",
    "from_uaddr",
    "to_uaddr",
]

logger = logging.getLogger("handlers.rpc")

PMAP_X: Final = """
/* the portmapper, version 2, and rpcbind, versions 3 and 4 (RFC 1833) */
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

struct mapping {
    unsigned int prog;
    unsigned int vers;
    unsigned int prot;
    unsigned int port;
};

struct pmaplist {
    mapping map;
    pmaplist *next;
};
typedef pmaplist *pmaplist_ptr;

struct rpcb {
    unsigned int r_prog;
    unsigned int r_vers;
    string r_netid<>;
    string r_addr<>;
    string r_owner<>;
};

typedef string uaddr<>;   /* a universal address, or "" for none */

struct rp__list {
    rpcb rpcb_map;
    struct rp__list *rpcb_next;
};
typedef rp__list *rpcblist_ptr;

program PMAP_PROG {
    version PMAP_VERS {
        void PMAPPROC_NULL(void) = 0;
        bool PMAPPROC_SET(mapping) = 1;
        bool PMAPPROC_UNSET(mapping) = 2;
        unsigned int PMAPPROC_GETPORT(mapping) = 3;
        pmaplist_ptr PMAPPROC_DUMP(void) = 4;
    } = 2;
    version RPCBVERS {
        void RPCBPROC_NULL(void) = 0;
        bool RPCBPROC_SET(rpcb) = 1;
        bool RPCBPROC_UNSET(rpcb) = 2;
        uaddr RPCBPROC_GETADDR(rpcb) = 3;
        rpcblist_ptr RPCBPROC_DUMP(void) = 4;
    } = 3;
    version RPCBVERS4 {
        void RPCBPROC_NULL(void) = 0;
        bool RPCBPROC_SET(rpcb) = 1;
        bool RPCBPROC_UNSET(rpcb) = 2;
        uaddr RPCBPROC_GETADDR(rpcb) = 3;
        rpcblist_ptr RPCBPROC_DUMP(void) = 4;
        uaddr RPCBPROC_GETVERSADDR(rpcb) = 9;
    } = 4;
} = 100000;
"""

SPEC: Final = parse_xdr(PMAP_X, "<portmap>")
PMAP_PROG: Final = SPEC.constants["PMAP_PROG"]
IPPROTO_TCP: Final = SPEC.constants["IPPROTO_TCP"]
IPPROTO_UDP: Final = SPEC.constants["IPPROTO_UDP"]

_LOOPBACK: Final = ("127.", "::1", "::ffff:127.")
_NETIDS: Final = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}
_PROTOCOLS: Final = {netid: prot for prot, netid in _NETIDS.items()}
_ANY_V4: Final = "0.0.0.0"
_UNKNOWN_OWNER: Final = "unknown"


def to_uaddr(host: str, port: int) -> str:
    """The universal address of ``host`` and ``port``: ``127.0.0.1.8.1`` for port 2049
    (RFC 5665: the address, then the port's two bytes in decimal)."""
    return f"{host}.{port >> 8}.{port & 0xFF}"


def from_uaddr(uaddr: str) -> tuple[str, int]:
    """``(host, port)`` of a universal address.

    Raises:
        ValueError: not a universal address.
    """
    host, high, low = uaddr.rsplit(".", 2)
    port = (int(high) << 8) | int(low)
    if not host or not 0 <= int(high) <= 255 or not 0 <= int(low) <= 255:
        raise ValueError(f"not a universal address: {uaddr!r}")
    return host, port


@dataclass(frozen=True)
class PortMapping:
    """One mapping as version 2 sees it: (program, version, protocol) on a port."""

    prog: int
    vers: int
    prot: int
    port: int


@dataclass(frozen=True)
class Binding:
    """One mapping as rpcbind (versions 3 and 4) sees it."""

    r_prog: int
    r_vers: int
    r_netid: str
    r_addr: str
    r_owner: str = _UNKNOWN_OWNER


def _is_loopback(peer: Any) -> bool:
    host = peer[0] if isinstance(peer, tuple) and peer else None
    return isinstance(host, str) and host.startswith(_LOOPBACK)


def _linked(items: list[Any], value: str, link: str) -> dict[str, Any] | None:
    """``items`` as the nodes of an XDR linked list (optional data)."""
    head: dict[str, Any] | None = None
    for item in reversed(items):
        head = {value: item, link: head}
    return head


def _port_of(uaddr: str) -> int:
    try:
        return from_uaddr(uaddr)[1]
    except ValueError:
        return 0


class Portmapper:
    """The portmapper's table and procedures, for versions 2, 3 and 4.

    Args:
        allow_remote: take SET and UNSET from any address, not only loopback.
    """

    def __init__(self, *, allow_remote: bool = False) -> None:
        self.allow_remote = allow_remote
        self._table: dict[tuple[int, int, str], Binding] = {}

    @property
    def bindings(self) -> list[Binding]:
        """Every mapping, in the order they were made."""
        return list(self._table.values())

    @property
    def mappings(self) -> list[PortMapping]:
        """The TCP and UDP (IPv4) mappings, as version 2 lists them."""
        return [PortMapping(b.r_prog, b.r_vers, _PROTOCOLS[b.r_netid], _port_of(b.r_addr))
                for b in self._table.values() if b.r_netid in _PROTOCOLS]

    def set(self, prog: int, vers: int, prot: int, port: int) -> bool:
        """Map (prog, vers, prot) to ``port``; False if it is already mapped or the
        protocol is neither TCP nor UDP."""
        netid = _NETIDS.get(prot)
        if netid is None:
            return False
        return self.bind(Binding(prog, vers, netid, to_uaddr(_ANY_V4, port)))

    def bind(self, binding: Binding) -> bool:
        """Add ``binding``; False if its (program, version, netid) is already mapped."""
        key = (binding.r_prog, binding.r_vers, binding.r_netid)
        if key in self._table or not binding.r_netid:
            return False
        self._table[key] = binding
        return True

    def unset(self, prog: int, vers: int, netid: str = "") -> bool:
        """Remove the mappings of (prog, vers) over ``netid`` (every one when empty);
        False if there was none."""
        doomed = [key for key in self._table
                  if key[:2] == (prog, vers) and netid in ("", key[2])]
        for key in doomed:
            del self._table[key]
        return bool(doomed)

    def getport(self, prog: int, vers: int, prot: int) -> int:
        """The port of (prog, vers, prot), or 0."""
        binding = self._table.get((prog, vers, _NETIDS.get(prot, "")))
        return 0 if binding is None else _port_of(binding.r_addr)

    def getaddr(self, prog: int, vers: int, netid: str, *, any_version: bool = False
                ) -> str:
        """The universal address of (prog, vers) over ``netid``, or ``""``; with
        ``any_version``, another version's when that one is not mapped."""
        binding = self._table.get((prog, vers, netid))
        if binding is None and any_version:
            binding = next((b for b in self._table.values()
                            if b.r_prog == prog and b.r_netid == netid), None)
        return "" if binding is None else binding.r_addr

    def register(self, registrations: Mapping[int, Iterable[int]], port: int, *,
                 tcp: bool = True, udp: bool = True, host: str = _ANY_V4,
                 owner: str = _UNKNOWN_OWNER) -> None:
        """Map every (program, version) of ``registrations`` (as
        :attr:`Dispatcher.registrations <.dispatch.Dispatcher.registrations>` gives
        them) to ``host`` and ``port`` over the protocols asked for, replacing older
        mappings (``tcp6``/``udp6`` when ``host`` is an IPv6 address)."""
        suffix = "6" if ":" in host else ""
        netids = [n + suffix for n, wanted in (("tcp", tcp), ("udp", udp)) if wanted]
        for prog, versions in registrations.items():
            for vers in versions:
                for netid in netids:
                    self._table[(prog, vers, netid)] = Binding(
                        prog, vers, netid, to_uaddr(host, port), owner)

    # -- the procedures --------------------------------------------------------------

    def _may_change(self, call: Call, what: str) -> bool:
        if self.allow_remote or _is_loopback(call.peer):
            return True
        logger.info("portmapper: %s from %s refused (not loopback)", what, call.peer)
        return False

    def PMAPPROC_SET(self, call: Call, m: Any) -> bool:
        return self._may_change(call, "SET") and self.set(m.prog, m.vers, m.prot, m.port)

    def PMAPPROC_UNSET(self, call: Call, m: Any) -> bool:
        return self._may_change(call, "UNSET") and self.unset(m.prog, m.vers)

    def PMAPPROC_GETPORT(self, call: Call, m: Any) -> int:
        return self.getport(m.prog, m.vers, m.prot)

    def PMAPPROC_DUMP(self, call: Call, args: None) -> Any:
        return _linked(self.mappings, "map", "next")

    def RPCBPROC_SET(self, call: Call, r: Any) -> bool:
        if not self._may_change(call, "SET"):
            return False
        try:
            from_uaddr(r.r_addr)
        except ValueError:
            logger.info("rpcbind: SET from %s refused: %r is not a universal address",
                        call.peer, r.r_addr)
            return False
        return self.bind(Binding(r.r_prog, r.r_vers, r.r_netid, r.r_addr,
                                 r.r_owner or _UNKNOWN_OWNER))

    def RPCBPROC_UNSET(self, call: Call, r: Any) -> bool:
        return self._may_change(call, "UNSET") and self.unset(r.r_prog, r.r_vers,
                                                              r.r_netid)

    def RPCBPROC_GETADDR_3(self, call: Call, r: Any) -> str:
        return self.getaddr(r.r_prog, r.r_vers, r.r_netid)

    def RPCBPROC_GETADDR_4(self, call: Call, r: Any) -> str:
        return self.getaddr(r.r_prog, r.r_vers, r.r_netid, any_version=True)

    def RPCBPROC_GETVERSADDR(self, call: Call, r: Any) -> str:
        return self.getaddr(r.r_prog, r.r_vers, r.r_netid)

    def RPCBPROC_DUMP(self, call: Call, args: None) -> Any:
        return _linked(self.bindings, "rpcb_map", "rpcb_next")

    def program(self) -> Program:
        """The portmapper as an RPC program, ready for a dispatcher or a server."""
        return Program.from_spec(SPEC, self)
