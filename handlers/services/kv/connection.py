"""A Redis-protocol key-value service: an :class:`asyncio.Protocol` for the reactor or asyncio.

Role: a ready service that real Redis clients (redis-py, ``redis-cli``,
``redis-benchmark``) talk to. It speaks RESP2, and RESP3 to clients that ask for it with
``HELLO 3`` (redis-py 8 does so by default), over any stream transport.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: the protocol only
sees its transport, and time and timers come from the loop it is bound to.

Pieces
------
* :class:`KVStore` -- the data (strings and lists), shared by every connection of one
  server, with expiry: *lazy* (a read of an expired key deletes it) and *active* (one
  timer on the loop, armed for the nearest deadline, deletes keys nobody reads).
* :class:`KVServer` -- the protocol factory: ``reactor.listen_tcp(host, port,
  KVServer(reactor))`` or ``loop.create_server(KVServer(loop), host, port)``. Unbound
  (``KVServer()``), the store binds itself to the loop of its first connection.
* :class:`KVProtocol` -- one per connection: feeds a :class:`~handlers.resp.RespParser`,
  runs every complete command of a chunk and writes all their replies in one ``write``.

Request deadline
----------------
``KVServer(request_timeout=S)`` gives every command an absolute deadline against
slowloris clients: once the first bytes of a command are buffered, the whole command
must arrive within S seconds, or the connection is closed with a logged reason. The
deadline is armed when a chunk leaves a partial command, moved when a later chunk
completes commands and leaves the start of another, removed when nothing partial is
left, and suspended while the protocol is paused for writing (then the commands waiting
are the server's backlog, not the client's slowness). On the reactor it is the
transport's deadline; on asyncio a ``loop.call_later`` timer.

Flow control
------------
Callbacks arrive as ``connection_made [data_received* | pause_writing resume_writing]*
[eof_received] connection_lost``. When the transport's write buffer passes its high water
mark (``pause_writing``), the protocol stops running commands and pauses reading; the
commands already received stay in the parser. ``resume_writing`` runs them and resumes
reading. A client that never reads therefore costs at most the high water mark, about one
flush (:data:`FLUSH_SIZE`) and one received chunk.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from reactor.errors import LocalProtocolError

from .base import start_request_deadline, stop_request_deadline
from .resp import (
    DEFAULT_MAX_ARRAY_LENGTH,
    DEFAULT_MAX_BULK_LENGTH,
    DEFAULT_MAX_COMMAND_SIZE,
    DEFAULT_MAX_INLINE_LENGTH,
    NULL_ARRAY,
    NULL_BULK,
    NULL_RESP3,
    OK,
    PONG,
    QUEUED,
    RespParser,
    RespProtocolError,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_map,
)

__all__ = [
    "COMMANDS",
    "FLUSH_SIZE",
    "Command",
    "CommandError",
    "KVProtocol",
    "KVServer",
    "KVStatistics",
    "KVStore",
    "Scheduler",
    "compile_glob",
    "glob_match",
]

logger = logging.getLogger(__name__)

FLUSH_SIZE: Final = 64 * 1024  # replies are written once this much is pending
SERVER_VERSION: Final = "7.0.0"  # what INFO and HELLO report, for clients that check
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
MAX_EXPIRE_BATCH: Final = 1000  # keys one active-expiry callback deletes at most

Value = bytes | deque[bytes]

# -- errors ---------------------------------------------------------------------------

E_NOT_INT: Final = "ERR value is not an integer or out of range"
E_SYNTAX: Final = "ERR syntax error"
E_WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
E_OVERFLOW: Final = "ERR increment or decrement would overflow"


class CommandError(Exception):
    """A command failed; :attr:`reply` is the RESP error sent to the client.

    Args:
        message: the error text starting with its code, e.g. ``"ERR syntax error"``.
    """

    def __init__(self, message: str | bytes) -> None:
        super().__init__(message)
        self.reply = encode_error(message)


def _arity_error(name: str) -> bytes:
    return encode_error(f"ERR wrong number of arguments for '{name}' command")


def _c_string(raw: bytes) -> bytes:
    """``raw`` up to its first NUL: what Redis's ``%s`` prints of an argument."""
    return raw.split(b"\0", 1)[0]


def _unknown_command(args: list[bytes]) -> bytes:
    # Redis's wording and limits: the name cut at 128 bytes, then the arguments while
    # the list is under 128 bytes, each cut to what is left; bytes as they came
    rest = b""
    for arg in args[1:]:
        if len(rest) >= 128:
            break
        rest += b"'" + _c_string(arg)[: 128 - len(rest)] + b"' "
    return encode_error(b"ERR unknown command '" + _c_string(args[0])[:128]
                        + b"', with args beginning with: " + rest)


def _unknown_subcommand(args: list[bytes]) -> CommandError:
    sub = args[1][:128].decode("utf-8", "replace")
    return CommandError(
        f"ERR unknown subcommand '{sub}'. Try {args[0].decode('utf-8', 'replace').upper()} HELP."
    )


def _parse_int(raw: bytes) -> int:
    """Parse a 64-bit integer written exactly as Redis writes one (no sign, space,
    leading zero or underscore tricks).

    Raises:
        CommandError: not such an integer.
    """
    if len(raw) > 20:
        raise CommandError(E_NOT_INT)
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(E_NOT_INT) from None
    if b"%d" % value != raw or not INT64_MIN <= value <= INT64_MAX:
        raise CommandError(E_NOT_INT)
    return value


# -- glob patterns --------------------------------------------------------------------

_ANY: Final = bytes([1]) * 256
_LITERALS: Final = tuple(bytes(1 if c == i else 0 for c in range(256)) for i in range(256))


