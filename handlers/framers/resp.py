"""RESP, the Redis serialization protocol: a socket-free command parser and reply encoder.

Role: turn the bytes a Redis client sends into commands (lists of ``bytes``) and turn
reply values into bytes. :mod:`handlers.services.kv` is built on it; nothing here knows about
connections, so it is tested by feeding it bytes.

Must not import ``socket``, ``selectors``, ``threading`` or ``os``: it never does I/O.

Theory of operation
-------------------
A client sends either *multibulk* commands (an array of bulk strings,
``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``) or *inline* commands (a line of words,
``GET k\\r\\n``, split like a shell would, with ``"..."`` and ``'...'`` quoting). The
first byte of a command decides which: ``*`` means multibulk.

The parser is a state machine over one working buffer (``_buf`` read from ``_pos``) and
a list of chunks fed since the last parse. Between calls it remembers where it is in
the command in progress (the arguments so far, how many are still expected, the length
of the bulk string being read) and *what it is waiting for*:

* ``_WAIT_NONE`` -- nothing partial; any new byte may start a command.
* ``_WAIT_LINE`` -- a header line (``*N`` / ``$N``) or an inline command is incomplete;
  the parser is worth re-running only once a chunk containing ``\\n`` arrives, or once
  the partial line is over its limit (then it fails). Only the *new* chunk is scanned.
* ``_WAIT_BYTES`` -- a bulk payload of known length is incomplete; the parser is worth
  re-running only once enough bytes have arrived. Nothing is scanned.

:meth:`RespParser.feed` only appends the chunk and updates that readiness test;
:meth:`RespParser.next_command` joins the chunks into the working buffer only when the
test says progress is possible, so a large bulk string arriving in small pieces is
copied once, not once per piece, and a long line is scanned once (no quadratic cost).
In the common case (whole commands per chunk) the chunk becomes the working buffer with
no copy at all.

Pipelined batches take a fast path, once per working buffer and again each time the
last attempt stopped at the end of its window (so its cost stays linear): when the
buffer starts a multibulk command, :meth:`RespParser._parse_batch` splits the next
:data:`FAST_WINDOW` bytes at every CRLF in one C call and takes every complete command
written *canonically* (``*N``, then ``$L`` and a payload of exactly L bytes, N times;
what every client library sends) into a queue, which :meth:`RespParser.next_command` then
hands out one by one. A canonical command has only one reading, so the fast path
agrees with the state machine; it stops at the first command it cannot vouch for (a
payload holding CRLF, a header the table does not know, a limit within reach, an
inline command, the partial command at the end) and leaves the rest, errors included,
to the state machine, in order.

Limits are checked on headers, before any payload is buffered: an array longer than
``max_array_length``, a bulk string longer than ``max_bulk_length`` or a command whose
declared size passes ``max_command_size`` is refused at once. Errors are
:class:`RespProtocolError`; a *fatal* one (the stream cannot be resynchronised: after a
bad header nobody knows where the next command starts) leaves the parser broken, and
the server replies with :attr:`RespProtocolError.reply` and closes. An inline command
with unbalanced quotes is *not* fatal: the line is over, the next one is parsed.
"""

from __future__ import annotations

from typing import Final

from .resp_encode import (
    NULL_ARRAY,
    NULL_BULK,
    NULL_RESP3,
    OK,
    PONG,
    QUEUED,
    RespProtocolError,
    encode,
    encode_array,
    encode_bulk,
    encode_command,
    encode_error,
    encode_integer,
    encode_map,
    encode_simple,
)
from .resp_inline import split_inline

__all__ = [
    "CRLF",
    "DEFAULT_MAX_ARRAY_LENGTH",
    "DEFAULT_MAX_BULK_LENGTH",
    "DEFAULT_MAX_COMMAND_SIZE",
    "DEFAULT_MAX_INLINE_LENGTH",
    "FAST_WINDOW",
    "HEADER_LIMIT",
    "NULL_ARRAY",
    "NULL_BULK",
    "NULL_RESP3",
    "OK",
    "PONG",
    "QUEUED",
    "RespParser",
    "RespProtocolError",
    "encode",
    "encode_array",
    "encode_bulk",
    "encode_command",
    "encode_error",
    "encode_integer",
    "encode_map",
    "encode_simple",
    "split_inline",
]

