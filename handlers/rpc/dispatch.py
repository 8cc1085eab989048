"""RPC dispatch, socket-free: the bytes of a call in, the bytes of the reply out.

A :class:`Dispatcher` holds :class:`Program` s, each with :class:`Version` s of
numbered :class:`Procedure` s (built by hand, or from a ``.x`` file's program and an
object with the procedures' names: :meth:`Program.from_spec`). :meth:`Dispatcher.dispatch`
takes one whole call message (a UDP datagram, or one record from the record-marking
framer) and returns the reply message, or None when RFC 5531 has no reply to give:

=================================  ===================================================
the call                           the reply
=================================  ===================================================
shorter than 8 bytes, a REPLY,     none (logged at debug)
a header that does not decode
RPC version other than 2           MSG_DENIED, RPC_MISMATCH (2..2)
a credential flavour other than    MSG_DENIED, AUTH_ERROR, AUTH_BADCRED
AUTH_NONE and AUTH_SYS, or a
malformed AUTH_SYS body
refused by the program's           MSG_DENIED, AUTH_ERROR, the status it gives
``authenticate`` or by a
procedure raising :class:`AuthError`
unknown program                    MSG_ACCEPTED, PROG_UNAVAIL
unknown version                    MSG_ACCEPTED, PROG_MISMATCH (lowest..highest)
unknown procedure                  MSG_ACCEPTED, PROC_UNAVAIL
arguments that do not decode       MSG_ACCEPTED, GARBAGE_ARGS
(or leave bytes over)
the procedure raises, or its       MSG_ACCEPTED, SYSTEM_ERR (logged with the call)
result does not encode
otherwise                          MSG_ACCEPTED, SUCCESS, the encoded result
=================================  ===================================================

Procedure 0 (NULL) of every version answers with no data unless the version defines it.
Procedures are called as ``function(call, args)``: ``call`` is the :class:`Call`
(transaction id, numbers, credential, the decoded AUTH_SYS identity, the peer's
address), ``args`` the decoded arguments (None for void).

:meth:`Dispatcher.prepare` does all of it but run the procedure: it returns a
:class:`PreparedCall` that a server runs at once, or in a worker thread when the
procedure is marked :func:`~.blocking.blocking`.

Unknown credential flavours get AUTH_BADCRED as issue 15 asks (some C libraries answer
AUTH_REJECTEDCRED; both are AUTH_ERROR to a client). The reply's verifier is always
AUTH_NONE: AUTH_SYS has no server verifier.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .blocking import is_blocking
from .message import (
    AcceptStat,
    AuthFlavor,
    AuthStat,
    AuthSys,
    CallHeader,
    NotACall,
    RejectStat,
    RPCVersionMismatch,
    accepted_reply,
    decode_auth_sys,
    decode_call,
    denied_reply,
)
from .xdr import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_LENGTH,
    Void,
    XDRDecodeError,
    XDRError,
    XDRType,
    decode_prefix,
    encode,
)
from .xdrlang import ProgramDef, Specification

__all__ = ["AuthError", "Call", "Dispatcher", "PreparedCall", "Procedure", "Program",
           "Version"]

logger = logging.getLogger("handlers.rpc")


class AuthError(Exception):
    """Raise from a procedure (or return from ``authenticate``) to refuse the caller:
    the reply is MSG_DENIED / AUTH_ERROR with ``stat``."""

    def __init__(self, stat: AuthStat = AuthStat.AUTH_TOOWEAK) -> None:
        super().__init__(stat.name)
        self.stat = stat


@dataclass(frozen=True)
class Call(CallHeader):
    """What a procedure knows of its call: the header, and what was learnt from it."""

    auth_sys: AuthSys | None = None
    """The AUTH_SYS identity the caller claims, or None for AUTH_NONE."""
    peer: Any = None
    """The caller's address, as the transport gives it (None when not known)."""

    @property
    def uid(self) -> int | None:
        return None if self.auth_sys is None else self.auth_sys.uid

    @property
    def gids(self) -> tuple[int, ...]:
        """The primary and supplementary groups claimed (empty for AUTH_NONE)."""
        sys = self.auth_sys
        return () if sys is None else (sys.gid, *sys.gids)


ProcedureFunction = Callable[[Call, Any], Any]


def _void_procedure(call: Call, args: Any) -> None:
    return None


@dataclass
class Procedure:
    """A numbered procedure: how its arguments and result are encoded, what runs.

    ``blocking``: run it in the server's thread pool, not in the reactor's thread
    (see :mod:`.blocking`); by default, whether ``function`` was marked with
    :func:`~.blocking.blocking`.
    """

    number: int
    function: ProcedureFunction
    arg: XDRType = field(default_factory=Void)
    result: XDRType = field(default_factory=Void)
    name: str = ""
    blocking: bool | None = None

    def __post_init__(self) -> None:
        if self.blocking is None:
            self.blocking = is_blocking(self.function)