def _glob_tokens(pattern: bytes) -> list[bytes | None]:
    """Compile a glob into tokens: None for ``*``, else a 256-entry table of the bytes
    the position accepts. Follows Redis's rules, quirks included: ``\\`` escapes the
    next byte (a trailing one is literal), ``[^...]`` negates, ``a-z`` is a range (ends
    swapped if reversed), and an unterminated ``[`` class ends with the pattern."""
    tokens: list[bytes | None] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == 42:  # *
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
            i += 1
        elif c == 63:  # ?
            tokens.append(_ANY)
            i += 1
        elif c == 91:  # [
            i += 1
            negate = i < n and pattern[i] == 94  # ^
            if negate:
                i += 1
            table = bytearray(256)
            while i < n:
                c = pattern[i]
                if c == 92 and n - i >= 2:  # an escaped byte
                    table[pattern[i + 1]] = 1
                    i += 2
                elif c == 93:  # ]
                    i += 1
                    break
                elif n - i >= 3 and pattern[i + 1] == 45:  # a range
                    low, high = sorted((c, pattern[i + 2]))
                    table[low : high + 1] = bytes([1]) * (high - low + 1)
                    i += 3
                else:
                    table[c] = 1
                    i += 1
            if negate:
                table = bytearray(1 - bit for bit in table)
            tokens.append(bytes(table))
        elif c == 92 and n - i >= 2:  # \x
            tokens.append(_LITERALS[pattern[i + 1]])
            i += 2
        else:
            tokens.append(_LITERALS[c])
            i += 1
    return tokens


def _match_tokens(tokens: list[bytes | None], text: bytes) -> bool:
    # The classic greedy walk with one backtrack point (the last star): O(len(text) *
    # len(tokens)) at worst, never exponential, unlike a recursive matcher or a regex.
    p = i = 0
    m = len(tokens)
    n = len(text)
    star = -1
    star_i = 0
    while i < n:
        token = tokens[p] if p < m else b""
        if token is None:
            star = p
            star_i = i
            p += 1
        elif token and token[text[i]]:
            p += 1
            i += 1
        elif star >= 0:
            star_i += 1
            i = star_i
            p = star + 1
        else:
            return False
    while p < m and tokens[p] is None:
        p += 1
    return p == m


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """Compile a Redis glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\`` escapes)
    into a predicate on bytes."""
    if not any(c in pattern for c in b"*?[\\"):
        return pattern.__eq__
    tokens = _glob_tokens(pattern)
    if tokens == [None]:
        return lambda text: True
    return functools.partial(_match_tokens, tokens)


def glob_match(pattern: bytes, text: bytes) -> bool:
    """Whether ``text`` matches the Redis glob ``pattern``."""
    return compile_glob(pattern)(text)


# -- the store ------------------------------------------------------------------------


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the store needs from a loop: a :class:`reactor.Reactor` or an asyncio loop."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Cancellable: ...


