"""The control socket's protocol, socket-free: lines in, commands out, replies as bytes.

Theory of operation
-------------------
A client sends one command per line (``\\n`` or ``\\r\\n``); each gets one reply. A
reply is lines of text ending with an **empty line**, so ``nc -U`` and ``socat`` users
read it as it comes and a program reads up to the first ``\\n\\n``: no line of a reply
body is ever empty (the renderers escape control characters, so an address cannot
break a line). With ``--json`` anywhere in the command the reply body is one line of
JSON instead (``{"error": ...}`` for an error), again followed by the empty line. An
error's text reply is one line starting with ``error:``.

Commands (:data:`HELP` says the same to clients)::

    info [--json]
    conns [STATE] [--peer CIDR] [--sort age|idle|bytes_in|bytes_out|queued]
          [--limit N] [--all] [--json]
    close ID | abort ID | drain | loglevel [LEVEL] | help | quit

:class:`LineReader` bounds a line (:data:`MAX_LINE`): a longer one is a
:class:`LineTooLong`, after which the server closes that client with the reason.
:func:`parse_command` turns a line into a :class:`Command` or raises
:class:`CommandError` with the message for the error line; it never raises anything
else. Executing commands is the I/O layer's (:mod:`reactor.io.control`).

Socket-free: no sockets, selectors, threads or ``os``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .connection import ConnState
from .snapshot import SORT_KEYS, Network, parse_state, printable

__all__ = [
    "COMMANDS",
    "HELP",
    "LOG_LEVELS",
    "MAX_LINE",
    "Command",
    "CommandError",
    "LineReader",
    "LineTooLong",
    "encode_error",
    "encode_json",
    "encode_text",
    "parse_command",
    "render_info",
]

MAX_LINE: Final = 1024
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

HELP: Final = (
    "info                      version, uptime, pid, the loop's statistics, listeners",
    "conns [STATE] [--peer CIDR] [--sort age|idle|bytes_in|bytes_out|queued] [--limit N]",
    "                          one row per connection (--all: control clients too)",
    "close ID                  close a connection after its queued output is sent",
    "abort ID                  drop a connection at once, discarding queued output",
    "drain                     stop accepting, finish open connections, exit",
    "loglevel [LEVEL]          show or set the log level (debug ... critical)",
    "help                      this text",
    "quit                      close this control connection",
    "Add --json to any command for a JSON reply. Every reply ends with an empty line.",
)

COMMANDS: Final = ("info", "conns", "close", "abort", "drain", "loglevel", "help", "quit")


class CommandError(ValueError):
    """A malformed or unknown command; the message is the error line's text."""


class LineTooLong(ValueError):
    """A command line longer than the reader's limit."""