@dataclass
class Version:
    """A version of a program: its procedures by number."""

    number: int
    procedures: dict[int, Procedure] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.procedures.setdefault(0, Procedure(0, _void_procedure, name="NULL"))

    def add(self, procedure: Procedure) -> None:
        self.procedures[procedure.number] = procedure


Authenticator = Callable[[Call], "AuthStat | None"]


@dataclass
class Program:
    """A program: its number, its versions by number, and who may call it.

    Attributes:
        authenticate: called before every procedure but NULL; returning an
            :class:`AuthStat` (other than AUTH_OK) refuses the call with AUTH_ERROR.
    """

    number: int
    versions: dict[int, Version] = field(default_factory=dict)
    name: str = ""
    authenticate: Authenticator | None = None

    @classmethod
    def from_spec(cls, spec: Specification | ProgramDef, implementation: object,
                  name: str | None = None, *, partial: bool = False) -> Program:
        """A program whose procedures are ``implementation``'s methods.

        For procedure ``FIND_ITEM`` of version 2 the method is the first of
        ``FIND_ITEM_2``, ``find_item_2``, ``FIND_ITEM``, ``find_item`` that exists;
        NULL procedures need none.

        Args:
            spec: a parsed ``.x`` file (then ``name`` picks its program, which may be
                left out when there is one) or one of its programs.
            partial: let procedures without a method answer PROC_UNAVAIL instead of
                raising.

        Raises:
            KeyError: no such program.
            ValueError: a procedure has no method (without ``partial``).
        """
        if isinstance(spec, Specification):
            if name is None and len(spec.programs) == 1:
                name = next(iter(spec.programs))
            if name is None:
                raise KeyError(f"name the program: {sorted(spec.programs)}")
            definition = spec.program(name)
        else:
            definition = spec
        program = cls(definition.number, name=definition.name)
        missing = []
        for vdef in definition.versions.values():
            version = Version(vdef.number)
            for pdef in vdef.procedures.values():
                method = _method_for(implementation, pdef.name, vdef.number)
                if method is None and pdef.number == 0:
                    method = _void_procedure
                if method is None:
                    missing.append(f"{pdef.name} (version {vdef.number})")
                    version.procedures.pop(pdef.number, None)
                    continue
                version.add(Procedure(pdef.number, method, pdef.arg, pdef.result,
                                      pdef.name))
            program.versions[vdef.number] = version
        if missing and not partial:
            raise ValueError(f"{type(implementation).__name__} has no method for "
                             f"{', '.join(missing)}")
        return program