class KVStore:
    """The keyspace: string and list values, with expiry deadlines in loop time.

    Args:
        loop: the loop whose clock and timers drive expiry; None binds later (until
            then the clock is :func:`time.monotonic` and only lazy expiry runs).

    Not thread-safe: use it from the thread of the loop it is bound to.
    """

    __slots__ = (
        "_data",
        "_expires",
        "_heap",
        "_loop",
        "_timer",
        "_timer_when",
        "expired_keys",
    )

    def __init__(self, loop: Scheduler | None = None) -> None:
        self._data: dict[bytes, Value] = {}
        self._expires: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []  # (deadline, key), stale entries too
        self._loop: Scheduler | None = None
        self._timer: _Cancellable | None = None
        self._timer_when = 0.0
        self.expired_keys = 0
        if loop is not None:
            self.bind(loop)

    @property
    def loop(self) -> Scheduler | None:
        """The loop this store is bound to."""
        return self._loop

    def bind(self, loop: Scheduler) -> None:
        """Use ``loop``'s clock and timers from now on.

        Raises:
            LocalProtocolError: the store is already bound to another loop.
        """
        if self._loop is loop:
            return
        if self._loop is not None:
            raise LocalProtocolError("this KVStore is already bound to another loop")
        self._loop = loop
        self._arm()

    def time(self) -> float:
        """The bound loop's clock reading (seconds)."""
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def expiring(self) -> int:
        """Keys with a deadline."""
        return len(self._expires)

    def get(self, key: bytes) -> Value | None:
        """The value of ``key``, or None (an expired key is deleted on the way)."""
        expires = self._expires
        if expires:
            when = expires.get(key)
            if when is not None and when <= self.time():
                self._expire(key)
                return None
        return self._data.get(key)

    def set(self, key: bytes, value: Value, *, deadline: float | None = None,
            keep_ttl: bool = False) -> None:
        """Store ``value``; ``deadline`` (loop time) sets a TTL, else the old TTL is
        dropped unless ``keep_ttl``."""
        self._data[key] = value
        if deadline is not None:
            self.set_deadline(key, deadline)
        elif not keep_ttl and self._expires:
            self._expires.pop(key, None)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; whether it existed (and had not expired)."""
        if self.get(key) is None:
            return False
        del self._data[key]
        self._expires.pop(key, None)
        return True

    def deadline(self, key: bytes) -> float | None:
        """The loop time at which ``key`` expires, None without a TTL."""
        return self._expires.get(key)

    def set_deadline(self, key: bytes, when: float) -> None:
        """Expire the existing ``key`` at loop time ``when``."""
        self._expires[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 2 * len(self._expires) + 64:  # mostly stale entries: rebuild
            heap[:] = [(deadline, k) for k, deadline in self._expires.items()]
            heapq.heapify(heap)
        if self._timer is None or when < self._timer_when:
            self._arm()

    def persist(self, key: bytes) -> bool:
        """Drop the TTL of ``key``; whether it had one."""
        return self._expires.pop(key, None) is not None

    def keys(self, pattern: bytes = b"*") -> list[bytes]:
        """Live keys matching the Redis glob ``pattern``."""
        match = compile_glob(pattern)
        expires = self._expires
        now = self.time()
        found = []
        for key in self._data:
            if match(key):
                when = expires.get(key) if expires else None
                if when is None or when > now:
                    found.append(key)
        return found

    def flush(self) -> None:
        """Delete every key."""
        self._data.clear()
        self._expires.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, key: bytes) -> None:
        del self._data[key]
        del self._expires[key]
        self.expired_keys += 1

    # Active expiry: the heap holds (deadline, key) for every deadline ever set; an
    # entry is live when the key's current deadline still equals it. One timer is armed
    # for the heap's first entry; when it fires it deletes what is due (a bounded batch)
    # and re-arms. An idle store with no deadlines has no timer at all.

    def _arm(self) -> None:
        loop = self._loop
        heap = self._heap
        if loop is None or not heap:
            return
        when = heap[0][0]
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.time()
        heap = self._heap
        expires = self._expires
        budget = MAX_EXPIRE_BATCH
        while heap and heap[0][0] <= now and budget:
            when, key = heapq.heappop(heap)
            if expires.get(key) == when:
                self._expire(key)
                budget -= 1
        self._arm()


# -- the server -----------------------------------------------------------------------


@dataclass(frozen=True)
class KVStatistics:
    """An immutable snapshot of a :class:`KVServer`.

    Attributes:
        keys: keys in the store (expired ones not yet deleted included).
        expiring: keys with a TTL.
        expired_keys: keys deleted because their TTL passed.
        clients: connections open now.
        connections_total: connections ever made.
        commands_processed: commands run (including failed ones).
        protocol_errors: malformed requests seen.
    """

    keys: int
    expiring: int
    expired_keys: int
    clients: int
    connections_total: int
    commands_processed: int
    protocol_errors: int


class KVServer:
    """The protocol factory of a key-value service; every protocol shares one store.

    Args:
        loop: the reactor or asyncio loop the service runs on (timers for expiry);
            None: bound to the loop of the first connection.
        store: the store to serve (a new one by default).
        max_bulk_length: the longest bulk string accepted (a longer one is refused
            before its payload is read, and the connection closed).
        max_array_length: the most arguments one command may have.
        max_inline_length: the longest inline command line.
        max_command_size: the most bytes one command may declare.
        request_timeout: seconds a client has to finish sending a command once its
            first bytes arrived (None: no limit).

    Example::

        server = KVServer(reactor)
        reactor.listen_tcp("127.0.0.1", 6379, server)
    """

    def __init__(
        self,
        loop: Scheduler | None = None,
        *,
        store: KVStore | None = None,
        max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
        max_array_length: int = DEFAULT_MAX_ARRAY_LENGTH,
        max_inline_length: int = DEFAULT_MAX_INLINE_LENGTH,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        request_timeout: float | None = None,
    ) -> None:
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive or None, not "
                             f"{request_timeout!r}")
        self.request_timeout = request_timeout
        self.store = store if store is not None else KVStore()
        if loop is not None:
            self.store.bind(loop)
        self.max_bulk_length = max_bulk_length
        self.max_array_length = max_array_length
        self.max_inline_length = max_inline_length
        self.max_command_size = max_command_size
        self.clients: dict[int, KVProtocol] = {}
        self.connections_total = 0
        self.commands_processed = 0
        self.protocol_errors = 0
        self.new_parser()  # validates the limits now rather than at the first connection

    def __call__(self) -> KVProtocol:
        return KVProtocol(self)

    def new_parser(self) -> RespParser:
        """A parser with this server's limits."""
        return RespParser(
            max_bulk_length=self.max_bulk_length,
            max_array_length=self.max_array_length,
            max_inline_length=self.max_inline_length,
            max_command_size=self.max_command_size,
        )

    def config(self) -> dict[str, str]:
        """The values ``CONFIG GET`` reports (what clients and benchmarks ask for)."""
        return {
            "save": "",
            "appendonly": "no",
            "appendfsync": "no",
            "databases": "1",
            "maxmemory": "0",
            "maxmemory-policy": "noeviction",
            "maxclients": "0",
            "timeout": "0",
            "proto-max-bulk-len": str(self.max_bulk_length),
            "client-query-buffer-limit": str(self.max_command_size),
            "cluster-enabled": "no",
            "replica-read-only": "yes",
            "slave-read-only": "yes",
            "io-threads": "1",
        }

    def statistics(self) -> KVStatistics:
        """A snapshot of the store and connection counters."""
        store = self.store
        return KVStatistics(
            keys=len(store),
            expiring=store.expiring,
            expired_keys=store.expired_keys,
            clients=len(self.clients),
            connections_total=self.connections_total,
            commands_processed=self.commands_processed,
            protocol_errors=self.protocol_errors,
        )


