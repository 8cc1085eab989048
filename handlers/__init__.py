"""What users subclass to write a service on the reactor.

* :class:`StreamHandler` -- the base for non-blocking stream services, with
  asyncio.Protocol's callbacks (it *is* an ``asyncio.Protocol``, so it also runs on
  asyncio's loops).
* Framers, socket-free state machines with a handler each: lines
  (:class:`LineHandler`), asynchat-style terminators (:class:`TerminatorHandler`),
  length-prefixed records (:class:`RecordHandler`), ONC RPC record marking
  (:class:`RPCRecordHandler`).
* Ready services: :class:`EchoHandler`, the chat rooms (:class:`ChatServer`), and the
  Redis-protocol key-value store in :mod:`handlers.kv`.
* The classic blocking request handlers of ``socketserver`` live in
  :mod:`handlers.classic` (they wrap a socket by nature).

Everything here but :mod:`handlers.classic` is socket-free; the classic handlers are
re-exported here and by :mod:`reactor.socketserver`.
"""

from __future__ import annotations

from .base import FramingError, StreamHandler, start_request_deadline, stop_request_deadline
from .chat import ChatHandler, ChatServer, ChatStatistics, default_server
from .classic import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .echo import EchoHandler
from .kv import KVProtocol, KVServer, KVStore
from .lines import DEFAULT_MAX_LINE_LENGTH, LineFramer, LineHandler, LineTooLong
from .records import (
    DEFAULT_MAX_RECORD_SIZE,
    PREFIX_SIZES,
    RecordFramer,
    RecordHandler,
    RecordTooLarge,
)
from .resp import RespParser, RespProtocolError
from .rpcrecord import (
    DEFAULT_MAX_RPC_RECORD_SIZE,
    LAST_FRAGMENT,
    MAX_FRAGMENT_SIZE,
    RecordMarkingFramer,
    RPCRecordHandler,
    RPCRecordTooLarge,
    encode_record,
)
from .terminator import (
    DEFAULT_MAX_BUFFER_SIZE,
    TERMINATOR,
    TerminatorFramer,
    TerminatorHandler,
    TerminatorOverflow,
)

__all__ = [
    "DEFAULT_MAX_BUFFER_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_RECORD_SIZE",
    "DEFAULT_MAX_RPC_RECORD_SIZE",
    "LAST_FRAGMENT",
    "MAX_FRAGMENT_SIZE",
    "PREFIX_SIZES",
    "TERMINATOR",
    "BaseRequestHandler",
    "ChatHandler",
    "ChatServer",
    "ChatStatistics",
    "DatagramRequestHandler",
    "EchoHandler",
    "FramingError",
    "KVProtocol",
    "KVServer",
    "KVStore",
    "LineFramer",
    "LineHandler",
    "LineTooLong",
    "RPCRecordHandler",
    "RPCRecordTooLarge",
    "RecordFramer",
    "RecordHandler",
    "RecordMarkingFramer",
    "RecordTooLarge",
    "RespParser",
    "RespProtocolError",
    "StreamHandler",
    "StreamRequestHandler",
    "TerminatorFramer",
    "TerminatorHandler",
    "TerminatorOverflow",
    "default_server",
    "encode_record",
    "start_request_deadline",
    "stop_request_deadline",
]
