"""What users subclass to write a service on the reactor.

* :class:`StreamHandler` -- the base for non-blocking stream services, with
  asyncio.Protocol's callbacks (it *is* an ``asyncio.Protocol``, so it also runs on
  asyncio's loops).
* :mod:`handlers.framers` -- socket-free state machines with a handler each: lines
  (:class:`LineHandler`), asynchat-style terminators (:class:`TerminatorHandler`),
  length-prefixed records (:class:`RecordHandler`), ONC RPC record marking
  (:class:`RPCRecordHandler`), and the Redis protocol's parser (:class:`RespParser`).
* :mod:`handlers.services` -- ready services: :class:`EchoHandler`, the chat rooms
  (:class:`ChatServer`), and the Redis-protocol key-value store (:class:`KVServer`, a
  package); ``reactor serve echo|chat|kv`` loads them from there.
* :mod:`handlers.classic` -- the classic blocking request handlers of ``socketserver``
  (they wrap a socket by nature).

Everything here but :mod:`handlers.classic` is socket-free; the classic handlers are
re-exported here and by :mod:`reactor.socketserver`.
"""

from __future__ import annotations

from .base import FramingError, StreamHandler, start_request_deadline, stop_request_deadline
from .classic import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .framers.lines import DEFAULT_MAX_LINE_LENGTH, LineFramer, LineHandler, LineTooLong
from .framers.records import (
    DEFAULT_MAX_RECORD_SIZE,
    PREFIX_SIZES,
    RecordFramer,
    RecordHandler,
    RecordTooLarge,
)
from .framers.resp import RespParser, RespProtocolError
from .framers.rpcrecord import (
    DEFAULT_MAX_RPC_RECORD_SIZE,
    LAST_FRAGMENT,
    MAX_FRAGMENT_SIZE,
    RecordMarkingFramer,
    RPCRecordHandler,
    RPCRecordTooLarge,
    encode_record,
)
from .framers.terminator import (
    DEFAULT_MAX_BUFFER_SIZE,
    TERMINATOR,
    TerminatorFramer,
    TerminatorHandler,
    TerminatorOverflow,
)
from .services.chat import ChatHandler, ChatServer, ChatStatistics, default_server
from .services.echo import EchoHandler
from .services.kv import KVProtocol, KVServer, KVStore

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