def _loop_of(transport: asyncio.BaseTransport) -> Scheduler | None:
    """The loop a transport runs on: the reactor of a reactor transport, else the
    running asyncio loop."""
    row = transport.get_extra_info("connection")
    reactor = getattr(row, "reactor", None)
    if reactor is not None:
        return reactor  # type: ignore[no-any-return]
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class KVProtocol(asyncio.Protocol):
    """One client connection of a :class:`KVServer`.

    Callback order: ``connection_made [data_received* | pause_writing resume_writing]*
    [eof_received] connection_lost``.
    """

    __slots__ = (
        "_closing",
        "_deadline",
        "_multi",
        "_multi_dirty",
        "_parser",
        "_server",
        "_transport",
        "_write_paused",
        "client_id",
        "lib_name",
        "lib_ver",
        "name",
        "null",
        "peer",
        "resp3",
        "store",
    )

    def __init__(self, server: KVServer) -> None:
        self._server = server
        self.store = server.store
        self._parser = server.new_parser()
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        self._closing = False
        self._deadline: object | None = None  # see handlers.base.start_request_deadline
        self._multi: list[tuple[Command, list[bytes]]] | None = None
        self._multi_dirty = False
        self.client_id = 0
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.peer: Any = None
        self.resp3 = False
        self.null = NULL_BULK  # the null reply of the protocol version in use

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        if self.store.loop is None:
            loop = _loop_of(transport)
            if loop is not None:
                self.store.bind(loop)
        server.connections_total += 1
        self.client_id = server.connections_total
        server.clients[self.client_id] = self
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        if not self._write_paused and not self._closing:
            if self._server.request_timeout is None:
                self._run_commands()
            else:
                self._run_timed()

    def eof_received(self) -> bool | None:
        self._stop_deadline()  # nothing more can arrive
        return None  # close once the replies are flushed

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_deadline()
        self._server.clients.pop(self.client_id, None)
        self._closing = True
        self._transport = None
        self._multi = None

    def pause_writing(self) -> None:
        self._write_paused = True
        self._stop_deadline()  # the commands waiting now are ours to run, not late
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is None or self._closing:
            return
        if self._server.request_timeout is None:
            self._run_commands()
        else:
            self._run_timed()
        if not self._write_paused and not self._closing and self._transport is not None:
            self._transport.resume_reading()

    # -- the request deadline ---------------------------------------------------------

    def _run_timed(self) -> None:
        """:meth:`_run_commands`, then arm, move or remove the request deadline."""
        server = self._server
        before = server.commands_processed + server.protocol_errors
        self._run_commands()
        if self._closing or self._write_paused or self._transport is None:
            self._stop_deadline()
        elif not self._parser.idle:
            completed = server.commands_processed + server.protocol_errors != before
            if self._deadline is None or completed:
                assert server.request_timeout is not None
                self._deadline = start_request_deadline(
                    self._deadline, self._transport, server.request_timeout,
                    self._request_expired)
        elif self._deadline is not None:
            self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            stop_request_deadline(self._deadline)
            self._deadline = None

    def _request_expired(self) -> None:
        """The deadline passed (asyncio; on the reactor the transport closes)."""
        self._deadline = None
        if self._transport is not None and not self._closing:
            logger.info("kv client %s: closing: request deadline: no complete command "
                        "within %s s", self.peer, self._server.request_timeout)
            self._closing = True
            self._transport.abort()

    # -- running commands -------------------------------------------------------------

    def _run_commands(self) -> None:
        """Run every complete command received, writing the replies in one ``write``
        (or in :data:`FLUSH_SIZE` pieces, stopping when the transport pauses us)."""
        parser = self._parser
        transport = self._transport
        assert transport is not None
        out: list[bytes] = []
        pending = 0
        execute = self.execute
        while True:
            try:
                args = parser.next_command()
            except RespProtocolError as exc:
                self._server.protocol_errors += 1
                logger.info("kv client %s: %s%s", self.peer, exc.message,
                            "; closing" if exc.fatal else "")
                out.append(exc.reply)
                if exc.fatal:
                    self._closing = True
                    break
                continue
            if args is None:
                break
            reply = execute(args)
            out.append(reply)
            if self._closing:  # QUIT
                break
            pending += len(reply)
            if pending >= FLUSH_SIZE:
                transport.write(b"".join(out))
                out.clear()
                pending = 0
                if self._write_paused or self._transport is None:
                    return  # the rest waits in the parser for resume_writing
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._closing:
            transport.close()

    def execute(self, args: list[bytes]) -> bytes:
        """Run one command (a non-empty list of bytes) and return its encoded reply."""
        command = COMMANDS.get(args[0])
        if command is None:
            command = COMMANDS.get(args[0].lower())
            if command is None:
                self._server.commands_processed += 1
                if self._multi is not None:
                    self._multi_dirty = True
                return _unknown_command(args)
        self._server.commands_processed += 1
        arity = command.arity
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            if command.handler is _exec:  # a refused EXEC aborts, in MULTI or not (Redis 7)
                self._multi = None
                return encode_error("EXECABORT Transaction discarded because of: wrong "
                                    "number of arguments for 'exec' command")
            if self._multi is not None:
                self._multi_dirty = True
            return _arity_error(command.name)
        if self._multi is not None and not command.immediate:
            self._multi.append((command, args))
            return QUEUED
        try:
            return command.handler(self, args)
        except CommandError as exc:
            return exc.reply

    def close(self) -> None:
        """Close the connection once the pending replies are written."""
        self._closing = True

    def set_protocol_version(self, version: int) -> None:
        """Encode later replies in RESP2 or RESP3."""
        self.resp3 = version == 3
        self.null = NULL_RESP3 if self.resp3 else NULL_BULK

    def describe(self) -> str:
        """One line in the format of ``CLIENT LIST``."""
        peer = self.peer
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
        return (
            f"id={self.client_id} addr={addr} name={self.name.decode('utf-8', 'replace')} "
            f"db=0 multi={-1 if self._multi is None else len(self._multi)} "
            f"resp={3 if self.resp3 else 2} lib-name={self.lib_name.decode('utf-8', 'replace')} "
            f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}"
        )


# -- the command table ----------------------------------------------------------------

Handler = Callable[[KVProtocol, list[bytes]], bytes]


_CATEGORIES: Final = {"readonly": b"read", "write": b"write", "fast": b"fast"}


@dataclass(frozen=True)
class Command:
    """One command's entry in :data:`COMMANDS` (also what ``COMMAND`` reports).

    Attributes:
        name: the lower-case name.
        arity: Redis's arity: N means exactly N words (name included), -N at least N.
        flags: Redis's command flags (``readonly``, ``write``, ``fast`` ...).
        first_key: position of the first key argument (0: none).
        last_key: position of the last key (-1: the last argument).
        step: distance between keys.
        group: the documentation group (``string``, ``generic``, ``connection`` ...).
        summary: one line for ``COMMAND DOCS``.
        handler: runs the command, returns the encoded reply.
        immediate: runs even inside MULTI instead of being queued.
    """

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    handler: Handler
    immediate: bool = False

    def info(self, resp3: bool = False) -> bytes:
        """The encoded ``COMMAND INFO`` entry (Redis 7's ten fields)."""
        set_head = b"~%d\r\n" if resp3 else b"*%d\r\n"
        flags = [b"+%s\r\n" % flag.encode() for flag in self.flags]
        categories = [b"+@%s\r\n" % _CATEGORIES[flag] for flag in self.flags
                      if flag in _CATEGORIES]
        categories.append(b"+@%s\r\n" % self.group.encode())
        return b"".join([
            b"*10\r\n", encode_bulk(self.name.encode()), encode_integer(self.arity),
            set_head % len(flags), *flags,
            encode_integer(self.first_key), encode_integer(self.last_key),
            encode_integer(self.step),
            set_head % len(categories), *categories,
            set_head % 0, set_head % 0, set_head % 0,  # tips, key specs, subcommands
        ])

    def docs(self, resp3: bool) -> bytes:
        """The encoded ``COMMAND DOCS`` value (a map) of this command."""
        return encode_map(
            [
                (encode_bulk(b"summary"), encode_bulk(self.summary.encode())),
                (encode_bulk(b"since"), encode_bulk(b"1.0.0")),
                (encode_bulk(b"group"), encode_bulk(self.group.encode())),
            ],
            resp3=resp3,
        )