class LineReader:
    """Splits received bytes into lines of at most ``max_line`` bytes.

    Keeps only the unfinished line (at most ``max_line`` bytes); finished lines are
    returned without their ending.
    """

    __slots__ = ("_partial", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes.

        Raises:
            LineTooLong: a line (finished or not) is longer than ``max_line``.
        """
        buffer = self._partial
        buffer += data
        lines = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                raise LineTooLong(f"command line over {self.max_line} bytes")
            lines.append(line)
            start = end + 1
        del buffer[:start]
        if len(buffer) > self.max_line + 1:  # one more: it may end in the \r of \r\n
            raise LineTooLong(f"command line over {self.max_line} bytes")
        return lines

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line."""
        return len(self._partial)


@dataclass(frozen=True)
class Command:
    """A parsed command.

    Attributes:
        name: one of :data:`COMMANDS`.
        json: reply in JSON.
        state: ``conns``: only rows in this state.
        peer: ``conns``: only peers in this network.
        sort: ``conns``: a key of :data:`~reactor.sansio.snapshot.SORT_KEYS`.
        limit: ``conns``: at most this many rows.
        all: ``conns``: control clients too.
        target: ``close``/``abort``: the connection's id.
        level: ``loglevel``: the level to set (None: show it).
    """

    name: str
    json: bool = False
    state: ConnState | None = None
    peer: Network | None = None
    sort: str | None = None
    limit: int | None = None
    all: bool = False
    target: int | None = None
    level: str | None = None


def _quoted(text: str) -> str:
    return f"'{printable(text)}'"


def _number(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise CommandError(f"{what} must be a positive whole number, not {_quoted(text)}")
    return int(text)


def _conns(args: list[str], json_reply: bool) -> Command:
    options: dict[str, Any] = {}
    state: ConnState | None = None
    words = iter(args)
    for word in words:
        if word in ("--peer", "--sort", "--limit"):
            value = next(words, None)
            if value is None:
                raise CommandError(f"{word} needs a value")
            if word == "--peer":
                try:
                    options["peer"] = ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise CommandError(f"--peer needs an address or network such as "
                                       f"10.0.0.0/8, not {_quoted(value)}") from None
            elif word == "--sort":
                if value not in SORT_KEYS:
                    raise CommandError(f"--sort takes {', '.join(SORT_KEYS)}, "
                                       f"not {_quoted(value)}")
                options["sort"] = value
            else:
                options["limit"] = _number(value, "--limit")
        elif word == "--all":
            options["all"] = True
        elif word.startswith("-"):
            raise CommandError(f"conns: unknown option {_quoted(word)}")
        elif state is None:
            try:
                state = parse_state(word)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        else:
            raise CommandError("conns takes one STATE at most")
    return Command("conns", json=json_reply, state=state, **options)


def parse_command(line: bytes | str) -> Command | None:
    """The command on ``line``; None for an empty line (ignored, as a shell does).

    Raises:
        CommandError: the line is not text, the command is unknown, or its arguments
            are wrong; the message says which.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("a command must be UTF-8 text") from None
    words = line.split()
    if not words:
        return None
    json_reply = "--json" in words
    words = [w for w in words if w != "--json"]
    if not words:
        raise CommandError("--json needs a command; try help")
    name, args = words[0].lower(), words[1:]
    if name == "conns":
        return _conns(args, json_reply)
    if name in ("close", "abort"):
        if len(args) != 1:
            raise CommandError(f"usage: {name} ID (an id from conns)")
        return Command(name, json=json_reply, target=_number(args[0], "ID"))
    if name == "loglevel":
        if len(args) > 1:
            raise CommandError("usage: loglevel [LEVEL]")
        level = args[0].upper() if args else None
        if level is not None and level not in LOG_LEVELS:
            raise CommandError(f"unknown log level {_quoted(args[0])}; choose "
                               f"{', '.join(LOG_LEVELS).lower()}")
        return Command(name, json=json_reply, level=level)
    if name in COMMANDS:
        if args:
            raise CommandError(f"{name} takes no arguments")
        return Command(name, json=json_reply)
    raise CommandError(f"unknown command {_quoted(words[0])}; try help")


# -- replies ---------------------------------------------------------------------------


def encode_text(lines: list[str] | tuple[str, ...]) -> bytes:
    """A text reply: the lines (escaped, an empty one shown as ``-``), then the empty
    line that ends every reply."""
    body = [printable(line) or "-" for line in lines] or ["ok"]
    return ("\n".join(body) + "\n\n").encode("utf-8", "backslashreplace")


def encode_json(value: Any) -> bytes:
    """A JSON reply: one line (``json.dumps`` escapes newlines), then the empty line."""
    return (json.dumps(value, separators=(",", ":"), default=str) + "\n\n").encode()


def encode_error(message: str, json_reply: bool = False) -> bytes:
    """An error reply: ``error: MESSAGE``, or ``{"error": MESSAGE}`` in JSON."""
    if json_reply:
        return encode_json({"error": message})
    return encode_text([f"error: {message}"])


def _pairs(value: Mapping[str, Any], prefix: str = "") -> list[str]:
    pairs = []
    for key, item in value.items():
        if isinstance(item, Mapping) and item:  # nested: limits.backlog=1024
            pairs.extend(_pairs(item, f"{prefix}{key}."))
        else:
            pairs.append(f"{prefix}{key}={_flat(item)}")
    return pairs


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(_pairs(value)) or "-"
    if isinstance(value, (list, tuple)):
        return ",".join(_flat(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if value is None:
        return "-"
    return str(value)


def render_info(info: Mapping[str, Any]) -> list[str]:
    """``info`` as text: ``key: value`` lines, a mapping as ``k=v`` pairs, each item of
    a list on its own line (``listener: ...``)."""
    lines: list[str] = []
    for key, value in info.items():
        if isinstance(value, list):
            singular = key[:-1] if key.endswith("s") else key
            lines.extend(f"{singular}: {_flat(item)}" for item in value)
            if not value:
                lines.append(f"{key}: none")
        else:
            lines.append(f"{key}: {_flat(value)}")
    return lines