CRLF: Final = b"\r\n"

DEFAULT_MAX_BULK_LENGTH: Final = 64 * 1024 * 1024
DEFAULT_MAX_ARRAY_LENGTH: Final = 1024 * 1024
DEFAULT_MAX_INLINE_LENGTH: Final = 64 * 1024
DEFAULT_MAX_COMMAND_SIZE: Final = 256 * 1024 * 1024
# The fast path looks at this many bytes at a time: its commands wait, parsed, in a
# queue (a list and a bytes object per argument, several times the size of the bytes
# they came from), so this bounds that queue, what a paused connection holds parsed.
FAST_WINDOW: Final = 64 * 1024
# A header is "*" or "$", at most 20 digits and CRLF; anything longer is garbage.
HEADER_LIMIT: Final = 64

_WAIT_NONE: Final = 0
_WAIT_LINE: Final = 1
_WAIT_BYTES: Final = 2

_STAR: Final = 42  # b"*"
_DOLLAR: Final = 36  # b"$"
_CR: Final = 13
# "$0" .. "$1023": the bulk headers of the fast path, by payload length (a longer
# payload makes the lookup fail, and the command takes the state machine)
_BULK_HEADERS: Final = tuple(b"$%d" % n for n in range(1024))
_bulk_header: Final = _BULK_HEADERS.__getitem__
_RUN_MAX: Final = 32  # commands of one shape checked together, at most


def _shown(raw: bytes) -> str:
    """``raw`` quoted for a log line: printable ASCII as it is, any other byte as
    ``\\xNN`` (a user reads the bytes the client sent, not a Python repr)."""
    return "'" + "".join(chr(c) if 32 <= c < 127 else f"\\x{c:02x}" for c in raw) + "'"


def _length_error(what: str, detail: object) -> RespProtocolError:
    """A refused ``*N`` (``what`` = "multibulk") or ``$N`` ("bulk") header: the reply
    is redis-server's, the log message says why."""
    return RespProtocolError(f"invalid {what} length {detail}",
                             reply_text=f"invalid {what} length")


def _header_value(buf: bytes, start: int, stop: int, what: str) -> int:
    """Parse the digits of a ``*N`` / ``$N`` header line (``buf[start:stop]``), written
    as redis-server accepts a number: an optional ``-``, then digits without a leading
    zero (``0`` itself excepted; ``-0`` is refused)."""
    text = buf[start:stop]
    digits = text[1:] if text[:1] == b"-" else text
    if digits.isdigit() and (digits[0] != 48 or digits == text == b"0"):
        value = int(text)
        if -(2**63) <= value < 2**63:  # a C long long, as Redis parses it
            return value
    raise _length_error(what, _shown(text[:32]))