COMMANDS: dict[bytes, Command] = {}
"""Every command by name, in lower and upper case."""
_COMMAND_LIST: list[Command] = []


def _command(
    name: str, arity: int, flags: str, group: str, summary: str,
    *, keys: tuple[int, int, int] = (0, 0, 0), immediate: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        command = Command(name, arity, tuple(flags.split()), *keys, group, summary, handler,
                          immediate)
        COMMANDS[name.encode()] = COMMANDS[name.upper().encode()] = command
        _COMMAND_LIST.append(command)
        return handler

    return register


_ONE_KEY: Final = (1, 1, 1)
_ALL_KEYS: Final = (1, -1, 1)


def _string(c: KVProtocol, key: bytes) -> bytes | None:
    value = c.store.get(key)
    if value is None or type(value) is bytes:
        return value
    raise CommandError(E_WRONGTYPE)


def _list(c: KVProtocol, key: bytes) -> deque[bytes] | None:
    value = c.store.get(key)
    if value is None or type(value) is deque:
        return value
    raise CommandError(E_WRONGTYPE)


def _array(items: Iterable[bytes]) -> bytes:
    encoded = [encode_bulk(item) for item in items]
    return b"*%d\r\n" % len(encoded) + b"".join(encoded)


# connection


@_command("ping", -1, "fast", "connection", "Returns the server's liveliness response.")
def _ping(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) == 1:
        return PONG
    if len(a) == 2:
        return encode_bulk(a[1])
    return _arity_error("ping")


@_command("echo", 2, "fast", "connection", "Returns the given string.")
def _echo(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_bulk(a[1])


@_command("quit", -1, "fast", "connection", "Closes the connection.", immediate=True)
def _quit(c: KVProtocol, a: list[bytes]) -> bytes:
    c.close()
    return OK


@_command("select", 2, "fast", "connection", "Changes the selected database.")
def _select(c: KVProtocol, a: list[bytes]) -> bytes:
    index = _parse_int(a[1])
    if not INT32_MIN <= index <= INT32_MAX:  # Redis parses the index as a C int first
        raise CommandError(
            f"ERR value is out of range, value must between {INT32_MIN} and {INT32_MAX}")
    if index != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


@_command("auth", -2, "fast", "connection", "Authenticates the connection.")
def _auth(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) > 3:
        raise CommandError(E_SYNTAX)
    if len(a) == 2:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    if a[1] != b"default":
        raise CommandError(
            "WRONGPASS invalid username-password pair or user is disabled."
        )
    return OK


def _check_name(value: bytes, what: str) -> None:
    if any(c < 33 or c > 126 for c in value):
        raise CommandError(f"ERR {what} cannot contain spaces, newlines or special characters.")


@_command("hello", -1, "fast", "connection", "Handshakes with the server.")
def _hello(c: KVProtocol, a: list[bytes]) -> bytes:
    version = 3 if c.resp3 else 2
    if len(a) >= 2:
        try:
            version = _parse_int(a[1])
        except CommandError:
            raise CommandError(
                "ERR Protocol version is not an integer or out of range"
            ) from None
        if version not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    i = 2
    name: bytes | None = None
    while i < len(a):
        option = a[i].upper()
        if option == b"AUTH" and i + 2 < len(a):
            if a[i + 1] != b"default":
                raise CommandError(
                    "WRONGPASS invalid username-password pair or user is disabled."
                )
            i += 3
        elif option == b"SETNAME" and i + 1 < len(a):
            name = a[i + 1]
            _check_name(name, "Client names")
            i += 2
        else:
            option_text = a[i].decode("utf-8", "replace")
            raise CommandError(f"ERR Syntax error in HELLO option '{option_text}'")
    if name is not None:
        c.name = name
    c.set_protocol_version(version)
    return encode_map(
        [
            (encode_bulk(b"server"), encode_bulk(b"redis")),
            (encode_bulk(b"version"), encode_bulk(SERVER_VERSION.encode())),
            (encode_bulk(b"proto"), encode_integer(version)),
            (encode_bulk(b"id"), encode_integer(c.client_id)),
            (encode_bulk(b"mode"), encode_bulk(b"standalone")),
            (encode_bulk(b"role"), encode_bulk(b"master")),
            (encode_bulk(b"modules"), b"*0\r\n"),
        ],
        resp3=c.resp3,
    )


@_command("client", -2, "", "connection", "A container for client commands.")
def _client(c: KVProtocol, a: list[bytes]) -> bytes:
    sub = a[1].lower()
    if sub == b"setname" and len(a) == 3:
        _check_name(a[2], "Client names")
        c.name = a[2]
        return OK
    if sub == b"getname" and len(a) == 2:
        return encode_bulk(c.name) if c.name else c.null
    if sub == b"id" and len(a) == 2:
        return encode_integer(c.client_id)
    if sub == b"setinfo" and len(a) == 4:
        attr = a[2].lower()
        if attr == b"lib-name":
            _check_name(a[3], "lib-name")
            c.lib_name = a[3]
        elif attr == b"lib-ver":
            _check_name(a[3], "lib-ver")
            c.lib_ver = a[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{a[2].decode('utf-8', 'replace')}'")
        return OK
    if sub == b"info" and len(a) == 2:
        return encode_bulk(c.describe().encode() + b"\n")
    if sub == b"list" and len(a) == 2:
        lines = "".join(p.describe() + "\n" for p in c._server.clients.values())
        return encode_bulk(lines.encode())
    if sub in (b"setname", b"getname", b"id", b"setinfo", b"info", b"list"):
        return _arity_error(f"client|{sub.decode()}")
    raise _unknown_subcommand(a)


# transactions


@_command("multi", 1, "fast", "transactions", "Starts a transaction.", immediate=True)
def _multi(c: KVProtocol, a: list[bytes]) -> bytes:
    if c._multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    c._multi = []
    c._multi_dirty = False
    return OK


@_command("exec", 1, "", "transactions", "Executes all commands in a transaction.", immediate=True)
def _exec(c: KVProtocol, a: list[bytes]) -> bytes:
    queued = c._multi
    if queued is None:
        raise CommandError("ERR EXEC without MULTI")
    c._multi = None
    if c._multi_dirty:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    replies = []
    for command, args in queued:
        try:
            replies.append(command.handler(c, args))
        except CommandError as exc:
            replies.append(exc.reply)
    return b"*%d\r\n" % len(replies) + b"".join(replies)


@_command("discard", 1, "fast", "transactions", "Discards a transaction.", immediate=True)
def _discard(c: KVProtocol, a: list[bytes]) -> bytes:
    if c._multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    c._multi = None
    return OK


# strings


@_command("get", 2, "readonly fast", "string", "Returns the string value of a key.", keys=_ONE_KEY)
def _get(c: KVProtocol, a: list[bytes]) -> bytes:
    value = c.store.get(a[1])
    if value is None:
        return c.null
    if type(value) is not bytes:
        raise CommandError(E_WRONGTYPE)
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _unix_ms() -> int:
    """The Unix time in milliseconds: Redis's base for relative expiry times."""
    return time.time_ns() // 1_000_000


def _expire_seconds(raw: bytes, option: bytes, command: str) -> float:
    """The delay (seconds from now) SET's ``EX``/``PX``/``EXAT``/``PXAT`` ``raw`` asks for.

    Valid as in Redis: positive; in seconds at most INT64_MAX // 1000; and a relative
    time must not overflow a 64-bit count of Unix milliseconds once now is added.

    Raises:
        CommandError: not an integer, or an invalid time.
    """
    value = _parse_int(raw)
    seconds = option[0] == 69  # EX, EXAT
    if value <= 0 or (seconds and value > INT64_MAX // 1000):
        raise CommandError(f"ERR invalid expire time in '{command}' command")
    ms = value * 1000 if seconds else value
    now_ms = _unix_ms()
    if option.endswith(b"AT"):
        return (ms - now_ms) / 1000
    if ms + now_ms > INT64_MAX:
        raise CommandError(f"ERR invalid expire time in '{command}' command")
    return ms / 1000


@_command("set", -3, "write", "string", "Sets the string value of a key.", keys=_ONE_KEY)
def _set(c: KVProtocol, a: list[bytes]) -> bytes:
    store = c.store
    if len(a) == 3:
        store.set(a[1], a[2])
        return OK
    # Redis's rules: all options are parsed before any value is checked; an option may
    # repeat (the last time wins) but not meet a conflicting one (NX/XX, KEEPTTL/EX...)
    condition = expiry = b""
    get = keep_ttl = False
    expire_arg = b""
    i = 3
    while i < len(a):
        option = a[i].upper()
        if option in (b"NX", b"XX") and condition in (b"", option):
            condition = option
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and not expiry:
            keep_ttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and expiry in (b"", option) \
                and not keep_ttl and i + 1 < len(a):
            expiry = option
            i += 1
            expire_arg = a[i]
        else:
            raise CommandError(E_SYNTAX)
        i += 1
    deadline = store.time() + _expire_seconds(expire_arg, expiry, "set") if expiry else None
    key = a[1]
    if get:
        old = _string(c, key)
        exists = old is not None
    else:
        old = None
        exists = store.get(key) is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return c.null if old is None else encode_bulk(old)
    if deadline is not None and deadline <= store.time():
        store.delete(key)  # EXAT/PXAT in the past: set, and gone at once
    else:
        store.set(key, a[2], deadline=deadline, keep_ttl=keep_ttl)
    if get:
        return c.null if old is None else encode_bulk(old)
    return OK


@_command("getdel", 2, "write fast", "string",
          "Returns the string value of a key after deleting the key.", keys=_ONE_KEY)
def _getdel(c: KVProtocol, a: list[bytes]) -> bytes:
    value = _string(c, a[1])
    if value is None:
        return c.null
    c.store.delete(a[1])
    return encode_bulk(value)


@_command("mget", -2, "readonly fast", "string",
          "Atomically returns the string values of one or more keys.", keys=_ALL_KEYS)
def _mget(c: KVProtocol, a: list[bytes]) -> bytes:
    get = c.store.get
    null = c.null
    parts = [b"*%d\r\n" % (len(a) - 1)]
    for key in a[1:]:
        value = get(key)
        parts.append(encode_bulk(value) if isinstance(value, bytes) else null)
    return b"".join(parts)


@_command("mset", -3, "write", "string",
          "Atomically creates or modifies the string values of one or more keys.", keys=(1, -1, 2))
def _mset(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) % 2 == 0:
        return _arity_error("mset")
    store = c.store
    for i in range(1, len(a), 2):
        store.set(a[i], a[i + 1])
    return OK


@_command("append", 3, "write fast", "string",
          "Appends a string to the value of a key.",
          keys=_ONE_KEY)
def _append(c: KVProtocol, a: list[bytes]) -> bytes:
    old = _string(c, a[1])
    value = a[2] if old is None else old + a[2]
    c.store.set(a[1], value, keep_ttl=True)
    return encode_integer(len(value))


@_command("strlen", 2, "readonly fast", "string",
          "Returns the length of a string value.", keys=_ONE_KEY)
def _strlen(c: KVProtocol, a: list[bytes]) -> bytes:
    value = _string(c, a[1])
    return encode_integer(0 if value is None else len(value))


def _incr_by(c: KVProtocol, key: bytes, delta: int) -> bytes:
    old = _string(c, key)
    current = 0 if old is None else _parse_int(old)
    value = current + delta
    if not INT64_MIN <= value <= INT64_MAX:
        raise CommandError(E_OVERFLOW)
    c.store.set(key, b"%d" % value, keep_ttl=True)
    return b":%d\r\n" % value


@_command("incr", 2, "write fast", "string",
          "Increments the integer value of a key by one.", keys=_ONE_KEY)
def _incr(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], 1)


@_command("decr", 2, "write fast", "string",
          "Decrements the integer value of a key by one.", keys=_ONE_KEY)
def _decr(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], -1)


@_command("incrby", 3, "write fast", "string",
          "Increments the integer value of a key by a number.", keys=_ONE_KEY)
def _incrby(c: KVProtocol, a: list[bytes]) -> bytes:
    return _incr_by(c, a[1], _parse_int(a[2]))


@_command("decrby", 3, "write fast", "string",
          "Decrements a number from the integer value of a key.", keys=_ONE_KEY)
def _decrby(c: KVProtocol, a: list[bytes]) -> bytes:
    delta = _parse_int(a[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr_by(c, a[1], -delta)


# keys


@_command("del", -2, "write", "generic", "Deletes one or more keys.", keys=_ALL_KEYS)
def _del(c: KVProtocol, a: list[bytes]) -> bytes:
    delete = c.store.delete
    return b":%d\r\n" % sum(delete(key) for key in a[1:])


@_command("unlink", -2, "write fast", "generic", "Deletes one or more keys.", keys=_ALL_KEYS)
def _unlink(c: KVProtocol, a: list[bytes]) -> bytes:
    return _del(c, a)


@_command("exists", -2, "readonly fast", "generic",
          "Determines whether one or more keys exist.", keys=_ALL_KEYS)
def _exists(c: KVProtocol, a: list[bytes]) -> bytes:
    get = c.store.get
    return b":%d\r\n" % sum(get(key) is not None for key in a[1:])


@_command("type", 2, "readonly fast", "generic",
          "Determines the type of value stored at a key.", keys=_ONE_KEY)
def _type(c: KVProtocol, a: list[bytes]) -> bytes:
    value = c.store.get(a[1])
    if value is None:
        return b"+none\r\n"
    return b"+string\r\n" if type(value) is bytes else b"+list\r\n"


@_command("keys", 2, "readonly", "generic",
          "Returns all key names that match a pattern.")
def _keys(c: KVProtocol, a: list[bytes]) -> bytes:
    return _array(c.store.keys(a[1]))


def _expire_generic(c: KVProtocol, a: list[bytes], scale: float, name: str) -> bytes:
    # as Redis does: the options first (the first unsupported one named), then the time
    flags = set()
    for raw in a[3:]:
        option = raw.upper()
        if option not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(b"ERR Unsupported option " + _c_string(raw))
        flags.add(option)
    if b"NX" in flags and flags & {b"XX", b"GT", b"LT"}:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in flags and b"LT" in flags:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    amount = _parse_int(a[2])
    ms = amount
    if scale == 1.0:
        if not -(INT64_MAX // 1000) <= amount <= INT64_MAX // 1000:
            raise CommandError(f"ERR invalid expire time in '{name}' command")
        ms = amount * 1000
    if ms > INT64_MAX - _unix_ms():  # now plus the delay in Unix ms would overflow
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    store = c.store
    key = a[1]
    if store.get(key) is None:
        return b":0\r\n"
    current = store.deadline(key)
    when = store.time() + ms / 1000
    if (
        (b"NX" in flags and current is not None)
        or (b"XX" in flags and current is None)
        or (b"GT" in flags and (current is None or when <= current))
        or (b"LT" in flags and current is not None and when >= current)
    ):
        return b":0\r\n"
    if amount <= 0:
        store.delete(key)
    else:
        store.set_deadline(key, when)
    return b":1\r\n"


@_command("expire", -3, "write fast", "generic",
          "Sets the expiration time of a key in seconds.", keys=_ONE_KEY)
def _expire(c: KVProtocol, a: list[bytes]) -> bytes:
    return _expire_generic(c, a, 1.0, "expire")


@_command("pexpire", -3, "write fast", "generic",
          "Sets the expiration time of a key in milliseconds.", keys=_ONE_KEY)
def _pexpire(c: KVProtocol, a: list[bytes]) -> bytes:
    return _expire_generic(c, a, 0.001, "pexpire")


def _ttl_ms(c: KVProtocol, key: bytes) -> int:
    store = c.store
    if store.get(key) is None:
        return -2
    when = store.deadline(key)
    if when is None:
        return -1
    return max(0, round((when - store.time()) * 1000))


@_command("ttl", 2, "readonly fast", "generic",
          "Returns the expiration time in seconds of a key.", keys=_ONE_KEY)
def _ttl(c: KVProtocol, a: list[bytes]) -> bytes:
    ms = _ttl_ms(c, a[1])
    return encode_integer(ms if ms < 0 else (ms + 500) // 1000)


@_command("pttl", 2, "readonly fast", "generic",
          "Returns the expiration time in milliseconds of a key.", keys=_ONE_KEY)
def _pttl(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_integer(_ttl_ms(c, a[1]))


@_command("persist", 2, "write fast", "generic",
          "Removes the expiration time of a key.", keys=_ONE_KEY)
def _persist(c: KVProtocol, a: list[bytes]) -> bytes:
    if c.store.get(a[1]) is None:
        return b":0\r\n"
    return b":1\r\n" if c.store.persist(a[1]) else b":0\r\n"


# lists


def _push(c: KVProtocol, a: list[bytes], left: bool) -> bytes:
    items = _list(c, a[1])
    if items is None:
        items = deque()
        c.store.set(a[1], items)
    if left:
        items.extendleft(a[2:])
    else:
        items.extend(a[2:])
    return encode_integer(len(items))


@_command("lpush", -3, "write fast", "list",
          "Prepends one or more elements to a list.", keys=_ONE_KEY)
def _lpush(c: KVProtocol, a: list[bytes]) -> bytes:
    return _push(c, a, True)


@_command("rpush", -3, "write fast", "list",
          "Appends one or more elements to a list.", keys=_ONE_KEY)
def _rpush(c: KVProtocol, a: list[bytes]) -> bytes:
    return _push(c, a, False)


def _pop(c: KVProtocol, a: list[bytes], left: bool) -> bytes:
    if len(a) > 3:
        return _arity_error("lpop" if left else "rpop")
    count = None
    if len(a) == 3:
        try:
            count = _parse_int(a[2])
        except CommandError:
            count = -1  # Redis words a non-integer count the same way
        if count < 0:
            raise CommandError("ERR value is out of range, must be positive")
    items = _list(c, a[1])
    if items is None:
        return (NULL_RESP3 if c.resp3 else NULL_ARRAY) if count is not None else c.null
    popped = [items.popleft() if left else items.pop()
              for _ in range(min(len(items), 1 if count is None else count))]
    if not items:
        c.store.delete(a[1])
    if count is None:
        return encode_bulk(popped[0])
    return _array(popped)


@_command("lpop", -2, "write fast", "list",
          "Returns the first elements in a list after removing it.", keys=_ONE_KEY)
def _lpop(c: KVProtocol, a: list[bytes]) -> bytes:
    return _pop(c, a, True)


@_command("rpop", -2, "write fast", "list",
          "Returns and removes the last elements of a list.", keys=_ONE_KEY)
def _rpop(c: KVProtocol, a: list[bytes]) -> bytes:
    return _pop(c, a, False)


@_command("llen", 2, "readonly fast", "list", "Returns the length of a list.", keys=_ONE_KEY)
def _llen(c: KVProtocol, a: list[bytes]) -> bytes:
    items = _list(c, a[1])
    return encode_integer(0 if items is None else len(items))


@_command("lrange", 4, "readonly", "list", "Returns a range of elements from a list.",
          keys=_ONE_KEY)
def _lrange(c: KVProtocol, a: list[bytes]) -> bytes:
    start, stop = _parse_int(a[2]), _parse_int(a[3])
    items = _list(c, a[1])
    if items is None:
        return b"*0\r\n"
    n = len(items)
    start = max(0, start + n if start < 0 else start)
    stop = min(n - 1, stop + n if stop < 0 else stop)
    if start > stop:
        return b"*0\r\n"
    return _array(itertools.islice(items, start, stop + 1))


# server


@_command("dbsize", 1, "readonly fast", "server",
          "Returns the number of keys in the database.")
def _dbsize(c: KVProtocol, a: list[bytes]) -> bytes:
    return encode_integer(len(c.store))


def _flush(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) > 2 or (len(a) == 2 and a[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(E_SYNTAX)
    c.store.flush()
    return OK


@_command("flushdb", -1, "write", "server", "Removes all keys from the database.")
def _flushdb(c: KVProtocol, a: list[bytes]) -> bytes:
    return _flush(c, a)


@_command("flushall", -1, "write", "server", "Removes all keys from all databases.")
def _flushall(c: KVProtocol, a: list[bytes]) -> bytes:
    return _flush(c, a)


@_command("time", 1, "fast", "server", "Returns the server time.")
def _time(c: KVProtocol, a: list[bytes]) -> bytes:
    micros = time.time_ns() // 1000
    return _array([b"%d" % (micros // 1_000_000), b"%d" % (micros % 1_000_000)])


@_command("info", -1, "", "server", "Returns information and statistics about the server.")
def _info(c: KVProtocol, a: list[bytes]) -> bytes:
    server = c._server
    stats = server.statistics()
    sections = {
        "server": [f"redis_version:{SERVER_VERSION}", "redis_mode:standalone",
                   "server_name:socketreactor-kv"],
        "clients": [f"connected_clients:{stats.clients}"],
        "persistence": ["loading:0", "rdb_changes_since_last_save:0", "aof_enabled:0"],
        "stats": [f"total_connections_received:{stats.connections_total}",
                  f"total_commands_processed:{stats.commands_processed}",
                  f"expired_keys:{stats.expired_keys}",
                  f"protocol_errors:{stats.protocol_errors}"],
        "replication": ["role:master", "connected_slaves:0"],
        "keyspace": [f"db0:keys={stats.keys},expires={stats.expiring},avg_ttl=0"]
                    if stats.keys else [],
    }
    wanted = {arg.decode("utf-8", "replace").lower() for arg in a[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(sections)
    text = "\r\n".join(
        f"# {name.capitalize()}\r\n" + "".join(line + "\r\n" for line in lines)
        for name, lines in sections.items() if name in wanted
    )
    return encode_bulk(text.encode())


@_command("config", -2, "", "server", "A container for server configuration commands.")
def _config(c: KVProtocol, a: list[bytes]) -> bytes:
    sub = a[1].lower()
    if sub == b"get":
        if len(a) < 3:
            return _arity_error("config|get")
        values = c._server.config()
        pairs: list[tuple[bytes, bytes]] = []
        for raw in a[2:]:
            match = compile_glob(raw.lower())
            for name, value in values.items():
                if match(name.encode()) and all(name.encode() != p[0] for p in pairs):
                    pairs.append((name.encode(), value.encode()))
        return encode_map([(encode_bulk(k), encode_bulk(v)) for k, v in pairs], resp3=c.resp3)
    if sub == b"set":
        if len(a) < 4 or len(a) % 2:
            return _arity_error("config|set")
        raise CommandError(
            f"ERR Unknown option or number of arguments for CONFIG SET - "
            f"'{a[2].decode('utf-8', 'replace')}'"
        )
    if sub == b"resetstat" and len(a) == 2:
        server = c._server
        server.commands_processed = server.protocol_errors = 0
        c.store.expired_keys = 0
        return OK
    raise _unknown_subcommand(a)


@_command("command", -1, "", "server", "Returns detailed information about all commands.")
def _command_cmd(c: KVProtocol, a: list[bytes]) -> bytes:
    if len(a) == 1:
        infos = [cmd.info(c.resp3) for cmd in _COMMAND_LIST]
        return b"*%d\r\n" % len(infos) + b"".join(infos)
    sub = a[1].lower()
    if sub == b"count" and len(a) == 2:
        return encode_integer(len(_COMMAND_LIST))
    if sub == b"list" and len(a) == 2:
        return _array([cmd.name.encode() for cmd in _COMMAND_LIST])
    if sub == b"info":
        infos = []
        for name in a[2:]:
            cmd = COMMANDS.get(name.lower())
            infos.append(cmd.info(c.resp3) if cmd is not None else c.null)
        return b"*%d\r\n" % len(infos) + b"".join(infos)
    if sub == b"docs":
        wanted = [COMMANDS.get(name.lower()) for name in a[2:]] if len(a) > 2 else _COMMAND_LIST
        found = [cmd for cmd in wanted if cmd is not None]
        return encode_map(
            [(encode_bulk(cmd.name.encode()), cmd.docs(c.resp3)) for cmd in found], resp3=c.resp3
        )
    raise _unknown_subcommand(a)
