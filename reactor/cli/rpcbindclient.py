"""Registering with the system's rpcbind, for ``reactor serve rpc --register``.

rpcbind takes SET and UNSET only from local callers it can identify: by default (no
``-i``, no ``-L``) that means its Unix socket (``/run/rpcbind.sock``), where it reads
the caller's uid from the socket, not UDP or TCP on port 111 (a loopback caller there
would need a privileged port). So the calls go over that socket, as libtirpc's own
``rpcb_set`` does, in rpcbind version 4 with universal addresses; the mappings carry
the caller's uid as owner, so only the same user (or root) may remove them.

:class:`RpcbindRegistration` sets every (program, version, netid), first unsetting
what a previous run that did not stop cleanly may have left, and :meth:`unset` removes
them at the end. When no rpcbind runs (no socket), nothing is registered and
:func:`find_rpcbind` says so; a refusal is logged, and serving goes on.

Part of the command line layer (it may load ``handlers``, as the command line does).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Final

from handlers.framers.rpcrecord import RecordMarkingFramer, encode_record
from handlers.rpc.message import AcceptStat, decode_reply, encode_call
from handlers.rpc.portmap import PMAP_PROG, SPEC, to_uaddr
from handlers.rpc.xdr import Bool, decode, encode

__all__ = ["RPCBIND_SOCKETS", "RpcbindRegistration", "find_rpcbind"]

logger = logging.getLogger("reactor.cli")

RPCBIND_SOCKETS: Final = ("/run/rpcbind.sock", "/var/run/rpcbind.sock")
_RPCBVERS4: Final = 4
_SET, _UNSET = 1, 2
_TIMEOUT: Final = 5.0
_RPCB = SPEC.types["rpcb"]
_xids = itertools.count(0x5EC0_0000)


def find_rpcbind(paths: Iterable[str] = RPCBIND_SOCKETS) -> str | None:
    """The path of the running rpcbind's Unix socket, or None."""
    for path in paths:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(_TIMEOUT)
                probe.connect(path)
            return path
        except OSError:
            continue
    return None


def _call(path: str, proc: int, args: bytes) -> bool:
    """One rpcbind 4 call with a bool result; False on any refusal (logged)."""
    call = encode_call(next(_xids), PMAP_PROG, _RPCBVERS4, proc, args)
    framer = RecordMarkingFramer()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_TIMEOUT)
        sock.connect(path)
        sock.sendall(encode_record(call))
        while (record := framer.next_record()) is None:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("rpcbind closed the connection without a reply")
            framer.feed(data)
    reply = decode_reply(record)
    if reply.accept_stat != AcceptStat.SUCCESS:
        logger.warning("rpcbind refused the call: %s", reply.accept_stat or reply.reject_stat)
        return False
    return bool(decode(Bool(), reply.results))


class RpcbindRegistration:
    """The mappings of one server in the system's rpcbind.

    Args:
        path: rpcbind's Unix socket (see :func:`find_rpcbind`).
        registrations: program -> versions.
        host, port: where the server listens (``0.0.0.0`` or ``::`` for every address).
        netids: the transports served (``tcp``, ``udp``, ``tcp6``, ``udp6``).
    """

    def __init__(self, path: str, registrations: Mapping[int, Iterable[int]], host: str,
                 port: int, netids: Iterable[str]) -> None:
        self.path = path
        self.owner = str(os.getuid())
        self.uaddr = to_uaddr(host, port)
        self.keys = [(prog, vers, netid) for prog, versions in registrations.items()
                     for vers in versions for netid in netids]
        self.done: list[tuple[int, int, str]] = []

    def _rpcb(self, prog: int, vers: int, netid: str, addr: str) -> bytes:
        return encode(_RPCB, {"r_prog": prog, "r_vers": vers, "r_netid": netid,
                              "r_addr": addr, "r_owner": self.owner})

    def set(self) -> bool:
        """Register every mapping; True when rpcbind took them all.

        Raises:
            OSError: rpcbind cannot be reached.
        """
        for prog, vers, netid in self.keys:
            _call(self.path, _UNSET, self._rpcb(prog, vers, netid, ""))
            if _call(self.path, _SET, self._rpcb(prog, vers, netid, self.uaddr)):
                self.done.append((prog, vers, netid))
            else:
                logger.warning("rpcbind did not register program %d version %d over %s",
                               prog, vers, netid)
        return len(self.done) == len(self.keys)

    def unset(self) -> None:
        """Remove what :meth:`set` registered (errors are logged, not raised)."""
        for prog, vers, netid in self.done:
            try:
                _call(self.path, _UNSET, self._rpcb(prog, vers, netid, ""))
            except OSError as exc:
                logger.warning("rpcbind: cannot unregister program %d version %d: %s",
                               prog, vers, exc)
                return
        self.done.clear()
