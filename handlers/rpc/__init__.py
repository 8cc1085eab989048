"""Sun RPC (ONC RPC, RFC 5531) and XDR (RFC 4506), socket-free.

Role: the layers an RPC service is built from, each usable alone:

* :mod:`.xdr` -- the errors, reader and writer, and the primitive XDR types;
* :mod:`.xdrcompound` -- arrays, optional data, structs and unions;
* :mod:`.xdrlex`, :mod:`.xdrlang` -- the ``.x`` language read at run time
  (:func:`load_xdr`), so one file describes a C client made by ``rpcgen`` and our server;
* :mod:`.message` -- the call and reply messages, credentials;
* :mod:`.dispatch` -- programs, versions, procedures and the :class:`Dispatcher`:
  the bytes of a call in, the bytes of the reply out;
* :mod:`.portmap` -- :class:`Portmapper`, program 100000 version 2, on any port;
* :mod:`.blocking` -- :func:`blocking` marks a procedure that blocks, and a
  :class:`BlockingPool` runs it off the reactor's thread;
* :mod:`.replycache` -- :class:`ReplyCache`, the duplicate-request cache of UDP;
* :mod:`.server` -- :class:`RPCServer`: a dispatcher served over TCP (record marking)
  and UDP from one reactor, handed in by the caller.

Must not import ``socket``, ``selectors``, ``threading`` or ``os`` (checked for the whole
folder by ``tests/test_layering.py``).
"""

from __future__ import annotations

from .blocking import BlockingPool, blocking
from .dispatch import AuthError, Call, Dispatcher, PreparedCall, Procedure, Program, Version
from .message import (
    AcceptStat,
    AuthFlavor,
    AuthStat,
    AuthSys,
    OpaqueAuth,
    RejectStat,
    Reply,
    ReplyStat,
    decode_reply,
    encode_call,
)
from .portmap import Portmapper
from .replycache import ReplyCache
from .server import RPCDatagramProtocol, RPCEndpoints, RPCServer, RPCStreamHandler
from .xdr import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_LENGTH,
    Bool,
    Double,
    Enum,
    FixedOpaque,
    Float,
    Hyper,
    Int,
    Opaque,
    String,
    UnsignedHyper,
    UnsignedInt,
    Void,
    XDRDecodeError,
    XDREncodeError,
    XDRError,
    XDRType,
    decode,
    encode,
)
from .xdrcompound import Array, FixedArray, Optional, Struct, Union, UnionValue
from .xdrlang import (
    ProcedureDef,
    ProgramDef,
    Specification,
    VersionDef,
    XDRSyntaxError,
    load_xdr,
    parse_xdr,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LENGTH",
    "AcceptStat",
    "Array",
    "AuthError",
    "AuthFlavor",
    "AuthStat",
    "AuthSys",
    "BlockingPool",
    "Bool",
    "Call",
    "Dispatcher",
    "Double",
    "Enum",
    "FixedArray",
    "FixedOpaque",
    "Float",
    "Hyper",
    "Int",
    "Opaque",
    "OpaqueAuth",
    "Optional",
    "Portmapper",
    "PreparedCall",
    "Procedure",
    "ProcedureDef",
    "Program",
    "ProgramDef",
    "RPCDatagramProtocol",
    "RPCEndpoints",
    "RPCServer",
    "RPCStreamHandler",
    "RejectStat",
    "Reply",
    "ReplyCache",
    "ReplyStat",
    "Specification",
    "String",
    "Struct",
    "Union",
    "UnionValue",
    "UnsignedHyper",
    "UnsignedInt",
    "Version",
    "VersionDef",
    "Void",
    "XDRDecodeError",
    "XDREncodeError",
    "XDRError",
    "XDRSyntaxError",
    "XDRType",
    "blocking",
    "decode",
    "decode_reply",
    "encode",
    "encode_call",
    "load_xdr",
    "parse_xdr",
]