class RespParser:
    """An incremental parser of client commands (multibulk and inline).

    Args:
        max_bulk_length: the longest bulk string accepted, in bytes.
        max_array_length: the most elements a multibulk command may have.
        max_inline_length: the longest inline command line, in bytes.
        max_command_size: the most payload bytes one command may declare in total.

    Raises:
        ValueError: a limit is not positive.

    Usage::

        parser.feed(data)
        while (command := parser.next_command()) is not None:
            ...  # command is a non-empty list of bytes
    """

    __slots__ = (
        "_args",
        "_buf",
        "_bulk",
        "_chunks",
        "_chunks_len",
        "_error",
        "_fast",
        "_need",
        "_pos",
        "_queue",
        "_ready",
        "_remaining",
        "_size",
        "_wait",
        "max_array_length",
        "max_bulk_length",
        "max_command_size",
        "max_inline_length",
    )

    def __init__(
        self,
        *,
        max_bulk_length: int = DEFAULT_MAX_BULK_LENGTH,
        max_array_length: int = DEFAULT_MAX_ARRAY_LENGTH,
        max_inline_length: int = DEFAULT_MAX_INLINE_LENGTH,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
    ) -> None:
        for name, value in (
            ("max_bulk_length", max_bulk_length),
            ("max_array_length", max_array_length),
            ("max_inline_length", max_inline_length),
            ("max_command_size", max_command_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self.max_bulk_length = max_bulk_length
        self.max_array_length = max_array_length
        self.max_inline_length = max_inline_length
        self.max_command_size = max_command_size
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunks_len = 0
        self._ready = False
        self._wait = _WAIT_NONE
        self._need = 0  # _WAIT_BYTES: bytes needed from _pos; _WAIT_LINE: the line limit
        self._args: list[bytes] | None = None  # the multibulk command in progress
        self._remaining = 0  # its elements still expected
        self._bulk = -1  # the length of the bulk being read; -1: expecting a "$" header
        self._size = 0  # payload bytes the command in progress declared so far
        self._error: RespProtocolError | None = None
        self._queue: list[list[bytes]] = []  # parsed by the fast path, last one first
        self._fast = False  # whether the working buffer may still take the fast path

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (commands parsed and not yet returned by
        :meth:`next_command` are not counted)."""
        return len(self._buf) - self._pos + self._chunks_len

    @property
    def idle(self) -> bool:
        """Whether no command is partly received or waiting to be returned."""
        return (self._args is None and not self._chunks_len and not self._queue
                and self._pos >= len(self._buf))

    @property
    def broken(self) -> bool:
        """Whether a fatal error stopped the parser."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. Cheap: parsing happens in :meth:`next_command`.

        After a fatal error, input is ignored.
        """
        if not data or self._error is not None:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._chunks_len += len(data)
        if self._ready:
            return
        wait = self._wait
        if wait == _WAIT_BYTES:
            self._ready = self.buffered >= self._need
        elif wait == _WAIT_LINE:
            self._ready = b"\n" in data or self.buffered > self._need  # over: fail now
        else:
            self._ready = True

    def next_command(self) -> list[bytes] | None:
        """Return the next complete command, or None until more bytes are fed.

        Raises:
            RespProtocolError: the input is malformed or over a limit. When
                ``fatal`` is set, every later call raises the same error.
        """
        queue = self._queue
        if queue:
            return queue.pop()
        if self._error is not None:
            raise self._error
        if not self._ready:
            return None
        chunks = self._chunks
        if not chunks and self._args is None and self._pos >= len(self._buf):
            self._ready = False  # all consumed: the common end of a batch
            self._wait = _WAIT_NONE
            self._buf = b""
            self._pos = 0
            return None
        if chunks:
            if self._pos >= len(self._buf) and len(chunks) == 1:
                self._buf = chunks[0]
            else:
                self._buf = b"".join([memoryview(self._buf)[self._pos :], *chunks])
            chunks.clear()
            self._chunks_len = 0
            self._pos = 0
            self._fast = True
        if self._fast:
            self._fast = False
            if self._args is None and self._buf[self._pos] == _STAR:
                command = self._parse_batch()
                if command is not None:
                    return command
        try:
            command = self._parse()
        except RespProtocolError as exc:
            if exc.fatal:
                self._error = exc
                self._buf = b""
                self._pos = 0
                self._args = None
            raise
        if command is None:
            self._ready = False
        return command

    # -- the fast path ----------------------------------------------------------------

    def _parse_batch(self) -> list[bytes] | None:
        """Take every complete canonical command in the :data:`FAST_WINDOW` bytes
        from ``_pos`` on: return the first, queue the others; None when the first is
        not one (see the module docstring)."""
        buf = self._buf
        pos = self._pos
        window = buf[pos : pos + FAST_WINDOW]
        lines = window.split(b"\r\n")
        last = len(lines) - 1  # lines[last] has no CRLF yet
        cut = False  # whether the end of the window stopped the walk
        max_array = self.max_array_length
        max_bulk = self.max_bulk_length
        max_size = self.max_command_size
        # up to this many arguments, the limits hold whatever lengths the table knows
        most = min(max_bulk, max_size) // len(_BULK_HEADERS)
        commands: list[list[bytes]] = []
        runs = True  # whether a run of commands of one shape may be checked at once
        i = 0
        while i < last:
            head = lines[i]
            text = head[1:]
            if head[:1] != b"*" or not text.isdigit() or text[0] == 48:
                break
            count = int(text)
            stride = 2 * count + 1
            stop = i + stride
            if stop > last or count > max_array:
                cut = stop > last
                break
            if runs and stop < last and lines[stop] == head and count <= most:
                # the next command has the same shape: check a run of them at once
                fit = min((last - i) // stride, _RUN_MAX)
                taken = _take_run(lines, i, fit, stride, commands)
                if taken:
                    i += taken * stride
                    continue
                runs = False  # one of them is not canonical: one by one from here
            # one command, checked alone
            args = lines[i + 2 : stop : 2]
            lengths = list(map(len, args))
            try:
                if list(map(_bulk_header, lengths)) != lines[i + 1 : stop : 2]:
                    break
            except IndexError:  # a payload of 1 KiB or more
                break
            if count > most and (max(lengths) > max_bulk or sum(lengths) > max_size):
                break  # the state machine says which limit, and when
            commands.append(args)
            i = stop
        else:
            cut = True
        if cut and pos + FAST_WINDOW < len(buf):
            self._fast = True  # the buffer goes on: try again from where this stopped
        if not commands:
            return None
        # the bytes left: the lines not taken and the CRLF after each but the last
        rest = sum(map(len, lines[i:])) + 2 * (last - i)
        self._pos = pos + len(window) - rest
        commands.reverse()
        first = commands.pop()
        self._queue = commands
        return first

    # -- the state machine ------------------------------------------------------------

    def _wait_for(self, wait: int, need: int, pos: int) -> None:
        self._wait = wait
        self._need = need
        if pos >= len(self._buf):
            self._buf = b""
            pos = 0
        self._pos = pos

    def _header(self, buf: bytes, pos: int, end: int, kind: int) -> tuple[int, int] | None:
        """The slow path of a ``*N`` or ``$N`` header at ``pos``: its value and the
        position after it, None when it is incomplete.

        Raises:
            RespProtocolError: a malformed header.
        """
        nl = buf.find(b"\n", pos, pos + HEADER_LIMIT)
        if nl < 0 and end - pos < HEADER_LIMIT:
            return None  # as Redis, judge the line once it is whole: any split agrees
        if kind == _DOLLAR and buf[pos] != _DOLLAR:
            got = chr(buf[pos]) if 32 < buf[pos] < 127 else f"\\x{buf[pos]:02x}"
            raise RespProtocolError(f"expected '$', got '{got}'",
                                    reply_text=b"expected '$', got '%c'" % buf[pos])
        what = "bulk" if kind == _DOLLAR else "multibulk"
        if nl < 0:
            # redis-server waits for up to 64 KiB of header line, and then refuses a
            # number that long as invalid: say so at once
            raise _length_error(what, f"(a header line over {HEADER_LIMIT - 1} bytes)")
        if buf[nl - 1] != _CR:
            raise _length_error(what, "(the line ends in LF without CR)")
        return _header_value(buf, pos + 1, nl - 1, what), nl + 1

    def _parse(self) -> list[bytes] | None:  # noqa: C901, PLR0912, PLR0915
        # Long on purpose: the per-command hot path, with locals instead of calls, held
        # by the model and chunking tests (tests/faults/test_framers_model.py).
        # The fast path of each header (complete, well formed) is inlined; anything
        # else goes through _header. Hot state lives in locals and is saved on exit.
        buf = self._buf
        pos = self._pos
        end = len(buf)
        find = buf.find
        while True:
            args = self._args
            if args is None:
                if pos >= end:
                    self._wait_for(_WAIT_NONE, 0, pos)
                    return None
                if buf[pos] != _STAR:
                    inline = self._parse_inline(buf, pos, end)
                    if inline is None:
                        return None
                    if inline:
                        return inline
                    pos = self._pos
                    continue  # an empty line: Redis ignores it
                nl = find(b"\n", pos, pos + HEADER_LIMIT)
                if (
                    nl > pos and buf[nl - 1] == _CR and (text := buf[pos + 1 : nl - 1]).isdigit()
                    and text[0] != 48  # no leading zero as in Redis ("0": the slow path)
                ):
                    count = int(text)
                    pos = nl + 1
                else:
                    header = self._header(buf, pos, end, _STAR)
                    if header is None:
                        self._wait_for(_WAIT_LINE, HEADER_LIMIT - 1, pos)
                        return None
                    count, pos = header
                if count <= 0:
                    continue  # *0, *-1, *-5 carry no command: ignored, as Redis does
                if count > self.max_array_length:
                    raise _length_error(
                        "multibulk", f"{count} (over the limit of {self.max_array_length})"
                    )
                args = self._args = []
                remaining = count
                bulk = -1
                size = 0
            else:
                remaining = self._remaining
                bulk = self._bulk
                size = self._size
            max_bulk = self.max_bulk_length
            while remaining:
                if bulk < 0:
                    if pos >= end:
                        self._remaining, self._bulk, self._size = remaining, bulk, size
                        self._wait_for(_WAIT_LINE, HEADER_LIMIT - 1, pos)
                        return None
                    nl = find(b"\n", pos, pos + HEADER_LIMIT)
                    if (
                        nl > pos and buf[pos] == _DOLLAR and buf[nl - 1] == _CR
                        and (text := buf[pos + 1 : nl - 1]).isdigit()
                        and text[0] != 48  # no leading zero ("0": the slow path)
                    ):
                        bulk = int(text)
                        pos = nl + 1
                    else:
                        header = self._header(buf, pos, end, _DOLLAR)
                        if header is None:
                            self._remaining, self._bulk, self._size = remaining, bulk, size
                            self._wait_for(_WAIT_LINE, HEADER_LIMIT - 1, pos)
                            return None
                        bulk, pos = header
                        if bulk < 0:
                            raise _length_error("bulk", bulk)
                    if bulk > max_bulk:
                        raise _length_error("bulk", f"{bulk} (over the limit of {max_bulk})")
                    size += bulk
                    if size > self.max_command_size:
                        raise RespProtocolError(
                            f"command too large (over the limit of {self.max_command_size} "
                            "bytes)"
                        )
                stop = pos + bulk
                if stop + 2 > end:
                    self._remaining, self._bulk, self._size = remaining, bulk, size
                    self._wait_for(_WAIT_BYTES, bulk + 2, pos)
                    return None
                if buf[stop : stop + 2] != b"\r\n":
                    raise RespProtocolError("expected CRLF after a bulk string")
                args.append(buf[pos:stop])
                pos = stop + 2
                bulk = -1
                remaining -= 1
            self._args = None
            self._pos = pos
            return args

    def _parse_inline(self, buf: bytes, pos: int, end: int) -> list[bytes] | None:
        limit = self.max_inline_length
        nl = buf.find(b"\n", pos, pos + limit + 1)
        if nl < 0:
            if end - pos > limit:
                raise RespProtocolError(f"too big inline request (over {limit} bytes)",
                                        reply_text="too big inline request")
            self._wait_for(_WAIT_LINE, limit, pos)
            return None
        line = buf[pos:nl]
        self._pos = nl + 1
        if line[-1:] == b"\r":
            line = line[:-1]
        return split_inline(line)


def _take_run(lines: list[bytes], i: int, fit: int, stride: int,
              commands: list[list[bytes]]) -> int:
    """Append the run of commands shaped like the one at ``lines[i]`` (the same ``*N``
    line, ``stride`` lines each, at most ``fit`` of them), checking their bulk headers
    column by column (one C-level comparison per argument position, not per command);
    return how many were taken: 0 when one of them is not canonical (the caller then
    goes one by one), so that one and those after it are left to the state machine."""
    end = i + fit * stride
    heads = lines[i:end:stride]
    head = heads[0]
    if heads.count(head) != fit:
        fit = next(n for n, other in enumerate(heads) if other != head)
        end = i + fit * stride
    columns: list[list[bytes]] = []
    try:
        for header in range(i + 1, i + stride, 2):
            payloads = lines[header + 1 : end : stride]
            if list(map(_bulk_header, map(len, payloads))) != lines[header:end:stride]:
                return 0
            columns.append(payloads)
    except IndexError:  # a payload of 1 KiB or more
        return 0
    commands.extend(map(list, zip(*columns, strict=True)))
    return fit
