"""A portmapper (RFC 1833, program 100000 version 2), socket-free, on any port.

Clients ask a portmapper which port serves a (program, version, protocol); servers
tell it. :class:`Portmapper` keeps the table and is an RPC program like any other
(:meth:`Portmapper.program`), so :class:`~.server.RPCServer` serves it over TCP and
UDP on the port it is given: tests never need port 111.

* NULL answers; SET adds a mapping (FALSE when the (program, version, protocol) is
  already mapped); UNSET removes every mapping of a (program, version); GETPORT gives
  the port, or 0; DUMP lists the mappings.
* SET and UNSET are taken only from callers on the loopback address unless
  ``allow_remote=True``: anyone else could point clients at a port of theirs. A
  refused call answers FALSE and is logged.
* CALLIT (indirect calls through the portmapper) is not offered: PROC_UNAVAIL. It
  turns the portmapper into a UDP amplifier and no client here needs it.
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

__all__ = ["IPPROTO_TCP", "IPPROTO_UDP", "PMAP_PROG", "PMAP_X", "PortMapping", "Portmapper"]

logger = logging.getLogger("handlers.rpc")

PMAP_X: Final = """
/* the portmapper, version 2 (RFC 1833 section 3) */
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

program PMAP_PROG {
    version PMAP_VERS {
        void PMAPPROC_NULL(void) = 0;
        bool PMAPPROC_SET(mapping) = 1;
        bool PMAPPROC_UNSET(mapping) = 2;
        unsigned int PMAPPROC_GETPORT(mapping) = 3;
        pmaplist_ptr PMAPPROC_DUMP(void) = 4;
    } = 2;
} = 100000;
"""

SPEC: Final = parse_xdr(PMAP_X, "<portmap>")
PMAP_PROG: Final = SPEC.constants["PMAP_PROG"]
IPPROTO_TCP: Final = SPEC.constants["IPPROTO_TCP"]
IPPROTO_UDP: Final = SPEC.constants["IPPROTO_UDP"]

_LOOPBACK: Final = ("127.", "::1", "::ffff:127.")


@dataclass(frozen=True)
class PortMapping:
    """One mapping: (program, version, protocol) served on a port."""

    prog: int
    vers: int
    prot: int
    port: int


def _is_loopback(peer: Any) -> bool:
    host = peer[0] if isinstance(peer, tuple) and peer else None
    return isinstance(host, str) and host.startswith(_LOOPBACK)


class Portmapper:
    """The portmapper's table and procedures.

    Args:
        allow_remote: take SET and UNSET from any address, not only loopback.
    """

    def __init__(self, *, allow_remote: bool = False) -> None:
        self.allow_remote = allow_remote
        self._table: dict[tuple[int, int, int], int] = {}

    @property
    def mappings(self) -> list[PortMapping]:
        """The mappings, in the order they were made."""
        return [PortMapping(prog, vers, prot, port)
                for (prog, vers, prot), port in self._table.items()]

    def set(self, prog: int, vers: int, prot: int, port: int) -> bool:
        """Map (prog, vers, prot) to ``port``; False if it is already mapped."""
        key = (prog, vers, prot)
        if key in self._table:
            return False
        self._table[key] = port
        return True

    def unset(self, prog: int, vers: int) -> bool:
        """Remove every mapping of (prog, vers); False if there was none."""
        doomed = [key for key in self._table if key[:2] == (prog, vers)]
        for key in doomed:
            del self._table[key]
        return bool(doomed)

    def getport(self, prog: int, vers: int, prot: int) -> int:
        """The port of (prog, vers, prot), or 0."""
        return self._table.get((prog, vers, prot), 0)

    def register(self, registrations: Mapping[int, Iterable[int]], port: int, *,
                 tcp: bool = True, udp: bool = True) -> None:
        """Map every (program, version) of ``registrations`` (as
        :attr:`Dispatcher.registrations <.dispatch.Dispatcher.registrations>` gives
        them) to ``port`` over the protocols asked for, replacing older mappings."""
        protocols = [p for p, wanted in ((IPPROTO_TCP, tcp), (IPPROTO_UDP, udp)) if wanted]
        for prog, versions in registrations.items():
            for vers in versions:
                for prot in protocols:
                    self._table[(prog, vers, prot)] = port

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
        head: dict[str, Any] | None = None
        for m in reversed(self.mappings):
            head = {"map": m, "next": head}
        return head

    def program(self) -> Program:
        """The portmapper as an RPC program, ready for a dispatcher or a server."""
        return Program.from_spec(SPEC, self)
