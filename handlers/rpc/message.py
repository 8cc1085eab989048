"""The ONC RPC message (RFC 5531 section 9), socket-free: calls, replies, credentials.

The message's parts are XDR types of this package (:data:`OPAQUE_AUTH`,
:data:`AUTHSYS_PARMS`), so the same bounds apply: an authentication body is at most
400 bytes, an AUTH_SYS machine name at most 255 bytes and its group list at most 16
gids, all checked before anything is allocated.

* :func:`decode_call` reads a call's header and leaves a :class:`~.xdr.Reader` at the
  procedure's arguments; :class:`NotACall` says why a message gets no reply at all
  (too short for a header, a REPLY, a header that does not decode), and
  :class:`RPCVersionMismatch` that it gets RPC_MISMATCH.
* :func:`accepted_reply` and :func:`denied_reply` build every reply of the RFC.
* :func:`encode_call` and :func:`decode_reply` are the client's half (tests, tools).
* :func:`decode_auth_sys` reads an AUTH_SYS credential's body.

Socket-free: must not import socket, selectors, threading or os.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from .xdr import (
    Opaque,
    Reader,
    String,
    UnsignedInt,
    Writer,
    XDRDecodeError,
    XDRError,
    decode,
    decode_prefix,
)
from .xdrcompound import Array, Struct

__all__ = [
    "AUTHSYS_PARMS",
    "AUTH_NONE",
    "MAX_AUTH_BYTES",
    "OPAQUE_AUTH",
    "RPC_VERSION",
    "AcceptStat",
    "AuthFlavor",
    "AuthStat",
    "AuthSys",
    "CallHeader",
    "MsgType",
    "NotACall",
    "OpaqueAuth",
    "RPCVersionMismatch",
    "RejectStat",
    "Reply",
    "ReplyStat",
    "accepted_reply",
    "decode_auth_sys",
    "decode_call",
    "decode_reply",
    "denied_reply",
    "encode_call",
]

RPC_VERSION: Final = 2
MAX_AUTH_BYTES: Final = 400
MAX_MACHINE_NAME: Final = 255
MAX_GIDS: Final = 16


class MsgType(enum.IntEnum):
    CALL = 0
    REPLY = 1


class ReplyStat(enum.IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(enum.IntEnum):
    AUTH_OK = 0
    AUTH_BADCRED = 1
    AUTH_REJECTEDCRED = 2
    AUTH_BADVERF = 3
    AUTH_REJECTEDVERF = 4
    AUTH_TOOWEAK = 5
    AUTH_INVALIDRESP = 6
    AUTH_FAILED = 7
    AUTH_KERB_GENERIC = 8
    AUTH_TIMEEXPIRE = 9
    AUTH_TKT_FILE = 10
    AUTH_DECODE = 11
    AUTH_NET_ADDR = 12
    RPCSEC_GSS_CREDPROBLEM = 13
    RPCSEC_GSS_CTXPROBLEM = 14


class AuthFlavor(enum.IntEnum):
    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


@dataclass(frozen=True)
class OpaqueAuth:
    """A credential or verifier: a flavour and up to 400 bytes it defines."""

    flavor: int
    body: bytes = b""


AUTH_NONE: Final = OpaqueAuth(AuthFlavor.AUTH_NONE, b"")

OPAQUE_AUTH: Final = Struct("opaque_auth", [("flavor", UnsignedInt()),
                                            ("body", Opaque(MAX_AUTH_BYTES))])
AUTHSYS_PARMS: Final = Struct("authsys_parms", [
    ("stamp", UnsignedInt()),
    ("machinename", String(MAX_MACHINE_NAME)),
    ("uid", UnsignedInt()),
    ("gid", UnsignedInt()),
    ("gids", Array(UnsignedInt(), MAX_GIDS)),
])


@dataclass(frozen=True)
class AuthSys:
    """An AUTH_SYS credential: who the caller says it is (nothing proves it)."""

    stamp: int
    machinename: str
    uid: int
    gid: int
    gids: tuple[int, ...]


def decode_auth_sys(body: bytes) -> AuthSys:
    """Read an AUTH_SYS credential body.

    Raises:
        XDRDecodeError: the body is not a valid ``authsys_parms`` (over-long name, more
            than 16 gids, truncated, bytes left over).
    """
    parms = decode(AUTHSYS_PARMS, body, "cred.authsys")
    return AuthSys(parms.stamp, parms.machinename, parms.uid, parms.gid, tuple(parms.gids))


@dataclass(frozen=True)
class CallHeader:
    """A call's header, up to where the procedure's arguments start."""

    xid: int
    prog: int
    vers: int
    proc: int
    cred: OpaqueAuth
    verf: OpaqueAuth


class NotACall(ValueError):
    """A message that gets no reply: not a call, or a header that does not decode.

    Attributes:
        xid: the transaction id, when the message had one.
    """

    def __init__(self, reason: str, xid: int | None = None) -> None:
        super().__init__(reason)
        self.xid = xid


class RPCVersionMismatch(ValueError):
    """A call for an RPC version other than 2: it gets RPC_MISMATCH (2..2)."""

    def __init__(self, xid: int, version: int) -> None:
        super().__init__(f"RPC version {version}, not {RPC_VERSION}")
        self.xid = xid
        self.version = version


def decode_call(data: bytes | bytearray | memoryview) -> tuple[CallHeader, Reader]:
    """Read a call's header; the reader is left at the procedure's arguments.

    Raises:
        NotACall: too short, a REPLY, an unknown message type, a malformed header.
        RPCVersionMismatch: the call is for another RPC version.
    """
    r = Reader(data)
    if r.remaining < 8:
        raise NotACall(f"{r.remaining} bytes: too short for a message")
    xid = r.uint32("xid")
    mtype = r.uint32("msg_type")
    if mtype != MsgType.CALL:
        raise NotACall("a REPLY" if mtype == MsgType.REPLY else f"message type {mtype}",
                       xid)
    try:
        rpcvers = r.uint32("rpcvers")
        if rpcvers != RPC_VERSION:
            raise RPCVersionMismatch(xid, rpcvers)
        prog = r.uint32("prog")
        vers = r.uint32("vers")
        proc = r.uint32("proc")
        cred = decode_prefix(OPAQUE_AUTH, r, "cred")
        verf = decode_prefix(OPAQUE_AUTH, r, "verf")
    except XDRDecodeError as exc:
        raise NotACall(f"call header: {exc}", xid) from None
    return CallHeader(xid, prog, vers, proc, OpaqueAuth(cred.flavor, cred.body),
                      OpaqueAuth(verf.flavor, verf.body)), r


def _words(w: Writer, *words: int) -> None:
    for word in words:
        UnsignedInt().pack(int(word), w)


def accepted_reply(xid: int, stat: AcceptStat, results: bytes = b"", *,
                   low: int = 0, high: int = 0, verf: OpaqueAuth = AUTH_NONE) -> bytes:
    """A MSG_ACCEPTED reply: ``results`` (already encoded) after SUCCESS, the
    supported version range ``low``..``high`` after PROG_MISMATCH, nothing otherwise."""
    w = Writer()
    _words(w, xid, MsgType.REPLY, ReplyStat.MSG_ACCEPTED)
    OPAQUE_AUTH.pack(verf, w)
    UnsignedInt().pack(int(stat), w)
    if stat == AcceptStat.SUCCESS:
        w.out += results
    elif stat == AcceptStat.PROG_MISMATCH:
        _words(w, low, high)
    return bytes(w.out)


def denied_reply(xid: int, stat: RejectStat, *, auth_stat: AuthStat = AuthStat.AUTH_OK,
                 low: int = RPC_VERSION, high: int = RPC_VERSION) -> bytes:
    """A MSG_DENIED reply: RPC_MISMATCH with the supported RPC versions, or AUTH_ERROR
    with why."""
    w = Writer()
    _words(w, xid, MsgType.REPLY, ReplyStat.MSG_DENIED, stat)
    if stat == RejectStat.RPC_MISMATCH:
        _words(w, low, high)
    else:
        _words(w, auth_stat)
    return bytes(w.out)


def encode_call(xid: int, prog: int, vers: int, proc: int, args: bytes = b"", *,
                cred: OpaqueAuth = AUTH_NONE, verf: OpaqueAuth = AUTH_NONE,
                rpcvers: int = RPC_VERSION) -> bytes:
    """A call message with ``args`` already encoded (the client's side)."""
    w = Writer()
    _words(w, xid, MsgType.CALL, rpcvers, prog, vers, proc)
    OPAQUE_AUTH.pack(cred, w)
    OPAQUE_AUTH.pack(verf, w)
    return bytes(w.out) + args


@dataclass(frozen=True)
class Reply:
    """A decoded reply: which kind, and what comes with it.

    ``accept_stat`` is set for MSG_ACCEPTED, ``reject_stat`` for MSG_DENIED;
    ``results`` holds the bytes after SUCCESS, ``low``/``high`` the range of a
    PROG_MISMATCH or RPC_MISMATCH, ``auth_stat`` the reason of an AUTH_ERROR.
    """

    xid: int
    reply_stat: ReplyStat
    accept_stat: AcceptStat | None = None
    reject_stat: RejectStat | None = None
    auth_stat: AuthStat | None = None
    low: int | None = None
    high: int | None = None
    results: bytes = b""
    verf: OpaqueAuth = AUTH_NONE


def decode_reply(data: bytes | bytearray | memoryview) -> Reply:
    """Read a reply (the client's side).

    Raises:
        XDRDecodeError: not a well-formed reply.
    """
    r = Reader(data)
    try:
        xid = r.uint32("xid")
        if r.uint32("msg_type") != MsgType.REPLY:
            raise XDRDecodeError("not a REPLY")
        stat = ReplyStat(_known(r.uint32("reply_stat"), ReplyStat))
        if stat == ReplyStat.MSG_ACCEPTED:
            verf = decode_prefix(OPAQUE_AUTH, r, "verf")
            accept = AcceptStat(_known(r.uint32("accept_stat"), AcceptStat))
            if accept == AcceptStat.SUCCESS:
                return Reply(xid, stat, accept, results=r.take(r.remaining, "results"),
                             verf=OpaqueAuth(verf.flavor, verf.body))
            if accept == AcceptStat.PROG_MISMATCH:
                return Reply(xid, stat, accept, low=r.uint32("low"), high=r.uint32("high"))
            return Reply(xid, stat, accept)
        reject = RejectStat(_known(r.uint32("reject_stat"), RejectStat))
        if reject == RejectStat.RPC_MISMATCH:
            return Reply(xid, stat, reject_stat=reject, low=r.uint32("low"),
                         high=r.uint32("high"))
        return Reply(xid, stat, reject_stat=reject,
                     auth_stat=AuthStat(_known(r.uint32("auth_stat"), AuthStat)))
    except XDRError as exc:
        raise exc.rooted("reply") from None


def _known(value: int, kind: type[enum.IntEnum]) -> int:
    if value not in kind._value2member_map_:
        raise XDRDecodeError(f"{value} is not a {kind.__name__}")
    return value
