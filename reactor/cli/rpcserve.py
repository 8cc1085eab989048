"""``reactor serve rpc MODULE:PROGRAM``: an RPC program over TCP and UDP.

``PROGRAM`` names, in ``MODULE``:

* a :class:`handlers.rpc.Program`, a list of them, or a :class:`handlers.rpc.Dispatcher`;
* or an object with a ``program()`` method returning a Program (as
  :class:`handlers.rpc.Portmapper` has);
* or a class, or a function, called with no arguments to give one of those -- the
  usual case: a class whose ``__init__`` loads its ``.x`` file and whose ``program()``
  is ``Program.from_spec(spec, self)``.

Every ``--bind HOST:PORT`` is served over TCP and UDP on the same port number (the
port TCP got, when 0 was asked for), as RPC programs are; ``unix:PATH`` and ``fd://N``
over their stream only. TCP connections get the graceful stop of
:mod:`reactor.cli.graceful`; the UDP endpoints close with the reactor.

``--portmapper`` serves the portmapper (program 100000, versions 2 to 4) on the same
addresses and registers the program with it (the first TCP address). ``--register``
registers the program with the system's rpcbind (:mod:`reactor.cli.rpcbindclient`)
and removes it at exit; without a running rpcbind it logs a warning and serves anyway.

Part of the command line layer (it may load ``handlers``).
"""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

from handlers.rpc.dispatch import Dispatcher, Program
from handlers.rpc.portmap import PMAP_PROG, Portmapper
from handlers.rpc.server import RPCServer

from ..io.loop import Reactor
from .errors import UsageError
from .factories import named_object
from .graceful import Server
from .rpcbindclient import RpcbindRegistration, find_rpcbind

__all__ = ["RPCRunner", "load_programs"]

logger = logging.getLogger("reactor.serve")

_FORMS = ("a Program, a list of Programs, a Dispatcher, an object with a program() "
          "method, or a class or function of no arguments returning one of those")


def _as_programs(spec: str, obj: Any) -> list[Program]:
    if isinstance(obj, Program):
        return [obj]
    if isinstance(obj, Dispatcher):
        return list(obj.programs.values())
    if callable(getattr(obj, "program", None)):
        return _as_programs(spec, obj.program())
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(p, Program) for p in obj):
        return list(obj)
    raise UsageError(f"{spec}: {type(obj).__name__} is not an RPC program; PROGRAM must "
                     f"name {_FORMS}")


def load_programs(spec: str) -> list[Program]:
    """The programs ``MODULE:PROGRAM`` names (see the module's docstring).

    Raises:
        UsageError: a malformed spec, a module that cannot be imported, a missing name,
            or an object that gives no program.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{spec!r}: expected MODULE:PROGRAM, e.g. mypkg.service:Inventory")
    obj = named_object(spec)
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, (Program,
                                                                       Dispatcher))):
        try:
            obj = obj()
        except TypeError as exc:
            raise UsageError(f"{spec}: calling {attribute}() failed: {exc}; PROGRAM "
                             f"must name {_FORMS}") from exc
    return _as_programs(spec, obj)


def _refuse_stream_only_flags(args: argparse.Namespace, tls: object) -> None:
    given = [flag for flag, value in (
        ("--requirepass", args.requirepass), ("--request-timeout", args.request_timeout),
        ("--proxy-protocol", getattr(args, "proxy_protocol", None)),
        ("--tls-cert", tls)) if value]
    if given:
        raise UsageError(f"{', '.join(given)} do(es) not apply to the rpc service")


def _inet_address(listener: Any) -> tuple[str, int] | None:
    sock = listener.sock
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def _netids(host: str, udp: bool) -> list[str]:
    suffix = "6" if ":" in host else ""
    return ["tcp" + suffix] + (["udp" + suffix] if udp else [])


class RPCRunner:
    """The rpc service of ``reactor serve``: the programs loaded (at construction, so a
    bad ``MODULE:PROGRAM`` is a usage error before anything is bound), then
    :meth:`serve` on the started graceful server.

    Raises:
        UsageError: no or a bad ``MODULE:PROGRAM``, or a flag that does not apply.
    """

    def __init__(self, args: argparse.Namespace, reactor: Reactor, tls: object) -> None:
        if args.program is None:
            raise UsageError("rpc: name the program: reactor serve rpc MODULE:PROGRAM")
        _refuse_stream_only_flags(args, tls)
        programs = load_programs(args.program)
        self.portmapper = Portmapper() if args.portmapper else None
        if self.portmapper is not None:
            if any(p.number == PMAP_PROG for p in programs):
                raise UsageError(f"{args.program} is a portmapper already; drop "
                                 "--portmapper")
            programs.append(self.portmapper.program())
        self.args = args
        self.reactor = reactor
        self.rpc = RPCServer(programs)
        self.rpc.pool.bind(reactor.call_soon_threadsafe)
        self.name = f"rpc {args.program}"

    @property
    def factory(self) -> Any:
        """The protocol of a TCP (or Unix stream) connection."""
        return self.rpc.stream_handler

    def serve(self, server: Server) -> int:
        """Add UDP beside ``server``'s TCP listeners, register, serve, unregister.

        Returns:
            :meth:`Server.serve`'s exit status, or 1 when a UDP port cannot be bound.
        """
        udp: list[Any] = []
        registration: RpcbindRegistration | None = None
        try:
            try:
                inet = _bind_udp(server, self.reactor, self.rpc, udp)
            except OSError as exc:
                logger.error("cannot listen on udp beside tcp: %s", exc)
                for listener in server.listeners:
                    listener.close()
                return 1
            if inet is not None:
                registration = _register(self.args, self.rpc, self.portmapper, inet)
            return server.serve()
        finally:
            for endpoint in udp:
                endpoint.close()
            if registration is not None:
                registration.unset()
            self.rpc.close()


def _bind_udp(server: Server, reactor: Reactor, rpc: RPCServer, udp: list[Any]
              ) -> tuple[str, int] | None:
    """UDP on every TCP address; the first TCP address, or None."""
    first = None
    for listener in server.listeners:
        address = _inet_address(listener)
        if address is None:
            continue
        first = first or address
        endpoint = reactor.listen_udp(address[0], address[1], rpc.datagram_protocol)
        udp.append(endpoint)
        logger.info("listening on udp %s", _format(address))
    return first


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _register(args: argparse.Namespace, rpc: RPCServer, portmapper: Portmapper | None,
              address: tuple[str, int]) -> RpcbindRegistration | None:
    host, port = address
    served = dict(rpc.dispatcher.registrations)
    if portmapper is not None:  # itself included, as rpcbind lists itself
        portmapper.register(served, port, host=host)
        logger.info("registered with the portmapper beside it: %s", _programs(served))
    if not args.register:
        return None
    served.pop(PMAP_PROG, None)
    path = find_rpcbind()
    if path is None:
        logger.warning("--register: no rpcbind is running (none of its sockets answers); "
                       "the program is not registered")
        return None
    registration = RpcbindRegistration(path, served, host, port, _netids(host, udp=True))
    try:
        if registration.set():
            logger.info("registered with rpcbind (%s): %s", path, _programs(served))
    except OSError as exc:
        logger.warning("--register: rpcbind at %s: %s", path, exc)
    return registration


def _programs(registrations: dict[int, tuple[int, ...]]) -> str:
    return ", ".join(f"{prog} v{','.join(map(str, vers))}"
                     for prog, vers in registrations.items())