def _method_for(implementation: object, name: str, version: int) -> ProcedureFunction | None:
    for candidate in (f"{name}_{version}", f"{name.lower()}_{version}", name, name.lower()):
        method = getattr(implementation, candidate, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    return None


class Dispatcher:
    """Programs by number, and the one function that answers a call.

    Args:
        programs: the programs served.
        default_max: the maximum of unbounded lengths in arguments.
        max_depth: how deeply arguments may nest.
    """

    def __init__(self, programs: Iterable[Program] = (), *,
                 default_max: int = DEFAULT_MAX_LENGTH,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.programs: dict[int, Program] = {}
        self.default_max = default_max
        self.max_depth = max_depth
        for program in programs:
            self.add(program)

    def add(self, program: Program) -> None:
        """Serve ``program`` (replacing one with its number).

        Raises:
            ValueError: the program has no versions.
        """
        if not program.versions:
            raise ValueError(f"program {program.number} has no versions")
        self.programs[program.number] = program

    @property
    def registrations(self) -> Mapping[int, tuple[int, ...]]:
        """Program number -> its version numbers (for a portmapper)."""
        return {n: tuple(sorted(p.versions)) for n, p in self.programs.items()}

    def dispatch(self, data: bytes | bytearray | memoryview, peer: Any = None
                 ) -> bytes | None:
        """The reply to the call in ``data``, or None when it gets none (see the
        module's table). The procedure runs here, blocking or not."""
        prepared = self.prepare(data, peer)
        return prepared.run() if isinstance(prepared, PreparedCall) else prepared

    def prepare(self, data: bytes | bytearray | memoryview, peer: Any = None
                ) -> PreparedCall | bytes | None:
        """Everything of :meth:`dispatch` but running the procedure: the reply when
        the call gets one without running it (an error, or None for no reply), else
        the :class:`PreparedCall` to run, here or in a worker thread."""
        try:
            header, reader = decode_call(data)
        except NotACall as exc:
            logger.debug("RPC message from %s dropped: %s", peer, exc)
            return None
        except RPCVersionMismatch as exc:
            logger.debug("RPC call from %s: %s", peer, exc)
            return denied_reply(exc.xid, RejectStat.RPC_MISMATCH)
        xid = header.xid
        auth_sys, refusal = _credentials(header)
        if refusal is not None:
            logger.debug("RPC call %#x from %s refused: %s", xid, peer, refusal.name)
            return denied_reply(xid, RejectStat.AUTH_ERROR, auth_stat=refusal)
        call = Call(xid, header.prog, header.vers, header.proc, header.cred, header.verf,
                    auth_sys, peer)
        procedure, program, failure = self._lookup(header)
        if failure is not None:
            return failure
        assert procedure is not None and program is not None
        reader.default_max = self.default_max
        reader.max_depth = self.max_depth
        try:
            args = decode_prefix(procedure.arg, reader, "args")
            if reader.remaining:
                raise XDRDecodeError(f"{reader.remaining} bytes left over", "args")
        except XDRDecodeError as exc:
            logger.debug("RPC call %#x from %s: garbage arguments: %s", xid, peer, exc)
            return accepted_reply(xid, AcceptStat.GARBAGE_ARGS)
        return PreparedCall(self, call, program, procedure, args)

    def _lookup(self, header: CallHeader
                ) -> tuple[Procedure | None, Program | None, bytes | None]:
        xid = header.xid
        program = self.programs.get(header.prog)
        if program is None:
            return None, None, accepted_reply(xid, AcceptStat.PROG_UNAVAIL)
        version = program.versions.get(header.vers)
        if version is None:
            return None, None, accepted_reply(xid, AcceptStat.PROG_MISMATCH,
                                              low=min(program.versions),
                                              high=max(program.versions))
        procedure = version.procedures.get(header.proc)
        if procedure is None:
            return None, None, accepted_reply(xid, AcceptStat.PROC_UNAVAIL)
        return procedure, program, None

    def _run(self, call: Call, program: Program, procedure: Procedure, args: Any) -> bytes:
        xid = call.xid
        try:
            if program.authenticate is not None and call.proc != 0:
                stat = program.authenticate(call)
                if stat is not None and stat != AuthStat.AUTH_OK:
                    raise AuthError(stat)
            result = procedure.function(call, args)
        except AuthError as exc:
            logger.debug("RPC call %#x from %s refused: %s", xid, call.peer, exc.stat.name)
            return denied_reply(xid, RejectStat.AUTH_ERROR, auth_stat=exc.stat)
        except Exception:
            logger.exception("RPC procedure %s (program %d version %d procedure %d) "
                             "failed for %s", procedure.name or procedure.number,
                             call.prog, call.vers, call.proc, call.peer)
            return accepted_reply(xid, AcceptStat.SYSTEM_ERR)
        try:
            results = encode(procedure.result, result, "result",
                             default_max=self.default_max, max_depth=self.max_depth)
        except XDRError as exc:
            logger.error("RPC procedure %s (program %d version %d procedure %d) returned "
                         "a result that does not encode: %s",
                         procedure.name or procedure.number, call.prog, call.vers,
                         call.proc, exc)
            return accepted_reply(xid, AcceptStat.SYSTEM_ERR)
        return accepted_reply(xid, AcceptStat.SUCCESS, results)


@dataclass(frozen=True)
class PreparedCall:
    """A call that decoded, found its procedure and waits to run (see
    :meth:`Dispatcher.prepare`)."""

    dispatcher: Dispatcher
    call: Call
    program: Program
    procedure: Procedure
    args: Any

    @property
    def blocking(self) -> bool:
        """Whether the procedure asked to run off the reactor's thread."""
        return bool(self.procedure.blocking)

    def run(self) -> bytes:
        """Run the procedure (the authenticator first) and return the reply; never
        raises for the procedure's errors (SYSTEM_ERR, or AUTH_ERROR, instead)."""
        return self.dispatcher._run(self.call, self.program, self.procedure, self.args)

    def system_error(self) -> bytes:
        """The SYSTEM_ERR reply to this call."""
        return accepted_reply(self.call.xid, AcceptStat.SYSTEM_ERR)


def _credentials(header: CallHeader) -> tuple[AuthSys | None, AuthStat | None]:
    """The AUTH_SYS identity (or None), and the refusal when the credential is bad."""
    flavor = header.cred.flavor
    if flavor == AuthFlavor.AUTH_NONE:
        return None, None
    if flavor == AuthFlavor.AUTH_SYS:
        try:
            return decode_auth_sys(header.cred.body), None
        except XDRDecodeError as exc:
            logger.debug("RPC call %#x: bad AUTH_SYS credential: %s", header.xid, exc)
            return None, AuthStat.AUTH_BADCRED
    return None, AuthStat.AUTH_BADCRED
